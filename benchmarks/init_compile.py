"""Compile time of every objective's initialiser: XLA's default against the library's choice.

``Objective.init`` (every network's parameters, optimizer states and extra state) runs once
per run, but compiling it is part of every fresh start. ``vedgan.objective.jit_init``
compiles it on CPU with :data:`vedgan.objective.INIT_COMPILER_OPTIONS` (LLVM -O1). For each
objective and size, one fresh process per option, pinned to one core from its first
instruction, with no persistent compilation cache, builds the objective on a synthetic
batch (as ``benchmarks/run.py``'s objectives section does) and compiles and runs its
initialiser once; the parent compares the parameters of the two processes byte for byte.

  python benchmarks/init_compile.py --sizes demo paper --core 1 \\
      --out benchmarks/results/issue24_init_compile.json --markdown
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # pylint: disable=wrong-import-position
import twins  # pylint: disable=wrong-import-position

#: objective -> (config file, {size: variant}); sizes as in ``run.py``'s ``CONFIGS``
CASES = {"seq2seq": ("configs/seq2seq.py", {"demo": "demo", "paper": "default"}),
         "happybot": ("configs/happybot.py", {"demo": "demo", "paper": "paper"}),
         "mojitalk": ("configs/mojitalk.py", {"demo": "demo", "paper": "paper"}),
         "collaborative_ved": ("configs/collaborative_ved.py",
                               {"demo": "co_ss,demo", "paper": "co_ss"}),
         "latent_gan": ("configs/latent_gan.py", {"demo": "demo", "paper": "paper"}),
         "topk_gan": ("configs/topk_gan.py", {"demo": "demo", "paper": "paper"})}
OPTIONS = ("default", "library")


def worker(spec: dict) -> dict:
  """Builds the objective, compiles its initialiser with one option, runs it once."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vedgan import objective as objective_lib  # pylint: disable=import-outside-toplevel

  obj, batch = harness.objective_on_synthetic_batch(
      harness.load_config(spec["config"], spec["variant"]))
  rng = jax.random.key(0)
  fn = (objective_lib.jit_init(obj) if spec["option"] == "library" else jax.jit(obj.init))
  wall, cpu = time.perf_counter(), time.process_time()
  lowered = fn.lower(rng, batch)
  lower_s = time.perf_counter() - wall
  compiled = lowered.compile()
  compile_wall, compile_cpu = time.perf_counter() - wall - lower_s, time.process_time() - cpu
  start = time.perf_counter()
  state = jax.block_until_ready(compiled(rng, batch))
  run_s = time.perf_counter() - start
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    digest.update(np.asarray(leaf).tobytes())
  return {"lower_s": round(lower_s, 3), "compile_wall_s": round(compile_wall, 3),
          "compile_cpu_s": round(compile_cpu - lower_s, 3), "run_s": round(run_s, 4),
          "state_sha256": digest.hexdigest()}


def measure(args) -> dict:
  env = twins.worker_env()  # no persistent cache: a hit would time a disk read
  rows = []
  for name in args.objectives:
    path, variants = CASES[name]
    for size in args.sizes:
      row = {"objective": name, "size": size, "config": f"{path}:{variants[size]}"}
      for option in OPTIONS:
        spec = {"config": path, "variant": variants[size], "option": option}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        out = twins.run_pinned(cmd, [args.core], env=env, timeout=1800)
        if out["returncode"] != 0:
          raise SystemExit(f"{name} {size} {option} failed:\n{out['stderr'][-2000:]}")
        result = json.loads(out["stdout"].strip().splitlines()[-1])
        result.update(process_wall_s=round(out["wall_s"], 2), load_before=out["load_before"],
                      load_after=out["load_after"])
        row[option] = result
        print(f"{name:18s} {size:6s} {option:8s} compile {result['compile_wall_s']:6.2f} s wall "
              f"{result['compile_cpu_s']:6.2f} s CPU  load {out['load_before']} -> "
              f"{out['load_after']}", file=sys.stderr, flush=True)
      row["bit_identical"] = row["default"]["state_sha256"] == row["library"]["state_sha256"]
      row["saving"] = round(1 - row["library"]["compile_wall_s"] / row["default"]["compile_wall_s"],
                            3)
      rows.append(row)
  return {"machine": harness.machine_info(), "core": args.core, "rows": rows,
          "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def _load(result: dict) -> str:
  """The 1-minute load average before -> after one worker."""
  before, after = result["load_before"][:1], result["load_after"][:1]
  return f"{before[0]:.2f} -> {after[0]:.2f}" if before and after else "n/a"


def markdown(result: dict) -> str:
  lines = ["| objective | size | default: compile wall / CPU | -O1: compile wall / CPU | saving "
           "| parameters bit-identical | load (default, -O1) |", "|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    d, o = r["default"], r["library"]
    lines.append(f"| {r['objective']} | {r['size']} | {d['compile_wall_s']:.1f} s / "
                 f"{d['compile_cpu_s']:.1f} s | {o['compile_wall_s']:.1f} s / "
                 f"{o['compile_cpu_s']:.1f} s | {100 * r['saving']:.0f}% | "
                 f"{'yes' if r['bit_identical'] else '**no**'} | {_load(d)}, {_load(o)} |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--objectives", nargs="+", default=list(CASES), choices=list(CASES))
  p.add_argument("--sizes", nargs="+", default=["demo"], choices=["demo", "paper"])
  p.add_argument("--core", type=int, default=0, help="the core every worker is pinned to")
  p.add_argument("--out", help="JSON file to write")
  p.add_argument("--markdown", action="store_true", help="print the table of docs/benchmarks.md")
  args = p.parse_args()
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))))
    return
  result = measure(args)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  if args.markdown:
    print(markdown(result))


if __name__ == "__main__":
  main()
