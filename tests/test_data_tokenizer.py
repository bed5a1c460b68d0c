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
