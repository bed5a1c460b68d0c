"""Embedding Average / Greedy / Extrema (hand-computed) and vector loading."""
import gzip
import json
import math
import pathlib
import struct

import numpy as np
import pytest

from vedgan import metrics
from vedgan.metrics import embedding as emb

VECS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0], "d": [-2.0, 0.5]}


def test_hand_computed_pairs():
  hyps = [["a", "b"], ["a", "d"]]
  refs = [["c"], ["b", "c"]]
  s = metrics.embedding_scores(hyps, refs, VECS)
  r2, r425 = math.sqrt(2), math.sqrt(4.25)
  # Pair 1: sums (1,1) vs (1,1); every word pair has cosine 1/sqrt(2);
  # extrema (1,1) vs (1,1).
  assert s["average"][0] == pytest.approx(1.0)
  assert s["greedy"][0] == pytest.approx(1 / r2)
  assert s["extrema"][0] == pytest.approx(1.0)
  # Pair 2: sums (-1, .5) . (1, 2) = 0.
  assert s["average"][1] == pytest.approx(0.0, abs=1e-15)
  # Greedy: a->c 1/sqrt2, d->b .5/sqrt(4.25); b->d .5/sqrt(4.25), c->a 1/sqrt2.
  g = (1 / r2 + 0.5 / r425) / 2
  assert s["greedy"][1] == pytest.approx(g)
  # Extrema: hyp dim0 max 1 vs min -2 -> -2, dim1 .5 -> (-2, .5);
  # ref: dim0 max 1 vs min 0 -> 1, dim1 1 -> (1, 1);
  # cosine (-2 + .5) / (sqrt(4.25) sqrt(2)).
  assert s["extrema"][1] == pytest.approx(-1.5 / math.sqrt(8.5))
  means = metrics.embedding_metrics(hyps, refs, VECS)
  assert means["greedy"] == pytest.approx((1 / r2 + g) / 2)
  assert metrics.embedding_average(["a", "b"], ["c"], VECS) == pytest.approx(1)
  assert metrics.embedding_greedy(["a", "d"], ["b", "c"], VECS) == pytest.approx(g)
  assert metrics.embedding_extrema(["a", "d"], ["b", "c"], VECS) == \
      pytest.approx(-1.5 / math.sqrt(8.5))


def test_extrema_tie_takes_the_minimum():
  vecs = {"p": [1.0, 1.0], "m": [-1.0, 0.0], "u": [0.0, 1.0]}
  # hyp extrema: dim0 max 1 == |min -1| -> -1; dim1 1 -> (-1, 1).
  assert metrics.embedding_extrema(["p", "m"], ["u"], vecs) == pytest.approx(
      1 / math.sqrt(2))


def test_table_form_equals_dict_form_and_ignore_ids():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(10, 4))
  hyps = [[1, 2, 3, 0], [4, 4, 5], [0, 0]]
  refs = [[3, 2, 0], [6, 7], [1, 0]]
  as_dict = {i: table[i] for i in range(10)}
  by_table = metrics.embedding_scores(hyps, refs, table, ignore=[0])
  by_dict = metrics.embedding_scores(hyps, refs, as_dict, ignore=[0])
  for m in emb.METRICS:
    np.testing.assert_allclose(by_table[m], by_dict[m], atol=1e-12)
  # Hypothesis 3 has only ignored tokens -> empty pair scoring 0.
  assert by_table["empty"].tolist() == [False, False, True]
  assert by_table["average"][2] == 0.0
  skip = metrics.embedding_metrics(hyps, refs, table, ignore=[0], empty="skip")
  assert skip["average"] == pytest.approx(np.mean(by_table["average"][:2]))
  # Integer ids also work as numpy arrays (e.g. decoder output).
  arr = metrics.embedding_scores([np.array(h) for h in hyps], refs, table,
                                 ignore=[0])
  np.testing.assert_allclose(arr["greedy"], by_table["greedy"])


def test_out_of_vocabulary_words_are_dropped_and_reported():
  r = metrics.embedding_report([["a", "zzz"], ["zzz"]], [["a"], ["b"]], VECS,
                               tokenization="whitespace")
  assert r.details["average"] == pytest.approx((1.0 + 0.0) / 2)
  assert r.details["num_empty_pairs"] == 1
  assert r.details["oov_rate"] == pytest.approx(2 / 5)
  assert r.settings["word_vectors"] == "mapping"
  assert r.settings["tokenization"] == "whitespace"
  r2 = metrics.embedding_report([["a"]], [["a"]], dict(VECS, a=[2.0, 0.0]))
  assert r2.settings["word_vectors_hash"] != r.settings["word_vectors_hash"]


def _write_text(path, header=True, opener=open):
  with opener(path, "wt", encoding="utf-8") as f:
    if header:
      f.write(f"{len(VECS)} 2\n")
    for w, v in VECS.items():
      f.write(w + " " + " ".join(repr(x) for x in v) + " \n")


