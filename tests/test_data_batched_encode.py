"""Batched tokenisation (issue 23, item 7): ``Tokenizer.encode_batch`` encodes every piece of
a list of texts with one multi-threaded SentencePiece call, and the ``encode_*`` functions of
:mod:`vedgan.data.encoding` encode a corpus through it, ``ENCODE_CHUNK`` items per call.
The ids, kept examples, indices, labels and skip/truncation counts are exactly those of
encoding text by text (``tokenizer.encode``), which a tokenizer without ``encode_batch``
still gets."""
import dataclasses
import os
import re

import numpy as np
import pytest
from fakes import FakeTokenizer

from vedgan.data import encoding, pipeline
from vedgan.data import tokenizer as tokenizer_lib
from vedgan.data.batch_encode import encode_segments
from vedgan.data.chatterbot_corpus.chatterbot_corpus import read_conversations
from vedgan.data.identity_tokenizer import IdentityTokenizer
from vedgan.data.inputs import Inputs

#: texts that take every branch of the symbol splitting, whitespace and unicode
EDGE_TEXTS = [
    "", " ", "\t\n", "\u3000",                       # empty / only (unicode) whitespace
    "<eou>", "<eou><eou>", " <blank> ", "<eou> <blank>",  # only symbols
    "hello <eou> there", "a<eou>b", "<eou>hi", "hi<blank>", "  spaced   out  ",
    "<eo u> <EOU> <eou", "héllo wörld", "naïve café", "日本語のテキスト <eou> 中文",
    "emoji 🙂👍 <eou> ok", "Ω≈ç√∫", "tab\tand\nnewline", "zero\u200bwidth", "x" * 300,
]


@pytest.fixture(scope="module")
def corpus():
  """The embedded chatterbot corpus's utterances (the demo config's data)."""
  return [t for _, _, turns in read_conversations() for t in turns]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def tok(request, corpus):
  return tokenizer_lib.train_sentencepiece(corpus, vocab_size=500, model_type=request.param)


class PerText:
  """``tok`` seen through ``encode`` alone: the encoders' text-by-text path."""

  def __init__(self, tok):
    self.tok = tok

  def encode(self, text):
    return self.tok.encode(text)


def _assert_same(a, b):
  """Two encoded datasets are identical: every ragged row (values and dtype), counts,
  limits, indices, labels and fields."""
  assert type(a) is type(b)
  for f in dataclasses.fields(a):
    x, y = getattr(a, f.name), getattr(b, f.name)
    if isinstance(x, list):
      assert len(x) == len(y), f.name
      for u, v in zip(x, y):
        u, v = (u, v) if isinstance(u, list) else ([u], [v])
        assert len(u) == len(v), f.name
        for p, q in zip(u, v):
          assert p.dtype == q.dtype == np.int32 and p.tolist() == q.tolist(), f.name
    elif isinstance(x, np.ndarray) or x is None:
      assert (x is None and y is None) or (x.dtype == y.dtype and x.tolist() == y.tolist())
    elif isinstance(x, dict) and f.name == "fields":
      assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    else:
      assert x == y, (f.name, x, y)


# -- Tokenizer.encode_batch -------------------------------------------------------------


def test_encode_batch_equals_encode_on_real_text(tok, corpus):
  texts = corpus + EDGE_TEXTS + [f"{a} <eou> {b}" for a, b in zip(corpus, corpus[1:])]
  expected = [tok.encode(t) for t in texts]
  assert tok.encode_batch(texts) == expected
  assert tok.encode_batch(texts, num_threads=1) == expected
  assert tok.encode_batch(texts, num_threads=3) == expected
  # hand-checked corners: nothing for blank texts, symbols are one id each
  got = dict(zip(EDGE_TEXTS, tok.encode_batch(EDGE_TEXTS)))
  assert got[""] == got[" "] == got["\t\n"] == got["\u3000"] == []
  assert got["<eou>"] == [4] and got["<eou><eou>"] == [4, 4] and got[" <blank> "] == [5]
  assert got["<eou> <blank>"] == [4, 5]
  assert got["a<eou>b"] == tok.encode("a") + [4] + tok.encode("b")
  assert tok.encode_batch([]) == [] and tok.encode_batch(["", "<eou>"]) == [[], [4]]


