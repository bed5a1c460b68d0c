"""Embedding-based similarity metrics (Liu et al. 2016, "How NOT to evaluate
your dialogue system").  The collaborative VED paper reports them (Table 2).

For a hypothesis h and its reference r, with ``e_w`` the vector of word w and
``cos(u, v) = u.v / (|u| |v|)`` (defined as 0 if either vector is zero):

* **Average**: ``cos(sum_{w in h} e_w, sum_{w in r} e_w)`` (the same as the
  cosine of the mean or of the normalised mean vectors).
* **Greedy**: ``G(h, r) = mean_{w in h} max_{v in r} cos(e_w, e_v)``;
  score ``(G(h, r) + G(r, h)) / 2``.
* **Extrema**: per dimension d, ``x_d = max_w e_wd`` if
  ``max_w e_wd > |min_w e_wd|`` else ``min_w e_wd`` (the value of largest
  magnitude, ties to the minimum); score ``cos(x_h, x_r)``.

Tokens without a vector (out of vocabulary, or listed in ``ignore``) are
dropped.  A pair in which one side has no vector left scores 0 on all three
metrics (``empty="zero"``, the default) or is left out of the mean
(``empty="skip"``); the report records how many such pairs there were.

Word vectors come from

* a ``Mapping`` token -> vector (e.g. loaded with :func:`load_word_vectors`
  from a word2vec/GloVe/fastText ``.vec`` text file, a word2vec binary file or
  a fastText ``.bin`` model), or
* an embedding table ``[V, D]`` (e.g. the model's own input embedding
  matrix), in which case tokens are integer ids indexing its rows, or
* a :class:`WordVectors`.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import struct
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from vedgan.metrics import _ngrams
from vedgan.metrics.result import IMPLEMENTATION_VERSION, MetricResult, corpus_hash

Corpus = Sequence[Sequence[Any]]
METRICS = ("average", "greedy", "extrema")


@dataclasses.dataclass(frozen=True)
class WordVectors:
  """Word vectors: a float table and the row of each known token.

  Attributes:
    table: float [V, D].
    index: token -> row of ``table``; ``None`` means tokens are integer ids
      ``0 <= id < V`` used directly as rows.
    source: free-text description recorded in metric settings.
  """
  table: np.ndarray
  index: Mapping[Hashable, int] | None = None
  source: str = "unspecified"

  @property
  def dim(self) -> int:
    return int(self.table.shape[1])

  def __len__(self) -> int:
    return int(self.table.shape[0])

  def __contains__(self, token: Hashable) -> bool:
    return self.row(token) is not None

  def __getitem__(self, token: Hashable) -> np.ndarray:
    row = self.row(token)
    if row is None:
      raise KeyError(token)
    return self.table[row]

  def row(self, token: Hashable) -> int | None:
    """Row of ``token`` or None if it has no vector."""
    if self.index is not None:
      return self.index.get(token)
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
      t = int(token)
      return t if 0 <= t < self.table.shape[0] else None
    return None

  def lookup(self, sentence: Sequence[Hashable],
             ignore: frozenset = frozenset()) -> np.ndarray:
    """float64 [L', D]: vectors of the tokens that have one, in order."""
    rows = [r for r in (self.row(t) for t in sentence if t not in ignore)
            if r is not None]
    return np.asarray(self.table[rows], dtype=np.float64).reshape(
        len(rows), self.table.shape[1])

  def fingerprint(self) -> str:
    """Short hash of the table (and vocabulary) for metric settings."""
    import hashlib
    h = hashlib.sha256(np.ascontiguousarray(self.table, np.float32).tobytes())
    if self.index is not None:
      for tok, row in sorted(((repr(k), v) for k, v in self.index.items()),
                             key=lambda kv: kv[1]):
        h.update(f"{row}:{tok}\n".encode("utf-8"))
    return h.hexdigest()[:16]


def as_word_vectors(embeddings: Any) -> WordVectors:
  """Accepts a WordVectors, a Mapping token->vector or a [V, D] table."""
  if isinstance(embeddings, WordVectors):
    return embeddings
  if isinstance(embeddings, Mapping):
    tokens = list(embeddings)
    if not tokens:
      raise ValueError("empty word-vector mapping")
    table = np.stack([np.asarray(embeddings[t], np.float64).reshape(-1)
                      for t in tokens])
    return WordVectors(table, {t: i for i, t in enumerate(tokens)},
                       source="mapping")
  table = np.asarray(embeddings)
  if table.ndim != 2:
    raise ValueError(
        f"embedding table must be [vocab, dim], got shape {table.shape}")
  return WordVectors(table, None, source="table")


# --------------------------------------------------------------------------
# Loading word2vec / GloVe / fastText files
# --------------------------------------------------------------------------

_FASTTEXT_MAGIC = 793712314


def _open(path: str) -> io.BufferedIOBase:
  return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def load_word_vectors(path: str | os.PathLike, binary: bool | None = None,
                      limit: int | None = None,
                      vocabulary: Iterable[Hashable] | None = None,
                      encoding: str = "utf-8") -> WordVectors:
  """Reads word vectors from disk.

  Formats (``.gz`` compressed files are read transparently):

  * word2vec / fastText ``.vec`` / GloVe **text**: one ``word v1 ... vD`` line
    per word, optionally preceded by a ``count dim`` header line;
  * word2vec **binary** (``binary=True`` or a ``.bin`` name): a ``count dim``
    header line, then per word ``word<space>`` and D little-endian float32;
  * fastText **model** ``.bin`` (recognised by its magic number): the
    vectors of the in-vocabulary words, each the mean of its own input row
    and its character n-gram rows, as fastText's ``get_word_vector``
    computes them (non-quantised models only).

  Args:
    path: file name.
    binary: force binary (True) or text (False); None guesses from the name
      and the fastText magic number.
    limit: read at most this many words (files are usually sorted by
      frequency).
    vocabulary: if given, keep only these tokens (saves memory).
    encoding: text encoding of the words.
  Returns:
    ``WordVectors`` with float32 table; the first occurrence of a word wins.
  """
  path = os.fspath(path)
  with _open(path) as f:
    head = f.read(4)
  if len(head) == 4 and struct.unpack("<i", head)[0] == _FASTTEXT_MAGIC:
    words, table = _read_fasttext_model(path, encoding)
  else:
    if binary is None:
      binary = path.endswith(".bin") or path.endswith(".bin.gz")
    reader = _read_word2vec_binary if binary else _read_text_vectors
    words, table = reader(path, limit, encoding)
  if limit is not None:
    words, table = words[:limit], table[:limit]
  keep = None if vocabulary is None else set(vocabulary)
  index: dict[Hashable, int] = {}
  rows = []
  for i, w in enumerate(words):
    if w in index or (keep is not None and w not in keep):
      continue
    index[w] = len(rows)
    rows.append(i)
  table = np.asarray(table, np.float32)[rows].reshape(len(rows), table.shape[1])
  return WordVectors(table, index, source=os.path.basename(path))


def _read_text_vectors(path: str, limit: int | None, encoding: str):
  words, vecs, dim = [], [], None
  with _open(path) as f:
    for line_no, raw in enumerate(f):
      parts = raw.decode(encoding).rstrip("\r\n").rstrip(" ").split(" ")
      if line_no == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
        dim = int(parts[1])
        continue
      if not parts or parts == [""]:
        continue
      if dim is None:
        dim = len(parts) - 1
      if len(parts) != dim + 1:
        raise ValueError(f"{path}:{line_no + 1}: expected a word and {dim} "
                         f"numbers, got {len(parts)} fields")
      words.append(parts[0])
      vecs.append(np.asarray(parts[1:], dtype=np.float32))
      if limit is not None and len(words) >= limit:
        break
  if dim is None:
    raise ValueError(f"{path}: no vectors found")
  return words, np.stack(vecs) if vecs else np.zeros((0, dim), np.float32)


def _read_word2vec_binary(path: str, limit: int | None, encoding: str):
  with _open(path) as f:
    header = f.readline().split()
    count, dim = int(header[0]), int(header[1])
    if limit is not None:
      count = min(count, limit)
    words, table = [], np.zeros((count, dim), np.float32)
    nbytes = 4 * dim
    for i in range(count):
      chars = bytearray()
      while True:
        c = f.read(1)
        if c == b" " or c == b"":
          break
        if c != b"\n":  # the newline ending the previous vector
          chars += c
      words.append(chars.decode(encoding, errors="replace"))
      buf = f.read(nbytes)
      if len(buf) != nbytes:
        raise ValueError(f"{path}: truncated at word {i}")
      table[i] = np.frombuffer(buf, dtype="<f4")
  return words, table


def _fasttext_hash(data: bytes) -> int:
  """fastText's 32-bit FNV-1a over bytes taken as *signed* chars."""
  h = 2166136261
  for b in data:
    h ^= (b - 256 if b > 127 else b) & 0xFFFFFFFF
    h = (h * 16777619) & 0xFFFFFFFF
  return h


def _fasttext_subword_hashes(word: str, minn: int, maxn: int,
                             encoding: str) -> list[int]:
  """Hashes of the character n-grams (minn..maxn) of ``<word>``."""
  data = ("<" + word + ">").encode(encoding)
  out = []
  size = len(data)
  for i in range(size):
    if (data[i] & 0xC0) == 0x80:  # UTF-8 continuation byte
      continue
    ngram = bytearray()
    j, n = i, 1
    while j < size and n <= maxn:
      ngram.append(data[j])
      j += 1
      while j < size and (data[j] & 0xC0) == 0x80:
        ngram.append(data[j])
        j += 1
      if n >= minn and not (n == 1 and (i == 0 or j == size)):
        out.append(_fasttext_hash(bytes(ngram)))
      n += 1
  return out


def _read_fasttext_model(path: str, encoding: str):
  """In-vocabulary word vectors of a (non-quantised) fastText ``.bin``."""
  with _open(path) as f:
    data = f.read()
  off = 0

  def take(fmt):
    nonlocal off
    vals = struct.unpack_from("<" + fmt, data, off)
    off += struct.calcsize("<" + fmt)
    return vals

  magic, version = take("ii")
  if magic != _FASTTEXT_MAGIC:
    raise ValueError(f"{path}: not a fastText model")
  # Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn
  # lrUpdateRate (int32 each) and t (float64).
  (dim, _ws, _epoch, _min_count, _neg, _word_ngrams, _loss, _model, bucket,
   minn, maxn, _lr_update) = take("12i")
  take("d")
  size, nwords, _nlabels = take("3i")
  take("q")  # ntokens
  prune_size, = take("q")
  words = []
  for _ in range(size):
    end = data.index(b"\x00", off)
    word = data[off:end].decode(encoding, errors="replace")
    off = end + 1
    _count, entry_type = take("qb")
    if entry_type == 0:
      words.append(word)
  if prune_size > 0:
    raise ValueError(f"{path}: pruned (quantised) fastText models are not "
                     "supported")
  # prune_size is -1 for ordinary models.
  quant, = take("?")
  if quant:
    raise ValueError(f"{path}: quantised fastText models are not supported")
  rows, cols = take("qq")
  if cols != dim:
    raise ValueError(f"{path}: matrix width {cols} != dim {dim}")
  matrix = np.frombuffer(data, dtype="<f4", count=rows * cols,
                         offset=off).reshape(rows, cols)
  words = words[:nwords]
  table = np.zeros((len(words), dim), np.float32)
  # pruneidx_size == 0 means every character n-gram was pruned away.
  use_subwords = maxn > 0 and bucket > 0 and prune_size != 0
  for i, w in enumerate(words):
    ids = [i]
    if use_subwords and w != "</s>":  # fastText gives EOS no subwords
      ids += [nwords + h % bucket
              for h in _fasttext_subword_hashes(w, minn, maxn, encoding)]
    table[i] = matrix[ids].astype(np.float64).mean(axis=0)
  return words, table


# --------------------------------------------------------------------------
# The metrics
# --------------------------------------------------------------------------


def _cos(u: np.ndarray, v: np.ndarray) -> float:
  nu, nv = np.linalg.norm(u), np.linalg.norm(v)
  if nu == 0.0 or nv == 0.0:
    return 0.0
  return float(np.dot(u, v) / (nu * nv))


def _average(h: np.ndarray, r: np.ndarray) -> float:
  return _cos(h.sum(axis=0), r.sum(axis=0))


def _greedy_one_way(a: np.ndarray, b: np.ndarray) -> float:
  na = np.linalg.norm(a, axis=1, keepdims=True)
  nb = np.linalg.norm(b, axis=1, keepdims=True)
  an = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
  bn = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
  return float(np.mean(np.max(an @ bn.T, axis=1)))


def _greedy(h: np.ndarray, r: np.ndarray) -> float:
  return (_greedy_one_way(h, r) + _greedy_one_way(r, h)) / 2


def _extrema_vector(x: np.ndarray) -> np.ndarray:
  hi, lo = x.max(axis=0), x.min(axis=0)
  return np.where(hi > np.abs(lo), hi, lo)


def _extrema(h: np.ndarray, r: np.ndarray) -> float:
  return _cos(_extrema_vector(h), _extrema_vector(r))


_FUNCS = {"average": _average, "greedy": _greedy, "extrema": _extrema}


def embedding_scores(hypotheses: Corpus, references: Corpus, embeddings: Any,
                     ignore: Iterable[Hashable] = (), empty: str = "zero"
                     ) -> dict[str, np.ndarray]:
  """Per-pair Average / Greedy / Extrema cosine similarities.

  Args:
    hypotheses: N token lists.
    references: N token lists, ``references[i]`` paired with hypothesis i.
    embeddings: WordVectors, Mapping token -> [D] vector, or [V, D] table
      (tokens are then integer ids).
    ignore: tokens to drop before lookup (e.g. pad / bos / eos ids).
    empty: "zero" -> a pair with an empty side scores 0; "skip" -> NaN (and
      :func:`embedding_metrics` leaves it out of the mean).
  Returns:
    dict metric -> float64 [N] (metric in "average", "greedy", "extrema"),
    plus "empty" -> bool [N] marking pairs with a side without vectors.
  """
  if empty not in ("zero", "skip"):
    raise ValueError("empty must be 'zero' or 'skip'")
  wv = as_word_vectors(embeddings)
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs = _ngrams.as_corpus(references, "references")
  if len(hyps) != len(refs):
    raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
  ignore = frozenset(ignore)
  out = {m: np.zeros(len(hyps), np.float64) for m in METRICS}
  is_empty = np.zeros(len(hyps), bool)
  for i, (h, r) in enumerate(zip(hyps, refs)):
    hv, rv = wv.lookup(h, ignore), wv.lookup(r, ignore)
    if hv.shape[0] == 0 or rv.shape[0] == 0:
      is_empty[i] = True
      for m in METRICS:
        out[m][i] = 0.0 if empty == "zero" else np.nan
      continue
    for m in METRICS:
      out[m][i] = _FUNCS[m](hv, rv)
  out["empty"] = is_empty
  return out


def embedding_metrics(hypotheses: Corpus, references: Corpus, embeddings: Any,
                      ignore: Iterable[Hashable] = (), empty: str = "zero"
                      ) -> dict[str, float]:
  """Mean Average / Greedy / Extrema over the pairs (see module docstring).

  Returns:
    dict with keys "average", "greedy", "extrema" (floats in [-1, 1]; 0.0 if
    no pair is counted).
  """
  scores = embedding_scores(hypotheses, references, embeddings, ignore, empty)
  keep = ~scores["empty"] if empty == "skip" else np.ones_like(scores["empty"])
  return {m: float(np.mean(scores[m][keep])) if keep.any() else 0.0
          for m in METRICS}


def embedding_average(hypothesis: Sequence[Any], reference: Sequence[Any],
                      embeddings: Any) -> float:
  """Embedding Average of one pair (0.0 if a side has no vector)."""
  return float(embedding_scores([hypothesis], [reference],
                                embeddings)["average"][0])


def embedding_greedy(hypothesis: Sequence[Any], reference: Sequence[Any],
                     embeddings: Any) -> float:
  """Greedy Matching of one pair (0.0 if a side has no vector)."""
  return float(embedding_scores([hypothesis], [reference],
                                embeddings)["greedy"][0])


def embedding_extrema(hypothesis: Sequence[Any], reference: Sequence[Any],
                      embeddings: Any) -> float:
  """Vector Extrema of one pair (0.0 if a side has no vector)."""
  return float(embedding_scores([hypothesis], [reference],
                                embeddings)["extrema"][0])


def embedding_report(hypotheses: Corpus, references: Corpus, embeddings: Any,
                     ignore: Iterable[Hashable] = (), empty: str = "zero",
                     tokenization: str = "pre-tokenized") -> MetricResult:
  """All three metrics with settings.

  The value is the Average metric; ``details`` holds "average", "greedy",
  "extrema", the number of empty pairs and the out-of-vocabulary rate.
  """
  wv = as_word_vectors(embeddings)
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs = _ngrams.as_corpus(references, "references")
  ignore_set = frozenset(ignore)
  scores = embedding_scores(hyps, refs, wv, ignore_set, empty)
  keep = ~scores["empty"] if empty == "skip" else np.ones_like(scores["empty"])
  means = {m: float(np.mean(scores[m][keep])) if keep.any() else 0.0
           for m in METRICS}
  tokens = [t for s in hyps + refs for t in s if t not in ignore_set]
  oov = sum(1 for t in tokens if wv.row(t) is None)
  return MetricResult(
      name="embedding", value=means["average"],
      settings={"metric": "embedding-liu2016", "empty": empty,
                "ignore": sorted(map(repr, ignore_set)),
                "word_vectors": wv.source,
                "word_vectors_hash": wv.fingerprint(),
                "tokenization": tokenization, "num_pairs": len(hyps),
                "reference_hash": corpus_hash(refs, ordered=True),
                "implementation": IMPLEMENTATION_VERSION},
      details=dict(means, num_empty_pairs=int(scores["empty"].sum()),
                   oov_rate=oov / len(tokens) if tokens else 0.0,
                   hypotheses_hash=corpus_hash(hyps)))
