"""Self-BLEU benchmark: vedgan.metrics.self_bleu on 10,000 sentences.

Builds a reproducible synthetic corpus shaped like the Texygen COCO split the
latent-space GAN paper uses (10,000 sentences, mean length ~11-12 tokens,
Zipfian word frequencies over a 6,577-word vocabulary), then times
``self_bleu(sentences, n)`` for each n (fresh call each time: nothing is
cached between calls), checks a few per-sentence scores against NLTK's
``sentence_bleu`` and estimates how long NLTK's own loop would take from a
small sample of hypotheses.

Usage (from the repository root):
  python benchmarks/self_bleu.py                      # 10k sentences, n=2..5
  python benchmarks/self_bleu.py --num-sentences 2000 --orders 4 --repeats 1
  python benchmarks/self_bleu.py --json results.json  # also write JSON

Needs nltk only for the check / NLTK estimate (skip with --no-nltk).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vedgan import metrics  # pylint: disable=g-import-not-at-top
from vedgan.metrics.bleu import _self_bleu_scores_orders  # pylint: disable=g-import-not-at-top


def make_corpus(num_sentences: int, vocab: int = 6577, mean_len: float = 11.5,
                seed: int = 0) -> list[list[str]]:
  """Zipf-distributed words, lengths 6..20 around ``mean_len``."""
  rng = np.random.default_rng(seed)
  ranks = np.arange(1, vocab + 1)
  probs = 1.0 / ranks
  probs /= probs.sum()
  lengths = np.clip(np.round(rng.normal(mean_len, 2.5, size=num_sentences)),
                    6, 20).astype(int)
  words = rng.choice(vocab, size=int(lengths.sum()), p=probs)
  out, pos = [], 0
  for n in lengths:
    out.append([f"w{w}" for w in words[pos:pos + n]])
    pos += n
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-sentences", type=int, default=10_000)
  parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4, 5])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--nltk-sample", type=int, default=5,
                      help="hypotheses checked / timed with NLTK")
  parser.add_argument("--no-nltk", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)

  sents = make_corpus(args.num_sentences, seed=args.seed)
  num_tokens = sum(len(s) for s in sents)
  result = {"num_sentences": len(sents),
            "mean_length": num_tokens / len(sents),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "orders": {}}
  print(f"corpus: {len(sents)} sentences, mean length "
        f"{result['mean_length']:.2f}, {num_tokens} tokens")
  for n in args.orders:
    times, value = [], None
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      value = metrics.self_bleu(sents, n)
      times.append(time.perf_counter() - t0)
    result["orders"][n] = {"self_bleu": value, "best_seconds": min(times),
                           "median_seconds": float(np.median(times))}
    print(f"Self-BLEU-{n} = {value:.6f}   best {min(times):.3f} s, "
          f"median {np.median(times):.3f} s over {args.repeats} runs")
  t0 = time.perf_counter()
  _self_bleu_scores_orders(sents, args.orders)
  result["all_orders_one_call_seconds"] = time.perf_counter() - t0
  print(f"all orders {args.orders} from one n-gram count: "
        f"{result['all_orders_one_call_seconds']:.3f} s")

  if not args.no_nltk:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    n = max(args.orders)
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(len(sents), size=min(args.nltk_sample, len(sents)),
                       replace=False)
    ours = metrics.self_bleu_scores(sents, n)
    sf = SmoothingFunction().method1
    t0 = time.perf_counter()
    diffs = []
    for i in picks:
      ref = sentence_bleu(sents[:i] + sents[i + 1:], sents[i], (1 / n,) * n,
                          smoothing_function=sf)
      diffs.append(abs(ref - ours[i]))
    per_hyp = (time.perf_counter() - t0) / len(picks)
    result["nltk_check"] = {"order": n, "num_checked": len(picks),
                            "max_abs_diff": max(diffs),
                            "nltk_seconds_per_hypothesis": per_hyp,
                            "nltk_estimated_total_seconds":
                                per_hyp * len(sents)}
    print(f"NLTK check (n={n}, {len(picks)} sentences): max |diff| = "
          f"{max(diffs):.3g}; NLTK loop ~{per_hyp:.2f} s/sentence -> "
          f"~{per_hyp * len(sents) / 3600:.1f} h for the whole corpus")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
