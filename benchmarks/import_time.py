"""How long a fresh process takes to import what every vedgan run imports.

Each module is imported alone in its own fresh process, pinned to ``--core``, ``--repeats``
times (round-robin over the modules); the table gives the median and the range of the
seconds ``import MODULE`` took in that process (everything it pulls in included), with the
installed ml_dtypes, numpy and jax versions and the load average before and after.

  python benchmarks/import_time.py --core 1 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import twins  # pylint: disable=wrong-import-position

MODULES = ("numpy", "ml_dtypes", "jax", "flax.linen", "optax", "orbax.checkpoint",
           "vedgan.train")
# the versions are read from the modules imported (after the timing), not the metadata
PROBE = ("import importlib, json, time\n"
         "t = time.perf_counter(); importlib.import_module({module!r})\n"
         "s = time.perf_counter() - t\n"
         "import jax, ml_dtypes, numpy\n"
         "print(json.dumps({{'s': s, 'versions': {{m.__name__: m.__version__ for m in "
         "(ml_dtypes, numpy, jax)}}}}))")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--core", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--modules", nargs="+", default=list(MODULES))
  p.add_argument("--out", help="write the rows as JSON here")
  args = p.parse_args()
  env = twins.worker_env()
  load_before = twins.load_average()
  times: dict[str, list[float]] = {m: [] for m in args.modules}
  versions = {}
  for _ in range(args.repeats):
    for module in args.modules:
      out = subprocess.run(
          twins.pinned_command([sys.executable, "-c", PROBE.format(module=module)],
                               [args.core]),
          env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
      row = twins.last_json(out)
      times[module].append(row["s"])
      versions = row["versions"]
  result = {"core": args.core, "repeats": args.repeats, "versions": versions,
            "load_before": load_before, "load_after": twins.load_average(),
            "seconds": times}
  print(f"versions {versions}; load {load_before[0]} -> {result['load_after'][0]}")
  print("| module | median | range |\n|---|---|---|")
  for module, ts in times.items():
    print(f"| `{module}` | {statistics.median(ts):.2f} s | {min(ts):.2f}-{max(ts):.2f} s |")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
