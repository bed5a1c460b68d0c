"""Side by side in one process: the free-running GAN steps with ``jnp.argmax`` and with
:func:`vedgan.relax.first_argmax` (two single-operand reductions), or (``--compare noise``)
with Gumbel noise from ``jax.random.gumbel`` under JAX's default (partitionable) threefry
scheme and from :func:`vedgan.relax.gumbel_noise` (the original scheme), at the sizes of
issue 24.

Both variants are built from the same config and initial state and compiled in this process
(the old one by routing ``relax.first_argmax`` to ``jnp.argmax``, or ``relax.gumbel_noise``
to ``jax.random.gumbel``, while it is traced), then timed round-robin. The script also
checks whether one step of each gives the same state and metrics, bit for bit (it does for
the two argmaxes, which return the same index for every input; the two noise schemes draw
different numbers).

  taskset -c 0 python benchmarks/argmax_ab.py                   # one core
  taskset -c 0 python benchmarks/argmax_ab.py --compare noise   # the two threefry schemes
  taskset -c 0 python benchmarks/argmax_ab.py --noise           # Gumbel noise per PRNG
  python benchmarks/argmax_ab.py --steps latent_gan/gen         # all of this process's cores
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # pylint: disable=wrong-import-position
import run as bench_run  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from vedgan import relax  # pylint: disable=wrong-import-position,g-import-not-at-top

SIZES = {"latent_gan/gen": bench_run.GAN_ISSUE24, "latent_gan/disc": bench_run.GAN_ISSUE24}


def _variadic_argmax(x, axis=-1):
  return jnp.argmax(x, axis=axis).astype(jnp.int32)


def _default_scheme_gumbel(key, shape, dtype=jnp.float32):
  return jax.random.gumbel(key, shape, dtype)


#: ``--compare``: (relax's function, its old stand-in, the old and the new variant's names)
COMPARISONS = {"argmax": ("first_argmax", _variadic_argmax, "jnp.argmax", "first_argmax"),
               "noise": ("gumbel_noise", _default_scheme_gumbel, "partitionable", "original")}


def build_variant(step: str, old: bool, compare: str = "argmax"):
  """The compiled step and its runner, traced with the old or the new function."""
  cfg_path, variant, step_name, stage, kind = bench_run.OBJECTIVES[step]
  config = harness.load_config(cfg_path, variant, SIZES[step])
  name, stand_in = COMPARISONS[compare][:2]
  new = getattr(relax, name)
  jax.clear_caches()               # no trace of the other variant may be reused
  try:
    if old:
      setattr(relax, name, stand_in)
    built = harness.build(config, step_name, stage, kind, donate=False)
    compiled, stats = harness.compile_step(built)
  finally:
    setattr(relax, name, new)
  return compiled, built, stats


def noise_rows(repeats: int, batch: int = 256, vocab: int = 6577, steps: int = 20) -> list:
  """The rollout's Gumbel noise alone: ``steps`` draws of ``[batch, vocab]`` in one scan,
  per PRNG implementation (and threefry's uniform bits without the two logs)."""
  def scan_of(draw):
    @jax.jit
    def run(key):
      def body(total, t):
        return total + draw(jax.random.fold_in(key, t)).sum(), None
      return jax.lax.scan(body, 0.0, jnp.arange(steps))[0]
    return run
  shape = (batch, vocab)
  fns = {}
  for impl in ("threefry2x32", "rbg", "unsafe_rbg"):
    run, key = scan_of(lambda k: jax.random.gumbel(k, shape)), jax.random.key(0, impl=impl)
    fns[f"gumbel {impl}"] = functools.partial(run, key)
  run = scan_of(lambda k: jax.random.uniform(k, shape))
  fns["uniform threefry2x32"] = functools.partial(run, jax.random.key(0))
  run = scan_of(lambda k: relax.gumbel_noise(k, shape))
  fns["gumbel threefry2x32, original scheme (relax.gumbel_noise)"] = functools.partial(
      run, jax.random.key(0))
  timing = harness.interleave(fns, repeats=repeats)
  return [{"noise": name, "draws": steps, "shape": list(shape),
           "median_ms": round(t["median_s"] * 1e3, 1)} for name, t in timing.items()]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", nargs="*", default=list(SIZES))
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--compare", choices=sorted(COMPARISONS), default="argmax")
  parser.add_argument("--noise", action="store_true",
                      help="time the Gumbel noise per PRNG implementation instead")
  args = parser.parse_args(argv)
  result = {"machine": harness.machine_info(), "cores": sorted(os.sched_getaffinity(0)),
            "load_before": harness.load_average(), "rows": []}
  if args.noise:
    args.steps = []
    for row in noise_rows(args.repeats):
      print(json.dumps(row), flush=True)
  old_name, new_name = COMPARISONS[args.compare][2:]
  for step in args.steps:
    variants = {name: build_variant(step, name == old_name, args.compare)
                for name in (old_name, new_name)}
    outs = {name: jax.device_get(c(b.state, b.batch)) for name, (c, b, _) in variants.items()}
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(outs[old_name]),
                                                    jax.tree.leaves(outs[new_name])))
    runners = {name: harness.Runner(c, b) for name, (c, b, _) in variants.items()}
    timing = harness.interleave(runners, repeats=args.repeats)
    old_ms = timing[old_name]["median_s"] * 1e3
    new_ms = timing[new_name]["median_s"] * 1e3
    key = lambda name: name.replace(".", "_").replace("-", "_") + "_ms"
    row = {"step": step, "sizes": SIZES[step], key(old_name): round(old_ms, 1),
           key(new_name): round(new_ms, 1), "speedup": round(old_ms / new_ms, 3),
           "bit_identical": bool(same),
           "compile_s": {n: round(s["compile_s"], 1) for n, (_, _, s) in variants.items()}}
    result["rows"].append(row)
    print(json.dumps(row), flush=True)
  result["load_after"] = harness.load_average()
  print(json.dumps({"load_before": result["load_before"], "load_after": result["load_after"],
                    "cores": result["cores"]}))


if __name__ == "__main__":
  main()
