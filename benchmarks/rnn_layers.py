"""Recurrent layers side by side (issue 24): vedgan's GRU / LSTM against stock Flax and variants.

Every row is forward + backward (``jit(value_and_grad)`` of ``sum(outputs * mask) +
sum(final)`` with respect to the parameters and the inputs) or forward only, over
``x[B, T, D]`` with a right-padded ``[B, T]`` mask (lengths drawn in ``[T/2, T]``, as
the models batch them). All rows run in one process, interleaved round by round after
compilation; the table gives the median and the range of ``--rounds`` rounds, each the
mean of ``--inner`` calls.

Rows (``--layers gru,lstm,bigru``):

* ``vedgan``: the layer in ``vedgan.nn.rnn`` as it is now (``GRU``, ``LSTM``, ``BiGRU``;
  since issue 24 the per-step input projection, ``inloop`` below);
* ``flax`` / ``flax_len``: ``flax.linen.RNN`` with the stock cell (``GRUCell``,
  ``OptimizedLSTMCell``), without and with ``seq_lengths`` (its final carry is then
  gathered from the stacked carries); ``flax_lstmcell``: ``nn.LSTMCell``;
* pure-function formulations over the vedgan parameter tree (so they compute the
  same numbers as the layer):
  ``hoisted`` (the layer before issue 24: input projection of the whole sequence
  ``[T, B, 3H]`` before the scan, ``jnp.where`` mask), ``hoisted_arith`` (mask by
  arithmetic), ``hoisted_vjp`` (hoisted, with a hand-written backward scan and the
  hidden weight gradient as one ``[H, T*B] x [T*B, 3H]`` product after it),
  ``inloop`` (the input projection inside the scan body, per step),
  ``inloop_arith``, ``inloop_split`` (one matmul per gate), ``inloop_unrollN``,
  ``inloop_remat`` (``jax.checkpoint`` of the body), ``inloop_cat`` (LSTM: one
  ``[x_t; h] [W; U]`` product per step);
  for ``bigru``: ``hoisted`` (two hoisted scans, the layer before issue 24),
  ``two_scans`` (one per-step scan per direction) and ``one_scan`` (both
  directions advance in the same scan body).

Usage (``--cores 1`` pins the process to core 1 with ``os.sched_setaffinity``;
``--cores 2`` leaves both)::

  python benchmarks/rnn_layers.py --cores 1 --layers gru,lstm --hidden 256
  python benchmarks/rnn_layers.py --cores 2 --layers gru,lstm,bigru --mode fwd

Numbers from a shared, loaded machine: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def _set_cores(cores: int) -> None:
  if cores == 1:
    os.sched_setaffinity(0, {1})


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--cores", type=int, default=1, choices=(1, 2))
  ap.add_argument("--layers", default="gru,lstm")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--time", type=int, default=30)
  ap.add_argument("--inputs", type=int, default=128)
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--mode", default="grad", choices=("grad", "fwd"))
  ap.add_argument("--rounds", type=int, default=7)
  ap.add_argument("--inner", type=int, default=3)
  ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
  ap.add_argument("--json", default="", help="write the results here too")
  args = ap.parse_args(argv)
  _set_cores(args.cores)  # before JAX starts its thread pools

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  import rnn_variants  # pylint: disable=import-outside-toplevel  # benchmarks/rnn_variants.py

  b, t, d, h = args.batch, args.time, args.inputs, args.hidden
  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.normal(size=(b, t, d)), jax.numpy.float32)
  lengths = rng.integers(t // 2, t + 1, size=b)
  lengths[0] = t
  mask = jax.numpy.asarray(np.arange(t)[None, :] < lengths[:, None], jax.numpy.float32)
  wanted = [r for r in args.rows.split(",") if r]

  fns = {}
  for layer in args.layers.split(","):
    for name, (params, fn) in rnn_variants.rows(layer, x, mask, lengths, h).items():
      row = f"{layer}/{name}"
      if wanted and name not in wanted and row not in wanted:
        continue
      loss = rnn_variants.loss_of(fn, mask)
      jitted = jax.jit(loss) if args.mode == "fwd" else jax.jit(jax.value_and_grad(loss, (0, 1)))
      start = time.perf_counter()
      jax.block_until_ready(jitted(params, x))
      compile_s = time.perf_counter() - start
      jax.block_until_ready(jitted(params, x))
      fns[row] = (jitted, params, compile_s)

  load_before = [round(v, 2) for v in os.getloadavg()]
  times = {k: [] for k in fns}
  for _ in range(args.rounds):
    for row, (jitted, params, _) in fns.items():
      start = time.perf_counter()
      for _ in range(args.inner):
        out = jitted(params, x)
      jax.block_until_ready(out)
      times[row].append((time.perf_counter() - start) / args.inner * 1e3)
  load_after = [round(v, 2) for v in os.getloadavg()]

  results = {
      "cores": sorted(os.sched_getaffinity(0)), "mode": args.mode,
      "shape": {"B": b, "T": t, "D": d, "H": h}, "rounds": args.rounds, "inner": args.inner,
      "load_before": load_before, "load_after": load_after, "jax": jax.__version__,
      "rows": {k: {"median_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2),
                   "max_ms": round(max(v), 2), "compile_s": round(fns[k][2], 2)}
               for k, v in times.items()},
  }
  print(f"# {args.mode} B={b} T={t} D={d} H={h} cores={results['cores']} "
        f"load {load_before} -> {load_after}")
  for row, r in results["rows"].items():
    layer = row.split("/")[0]
    ref = results["rows"].get(f"{layer}/flax")
    ratio = f"{ref['median_ms'] / r['median_ms']:.2f}x flax" if ref else ""
    print(f"{row:28s} {r['median_ms']:8.2f} ms  [{r['min_ms']:.2f}, {r['max_ms']:.2f}]  "
          f"{ratio}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