def test_encode_batch_makes_one_sentencepiece_call(tok, corpus, monkeypatch):
  """The speed comes from one batched call per list (not one call per text or piece)."""
  calls = []
  real = tok._sp.encode  # pylint: disable=protected-access

  def spy(inputs, **kwargs):
    calls.append((len(inputs) if isinstance(inputs, list) else None, kwargs.get("num_threads")))
    return real(inputs, **kwargs)

  monkeypatch.setattr(tok._sp, "encode", spy)  # pylint: disable=protected-access
  texts = corpus[:50] + ["a <eou> b", ""]
  tok.encode_batch(texts)
  # pieces: one per (non-blank) corpus text, two for "a <eou> b", none for ""
  assert calls == [(52, tokenizer_lib.usable_cpus())]
  calls.clear()
  tok.encode_batch(texts, num_threads=2)
  assert calls == [(52, 2)]
  calls.clear()
  assert tok.encode_batch(["", "<eou>"]) == [[], [4]] and calls == []  # nothing to encode


def test_encode_segments_hand_computed():
  """Stretches between symbols are stripped and encoded in one call; symbols are their ids."""
  calls = []

  def lengths(pieces):  # a stand-in encoder: each stretch -> [its length]
    calls.append(list(pieces))
    return [[len(p)] for p in pieces]

  symbols = {"<eou>": 4, "<b>": 5}
  symbol_re = re.compile("(<eou>|<b>)")
  texts = ["ab <eou> c", "", "<b>", "  x  y <b><eou>", " \t ", "  plain "]
  assert encode_segments(texts, symbol_re, symbols, lengths) == [
      [2, 4, 1], [], [5], [4, 5, 4], [], [5]]
  assert calls == [["ab", "c", "x  y", "plain"]]
  calls.clear()
  assert encode_segments(["<b>", " "], symbol_re, symbols, lengths) == [[5], []] and calls == []


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
  if hasattr(os, "sched_getaffinity"):
    assert tokenizer_lib.usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert tokenizer_lib.usable_cpus() == 1
    monkeypatch.delattr(os, "sched_getaffinity")
  monkeypatch.setattr(os, "cpu_count", lambda: 5)
  assert tokenizer_lib.usable_cpus() == 5
  monkeypatch.setattr(os, "cpu_count", lambda: None)
  assert tokenizer_lib.usable_cpus() == 1


# -- the corpus encoders ------------------------------------------------------------------


@pytest.fixture(params=[3, encoding.ENCODE_CHUNK], ids=["chunk3", "chunk_default"])
def chunk(request, monkeypatch):
  """Small chunks put item boundaries, skips and multi-text items across calls."""
  monkeypatch.setattr(encoding, "ENCODE_CHUNK", request.param)
  return request.param


def _pairs(corpus):
  """Real (context, response) pairs of the demo corpus, plus items every count covers."""
  pairs = [(f"{a} <eou> {b}", c) for a, b, c in zip(corpus, corpus[1:], corpus[2:])][:400]
  return pairs + [(t, "ok") for t in EDGE_TEXTS] + [("ok", t) for t in EDGE_TEXTS] + [
      (b"bad \xff", "ok"), ("ok", "\udcff"), ("ok".encode(), "fine".encode()),
      (np.str_("numpy text"), None), (" ".join(corpus[:40]), " ".join(corpus[:40]))]


@pytest.mark.parametrize("too_long", ["truncate", "skip"])
def test_encode_pairs_batched_same_as_per_text(tok, corpus, chunk, too_long):
  pairs = _pairs(corpus)
  got = pipeline.encode_pairs(pairs, tok, 12, 10, too_long=too_long)
  _assert_same(got, pipeline.encode_pairs(iter(pairs), PerText(tok), 12, 10, too_long=too_long))
  c = got.counts  # every kind of count is exercised
  assert c["pairs"] == len(pairs) and c["skipped_undecodable"] == 2 and c["skipped_empty"] >= 8
  assert c["truncated_context" if too_long == "truncate" else "skipped_too_long"] > 0


