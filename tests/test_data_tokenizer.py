"""Tests for vedgan.data.tokenizer."""
import io
import json
import os
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

from vedgan.data import tokenizer as tokenizer_lib
from vedgan.data.chatterbot_corpus.chatterbot_corpus import read_conversations


@pytest.fixture(scope="module")
def texts():
  return [t for _, _, turns in read_conversations() for t in turns]


@pytest.fixture(scope="module")
def tok(texts):
  return tokenizer_lib.train_sentencepiece(texts, vocab_size=1000)


def test_fixed_special_ids(tok):
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert [tok.id_to_piece(i) for i in range(6)] == [
      "<pad>", "<unk>", "<s>", "</s>", "<eou>", "<blank>"]
  assert tok.vocab_size == 1000
  assert tok.encode("<eou>") == [4]
  assert tok.encode("<blank>") == [5]
  assert tok.user_symbols == {"<eou>": 4, "<blank>": 5}


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_special_ids_same_for_every_kind(texts, model_type):
  tok = tokenizer_lib.train_sentencepiece(texts, 500, model_type=model_type)
  assert tok.model_type == model_type
  assert [tok.id_to_piece(i) for i in range(6)] == [
      "<pad>", "<unk>", "<s>", "</s>", "<eou>", "<blank>"]


def test_roundtrip_whole_corpus(tok, texts):
  for text in texts:
    ids = tok.encode(text)
    assert ids and all(5 < i < tok.vocab_size for i in ids)
    # Only NFKC normalisation (e.g. "…" -> "...") and whitespace change.
    want = " ".join(unicodedata.normalize("NFKC", text).split())
    assert tok.decode(ids) == want


def test_eou_is_one_id_without_stray_space_piece(tok):
  ids = tok.encode("how are you? <eou> fine <blank> thanks")
  assert ids.count(4) == 1 and ids.count(5) == 1
  pieces = [tok.id_to_piece(i) for i in ids]
  assert pieces[pieces.index("<eou>") - 1] != "▁"
  assert pieces[pieces.index("<eou>") + 1].startswith("▁")
  assert tok.decode(ids) == "how are you? <eou> fine <blank> thanks"
  assert tok.encode("a<eou>b") == (tok.encode("a") + [4] + tok.encode("b"))


def test_encode_adds_no_bos_eos_and_decode_stops_at_eos(tok):
  ids = tok.encode("hello there")
  assert tok.bos_id not in ids and tok.eos_id not in ids
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id] + ids) == "hello there"
  assert tok.decode(np.array([2] + ids + [0, 0, 3, 9], np.int32)) == (
      "hello there")
  assert tok.decode([0, 0]) == ""
  assert tok.encode("") == [] and tok.encode("   ") == []
  assert tok.encode_batch(["hello", "there"]) == [
      tok.encode("hello"), tok.encode("there")]
  with pytest.raises(ValueError, match="outside"):
    tok.decode([tok.vocab_size])


def test_save_load_fingerprint(tok, tmp_path):
  tok.save(tmp_path / "tk")
  assert sorted(os.listdir(tmp_path / "tk")) == ["tokenizer.json",
                                                 "tokenizer.model"]
  loaded = tokenizer_lib.load_tokenizer(tmp_path / "tk")
  assert loaded.fingerprint == tok.fingerprint
  assert len(tok.fingerprint) == 64
  assert loaded.vocab_size == tok.vocab_size
  text = "what is your favorite book? <eou> I like sci-fi"
  assert loaded.encode(text) == tok.encode(text)
  meta = json.loads((tmp_path / "tk" / "tokenizer.json").read_text())
  assert meta["fingerprint"] == tok.fingerprint
  assert meta["vocab_size"] == 1000
  assert (meta["pad_id"], meta["eos_id"], meta["eou_id"]) == (0, 3, 4)
  # Saving again over an existing copy is fine (atomic replace).
  tok.save(tmp_path / "tk")
  assert len(os.listdir(tmp_path / "tk")) == 2


def test_load_missing_is_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer at") as e:
    tokenizer_lib.load_tokenizer(tmp_path)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic_and_writes_no_files(
    texts, model_type, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  a = tokenizer_lib.train_sentencepiece(texts, 800, model_type=model_type)
  b = tokenizer_lib.train_sentencepiece(texts, 800, model_type=model_type)
  assert a.fingerprint == b.fingerprint
  assert a.model_proto == b.model_proto
  assert os.listdir(tmp_path) == []


def test_different_vocab_size_different_fingerprint(tok, texts):
  other = tokenizer_lib.train_sentencepiece(texts, 900)
  assert other.fingerprint != tok.fingerprint


def test_vocab_too_large_is_one_line_value_error(texts):
  with pytest.raises(ValueError, match=r"tokenizer.vocab_size=50000 is too "
                     r"large for this corpus \(max \d+\); lower it") as e:
    tokenizer_lib.train_sentencepiece(texts, 50000)
  assert "\n" not in str(e.value)


def test_soft_vocab_limit_shrinks_instead(texts):
  tok = tokenizer_lib.train_sentencepiece(texts[:300], 50000,
                                          hard_vocab_limit=False)
  assert 6 < tok.vocab_size < 50000


def test_bad_arguments():
  with pytest.raises(ValueError, match="model_type"):
    tokenizer_lib.train_sentencepiece(["a b c"], 100, model_type="word")
  with pytest.raises(ValueError, match="no non-empty text"):
    tokenizer_lib.train_sentencepiece(["", "  "], 100)
  with pytest.raises(ValueError, match="too small"):
    tokenizer_lib.train_sentencepiece(["a b c"], 5)


def test_rejects_model_with_other_special_ids(texts):
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts[:500]),
                                 model_writer=writer, vocab_size=300,
                                 minloglevel=2)
  with pytest.raises(ValueError, match="special pieces"):
    tokenizer_lib.Tokenizer(writer.getvalue())


