"""BLEU / Self-BLEU / corpus BLEU against NLTK and sacrebleu (references only)."""
import random
import time

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

from vedgan import metrics

TOL = 1e-9
METHOD1 = SmoothingFunction().method1


def nltk_texygen(hyps, refs, n):
  return [nltk_sentence_bleu(refs, h, (1 / n,) * n, smoothing_function=METHOD1)
          for h in hyps]


def nltk_self(sents, n):
  return [nltk_sentence_bleu(sents[:i] + sents[i + 1:], s, (1 / n,) * n,
                             smoothing_function=METHOD1)
          for i, s in enumerate(sents)]


def sacre(hyps, ref_groups, n=4, **kw):
  width = max(len(g) for g in ref_groups)
  streams = [[" ".join(g[j]) if j < len(g) else None for g in ref_groups]
             for j in range(width)]
  scorer = sacrebleu.metrics.BLEU(tokenize="none", max_ngram_order=n, **kw)
  return scorer.corpus_score([" ".join(h) for h in hyps], streams).score


def random_corpus(rng, num, vocab, lo=0, hi=9):
  words = [f"w{i}" for i in range(vocab)]
  return [[rng.choice(words) for _ in range(rng.randint(lo, hi))]
          for _ in range(num)]


EDGE_REFS = [["a", "b", "c", "d"], ["a", "a", "b"], [], ["x", "y", "z", "a", "b"]]
EDGE_HYPS = [
    [],                                  # empty hypothesis
    ["q", "r", "s", "t"],                # no overlap at all
    ["a"],                               # shorter than every n > 1
    ["a", "a", "a", "a", "a"],           # clipping
    ["a", "b", "c", "d"],                # exact match of a reference
    ["b", "a", "q", "q", "q", "q", "q"],  # unigram overlap only, long
    ["z", "a", "b", "c"],                # partial higher-order overlap
    ["a", "b"],                          # brevity penalty
]


# --------------------------------------------------------------------------
# Texygen BLEU
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_bleu_matches_nltk_on_random_corpora(n):
  rng = random.Random(n)
  hyps = random_corpus(rng, 40, 6)
  refs = random_corpus(rng, 25, 6)
  ours = metrics.bleu_scores(hyps, refs, n)
  ref = nltk_texygen(hyps, refs, n)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
  # The final arithmetic mirrors NLTK's, so in practice it is bit-exact.
  assert ours.tolist() == ref
  assert abs(metrics.bleu(hyps, refs, n) - sum(ref) / len(ref)) <= TOL


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_nltk_on_edge_cases(n):
  ours = metrics.bleu_scores(EDGE_HYPS, EDGE_REFS, n)
  np.testing.assert_allclose(ours, nltk_texygen(EDGE_HYPS, EDGE_REFS, n),
                             rtol=0, atol=TOL)
  assert ours[0] == 0.0 and ours[1] == 0.0  # empty / no overlap
  if n > 1:
    assert ours[2] > 0.0  # smoothed: unigram match, no n-grams of order n


def test_bleu_single_and_duplicate_and_all_empty_references():
  assert metrics.bleu([["a", "b", "c", "d"]], [["a", "b", "c", "d"]], 4) == 1.0
  hyps = [["a", "b"], ["a", "b"], ["c"]]
  refs = [["a", "b"], ["a", "b"], ["b", "c"]]
  for n in (1, 2, 3):
    np.testing.assert_allclose(metrics.bleu_scores(hyps, refs, n),
                               nltk_texygen(hyps, refs, n), atol=TOL)
  # Reference set made of empty sentences only.
  np.testing.assert_allclose(metrics.bleu_scores(hyps, [[], []], 2),
                             nltk_texygen(hyps, [[], []], 2), atol=TOL)
  assert metrics.bleu([], refs, 4) == 0.0


def test_bleu_integer_tokens_and_arrays():
  rng = random.Random(7)
  hyps = [[rng.randrange(5) for _ in range(rng.randint(0, 8))] for _ in range(20)]
  refs = [[rng.randrange(5) for _ in range(rng.randint(1, 8))] for _ in range(10)]
  expected = nltk_texygen(hyps, refs, 3)
  np.testing.assert_allclose(metrics.bleu_scores(hyps, refs, 3), expected,
                             atol=TOL)
  as_arrays = [np.asarray(h, dtype=np.int32) for h in hyps]
  np.testing.assert_allclose(metrics.bleu_scores(as_arrays, refs, 3), expected,
                             atol=TOL)


def test_sentence_bleu_multi_reference_matches_nltk():
  rng = random.Random(11)
  hyps = random_corpus(rng, 30, 5)
  groups = [random_corpus(rng, rng.randint(1, 4), 5) for _ in hyps]
  for n in (1, 2, 4):
    ref = [nltk_sentence_bleu(g, h, (1 / n,) * n, smoothing_function=METHOD1)
           for g, h in zip(groups, hyps)]
    np.testing.assert_allclose(metrics.sentence_bleu(hyps, groups, n), ref,
                               rtol=0, atol=TOL)


