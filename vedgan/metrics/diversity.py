"""Lexical diversity of a set of generated sentences.

Definitions (sentences are token lists; an n-gram is n consecutive tokens
inside one sentence, never across sentence boundaries):

* ``distinct_n`` (corpus, Li et al. 2016): number of distinct n-grams in the
  whole corpus / number of n-gram occurrences in the corpus.
* ``distinct_n_per_sentence``: for every sentence with at least one n-gram,
  distinct n-grams of that sentence / its n-gram occurrences; the mean over
  those sentences (sentences shorter than n are left out).
* ``unique_ngram_ratio``: number of n-grams that occur exactly once in the
  whole corpus / number of n-gram occurrences -- the share of the generated
  text made of n-grams nobody else (and nothing else in the same sentence)
  produced.  Always <= distinct_n.
* ``average_length``: mean number of tokens per sentence.

All return 0.0 when their denominator is 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vedgan.metrics import _ngrams
from vedgan.metrics.result import IMPLEMENTATION_VERSION, MetricResult, corpus_hash

Corpus = Sequence[Sequence[Any]]


def _order(sentences: Corpus, n: int):
  if int(n) != n or n < 1:
    raise ValueError(f"n must be a positive integer, got {n!r}")
  sents = _ngrams.as_corpus(sentences)
  index = _ngrams.build_index(sents, int(n))
  return sents, index, index.orders[int(n) - 1]


def distinct_n(sentences: Corpus, n: int) -> float:
  """Corpus distinct-n: distinct n-grams / n-gram occurrences.

  Args:
    sentences: list of token lists.
    n: n-gram order.
  Returns:
    float in [0, 1].

  >>> distinct_n([["a", "b", "a"], ["a", "b"]], 1)
  0.4
  """
  _, _, order = _order(sentences, n)
  total = int(order.count.sum())
  return np.unique(order.ngram).shape[0] / total if total else 0.0


def distinct_n_per_sentence(sentences: Corpus, n: int) -> float:
  """Mean over sentences (with >= 1 n-gram) of the sentence's distinct-n."""
  _, index, order = _order(sentences, n)
  occ = _ngrams.num_ngrams_per_sentence(index.lengths, int(n))
  kinds = np.bincount(order.sentence, minlength=index.num_sentences)
  ok = occ > 0
  return float(np.mean(kinds[ok] / occ[ok])) if ok.any() else 0.0


def unique_ngram_ratio(sentences: Corpus, n: int) -> float:
  """Share of n-gram occurrences whose n-gram occurs exactly once in total."""
  _, _, order = _order(sentences, n)
  total = int(order.count.sum())
  if not total:
    return 0.0
  per_gram = np.bincount(order.ngram, weights=order.count,
                         minlength=order.num_ngrams)
  return int(np.sum(per_gram == 1)) / total


def average_length(sentences: Corpus) -> float:
  """Mean number of tokens per sentence (0.0 for no sentences)."""
  sents = _ngrams.as_corpus(sentences)
  return sum(len(s) for s in sents) / len(sents) if sents else 0.0


def diversity_report(sentences: Corpus, orders: Sequence[int] = (1, 2, 3, 4),
                     tokenization: str = "pre-tokenized") -> MetricResult:
  """All diversity metrics at once.

  Returns:
    ``MetricResult`` whose value is distinct-2 if 2 is in ``orders`` (else
    distinct of the first order) and whose ``details`` hold
    ``distinct_{n}``, ``distinct_{n}_per_sentence``, ``unique_{n}`` for each
    order and ``average_length``.
  """
  sents = _ngrams.as_corpus(sentences)
  details: dict[str, Any] = {"average_length": average_length(sents),
                             "sentences_hash": corpus_hash(sents)}
  for n in orders:
    details[f"distinct_{n}"] = distinct_n(sents, n)
    details[f"distinct_{n}_per_sentence"] = distinct_n_per_sentence(sents, n)
    details[f"unique_{n}"] = unique_ngram_ratio(sents, n)
  head = 2 if 2 in orders else orders[0]
  return MetricResult(
      name="diversity", value=details[f"distinct_{head}"],
      settings={"metric": "diversity", "orders": list(orders),
                "value": f"distinct_{head}", "tokenization": tokenization,
                "num_sentences": len(sents),
                "implementation": IMPLEMENTATION_VERSION},
      details=details)
