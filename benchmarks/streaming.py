"""The in-memory and the streamed training input (``config.data.input``) on a large corpus.

A synthetic ``tsv_pairs`` corpus of up to 10M (context, response) lines (Zipf-distributed
pseudo-words from a 5,000-word list, contexts 3-24 words, responses 2-15) is written once to
``--dir`` (about 1.3 GB for 10M; the 1M and 3M corpora are its first lines), with a
sentencepiece tokenizer (unigram, 2,000 ids) trained on its first 100k pairs; both paths use
that tokenizer, as a resumed run does (tokenizer training is not timed).

For each corpus size and path, a fresh Python process measures:

* ``first batch``: from nothing (vedgan imported, the tokenizer loaded; for the stream also
  grain imported, timed apart as ``import grain``) to the first training batch. Memory: read the file
  (:func:`vedgan.data.custom.load_split`), make the pairs, encode all of them, build the
  :class:`~vedgan.data.pipeline.BatchIterator`. Stream: open the
  :class:`~vedgan.data.streaming.TsvPairs` source (its line index already built) and build the
  :class:`~vedgan.data.streaming.StreamIterator`. The stream's one-off line index (built the
  first time a file is read, then reused) is timed separately, ``index``.
* ``examples/s``: rows of ``--batches`` further batches of ``--batch-size`` per second.
* ``RSS``: the process's resident memory (``VmRSS``) after those batches, and its peak
  (``VmHWM``), besides ``base`` (after importing vedgan and loading the tokenizer).

The memory path runs only up to ``--memory-max`` pairs (default 3M: at 10M it needs
gigabytes more than a shared machine has to spare); larger sizes are extrapolated linearly
from the two largest measured ones and marked so.

Usage (from the repository root)::

  python benchmarks/streaming.py                       # 1M, 3M, 10M; writes the corpus once
  taskset -c 1 python benchmarks/streaming.py --json /tmp/streaming.json
  python benchmarks/streaming.py --sizes 100000,300000 --memory-max 300000   # quick look
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_WORDS = 5000
_CHUNK_LINES = 250_000


def _status_kib(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: peak only


def _mib(kib: int) -> float:
  return kib / 1024


def write_corpus(path: str, lines: int, seed: int = 0) -> None:
  """``lines`` random ``context<TAB>response`` lines (see the module docstring)."""
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(_WORDS)],
                   dtype=object)
  p = 1.0 / (np.arange(_WORDS) + 10.0)
  p /= p.sum()
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as out:
    for start in range(0, lines, _CHUNK_LINES):
      n = min(_CHUNK_LINES, lines - start)
      lc, lr = rng.integers(3, 25, n), rng.integers(2, 16, n)
      per_line = lc + lr
      tokens = words[rng.choice(_WORDS, int(per_line.sum()), p=p)]
      seps = np.full(len(tokens), " ", dtype=object)
      ends = np.cumsum(per_line)
      seps[ends - lr - 1] = "\t"
      seps[ends - 1] = "\n"
      both = np.empty(2 * len(tokens), dtype=object)
      both[0::2], both[1::2] = tokens, seps
      out.write("".join(both))
  os.replace(tmp, path)


def prepare(directory: str, sizes: list[int]) -> dict[int, str]:
  """The corpus files ``{size: path}`` (the largest written, the others its first lines) and
  the tokenizer in ``directory/tokenizer``."""
  os.makedirs(directory, exist_ok=True)
  largest = max(sizes)
  paths = {n: os.path.join(directory, f"pairs_{n}", "train.tsv") for n in sizes}
  if not os.path.exists(paths[largest]):
    os.makedirs(os.path.dirname(paths[largest]), exist_ok=True)
    t = time.perf_counter()
    write_corpus(paths[largest], largest)
    print(f"wrote {largest:,} pairs in {time.perf_counter() - t:.0f} s: {paths[largest]}",
          flush=True)
  for n in sizes:
    if not os.path.exists(paths[n]):
      os.makedirs(os.path.dirname(paths[n]), exist_ok=True)
      with open(paths[largest], "rb") as src, open(paths[n] + ".tmp", "wb") as dst:
        for _, line in zip(range(n), src):
          dst.write(line)
      os.replace(paths[n] + ".tmp", paths[n])
  for n in sizes:  # a one-pair validation split ({split} layout)
    with open(os.path.join(os.path.dirname(paths[n]), "validation.tsv"), "w") as f:
      f.write("hello there\tgeneral kenobi\n")
  tok_dir = os.path.join(directory, "tokenizer")
  from vedgan.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  if not tok_lib.tokenizer_exists(tok_dir):
    texts = []
    with open(paths[largest], encoding="utf-8") as f:
      for _, line in zip(range(100_000), f):
        texts.extend(line.rstrip("\n").split("\t"))
    tok_lib.train_sentencepiece(texts, 2000, model_type="unigram").save(tok_dir)
  return paths


def child(kind: str, path: str, batch_size: int, batches: int, threads: int) -> dict:
  """One measurement in this (fresh) process; see the module docstring."""
  from vedgan.data import custom, pipeline, sources, streaming  # pylint: disable=import-outside-toplevel
  from vedgan.data.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  tok = load_tokenizer(os.path.join(os.path.dirname(os.path.dirname(path)), "tokenizer"))
  cfg = {"format": "tsv_pairs", "path": os.path.join(os.path.dirname(path), "{split}.tsv"),
         "context_turns": 1, "eou": "<eou>"}
  base = _status_kib("VmRSS")
  out = {"kind": kind, "base_mib": _mib(base)}
  if kind == "stream":
    t = time.perf_counter()
    importlib.import_module("grain")
    out["import_grain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = streaming.LineIndex(path)
    if os.environ.get("COLD_INDEX"):
      os.remove(index.index_path)
      t = time.perf_counter()
      index = streaming.LineIndex(path)
    out["index_s"] = time.perf_counter() - t
    del index
  t = time.perf_counter()
  if kind == "memory":
    pairs = sources.dialogue_pairs(custom.load_split(cfg, "train"), 1, "<eou>")
    enc = pipeline.encode_pairs(pairs, tok, 32, 24)
    del pairs
    it = pipeline.BatchIterator(enc, batch_size, (8, 16, 32), seed=0)
  else:
    it = streaming.StreamIterator(streaming.TsvPairs(cfg, "train"), tok, 32, 24, batch_size,
                                  (8, 16, 32), seed=0, num_threads=threads)
  next(it)
  out["first_batch_s"] = time.perf_counter() - t
  out["examples"] = it.num_examples
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  out["examples_per_s"] = batches * batch_size / (time.perf_counter() - t)
  out["rss_mib"] = _mib(_status_kib("VmRSS"))
  out["peak_mib"] = _mib(_status_kib("VmHWM"))
  return out


def _extrapolate(rows: list[dict], size: int) -> dict:
  """A memory-path row at ``size`` from the linear trend of the two largest measured."""
  (n0, a), (n1, b) = sorted((r["size"], r) for r in rows)[-2:]
  out = {"kind": "memory", "size": size, "extrapolated": True}
  for key in ("first_batch_s", "rss_mib", "peak_mib"):
    slope = (b[key] - a[key]) / (n1 - n0)
    out[key] = b[key] + slope * (size - n1)
  out["examples_per_s"] = b["examples_per_s"]
  out["base_mib"] = b["base_mib"]
  return out


def table(rows: list[dict]) -> str:
  lines = ["| path | pairs | import grain | line index (once per file) | first batch | "
           "examples/s | RSS after the batches | peak RSS | RSS before (imports + tokenizer) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    mark = " (extrapolated)" if r.get("extrapolated") else ""
    index = f"{r['index_s']:.1f} s" if "index_s" in r else "—"
    grain = f"{r['import_grain_s']:.1f} s" if "import_grain_s" in r else "—"
    rate = "—" if r.get("extrapolated") else f"{r['examples_per_s']:,.0f}"
    lines.append(f"| {r['kind']}{mark} | {r['size']:,} | {grain} | {index} | "
                 f"{r['first_batch_s']:.1f} s | "
                 f"{rate} | {r['rss_mib']:,.0f} MiB | {r['peak_mib']:,.0f} MiB | "
                 f"{r['base_mib']:,.0f} MiB |")
  return "\n".join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dir", default="/tmp/vedgan_stream_bench")
  parser.add_argument("--sizes", default="1000000,3000000,10000000")
  parser.add_argument("--memory-max", type=int, default=3_000_000)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--batches", type=int, default=300)
  parser.add_argument("--threads", type=int, default=0, help="grain's reading threads")
  parser.add_argument("--cold-index", action="store_true",
                      help="rebuild each stream's line index (time it)")
  parser.add_argument("--json", default="")
  parser.add_argument("--prepare-only", action="store_true", help="write the corpus and stop")
  parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child[0], args.child[1], args.batch_size, args.batches,
                           args.threads)))
    return 0
  sizes = sorted(int(s) for s in args.sizes.split(","))
  paths = prepare(args.dir, sizes)
  if args.prepare_only:
    return 0
  rows = []
  env = dict(os.environ, JAX_PLATFORMS="cpu", **({"COLD_INDEX": "1"} if args.cold_index else {}))
  for size in sizes:
    for kind in ("stream", "memory"):
      if kind == "memory" and size > args.memory_max:
        continue
      cmd = [sys.executable, __file__, "--child", kind, paths[size], "--batch-size",
             str(args.batch_size), "--batches", str(args.batches), "--threads", str(args.threads)]
      result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      if result.returncode:
        print(result.stderr[-2000:], file=sys.stderr)
        return 1
      row = dict(json.loads(result.stdout.strip().splitlines()[-1]), size=size)
      rows.append(row)
      print(json.dumps(row), flush=True)
  measured = [r for r in rows if r["kind"] == "memory"]
  for size in sizes:
    if size > args.memory_max and len(measured) >= 2:
      rows.append(_extrapolate(measured, size))
  rows.sort(key=lambda r: (r["kind"] != "stream", r["size"]))
  print(table(rows))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"rows": rows, "argv": sys.argv}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