def test_bleu_custom_epsilon_matches_nltk():
  hyps, refs = EDGE_HYPS, EDGE_REFS
  sf = SmoothingFunction(epsilon=0.3).method1
  ref = [nltk_sentence_bleu(refs, h, (0.25,) * 4, smoothing_function=sf)
         for h in hyps]
  np.testing.assert_allclose(metrics.bleu_scores(hyps, refs, 4, epsilon=0.3),
                             ref, atol=TOL)


def test_bleu_rejects_bad_input():
  with pytest.raises(ValueError):
    metrics.bleu([["a"]], [], 2)
  with pytest.raises(ValueError):
    metrics.bleu([["a"]], [["a"]], 0)
  with pytest.raises(TypeError):
    metrics.bleu(["a cat"], [["a"]], 2)


# --------------------------------------------------------------------------
# Self-BLEU
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_self_bleu_matches_nltk_leave_one_out(n):
  rng = random.Random(100 + n)
  sents = random_corpus(rng, 40, 5)
  sents += [sents[3], sents[3], list(sents[5]), [], ["w1"]]  # duplicates, edge
  ours = metrics.self_bleu_scores(sents, n)
  ref = nltk_self(sents, n)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
  assert abs(metrics.self_bleu(sents, n) - sum(ref) / len(ref)) <= TOL


def test_self_bleu_edge_cases():
  with pytest.raises(ValueError):
    metrics.self_bleu([["a", "b"]], 2)  # a single sentence has no "others"
  # All identical: every sentence finds a copy of itself among the others.
  assert metrics.self_bleu([["a", "b", "c", "d"]] * 3, 4) == pytest.approx(1.0)
  # Exactly one copy is removed: a sentence without duplicate does not match
  # itself.
  sents = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
  assert metrics.self_bleu(sents, 4) == 0.0
  sents = [["a", "b", "c"], ["a", "b", "c"], ["x"], [], ["a", "x", "b"]]
  for n in (1, 2, 4):
    np.testing.assert_allclose(metrics.self_bleu_scores(sents, n),
                               nltk_self(sents, n), atol=TOL)
  # Length ties: closest other length prefers the shorter one.
  sents = [["a", "b"], ["a", "b", "c", "d"], ["a", "b", "c"], ["c"]]
  np.testing.assert_allclose(metrics.self_bleu_scores(sents, 2),
                             nltk_self(sents, 2), atol=TOL)


def test_self_bleu_caches_nothing_between_calls():
  rng = random.Random(5)
  a = random_corpus(rng, 20, 4, lo=1)
  b = random_corpus(rng, 20, 9, lo=1)
  first = metrics.self_bleu(a, 3)
  metrics.self_bleu(b, 3)
  assert metrics.self_bleu(a, 3) == first
  assert metrics.self_bleu(b, 3) == pytest.approx(
      sum(nltk_self(b, 3)) / 20, abs=TOL)


def test_self_bleu_is_fast():
  # The 10k-sentence timing lives in benchmarks/self_bleu.py; this only
  # guards against an accidental quadratic Python loop.
  rng = np.random.default_rng(0)
  sents = [[f"w{t}" for t in rng.zipf(1.5, size=rng.integers(5, 15)) % 3000]
           for _ in range(3000)]
  t0 = time.perf_counter()
  metrics.self_bleu(sents, 4)
  assert time.perf_counter() - t0 < 10.0


# --------------------------------------------------------------------------
# sacrebleu corpus BLEU
# --------------------------------------------------------------------------


@pytest.mark.parametrize("smooth_method", ["exp", "floor", "add-k", "none"])
@pytest.mark.parametrize("effective_order", [False, True])
def test_corpus_bleu_matches_sacrebleu(smooth_method, effective_order):
  rng = random.Random(len(smooth_method) + 10 * effective_order)
  for n in (2, 4):
    hyps = random_corpus(rng, 30, 7, lo=1)
    groups = [random_corpus(rng, rng.randint(1, 3), 7, lo=1) for _ in hyps]
    expected = sacre(hyps, groups, n, smooth_method=smooth_method,
                     effective_order=effective_order)
    report = metrics.corpus_bleu_report(hyps, groups, n,
                                        smooth_method=smooth_method,
                                        effective_order=effective_order)
    assert report.details["score_100"] == pytest.approx(expected, abs=TOL)
    assert metrics.corpus_bleu(
        hyps, groups, n, smooth_method=smooth_method,
        effective_order=effective_order) * 100 == pytest.approx(expected,
                                                                 abs=TOL)