@pytest.mark.parametrize("too_long", ["truncate", "skip"])
def test_encode_sentences_and_labelled_batched_same_as_per_text(tok, corpus, chunk, too_long):
  texts = corpus[:300] + EDGE_TEXTS + [b"\xfe", "\udcff", b"bytes ok"]
  got = pipeline.encode_sentences(texts, tok, 8, too_long=too_long)
  _assert_same(got, pipeline.encode_sentences(iter(texts), PerText(tok), 8, too_long=too_long))
  assert got.counts["skipped_undecodable"] == 2 and got.counts["skipped_empty"] >= 4
  labels = [i % 4 if i % 7 else ("bad", None, 1.5, True)[i % 4] for i in range(len(texts))]
  got = pipeline.encode_labelled(texts, labels, tok, 8, too_long=too_long)
  _assert_same(got, pipeline.encode_labelled(texts, labels, PerText(tok), 8, too_long=too_long))
  assert got.counts["skipped_bad_label"] == sum(1 for i in range(len(texts)) if i % 7 == 0)


def test_encode_dialogues_batched_same_as_per_text(tok, corpus, chunk):
  examples = [(corpus[i:i + i % 5], corpus[i + 5]) for i in range(200)]
  examples += [(EDGE_TEXTS[i:i + 3], t) for i, t in enumerate(EDGE_TEXTS)]
  examples += [("a string history", "ok"), ([b"\xff"], "ok"), (["ok"], b"\xff"), ([], "ok")]
  labels = [i % 3 if i % 11 else "x" for i in range(len(examples))]
  for kwargs in ({}, {"labels": labels}, {"too_long": "skip"}):
    got = pipeline.encode_dialogues(examples, tok, 3, 6, 8, **kwargs)
    _assert_same(got, pipeline.encode_dialogues(examples, PerText(tok), 3, 6, 8, **kwargs))
    assert got.counts["skipped_undecodable"] == (2 if "labels" not in kwargs else
                                                 sum(labels[k] != "x" for k in (-3, -2)))


def test_counts_across_chunks_hand_computed(monkeypatch):
  """Skips at chunk edges, counted by hand: a word tokenizer over {a, b}, chunks of 2."""
  monkeypatch.setattr(encoding, "ENCODE_CHUNK", 2)
  word = FakeTokenizer(vocab=["a", "b"])
  pairs = [("a", "b"), (b"\xff", "a"), ("", "a"), ("a b a", "b b b"), ("b", "a <eou> b")]
  enc = pipeline.encode_pairs(pairs, word, max_context_len=2, max_response_len=3)
  assert [r.tolist() for r in enc.context] == [[6], [7, 6], [7]]
  assert [r.tolist() for r in enc.response] == [[7], [7, 7], [6, 4]]
  assert enc.index.tolist() == [0, 3, 4]
  assert enc.counts == dict(pairs=5, examples=3, skipped_empty=1, skipped_undecodable=1,
                            skipped_too_long=0, truncated_context=1, truncated_response=2,
                            context_tokens=4, response_tokens=5)
  sents = pipeline.encode_labelled(["a", "b", b"\xff", "", "a b"], [1, "x", 2, 3, 4.0], word, 3)
  assert [r.tolist() for r in sents.tokens] == [[6], [6, 7]] and sents.labels.tolist() == [1, 4]
  assert sents.index.tolist() == [0, 4]
  assert (sents.counts["skipped_bad_label"], sents.counts["skipped_undecodable"],
          sents.counts["skipped_empty"]) == (1, 1, 1)
  examples = [(["a", "b a b", ""], "b"), ("a", b"\xff"), (["", " "], "a"), (["b", "a"], "a b a")]
  dia = pipeline.encode_dialogues(examples, word, max_turns=2, max_turn_len=2, max_response_len=3)
  assert [[t.tolist() for t in turns] for turns in dia.turns] == [[[6], [7, 6]], [[7], [6]]]
  assert [r.tolist() for r in dia.response] == [[7], [6, 7]] and dia.index.tolist() == [0, 3]
  assert dia.counts == dict(dialogues=4, examples=2, skipped_empty=1, skipped_undecodable=1,
                            skipped_too_long=0, skipped_bad_label=0, dropped_turns=1,
                            truncated_turn=1, truncated_response=1, turn_tokens=5,
                            response_tokens=3)