@pytest.mark.parametrize("header", [True, False])
def test_load_text_formats(tmp_path, header):
  path = tmp_path / "vecs.txt"
  _write_text(path, header)
  wv = metrics.load_word_vectors(path)
  assert len(wv) == 4 and wv.dim == 2
  np.testing.assert_array_equal(wv["d"], np.float32([-2.0, 0.5]))
  gz = tmp_path / "vecs.vec.gz"
  _write_text(gz, header, opener=gzip.open)
  wv_gz = metrics.load_word_vectors(gz, vocabulary=["a", "c"])
  assert sorted(wv_gz.index) == ["a", "c"]
  assert metrics.load_word_vectors(path, limit=2).index == {"a": 0, "b": 1}
  s = metrics.embedding_metrics([["a", "d"]], [["b", "c"]], wv)
  t = metrics.embedding_metrics([["a", "d"]], [["b", "c"]], VECS)
  for m in emb.METRICS:
    assert s[m] == pytest.approx(t[m], abs=1e-6)


def test_load_word2vec_binary(tmp_path):
  path = tmp_path / "vecs.bin"
  with open(path, "wb") as f:
    f.write(f"{len(VECS)} 2\n".encode())
    for w, v in VECS.items():
      f.write(w.encode() + b" " + np.asarray(v, "<f4").tobytes() + b"\n")
  wv = metrics.load_word_vectors(path)
  assert list(wv.index) == list(VECS)
  for w, v in VECS.items():
    np.testing.assert_array_equal(wv[w], np.float32(v))


def test_fasttext_hash_is_fnv1a_32():
  # Published FNV-1a 32-bit test vectors (ASCII, where signedness is moot).
  assert emb._fasttext_hash(b"") == 0x811C9DC5
  assert emb._fasttext_hash(b"a") == 0xE40C292C
  assert emb._fasttext_hash(b"foobar") == 0xBF9CF968


def test_fasttext_subwords_of_a_short_word():
  # "<ab>" with minn=1..maxn=2: 1-grams except the boundary markers, 2-grams.
  got = emb._fasttext_subword_hashes("ab", 1, 2, "utf-8")
  want = [emb._fasttext_hash(s.encode()) for s in
          ["<a", "a", "ab", "b", "b>"]]
  assert got == want
  # Multi-byte characters stay whole: "é" is one character.
  got = emb._fasttext_subword_hashes("é", 3, 3, "utf-8")
  assert got == [emb._fasttext_hash("<é>".encode())]


def _write_fasttext(path, words, matrix, dim, bucket, minn, maxn):
  with open(path, "wb") as f:
    f.write(struct.pack("<ii", 793712314, 12))
    f.write(struct.pack("<12i", dim, 5, 5, 1, 5, 1, 2, 2, bucket, minn, maxn,
                        100))
    f.write(struct.pack("<d", 1e-4))
    f.write(struct.pack("<3i", len(words), len(words), 0))
    f.write(struct.pack("<qq", 100, -1))
    for w in words:
      f.write(w.encode() + b"\x00" + struct.pack("<qb", 10, 0))
    f.write(struct.pack("<?", False))
    f.write(struct.pack("<qq", *matrix.shape))
    f.write(matrix.astype("<f4").tobytes())
    # Output matrix (ignored by the reader).
    f.write(struct.pack("<?", False))
    f.write(struct.pack("<qq", 1, dim))
    f.write(np.zeros(dim, "<f4").tobytes())


def test_load_fasttext_model(tmp_path):
  words, dim, bucket, minn, maxn = ["</s>", "ab", "c"], 3, 7, 1, 2
  rng = np.random.default_rng(1)
  matrix = rng.normal(size=(len(words) + bucket, dim)).astype(np.float32)
  path = tmp_path / "model.bin"
  _write_fasttext(path, words, matrix, dim, bucket, minn, maxn)
  wv = metrics.load_word_vectors(path)
  assert list(wv.index) == words
  # EOS has no subwords.
  np.testing.assert_allclose(wv["</s>"], matrix[0], rtol=1e-6)
  for i, w in enumerate(words[1:], start=1):
    rows = [i] + [len(words) + h % bucket for h in
                  emb._fasttext_subword_hashes(w, minn, maxn, "utf-8")]
    np.testing.assert_allclose(wv[w], matrix[rows].mean(axis=0), rtol=1e-6)
  assert len(rows) == 4  # "c": <c, c, c> plus the word row


def test_as_word_vectors_validation():
  with pytest.raises(ValueError):
    metrics.as_word_vectors(np.zeros(3))
  with pytest.raises(ValueError):
    metrics.as_word_vectors({})
  with pytest.raises(ValueError):
    metrics.embedding_scores([["a"]], [], VECS)
  wv = metrics.as_word_vectors(np.eye(3))
  assert 2 in wv and 3 not in wv and "a" not in wv


def test_load_fasttext_model_written_by_gensim():
  # A real fastText .bin (gensim's writer, non-ASCII words, minn 2, maxn 4,
  # 50 buckets) against gensim's own word vectors; see
  # data/make_fasttext_tiny.py.
  data = pathlib.Path(__file__).parent / "data"
  with open(data / "fasttext_tiny_gensim_vectors.json", encoding="utf-8") as f:
    expected = json.load(f)
  wv = metrics.load_word_vectors(data / "fasttext_tiny_gensim.bin")
  assert sorted(wv.index) == sorted(expected)
  for word, vec in expected.items():
    np.testing.assert_allclose(wv[word], vec, rtol=1e-5, atol=1e-7)
