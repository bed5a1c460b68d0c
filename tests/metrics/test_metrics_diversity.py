"""distinct-n, unique n-gram ratio, average length: hand values + brute force."""
import random
from collections import Counter

import numpy as np
import pytest

from vedgan import metrics


def ngrams(s, n):
  return [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]


def brute(sents, n):
  grams = Counter(g for s in sents for g in ngrams(s, n))
  total = sum(grams.values())
  per = [len(set(ngrams(s, n))) / len(ngrams(s, n)) for s in sents
         if ngrams(s, n)]
  return {"distinct": len(grams) / total if total else 0.0,
          "per_sentence": sum(per) / len(per) if per else 0.0,
          "unique": sum(1 for c in grams.values() if c == 1) / total
                    if total else 0.0}


def test_hand_computed_values():
  sents = [["a", "b", "a"], ["a", "b"], []]
  # unigrams: a a a b b -> 2 distinct / 5; nothing occurs once.
  assert metrics.distinct_n(sents, 1) == pytest.approx(2 / 5)
  assert metrics.unique_ngram_ratio(sents, 1) == 0.0
  # bigrams: (a,b) (b,a) (a,b) -> 2 / 3; (b,a) occurs once -> 1 / 3.
  assert metrics.distinct_n(sents, 2) == pytest.approx(2 / 3)
  assert metrics.unique_ngram_ratio(sents, 2) == pytest.approx(1 / 3)
  # per sentence: [a b a] 2/3, [a b] 2/2, [] skipped.
  assert metrics.distinct_n_per_sentence(sents, 1) == pytest.approx((2 / 3 + 1) / 2)
  assert metrics.distinct_n_per_sentence(sents, 2) == pytest.approx(1.0)
  assert metrics.average_length(sents) == pytest.approx(5 / 3)
  # No n-gram of that order at all.
  assert metrics.distinct_n(sents, 4) == 0.0
  assert metrics.distinct_n_per_sentence(sents, 4) == 0.0
  assert metrics.unique_ngram_ratio([], 1) == 0.0
  assert metrics.average_length([]) == 0.0


def test_ngrams_do_not_cross_sentence_boundaries():
  assert metrics.distinct_n([["a"], ["b"]], 2) == 0.0
  assert metrics.distinct_n([["a", "b"], ["b", "a"]], 2) == 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_matches_brute_force(n):
  rng = random.Random(n)
  sents = [[rng.randrange(6) for _ in range(rng.randint(0, 10))]
           for _ in range(60)]
  b = brute(sents, n)
  assert metrics.distinct_n(sents, n) == pytest.approx(b["distinct"], abs=1e-12)
  assert metrics.distinct_n_per_sentence(sents, n) == pytest.approx(
      b["per_sentence"], abs=1e-12)
  assert metrics.unique_ngram_ratio(sents, n) == pytest.approx(b["unique"],
                                                               abs=1e-12)
  assert metrics.unique_ngram_ratio(sents, n) <= metrics.distinct_n(sents, n)


def test_report():
  sents = [["a", "b", "a"], ["a", "b"]]
  r = metrics.diversity_report(sents, orders=(1, 2))
  assert r.value == metrics.distinct_n(sents, 2)
  assert r.details["distinct_1"] == pytest.approx(2 / 5)
  assert r.details["average_length"] == 2.5
  assert r.settings["num_sentences"] == 2
  with pytest.raises(ValueError):
    metrics.distinct_n(sents, 0)
  assert np.isfinite(r.to_dict()["details"]["unique_2"])
