"""Input-pipeline throughput vs. what the fastest train step consumes.

Measures, on the embedded chatterbot corpus with the seq2seq demo's data
settings (sentencepiece 500, contexts/responses up to 32/24 tokens, buckets
8/16/32, global batch 32):

1. ``encode``: records -> ``(context, response)`` strings -> token ids, once
   per run (examples/s);
2. ``batch``: :class:`vedgan.data.pipeline.BatchIterator` producing padded,
   bucketed numpy batches (the per-step work; examples/s and response
   tokens/s, counted as the trainer counts them: non-pad ``response_out``);
3. ``batch+device``: the same, each batch then placed on the mesh as global
   ``jax.Array`` s by :func:`vedgan.parallel.shard_batch` (what the trainer does
   before each step).

and compares with the seq2seq demo's training throughput, read from a run's
``metrics.jsonl`` (``tokens_per_sec`` of the train rows; the fastest logged
window is used, i.e. the most demanding consumer). Without ``--metrics`` the
demo is run first (``--train-steps`` steps) in a temporary workdir.

Usage (from the repository root)::

  python -m vedgan.main --config configs/seq2seq.py:demo --workdir /tmp/demo
  python benchmarks/input_pipeline.py --metrics /tmp/demo/metrics.jsonl
  python benchmarks/input_pipeline.py                  # runs 100 demo steps
  python benchmarks/input_pipeline.py --json out.json  # also write JSON

Exit status 1 if the pipeline is not at least ``--min-ratio`` (10) times
faster than the train step, in both examples/s and tokens/s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top

from vedgan import parallel  # pylint: disable=g-import-not-at-top
from vedgan.data import pipeline, sources  # pylint: disable=g-import-not-at-top
from vedgan.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top


def demo_settings() -> dict:
  """The data settings of ``configs/seq2seq.py:demo``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "seq2seq_cfg", os.path.join(REPO, "configs", "seq2seq.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("demo")
  return dict(batch_size=int(c.train.batch_size),
              buckets=tuple(c.data.buckets),
              max_context_len=int(c.data.max_context_len),
              max_response_len=int(c.data.max_response_len),
              context_turns=int(c.data.context_turns), eou=c.data.eou,
              vocab_size=int(c.tokenizer.vocab_size))


def chatterbot_pairs(context_turns: int, eou: str) -> list[tuple[str, str]]:
  """The demo's training pairs: the ``chatterbot_corpus`` TFDS train split."""
  records = sources.load_split({"name": "chatterbot_corpus"}, "train")
  return sources.dialogue_pairs(records, context_turns, eou)


def time_batches(iterator, num_batches: int, to_numpy: bool) -> tuple[float, int, int]:
  """(seconds, examples, response tokens) for ``num_batches`` batches."""
  examples = tokens = 0
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator)
    out = batch["response_out"]
    if to_numpy:
      out.block_until_ready()
      out = np.asarray(out)
    examples += int(np.asarray(batch["weight"]).sum())
    tokens += int(np.count_nonzero(out))
  return time.perf_counter() - start, examples, tokens


def train_throughput(metrics_path: str | None, steps: int) -> dict:
  """Fastest and median train ``tokens_per_sec`` of a seq2seq demo run."""
  if not metrics_path:
    workdir = tempfile.mkdtemp(prefix="vedgan-bench-demo-")
    cmd = [sys.executable, "-m", "vedgan.main", "--config",
           "configs/seq2seq.py:demo", "--workdir", workdir,
           f"--config.stages.mle.num_steps={steps}",
           "--config.train.progress=False"]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
  rates = []
  with open(metrics_path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      value = row.get("tokens_per_sec", row.get("scalars", {}).get(
          "tokens_per_sec") if isinstance(row.get("scalars"), dict) else None)
      if row.get("split", "train") == "train" and value:
        rates.append(float(value))
  if not rates:
    raise SystemExit(f"no train tokens_per_sec in {metrics_path}")
  return {"metrics": metrics_path, "windows": len(rates),
          "tokens_per_sec_max": max(rates),
          "tokens_per_sec_median": float(np.median(rates))}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--metrics", help="metrics.jsonl of a seq2seq demo run")
  parser.add_argument("--train-steps", type=int, default=100,
                      help="steps of the demo run when --metrics is not given")
  parser.add_argument("--batches", type=int, default=3000,
                      help="batches timed per measurement")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--min-ratio", type=float, default=10.0)
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args()

  s = demo_settings()
  pairs = chatterbot_pairs(s["context_turns"], s["eou"])
  tok = tokenizer_lib.train_sentencepiece([t for p in pairs for t in p],
                                          s["vocab_size"])
  start = time.perf_counter()
  enc = pipeline.encode_pairs(pairs, tok, s["max_context_len"],
                              s["max_response_len"])
  encode_s = time.perf_counter() - start
  mean_resp = (enc.counts["response_tokens"] + len(enc)) / len(enc)  # + eos

  def fresh():
    return pipeline.BatchIterator(enc, s["batch_size"], s["buckets"], seed=0)

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  best = {}
  for name in ("batch", "batch+device"):
    runs = []
    for _ in range(args.repeats):
      if name == "batch":
        runs.append(time_batches(fresh(), args.batches, to_numpy=False))
      else:
        placed = (parallel.shard_batch(b, mesh) for b in fresh())
        runs.append(time_batches(placed, args.batches, to_numpy=True))
    secs, examples, tokens = min(runs)
    best[name] = {"examples_per_sec": examples / secs,
                  "tokens_per_sec": tokens / secs,
                  "batches": args.batches, "seconds": secs}

  train = train_throughput(args.metrics, args.train_steps)
  train["examples_per_sec_max"] = train["tokens_per_sec_max"] / mean_resp
  slowest = best["batch+device"]
  ratio_tokens = slowest["tokens_per_sec"] / train["tokens_per_sec_max"]
  ratio_examples = slowest["examples_per_sec"] / train["examples_per_sec_max"]
  results = {
      "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                  "jax": jax.__version__, "devices": str(jax.devices()),
                  "loadavg": os.getloadavg()},
      "settings": s, "examples": len(enc),
      "mean_response_tokens_with_eos": mean_resp,
      "encode": {"examples_per_sec": len(enc) / encode_s,
                 "seconds": encode_s},
      **best, "train": train,
      "ratio_examples": ratio_examples, "ratio_tokens": ratio_tokens,
  }
  print(f"corpus: {len(enc)} pairs (chatterbot_corpus train), batch {s['batch_size']}, "
        f"buckets {s['buckets']}, mean response {mean_resp:.2f} tokens+eos")
  print(f"{'stage':<14}{'examples/s':>14}{'tokens/s':>14}")
  print(f"{'encode (once)':<14}{len(enc) / encode_s:>14,.0f}{'':>14}")
  for name in ("batch", "batch+device"):
    print(f"{name:<14}{best[name]['examples_per_sec']:>14,.0f}"
          f"{best[name]['tokens_per_sec']:>14,.0f}")
  print(f"{'train step':<14}{train['examples_per_sec_max']:>14,.0f}"
        f"{train['tokens_per_sec_max']:>14,.0f}  (fastest of "
        f"{train['windows']} logged windows; median "
        f"{train['tokens_per_sec_median']:,.0f} tokens/s)")
  print(f"pipeline / train step: {ratio_examples:.1f}x examples/s, "
        f"{ratio_tokens:.1f}x tokens/s (required >= {args.min_ratio:g}x)")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
  ok = min(ratio_examples, ratio_tokens) >= args.min_ratio
  print("PASS" if ok else "FAIL")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