@pytest.mark.parametrize("smooth_value", [0.05, 0.5])
def test_corpus_bleu_smooth_values_match_sacrebleu(smooth_value):
  rng = random.Random(3)
  hyps = random_corpus(rng, 15, 9, lo=1, hi=5)
  groups = [random_corpus(rng, 2, 9, lo=1, hi=5) for _ in hyps]
  for method in ("floor", "add-k"):
    expected = sacre(hyps, groups, 4, smooth_method=method,
                     smooth_value=smooth_value)
    got = metrics.corpus_bleu(hyps, groups, 4, smooth_method=method,
                              smooth_value=smooth_value)
    assert got * 100 == pytest.approx(expected, abs=TOL)


def test_corpus_bleu_edge_cases_match_sacrebleu():
  cases = [
      ([["a", "b", "c", "d"]], [[["a", "b", "c", "d"]]]),       # single, exact
      ([["q", "r"]], [[["a", "b"]]]),                             # no overlap
      ([[], ["a", "b", "c"]], [[["a"]], [["a", "b", "c"], ["a"]]]),  # empty hyp
      ([[], []], [[["a"]], [["b"]]]),                             # all empty
      ([["a", "b"], ["a", "b"]], [[["a", "b", "c"]], [["a", "b", "c"]]]),  # dup
      ([["a"] * 6], [[["a", "a"], ["b", "a", "a", "a"]]]),        # clipping
  ]
  for hyps, groups in cases:
    for eff in (False, True):
      expected = sacre(hyps, groups, 4, effective_order=eff)
      got = metrics.corpus_bleu(hyps, groups, 4, effective_order=eff)
      assert got * 100 == pytest.approx(expected, abs=TOL), (hyps, groups, eff)


def test_corpus_bleu_statistics_add_up_across_shards():
  rng = random.Random(9)
  hyps = random_corpus(rng, 40, 6, lo=1)
  groups = [random_corpus(rng, 2, 6, lo=1) for _ in hyps]
  whole = metrics.corpus_bleu_statistics(hyps, groups)
  a = metrics.corpus_bleu_statistics(hyps[:13], groups[:13])
  b = metrics.corpus_bleu_statistics(hyps[13:], groups[13:])
  summed = {k: (np.add(a[k], b[k]).tolist() if isinstance(a[k], list)
                else a[k] + b[k]) for k in a}
  assert summed == whole
  assert (metrics.corpus_bleu_from_statistics(summed)["score"]
          == metrics.corpus_bleu(hyps, groups))


# --------------------------------------------------------------------------
# Reports: settings decide comparability
# --------------------------------------------------------------------------


def test_reports_record_settings_and_comparability():
  rng = random.Random(21)
  refs = random_corpus(rng, 20, 6, lo=1)
  h1 = random_corpus(rng, 10, 6, lo=1)
  h2 = random_corpus(rng, 10, 6, lo=1)
  r1 = metrics.bleu_report(h1, refs, 4)
  r2 = metrics.bleu_report(h2, list(reversed(refs)), 4)  # same set, new order
  assert r1.value == metrics.bleu(h1, refs, 4)
  assert r1.comparable_with(r2)
  assert r1.settings["max_n"] == 4 and r1.settings["smoothing"] == "nltk-method1"
  assert r1.settings["num_hypotheses"] == 10
  assert r1.details["hypotheses_hash"] != r2.details["hypotheses_hash"]
  r3 = metrics.bleu_report(h1, refs[:-1], 4)
  assert not r1.comparable_with(r3)
  assert "reference_hash" in r1.settings_diff(r3)
  assert not r1.comparable_with(metrics.bleu_report(h1, refs, 3))
  s1 = metrics.self_bleu_report(h1, 4)
  assert s1.comparable_with(metrics.self_bleu_report(h2, 4))
  assert not s1.comparable_with(metrics.self_bleu_report(h2[:5], 4))
  c = metrics.corpus_bleu_report(h1, [[r] for r in refs[:10]])
  assert c.settings["smoothing"] == "exp"
  assert c.settings["num_references_per_hypothesis"] == 1
  d = r1.to_dict()
  assert d["value"] == r1.value and isinstance(d["details"]["scores"], list)
  assert float(r1) == r1.value


def test_corpus_hash_normalises_token_types():
  assert metrics.corpus_hash([[1, 2]]) == metrics.corpus_hash(
      [np.array([1, 2], np.int64)])
  assert metrics.corpus_hash([[1, 2]]) != metrics.corpus_hash([["1", "2"]])
  assert metrics.corpus_hash([["a"], ["b"]], ordered=False) == \
      metrics.corpus_hash([["b"], ["a"]], ordered=False)
  assert metrics.corpus_hash([["a"], ["b"]]) != metrics.corpus_hash([["b"], ["a"]])
