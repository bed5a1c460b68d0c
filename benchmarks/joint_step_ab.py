"""Side by side in one process: collaborative VED's CO+SS(joint) step with one forward pass
(``co_terms(..., joint=True)``: the encoder and the decoder run once, the gradients routed
by stop-gradients) and with the earlier two passes (``co_terms`` once with the latent
networks' parameters stopped, once with the encoder-decoder's stopped).

Both variants are built from the same config, synthetic batch and initial state at the
``medium`` sizes (``configs/collaborative_ved.py:co_ss_joint,medium``), compiled in this
process and timed round-robin. One step of each from the same state is compared: the two
formulations compute the same values and gradients, so the states agree to float32
round-off (the largest absolute difference of any parameter after one Adam step is
printed; bit equality is not expected, XLA fuses the two programs differently).

  taskset -c 0 python benchmarks/joint_step_ab.py      # one core
  python benchmarks/joint_step_ab.py                   # all of this process's cores
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from vedgan.papers.collaborative_ved.algorithm import CollaborativeVED  # pylint: disable=wrong-import-position,g-import-not-at-top
from vedgan.steps import Weighted  # pylint: disable=wrong-import-position,g-import-not-at-top

CONFIG = "configs/collaborative_ved.py"


def _two_pass_joint_loss(self, params, batch, ctx):
  """The earlier formulation: ``co_terms`` twice, each with one network's parameters
  stopped (the encoder and the decoder forward run in both passes)."""
  p = self.keep_rate(ctx)
  sg = jax.lax.stop_gradient
  ae = self.co_terms({**params, "latent": sg(params["latent"])}, batch, ctx.rng, True, p)
  cvae = self.co_terms({**params, "seq": sg(params["seq"])}, batch, ctx.rng, True, p)
  w = batch["weight"]
  total, metrics = self._co_loss(ae["ae_loss"] + cvae["cvae_loss"], cvae, w, p)
  return total, {"loss": Weighted((ae["ae_loss"] * w).sum(), w.sum()), **metrics}


def build_variant(two_pass: bool, variant: str):
  """The compiled joint step and its built inputs, traced with one or two passes."""
  config = harness.load_config(CONFIG, variant)
  stage = harness.train.Plan.from_config(config).spans[0].name
  one_pass = CollaborativeVED.co_joint_loss
  jax.clear_caches()               # no trace of the other variant may be reused
  try:
    if two_pass:
      CollaborativeVED.co_joint_loss = _two_pass_joint_loss
    built = harness.build(config, "joint", stage, "dialogue", donate=False)
    compiled, stats = harness.compile_step(built)
  finally:
    CollaborativeVED.co_joint_loss = one_pass
  return compiled, built, stats


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--variant", default="co_ss_joint,medium",
                      help="the config variant (a collaborative VED row with a joint step)")
  args = parser.parse_args(argv)
  result = {"machine": harness.machine_info(), "cores": sorted(os.sched_getaffinity(0)),
            "load_before": harness.load_average(), "config": f"{CONFIG}:{args.variant}"}
  variants = {name: build_variant(name == "two passes", args.variant)
              for name in ("two passes", "one pass")}
  outs = {name: jax.device_get(c(b.state, b.batch)) for name, (c, b, _) in variants.items()}
  diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
             for a, b in zip(jax.tree.leaves(outs["two passes"][0].params),
                             jax.tree.leaves(outs["one pass"][0].params), strict=True))
  runners = {name: harness.Runner(c, b) for name, (c, b, _) in variants.items()}
  timing = harness.interleave(runners, repeats=args.repeats)
  old_ms = timing["two passes"]["median_s"] * 1e3
  new_ms = timing["one pass"]["median_s"] * 1e3
  result.update({"two_passes_ms": round(old_ms, 1), "one_pass_ms": round(new_ms, 1),
                 "speedup": round(old_ms / new_ms, 3),
                 "max_abs_param_diff_after_one_step": diff,
                 "loss": {n: float(o[1]["loss"]) for n, o in outs.items()},
                 "compile_s": {n: round(s["compile_s"], 1) for n, (_, _, s) in variants.items()},
                 "load_after": harness.load_average()})
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