class Counting(FakeTokenizer):
  """Records how many texts each ``encode_batch`` call got."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.calls = []

  def encode_batch(self, texts):
    self.calls.append(len(texts))
    return super().encode_batch(texts)


def test_encoders_call_encode_batch_once_per_chunk(monkeypatch):
  pairs = [("a", "b")] * 9 + [(b"\xff", "a")]
  tok = Counting(vocab=["a", "b"])
  assert len(pipeline.encode_pairs(pairs, tok, 4, 4)) == 9 and tok.calls == [20 - 2]
  monkeypatch.setattr(encoding, "ENCODE_CHUNK", 4)
  tok.calls.clear()
  pipeline.encode_pairs(pairs, tok, 4, 4)
  assert tok.calls == [8, 8, 2]  # 4 + 4 + 2 pairs, the last one undecodable
  tok.calls.clear()
  pipeline.encode_dialogues([(["a", "b"], "a")] * 5, tok, 2, 4, 4)
  assert tok.calls == [12, 3]
  tok.calls.clear()
  pipeline.encode_sentences([b"\xff"] * 5 + ["a"], tok, 4)  # nothing to encode: no call
  assert tok.calls == [1]


def test_identity_and_encode_only_tokenizers_keep_working(chunk):
  ident = IdentityTokenizer(20)
  pairs = [("1 2 3", "4"), ("", "5"), ("13", "0 1 2 3 4 5")]
  got = pipeline.encode_pairs(pairs, ident, 4, 4)
  assert [r.tolist() for r in got.context] == [[7, 8, 9], [19]]
  assert [r.tolist() for r in got.response] == [[10], [6, 7, 8]]
  _assert_same(got, pipeline.encode_pairs(pairs, PerText(ident), 4, 4))
  with pytest.raises(ValueError, match="not a token id"):  # the tokenizer's own error
    pipeline.encode_sentences(["1", "99"], ident, 4)


def test_batch_encoder_checks_the_number_of_results():
  class Short(FakeTokenizer):
    def encode_batch(self, texts):
      return [self.encode(t) for t in texts][:-1]

  with pytest.raises(ValueError, match="returned 1 results for 2 texts"):
    pipeline.encode_pairs([("a", "b")], Short(vocab=["a", "b"]), 4, 4)
  assert encoding.batch_encoder(PerText(FakeTokenizer(vocab=["a"])))(["a", "b a"]) == [
      [6], [1, 6]]


def test_encode_contexts_batched(tok, corpus):
  class Config:  # the one field encode_contexts reads
    class data:  # pylint: disable=invalid-name
      max_context_len = 5

  contexts = corpus[:20] + ["", "<eou>", "a b c d e f g h i j k"]
  out = Inputs(tok, {}, {}, [], {}).encode_contexts(Config, contexts)
  assert out.shape == (len(contexts), 5) and out.dtype == np.int32
  for row, text in zip(out, contexts):
    ids = tok.encode(text)[-5:]
    assert row.tolist() == ids + [0] * (5 - len(ids))


def test_paper_encoders_batched_same_as_per_text(tok, corpus):
  """HappyBot's fixed-width texts and the collaborative VED's turn histories (both now one
  batched call) equal arrays built here text by text with ``tok.encode``."""
  from vedgan.papers.collaborative_ved import data as cved_data  # pylint: disable=import-outside-toplevel
  from vedgan.papers.happybot import data as happy_data  # pylint: disable=import-outside-toplevel
  texts = corpus[:30] + ["", "<eou>", "a b c d e f g h i j k"]
  for keep_last in (True, False):
    out = happy_data._fixed(tok, texts, 6, keep_last)  # pylint: disable=protected-access
    for row, text in zip(out, texts):
      ids = tok.encode(text)
      ids = ids[-6:] if keep_last else ids[:6]
      assert row.tolist() == ids + [0] * (6 - len(ids))

  class Config:  # the fields encode_histories reads
    class data:  # pylint: disable=invalid-name
      max_turns, max_turn_len = 3, 4

  histories = [corpus[i:i + n] for i, n in zip(range(0, 60, 6), (1, 2, 3, 4, 5, 1, 2, 3, 4, 5))]
  histories += [["", ""], ["hi", "", "<eou>"]]
  out = cved_data.encode_histories(tok, Config, histories)
  for turns, num, history in zip(out["turns"], out["num_turns"], histories):
    kept = [ids[:4] for ids in map(tok.encode, history) if ids][-3:] or [[tok.unk_id]]
    assert num == len(kept)
    expected = np.zeros((3, 4), np.int32)
    for j, ids in enumerate(kept):
      expected[j, :len(ids)] = ids
    np.testing.assert_array_equal(turns, expected)
  assert out["num_turns"].tolist()[:5] == [1, 2, 3, 3, 3]
