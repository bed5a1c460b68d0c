"""tests/fakes.py: the shared fake tokenizer behaves as the real tokenizers do."""
import pytest
from fakes import SPECIAL_PIECES, FakeTokenizer

from vedgan.data import tokenizer as tokenizer_lib

WORDS = ["hello", "there", "you"]


def test_word_kind_matches_the_word_tokenizer():
  """Same special ids and pieces, encode, decode and piece lookups as a WordTokenizer
  over the same vocabulary."""
  real = tokenizer_lib.WordTokenizer(list(SPECIAL_PIECES) + WORDS)
  fake = FakeTokenizer(vocab=WORDS)
  assert fake.vocab_size == real.vocab_size == 9
  for name in ("pad_id", "unk_id", "bos_id", "eos_id", "eou_id", "blank_id"):
    assert getattr(fake, name) == getattr(real, name), name
  assert (fake.pad_id, fake.unk_id, fake.bos_id, fake.eos_id, fake.eou_id,
          fake.blank_id) == (0, 1, 2, 3, 4, 5)
  assert fake.user_symbols == real.user_symbols and fake.model_type == real.model_type
  assert [fake.id_to_piece(i) for i in range(9)] == real.pieces
  for piece in WORDS + ["<eou>", "nope"]:
    assert fake.piece_to_id(piece) == real.piece_to_id(piece)
  for text in ("hello there", "hello <eou> you", "who is there", "<blank> you", ""):
    assert fake.encode(text) == real.encode(text), text
  assert fake.encode_batch(["you", "hi"]) == [[8], [1]]
  for ids in ([2, 6, 1, 7, 3, 8], [0, 4, 5, 8, 0], [3, 6], []):
    assert fake.decode(ids) == real.decode(ids), ids
  assert fake.decode([2, 6, 1, 7, 3, 8]) == "hello <unk> there"
  with pytest.raises(ValueError, match="outside"):
    fake.decode([9])


def test_generated_words_fill_the_vocabulary():
  tok = FakeTokenizer(vocab=["a"], vocab_size=9)
  assert tok.vocab_size == 9
  assert [tok.id_to_piece(i) for i in range(6, 9)] == ["a", "w7", "w8"]
  assert tok.encode("a w8 w9") == [6, 8, 1]
  assert tok.decode([7, 8, 3, 6]) == "w7 w8"
  assert FakeTokenizer(vocab_size=8, prefix="").decode([6, 7]) == "6 7"
  assert FakeTokenizer(vocab_size=8).fingerprint != FakeTokenizer(vocab_size=9).fingerprint


def test_char_kind():
  tok = FakeTokenizer("char", "abc")
  assert tok.vocab_size == 9 and tok.model_type == "char"
  assert tok.encode("ab c?") == [6, 7, 8, 1]
  assert tok.encode(" <eou> a") == [4, 6]
  assert tok.encode("  ") == []
  assert tok.decode([2, 6, 7, 3, 8]) == "ab"


def test_ids_kind():
  tok = FakeTokenizer("ids", vocab_size=50)
  assert tok.encode("7 8 3  49") == [7, 8, 3, 49]
  assert tok.decode([2, 7, 1, 8, 4, 3, 9]) == "7 <unk> 8 <eou>"
  assert tok.id_to_piece(5) == "<blank>" and tok.piece_to_id("12") == 12
  assert tok.piece_to_id("</s>") == 3 and tok.piece_to_id("x") == 1
  for bad in ("50", "x", "-1"):
    with pytest.raises(ValueError, match="not a token id"):
      tok.encode(bad)


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="kind"):
    FakeTokenizer("bytes")
  with pytest.raises(ValueError, match="cannot hold"):
    FakeTokenizer(vocab=WORDS, vocab_size=8)
  with pytest.raises(ValueError, match="repeats"):
    FakeTokenizer(vocab=["a", "a"])
  with pytest.raises(ValueError, match="repeats"):
    FakeTokenizer(vocab=["w7"], vocab_size=8)
  with pytest.raises(ValueError, match="single non-space"):
    FakeTokenizer("char", ["ab"])
  with pytest.raises(ValueError, match="vocab_size and no vocab"):
    FakeTokenizer("ids")