# -- word-level vocabulary ------------------------------------------------------


def test_word_vocab_most_frequent_with_unk_and_specials():
  texts = ["The cat sat.", "the cat ran!", "A dog ran <eou> the end", "zebra"]
  tok = tokenizer_lib.train_word_vocab(texts, vocab_size=10)
  assert [tok.id_to_piece(i) for i in range(6)] == [
      "<pad>", "<unk>", "<s>", "</s>", "<eou>", "<blank>"]
  # counts: the 3, cat 2, ran 2, then 1s ('!' '.' 'a' 'dog' 'end' 'sat' 'zebra')
  assert tok.pieces[6:] == ["the", "cat", "ran", "!"]
  assert tok.vocab_size == 10 and tok.model_type == "word"
  assert tok.encode("THE CAT <eou> sat") == [6, 7, 4, tok.unk_id]
  assert tok.encode("the<blank>cat") == [6, 5, 7]
  assert tok.decode([2, 6, 7, 1, 3, 8]) == "the cat <unk>"
  assert tok.decode(np.array([0, 6, 0], np.int32)) == "the"
  assert tok.encode("") == [] and tok.encode_batch(["the", "cat"]) == [[6], [7]]
  assert tok.piece_to_id("cat") == 7 and tok.piece_to_id("nope") == 1
  with pytest.raises(ValueError, match="outside"):
    tok.decode([10])


def test_word_vocab_options_and_errors():
  texts = ["Don't stop", "don't STOP", "rare word"]
  cased = tokenizer_lib.train_word_vocab(texts, 100, lowercase=False)
  assert "Don't" in cased.pieces and "STOP" in cased.pieces
  assert cased.encode("don't") != cased.encode("Don't")
  lower = tokenizer_lib.train_word_vocab(texts, 100, min_count=2)
  assert lower.pieces[6:] == ["don't", "stop"]  # rare words -> <unk>
  assert lower.encode("rare") == [1]
  small = tokenizer_lib.train_word_vocab(texts, 1000)
  assert small.vocab_size == 6 + 4  # fewer words than asked for
  extra = tokenizer_lib.train_word_vocab(texts, 100,
                                         user_defined_symbols=["<sep>"])
  assert extra.id_to_piece(6) == "<sep>" and extra.encode("a<sep>b")[1] == 6
  with pytest.raises(ValueError, match="too small"):
    tokenizer_lib.train_word_vocab(texts, 6)
  with pytest.raises(ValueError, match="no non-empty text"):
    tokenizer_lib.train_word_vocab(["", " <eou> "], 100)
  with pytest.raises(ValueError, match="special pieces"):
    tokenizer_lib.WordTokenizer(["a", "b", "c", "d", "e", "f", "g"])


def test_word_vocab_is_deterministic_and_saved(tmp_path, texts):
  a = tokenizer_lib.train_word_vocab(texts, 2000)
  b = tokenizer_lib.train_word_vocab(list(texts), 2000)
  assert a.fingerprint == b.fingerprint and a.pieces == b.pieces
  assert tokenizer_lib.train_word_vocab(texts, 1999).fingerprint != (
      a.fingerprint)
  assert tokenizer_lib.train_word_vocab(
      texts, 2000, lowercase=False).fingerprint != a.fingerprint
  a.save(tmp_path / "w")
  assert sorted(os.listdir(tmp_path / "w")) == ["tokenizer.json",
                                                "tokenizer.vocab"]
  assert tokenizer_lib.tokenizer_exists(tmp_path / "w")
  loaded = tokenizer_lib.load_tokenizer(tmp_path / "w")
  assert isinstance(loaded, tokenizer_lib.WordTokenizer)
  assert loaded.fingerprint == a.fingerprint and loaded.pieces == a.pieces
  meta = json.loads((tmp_path / "w" / "tokenizer.json").read_text())
  assert meta["kind"] == "word" and meta["lowercase"] is True
  text = "What is your favourite book? <eou> I like sci-fi"
  assert loaded.encode(text) == a.encode(text)
  # an edited vocabulary file no longer matches its fingerprint
  vocab = tmp_path / "w" / "tokenizer.vocab"
  vocab.write_text(vocab.read_text().replace("\nthe\n", "\nteh\n"))
  with pytest.raises(ValueError, match="does not match"):
    tokenizer_lib.load_tokenizer(tmp_path / "w")


def test_load_tokenizer_dispatches_on_what_is_saved(tok, tmp_path):
  tok.save(tmp_path / "sp")
  assert isinstance(tokenizer_lib.load_tokenizer(tmp_path / "sp"),
                    tokenizer_lib.Tokenizer)
  assert json.loads((tmp_path / "sp" / "tokenizer.json").read_text())[
      "kind"] == "sentencepiece"
  assert not tokenizer_lib.tokenizer_exists(tmp_path / "none")
