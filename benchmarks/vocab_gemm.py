"""The output layer's three products at the issue-24 seq2seq sizes, per library, one process.

``h [N, H] x W [H, V]`` (forward), ``h^T g`` (the kernel gradient) and ``g W^T`` (the input
gradient), N = B * T = 1920, H = 256, V = 8000, float32: jitted JAX (whatever ``XLA_FLAGS``
selects, so run it once per flag set), the kernel gradient also as ``(g^T h)^T``, the
forward product split into column and row blocks, numpy (its BLAS) and PyTorch (when
installed), timed round-robin after a warm-up; ms and GFLOP/s, median of ``--repeats``.

  taskset -c 1 python benchmarks/vocab_gemm.py
  for f in "" --xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true \\
      --xla_cpu_use_xnnpack=false; do XLA_FLAGS="$f" taskset -c 1 python benchmarks/vocab_gemm.py; done
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

N, H, V = 1920, 256, 8000


def _blocks(h, w, parts, axis):
  if axis == 1:
    return jnp.concatenate([h @ c for c in jnp.split(w, parts, axis=1)], axis=1)
  return jnp.concatenate([c @ w for c in jnp.split(h, parts, axis=0)], axis=0)


def candidates() -> dict:
  """``{name: zero-argument callable}`` over the same operands."""
  rng = np.random.default_rng(0)
  hn = rng.standard_normal((N, H), np.float32)
  wn = (rng.standard_normal((H, V), np.float32) * 0.05)
  gn = rng.standard_normal((N, V), np.float32)
  h, w, g = map(jnp.asarray, (hn, wn, gn))
  jit = lambda f, *a: functools.partial(jax.jit(f), *a)
  fns = {"jax forward h W": jit(lambda h, w: h @ w, h, w),
         "jax kernel grad h^T g": jit(lambda h, g: h.T @ g, h, g),
         "jax kernel grad (g^T h)^T": jit(lambda h, g: (g.T @ h).T, h, g),
         "jax input grad g W^T": jit(lambda g, w: g @ w.T, g, w),
         "jax forward, 4 column blocks": jit(lambda h, w: _blocks(h, w, 4, 1), h, w),
         "jax forward, 15 row blocks": jit(lambda h, w: _blocks(h, w, 15, 0), h, w),
         "numpy forward": lambda: hn @ wn,
         "numpy kernel grad": lambda: hn.T @ gn,
         "numpy input grad": lambda: gn @ wn.T}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    ht, wt, gt = (torch.from_numpy(x) for x in (hn, np.ascontiguousarray(wn.T), gn))
    fns.update({"torch forward (Linear)": lambda: torch.nn.functional.linear(ht, wt),
                "torch kernel grad g^T h": lambda: gt.t() @ ht,
                "torch input grad g W": lambda: gt @ wt})
  except ImportError:
    pass
  return fns


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--out")
  args = p.parse_args()
  fns = candidates()
  sync = lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x
  load = harness.load_average()
  timing = harness.interleave(fns, repeats=args.repeats, sync=sync)
  flops = 2 * N * H * V
  rows = {name: {"ms": round(t["median_s"] * 1e3, 1),
                 "gflops": round(flops / t["median_s"] / 1e9, 1)} for name, t in timing.items()}
  out = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "cores": sorted(os.sched_getaffinity(0)),
         "load_before": load, "load_after": harness.load_average(), "rows": rows}
  print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
  for name, r in rows.items():
    print(f"{name:32s} {r['ms']:8.1f} ms {r['gflops']:6.1f} GFLOP/s")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
