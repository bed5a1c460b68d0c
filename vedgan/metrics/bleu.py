"""BLEU in the two protocols text-generation papers report, and Self-BLEU.

Three definitions, all on pre-tokenised input (lists of hashable tokens):

* :func:`bleu` -- the Texygen protocol used by the language-GAN papers: for
  each hypothesis, NLTK's ``sentence_bleu(references, hypothesis,
  weights=(1/n,)*n, smoothing_function=SmoothingFunction().method1)`` against
  the *whole* reference set, then the arithmetic mean over hypotheses.
* :func:`self_bleu` -- the same sentence score of every sentence against all
  the *other* sentences (exactly one copy of itself removed; duplicates of it
  stay in the reference set), averaged.  Nothing is cached between calls.
* :func:`corpus_bleu` -- Papineni et al.'s corpus BLEU as sacrebleu computes
  it (``sacrebleu.metrics.BLEU(tokenize="none")`` on space-joined tokens):
  clipped n-gram counts and lengths summed over the corpus first, then one
  geometric mean; smoothing ``exp`` by default.

All scores are on the 0..1 scale (sacrebleu prints 0..100: multiply by 100).

Definition of the sentence score used by :func:`bleu` / :func:`self_bleu` /
:func:`sentence_bleu` (hypothesis h with |h| tokens, reference set R):

* ``m_k`` = sum over distinct k-grams g of h of
  ``min(count_h(g), max_{r in R} count_r(g))``; ``d_k = max(1, |h| - k + 1)``.
* if ``m_1 == 0`` (this includes the empty hypothesis) the score is 0.
* ``p_k = m_k / d_k`` if ``m_k > 0`` else ``epsilon / d_k`` (method1,
  epsilon = 0.1); orders longer than the hypothesis thus get ``epsilon / 1``.
* ``r`` = the reference length closest to |h| (ties: the shorter);
  ``BP = 1`` if ``|h| > r``, else ``exp(1 - r / |h|)``.
* score ``= BP * exp(fsum_k (1/n) * log p_k)``.

The n-gram counting is vectorised (dense integer n-gram ids, sorting and
``bincount``); only the last step, O(hypotheses * n) scalar operations, is a
Python loop so that it uses the same floating-point operations as NLTK.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from vedgan.metrics import _ngrams
from vedgan.metrics.result import IMPLEMENTATION_VERSION, MetricResult, corpus_hash

Corpus = Sequence[Sequence[Any]]

_TEXYGEN_SMOOTHING = "nltk-method1"
SACREBLEU_SMOOTHING = ("exp", "floor", "add-k", "none")
_SACREBLEU_SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


def _check_max_n(max_n: int) -> int:
  if int(max_n) != max_n or max_n < 1:
    raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
  return int(max_n)


# --------------------------------------------------------------------------
# Shared statistics
# --------------------------------------------------------------------------


def _match_statistics(hypotheses: list[list], references: list[list],
                      hyp_group: np.ndarray, ref_group: np.ndarray,
                      max_n: int):
  """Clipped matches [H, max_n], hypothesis lengths [H], closest ref lens [H]."""
  num_hyps = len(hypotheses)
  index = _ngrams.build_index(list(hypotheses) + list(references), max_n)
  matches = np.stack([
      _ngrams.clipped_matches(order, hyp_group, num_hyps, ref_group)
      for order in index.orders], axis=1) if num_hyps else np.zeros(
          (0, max_n), np.int64)
  hyp_lens = index.lengths[:num_hyps]
  ref_lens = index.lengths[num_hyps:]
  closest = (_ngrams.closest_lengths(hyp_lens, hyp_group, ref_lens, ref_group)
             if num_hyps else np.zeros(0, np.int64))
  return matches.reshape(num_hyps, max_n), hyp_lens, closest


def _sentence_scores(matches: np.ndarray, hyp_lens: np.ndarray,
                     ref_lens: np.ndarray, n: int, epsilon: float) -> list[float]:
  """NLTK sentence_bleu with weights (1/n,)*n and method1, per hypothesis.

  Args:
    matches: int [H, >= n] clipped match counts per order.
    hyp_lens, ref_lens: int [H] hypothesis and closest reference lengths.
  """
  w = 1 / n
  log, fsum, exp = math.log, math.fsum, math.exp
  out = []
  for m, h, r in zip(matches[:, :n].tolist(), hyp_lens.tolist(),
                     ref_lens.tolist()):
    if m[0] == 0:
      out.append(0.0)
      continue
    terms = []
    for k in range(n):
      d = h - k if h - k > 1 else 1  # max(1, number of (k+1)-grams)
      p = m[k] / d if m[k] else (0 + epsilon) / d
      terms.append(w * log(p))
    bp = 1.0 if h > r else exp(1 - r / h)
    out.append(bp * exp(fsum(terms)))
  return out


def _mean(scores: list[float]) -> float:
  return sum(scores) / len(scores) if scores else 0.0


def _settings(metric: str, n: int, epsilon: float, tokenization: str,
              **extra: Any) -> dict[str, Any]:
  s = {"metric": metric, "max_n": n, "weights": [1 / n] * n,
       "smoothing": _TEXYGEN_SMOOTHING, "epsilon": epsilon,
       "tokenization": tokenization,
       "implementation": IMPLEMENTATION_VERSION}
  s.update(extra)
  return s


# --------------------------------------------------------------------------
# Texygen BLEU
# --------------------------------------------------------------------------


def bleu_scores(hypotheses: Corpus, references: Corpus, max_n: int = 4,
                epsilon: float = 0.1) -> np.ndarray:
  """Per-hypothesis Texygen BLEU-n against one shared reference set.

  Args:
    hypotheses: H token lists.
    references: R >= 1 token lists, the reference set of every hypothesis.
    max_n: n, the BLEU order (weights ``(1/n,)*n``).
    epsilon: method1 smoothing constant (NLTK's default 0.1).
  Returns:
    float64 [H]; entry i equals ``nltk.translate.bleu_score.sentence_bleu(
    references, hypotheses[i], (1/n,)*n, SmoothingFunction().method1)``.
  """
  n = _check_max_n(max_n)
  return _bleu_scores_orders(hypotheses, references, (n,), epsilon)[n]


def _bleu_scores_orders(hypotheses: Corpus, references: Corpus,
                        orders: Sequence[int], epsilon: float = 0.1
                        ) -> dict[int, np.ndarray]:
  """bleu_scores for several n at once (n-grams counted once)."""
  orders = [_check_max_n(n) for n in orders]
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs = _ngrams.as_corpus(references, "references")
  if not refs:
    raise ValueError("the reference set is empty")
  m, hl, rl = _match_statistics(hyps, refs, np.zeros(len(hyps), np.int64),
                                np.zeros(len(refs), np.int64), max(orders))
  return {n: np.asarray(_sentence_scores(m, hl, rl, n, epsilon), np.float64)
          for n in orders}


def bleu(hypotheses: Corpus, references: Corpus, max_n: int = 4,
         epsilon: float = 0.1) -> float:
  """Texygen-protocol BLEU-n: mean sentence BLEU against the whole set.

  ``mean_i sentence_bleu(references, hypotheses[i], (1/n,)*n, method1)`` with
  NLTK's definitions (see the module docstring).  0.0 for no hypotheses.

  Args:
    hypotheses: H token lists (e.g. generated sentences).
    references: R >= 1 token lists (e.g. the test set).
    max_n: n of BLEU-n.
    epsilon: method1 smoothing constant.
  Returns:
    float in [0, 1].

  >>> bleu([["a", "cat"]], [["a", "cat"], ["a", "dog"]], max_n=2)
  1.0
  """
  return _mean(bleu_scores(hypotheses, references, max_n, epsilon).tolist())


def bleu_report(hypotheses: Corpus, references: Corpus, max_n: int = 4,
                epsilon: float = 0.1, tokenization: str = "pre-tokenized"
                ) -> MetricResult:
  """:func:`bleu` with its settings; ``details['scores']`` is per hypothesis.

  Args:
    tokenization: free-text label of how the tokens were produced (e.g.
      ``"word, lowercased"``), recorded in the settings.
  """
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs = _ngrams.as_corpus(references, "references")
  scores = bleu_scores(hyps, refs, max_n, epsilon)
  return MetricResult(
      name="bleu", value=_mean(scores.tolist()),
      settings=_settings("bleu-texygen", int(max_n), epsilon, tokenization,
                         protocol="each hypothesis vs the whole reference set",
                         num_hypotheses=len(hyps), num_references=len(refs),
                         reference_hash=corpus_hash(refs, ordered=False)),
      details={"hypotheses_hash": corpus_hash(hyps), "scores": scores})


def sentence_bleu(hypotheses: Corpus,
                  references_per_hypothesis: Sequence[Corpus],
                  max_n: int = 4, epsilon: float = 0.1) -> np.ndarray:
  """NLTK sentence BLEU of each hypothesis against its *own* references.

  Multi-reference form of :func:`bleu_scores`.

  Args:
    hypotheses: H token lists.
    references_per_hypothesis: H lists, each of >= 1 reference token lists.
    max_n, epsilon: as in :func:`bleu`.
  Returns:
    float64 [H]; entry i equals NLTK ``sentence_bleu(
    references_per_hypothesis[i], hypotheses[i], (1/n,)*n, method1)``.
  """
  n = _check_max_n(max_n)
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs, group = _flatten_groups(references_per_hypothesis, len(hyps))
  m, hl, rl = _match_statistics(hyps, refs, np.arange(len(hyps), dtype=np.int64),
                                group, n)
  return np.asarray(_sentence_scores(m, hl, rl, n, epsilon), np.float64)


def _flatten_groups(references_per_hypothesis: Sequence[Corpus],
                    num_hyps: int) -> tuple[list[list], np.ndarray]:
  if len(references_per_hypothesis) != num_hyps:
    raise ValueError(
        f"{num_hyps} hypotheses but {len(references_per_hypothesis)} "
        "reference lists")
  refs, group = [], []
  for i, group_refs in enumerate(references_per_hypothesis):
    group_refs = _ngrams.as_corpus(group_refs, "references")
    if not group_refs:
      raise ValueError(f"hypothesis {i} has no reference")
    refs.extend(group_refs)
    group.extend([i] * len(group_refs))
  return refs, np.asarray(group, dtype=np.int64).reshape(-1)


# --------------------------------------------------------------------------
# Self-BLEU
# --------------------------------------------------------------------------


def _self_matches(order: _ngrams.OrderCounts) -> np.ndarray:
  """Clipped matches of each sentence against all the others, one order.

  For an n-gram g let M1(g) >= M2(g) be the two largest counts of g over all
  sentences (M2 = 0 if g occurs in one sentence only).  Leaving sentence i out,
  the largest count of g among the others is M2(g) if count_i(g) == M1(g)
  (a tie at the top gives M2 == M1) and M1(g) otherwise.
  """
  num_sent = int(order.sentence.max(initial=-1)) + 1
  gram, cnt = order.ngram, order.count
  perm = np.lexsort((-cnt, gram))
  g_sorted, c_sorted = gram[perm], cnt[perm]
  first = np.ones(g_sorted.shape[0], dtype=bool)
  first[1:] = g_sorted[1:] != g_sorted[:-1]
  m1 = np.zeros(order.num_ngrams, np.int64)
  m2 = np.zeros(order.num_ngrams, np.int64)
  m1[g_sorted[first]] = c_sorted[first]
  second = np.zeros_like(first)
  second[1:] = first[:-1] & ~first[1:]
  m2[g_sorted[second]] = c_sorted[second]
  others_max = np.where(cnt == m1[gram], m2[gram], m1[gram])
  clipped = np.minimum(cnt, others_max)
  return np.bincount(order.sentence, weights=clipped,
                     minlength=num_sent).astype(np.int64)


def _self_closest_lengths(lengths: np.ndarray) -> np.ndarray:
  """Closest length among the *other* sentences (ties: shorter)."""
  uniq, counts = np.unique(lengths, return_counts=True)
  j = np.searchsorted(uniq, lengths)  # uniq[j] == lengths
  shared = counts[j] >= 2
  big = np.iinfo(np.int64).max
  has_below = j > 0
  has_above = j < uniq.shape[0] - 1
  below = uniq[np.maximum(j - 1, 0)]
  above = uniq[np.minimum(j + 1, uniq.shape[0] - 1)]
  d_below = np.where(has_below, lengths - below, big)
  d_above = np.where(has_above, above - lengths, big)
  nearest = np.where(d_below <= d_above, below, above)
  return np.where(shared, lengths, nearest).astype(np.int64)


def self_bleu_scores(sentences: Corpus, max_n: int = 4,
                     epsilon: float = 0.1) -> np.ndarray:
  """Per-sentence Self-BLEU-n.

  Args:
    sentences: S >= 2 token lists.
    max_n, epsilon: as in :func:`bleu`.
  Returns:
    float64 [S]; entry i equals NLTK ``sentence_bleu(sentences[:i] +
    sentences[i+1:], sentences[i], (1/n,)*n, method1)``.
  """
  n = _check_max_n(max_n)
  return _self_bleu_scores_orders(sentences, (n,), epsilon)[n]


def _self_bleu_scores_orders(sentences: Corpus, orders: Sequence[int],
                             epsilon: float = 0.1) -> dict[int, np.ndarray]:
  """self_bleu_scores for several n at once (n-grams counted once)."""
  orders = [_check_max_n(n) for n in orders]
  sents = _ngrams.as_corpus(sentences, "sentences")
  if len(sents) < 2:
    raise ValueError("Self-BLEU needs at least 2 sentences")
  max_n = max(orders)
  index = _ngrams.build_index(sents, max_n)
  matches = np.zeros((len(sents), max_n), np.int64)
  for k, order in enumerate(index.orders):
    mk = _self_matches(order)
    matches[:mk.shape[0], k] = mk
  closest = _self_closest_lengths(index.lengths)
  return {n: np.asarray(_sentence_scores(matches, index.lengths, closest, n,
                                         epsilon), np.float64)
          for n in orders}


def self_bleu(sentences: Corpus, max_n: int = 4, epsilon: float = 0.1) -> float:
  """Self-BLEU-n: mean BLEU-n of each sentence against all the others.

  The reference set of sentence i is the corpus with that one sentence
  removed (other copies of a duplicated sentence stay). Lower is more diverse.

  Args:
    sentences: S >= 2 token lists (e.g. generated samples).
    max_n: n of Self-BLEU-n.
    epsilon: method1 smoothing constant.
  Returns:
    float in [0, 1].

  >>> self_bleu([["a", "b"], ["a", "b"], ["c", "d"]], max_n=2)
  0.6666666666666666
  """
  return _mean(self_bleu_scores(sentences, max_n, epsilon).tolist())


def self_bleu_report(sentences: Corpus, max_n: int = 4, epsilon: float = 0.1,
                     tokenization: str = "pre-tokenized") -> MetricResult:
  """:func:`self_bleu` with its settings (the sample count is one of them)."""
  sents = _ngrams.as_corpus(sentences, "sentences")
  scores = self_bleu_scores(sents, max_n, epsilon)
  return MetricResult(
      name="self_bleu", value=_mean(scores.tolist()),
      settings=_settings("self-bleu", int(max_n), epsilon, tokenization,
                         protocol="each sentence vs all others, self excluded",
                         num_sentences=len(sents)),
      details={"sentences_hash": corpus_hash(sents), "scores": scores})


# --------------------------------------------------------------------------
# sacrebleu corpus BLEU
# --------------------------------------------------------------------------


def corpus_bleu_statistics(hypotheses: Corpus,
                           references_per_hypothesis: Sequence[Corpus],
                           max_n: int = 4) -> dict[str, Any]:
  """Sufficient statistics of corpus BLEU (summable across shards).

  Returns:
    dict with ``correct`` and ``total`` (int lists of length max_n: clipped
    matches and hypothesis n-grams per order, summed over the corpus),
    ``sys_len`` (total hypothesis tokens) and ``ref_len`` (sum of closest
    reference lengths, ties to the shorter).  Statistics of disjoint shards
    add up elementwise.
  """
  n = _check_max_n(max_n)
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  refs, group = _flatten_groups(references_per_hypothesis, len(hyps))
  m, hl, rl = _match_statistics(hyps, refs, np.arange(len(hyps), dtype=np.int64),
                                group, n)
  totals = [int(_ngrams.num_ngrams_per_sentence(hl, k).sum())
            for k in range(1, n + 1)]
  return {"correct": [int(x) for x in m.sum(axis=0)], "total": totals,
          "sys_len": int(hl.sum()), "ref_len": int(rl.sum())}


def corpus_bleu_from_statistics(stats: dict[str, Any], smooth_method: str = "exp",
                                smooth_value: float | None = None,
                                effective_order: bool = False
                                ) -> dict[str, Any]:
  """Corpus BLEU from :func:`corpus_bleu_statistics`, as sacrebleu does it.

  ``BP = 1`` if ``sys_len >= ref_len`` else ``exp(1 - ref_len / sys_len)``
  (0 for an empty system); score 0 if no n-gram of any order matches;
  precisions ``p_k = correct_k / total_k`` where smoothing replaces zero
  matches by ``1 / (2^j total_k)`` for the j-th such order ("exp", NIST),
  ``smooth_value / total_k`` ("floor", default 0.1), adds ``smooth_value``
  (default 1) to ``correct_k`` and ``total_k`` for k >= 2 ("add-k"), or keeps
  0 ("none", giving score 0).  Orders with ``total_k == 0`` and all higher
  ones are zero precisions, or are dropped from the mean when
  ``effective_order``.  ``score = BP * exp(mean_k log p_k)``.

  Returns:
    dict with ``score`` (0..1), ``precisions`` (0..1 per order), ``bp``,
    ``sys_len``, ``ref_len``.
  """
  if smooth_method not in _SACREBLEU_SMOOTH_DEFAULTS:
    raise ValueError(f"smooth_method must be one of {SACREBLEU_SMOOTHING}")
  if smooth_value is None:
    smooth_value = _SACREBLEU_SMOOTH_DEFAULTS[smooth_method]
  correct = list(stats["correct"])
  total = list(stats["total"])
  sys_len, ref_len = int(stats["sys_len"]), int(stats["ref_len"])
  max_n = len(correct)
  bp = 1.0
  if sys_len < ref_len:
    bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
  # Precisions are kept in percent as sacrebleu does, so that the score is
  # the same float; the result is divided by 100 at the end.
  precisions = [0.0] * max_n
  out = {"bp": bp, "sys_len": sys_len, "ref_len": ref_len}
  if not any(correct):
    return dict(out, score=0.0, score_100=0.0, precisions=precisions)
  smooth_mteval = 1.0
  eff_order = max_n
  for k in range(1, max_n + 1):
    if smooth_method == "add-k" and k > 1:
      correct[k - 1] += smooth_value
      total[k - 1] += smooth_value
    if total[k - 1] == 0:
      break
    if effective_order:
      eff_order = k
    if correct[k - 1] == 0:
      if smooth_method == "exp":
        smooth_mteval *= 2
        precisions[k - 1] = 100.0 / (smooth_mteval * total[k - 1])
      elif smooth_method == "floor":
        precisions[k - 1] = 100.0 * smooth_value / total[k - 1]
    else:
      precisions[k - 1] = 100.0 * correct[k - 1] / total[k - 1]
  floor_log = -9999999999  # log(0) stand-in: drives the score to 0.0
  logs = [math.log(p) if p != 0.0 else floor_log for p in precisions[:eff_order]]
  score_100 = bp * math.exp(sum(logs) / eff_order)
  return dict(out, score=score_100 / 100.0, score_100=score_100,
              precisions=[p / 100.0 for p in precisions])


def corpus_bleu(hypotheses: Corpus, references_per_hypothesis: Sequence[Corpus],
                max_n: int = 4, smooth_method: str = "exp",
                smooth_value: float | None = None,
                effective_order: bool = False) -> float:
  """Corpus BLEU (Papineni et al. 2002) with sacrebleu's definitions.

  Equals ``sacrebleu.metrics.BLEU(tokenize="none", smooth_method=...,
  smooth_value=..., max_ngram_order=max_n, effective_order=...)
  .corpus_score(hyp_strings, ref_streams).score / 100`` where each sentence
  is ``" ".join(tokens)`` and the reference streams are padded with ``None``
  for hypotheses with fewer references (valid whenever no token is empty or
  contains whitespace, which sacrebleu would split on).

  Args:
    hypotheses: H token lists.
    references_per_hypothesis: H lists, each of >= 1 reference token lists
      (any number per hypothesis: multi-reference BLEU clips by the largest
      count in any one reference and uses the closest reference length).
    max_n: highest n-gram order (4 = BLEU-4).
    smooth_method: "exp" (sacrebleu's default), "floor", "add-k" or "none".
    smooth_value: for "floor" (default 0.1) and "add-k" (default 1).
    effective_order: drop orders with no n-grams from the geometric mean.
  Returns:
    float in [0, 1].

  >>> round(corpus_bleu([["the", "cat", "sat", "down"]],
  ...                   [[["the", "cat", "sat", "down"], ["a", "cat"]]]), 12)
  1.0
  >>> corpus_bleu([["the", "cat", "sat"]], [[["the", "cat", "sat"]]])
  0.0
  >>> round(corpus_bleu([["the", "cat", "sat"]], [[["the", "cat", "sat"]]],
  ...                   effective_order=True), 12)
  1.0

  (Like sacrebleu, a perfect match gives 100.00000000000004 / 100: the
  precisions are summed as logs of 100.)
  """
  stats = corpus_bleu_statistics(hypotheses, references_per_hypothesis, max_n)
  return corpus_bleu_from_statistics(stats, smooth_method, smooth_value,
                                     effective_order)["score"]


def corpus_bleu_report(hypotheses: Corpus,
                       references_per_hypothesis: Sequence[Corpus],
                       max_n: int = 4, smooth_method: str = "exp",
                       smooth_value: float | None = None,
                       effective_order: bool = False,
                       tokenization: str = "pre-tokenized") -> MetricResult:
  """:func:`corpus_bleu` with its settings and sufficient statistics."""
  hyps = _ngrams.as_corpus(hypotheses, "hypotheses")
  ref_groups = [_ngrams.as_corpus(g, "references")
                for g in references_per_hypothesis]
  stats = corpus_bleu_statistics(hyps, ref_groups, max_n)
  res = corpus_bleu_from_statistics(stats, smooth_method, smooth_value,
                                    effective_order)
  if smooth_value is None:
    smooth_value = _SACREBLEU_SMOOTH_DEFAULTS[smooth_method]
  num_refs = sorted({len(g) for g in ref_groups})
  # Each group framed by a [count] pseudo-sentence: unambiguous and ordered.
  framed = [s for g in ref_groups for s in [[len(g)]] + g]
  return MetricResult(
      name="corpus_bleu", value=res["score"],
      settings={"metric": "corpus-bleu-sacrebleu", "max_n": int(max_n),
                "smoothing": smooth_method, "smooth_value": smooth_value,
                "effective_order": bool(effective_order),
                "tokenization": tokenization,
                "num_hypotheses": len(hyps),
                "num_references_per_hypothesis":
                    num_refs[0] if len(num_refs) == 1 else "variable",
                "reference_hash": corpus_hash(framed, ordered=True),
                "implementation": IMPLEMENTATION_VERSION},
      details=dict(res, hypotheses_hash=corpus_hash(hyps), **{
          "correct": stats["correct"], "total": stats["total"]}))
