"""Vectorised n-gram bookkeeping shared by the BLEU and diversity metrics.

Sentences (lists of hashable tokens) are mapped to dense integer ids once; an
n-gram of order k is then identified by a dense integer built from the pair
(id of its (k-1)-gram prefix, id of its last token).  Every id is exact: no
hashing, no collisions.  All counting afterwards is numpy sorting and
``bincount`` instead of Python ``Counter`` loops.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Hashable, Sequence

import numpy as np

Sentence = Sequence[Hashable]


def as_token_list(sentence: Any) -> list:
  """Returns ``sentence`` as a Python list of tokens.

  numpy / jax arrays become lists of Python scalars so that ``5`` and
  ``np.int64(5)`` are the same token.  Strings are refused because iterating a
  string gives characters, which is almost always a bug (pass ``s.split()``).
  """
  if isinstance(sentence, (str, bytes)):
    raise TypeError(
        "a sentence must be a sequence of tokens, not a string; "
        f"got {sentence[:40]!r} (did you mean .split()?)")
  if hasattr(sentence, "tolist"):
    return list(np.asarray(sentence).tolist())
  return list(sentence)


def as_corpus(sentences: Any, name: str = "sentences") -> list[list]:
  """Returns a list of token lists; refuses a bare list of tokens."""
  if isinstance(sentences, (str, bytes)):
    raise TypeError(f"{name} must be a list of token lists, got a string")
  return [as_token_list(s) for s in sentences]


@dataclasses.dataclass(frozen=True)
class OrderCounts:
  """Per-sentence counts of the distinct n-grams of one order.

  Attributes:
    sentence: int64 [P], index of the sentence (in the concatenated corpus).
    ngram: int64 [P], dense id of the n-gram, in ``[0, num_ngrams)``.
    count: int64 [P], how often that n-gram occurs in that sentence (>= 1).
    num_ngrams: number of distinct n-grams of this order in the whole corpus.
  Rows are sorted by (sentence, ngram); each (sentence, ngram) pair is unique.
  """
  sentence: np.ndarray
  ngram: np.ndarray
  count: np.ndarray
  num_ngrams: int


@dataclasses.dataclass(frozen=True)
class NgramIndex:
  """n-gram counts of orders 1..max_n for a concatenated corpus.

  Attributes:
    lengths: int64 [S], number of tokens of each sentence.
    orders: ``orders[k - 1]`` holds the ``OrderCounts`` of k-grams.
  """
  lengths: np.ndarray
  orders: tuple[OrderCounts, ...]

  @property
  def num_sentences(self) -> int:
    return int(self.lengths.shape[0])


def encode(sentences: Sequence[Sentence]) -> tuple[np.ndarray, np.ndarray]:
  """Maps tokens to dense ids in order of first appearance.

  Returns:
    (flat_ids int64 [T], lengths int64 [S]) for T tokens in S sentences.
  """
  vocab: dict = {}
  setdefault = vocab.setdefault
  flat = [setdefault(tok, len(vocab)) for sent in sentences for tok in sent]
  lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64,
                        count=len(sentences))
  return np.asarray(flat, dtype=np.int64).reshape(-1), lengths


def build_index(sentences: Sequence[Sentence], max_n: int) -> NgramIndex:
  """Counts the n-grams of orders 1..max_n of every sentence.

  Args:
    sentences: S sentences, each a sequence of hashable tokens (already lists;
      see ``as_corpus``).
    max_n: highest n-gram order, >= 1.
  Returns:
    An ``NgramIndex``; n-gram ids of the same order are shared by all
    sentences, so n-grams of different sentences compare by id.
  """
  if max_n < 1:
    raise ValueError(f"max_n must be >= 1, got {max_n}")
  flat, lengths = encode(sentences)
  num_sent = lengths.shape[0]
  total = flat.shape[0]
  starts = np.zeros(num_sent, dtype=np.int64)
  if num_sent:
    np.cumsum(lengths[:-1], out=starts[1:])
  sent_of_pos = np.repeat(np.arange(num_sent, dtype=np.int64), lengths)
  # Tokens left in the sentence from each position (1 for the last token).
  remaining = (starts + lengths)[sent_of_pos] - np.arange(total, dtype=np.int64)
  vocab_size = int(flat.max()) + 1 if total else 1
  orders = []
  prefix_ids = flat  # ids of the k-grams starting at each valid position
  prefix_pos = np.arange(total, dtype=np.int64)
  for k in range(1, max_n + 1):
    if k == 1:
      ids, num_ids = flat, vocab_size
      pos = prefix_pos
    else:
      valid = remaining[prefix_pos] >= k
      pos = prefix_pos[valid]
      keys = prefix_ids[valid] * vocab_size + flat[pos + k - 1]
      uniq, ids = np.unique(keys, return_inverse=True)
      ids = ids.reshape(-1).astype(np.int64)
      num_ids = max(int(uniq.shape[0]), 1)
    orders.append(_count_pairs(sent_of_pos[pos], ids, num_ids))
    prefix_ids, prefix_pos = ids, pos
  return NgramIndex(lengths=lengths, orders=tuple(orders))


def _count_pairs(sentence: np.ndarray, ngram: np.ndarray,
                 num_ngrams: int) -> OrderCounts:
  keys = sentence * num_ngrams + ngram
  uniq, counts = np.unique(keys, return_counts=True)
  return OrderCounts(sentence=uniq // num_ngrams, ngram=uniq % num_ngrams,
                     count=counts.astype(np.int64), num_ngrams=num_ngrams)


def num_ngrams_per_sentence(lengths: np.ndarray, k: int) -> np.ndarray:
  """Number of k-gram occurrences of each sentence: max(0, len - k + 1)."""
  return np.maximum(lengths - k + 1, 0)


def clipped_matches(order: OrderCounts, hyp_group: np.ndarray,
                    num_hyps: int, ref_group: np.ndarray) -> np.ndarray:
  """Clipped n-gram matches of each hypothesis against its reference group.

  The first ``num_hyps`` sentences of the index are hypotheses, the rest are
  references.  Hypothesis ``i`` is matched against the references ``r`` with
  ``ref_group[r - num_hyps] == hyp_group[i]``; an n-gram counts
  ``min(count in hypothesis, max count in any one of those references)``.

  Returns:
    int64 [num_hyps], the summed clipped counts.
  """
  is_hyp = order.sentence < num_hyps
  h_sent, h_gram, h_cnt = (order.sentence[is_hyp], order.ngram[is_hyp],
                           order.count[is_hyp])
  r_sent, r_gram, r_cnt = (order.sentence[~is_hyp], order.ngram[~is_hyp],
                           order.count[~is_hyp])
  ng = np.int64(order.num_ngrams)
  r_key = ref_group[r_sent - num_hyps] * ng + r_gram
  # Max count per (group, n-gram): sort by key then count, keep the last.
  perm = np.lexsort((r_cnt, r_key))
  r_key, r_cnt = r_key[perm], r_cnt[perm]
  last = np.ones(r_key.shape[0], dtype=bool)
  if r_key.shape[0]:
    last[:-1] = r_key[1:] != r_key[:-1]
  max_key, max_cnt = r_key[last], r_cnt[last]
  h_key = hyp_group[h_sent] * ng + h_gram
  pos = np.searchsorted(max_key, h_key)
  pos_c = np.minimum(pos, max(max_key.shape[0] - 1, 0))
  if max_key.shape[0]:
    found = max_key[pos_c] == h_key
    ref_max = np.where(found, max_cnt[pos_c], 0)
  else:
    ref_max = np.zeros_like(h_cnt)
  clipped = np.minimum(h_cnt, ref_max)
  return np.bincount(h_sent, weights=clipped,
                     minlength=num_hyps).astype(np.int64)[:num_hyps]


def closest_lengths(hyp_lens: np.ndarray, hyp_group: np.ndarray,
                    ref_lens: np.ndarray, ref_group: np.ndarray) -> np.ndarray:
  """Closest reference length per hypothesis, ties going to the shorter one.

  Every group a hypothesis points to must have at least one reference.
  Returns int64 [H].
  """
  big = np.int64(max(int(hyp_lens.max(initial=0)), int(ref_lens.max(initial=0)))
                 + 1)
  ref_keys = np.unique(ref_group * big + ref_lens)
  q = hyp_group * big + hyp_lens
  idx = np.searchsorted(ref_keys, q)  # first reference key >= q
  n = ref_keys.shape[0]
  above = ref_keys[np.minimum(idx, n - 1)]
  has_above = (idx < n) & (above // big == hyp_group)
  below = ref_keys[np.maximum(idx - 1, 0)]
  has_below = (idx > 0) & (below // big == hyp_group)
  above_len, below_len = above % big, below % big
  d_above = np.where(has_above, above_len - hyp_lens, np.iinfo(np.int64).max)
  d_below = np.where(has_below, hyp_lens - below_len, np.iinfo(np.int64).max)
  if not np.all(has_above | has_below):
    raise ValueError("a hypothesis has an empty reference set")
  return np.where(d_below <= d_above, below_len, above_len).astype(np.int64)
