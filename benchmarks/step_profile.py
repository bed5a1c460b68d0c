"""Where a train step's time goes on CPU: XLA's per-operation times, grouped (issue 24, item 1).

Usage (from the repository root; pin with ``taskset`` so XLA sizes its pool to the core)::

  taskset -c 1 python benchmarks/step_profile.py --step seq2seq/mle --sizes issue24
  taskset -c 1 python benchmarks/step_profile.py --step latent_gan/gen --sizes issue24 \\
      --out /tmp/gen_profile.json

The step is built as :mod:`run` builds its side-by-side rows (:func:`harness.build`, the
driver's update on a synthetic full-length batch), compiled, warmed up, and run ``--steps``
times under ``jax.profiler.trace``. XLA:CPU records one event per executed thunk, named
after its HLO instruction (``dot.12``, ``ynn_fusion.3``, ``add_select_fusion``,
``while.9``; a scan's body runs as nested events inside its ``while``). Each event's
*exclusive* time (its duration less that of the events nested in it on the same thread) is
added to a group chosen from the instruction's name and its line in the compiled HLO:

* ``matmul, vocabulary-sized``: products with a dimension equal to the vocabulary (the
  output projection, its gradients) and ``matmul, other``: every other product (``dot``,
  ``convolution``, and the library-fused ``ynn_fusion`` / ``onednn`` calls that hold one);
* ``softmax / cross-entropy (vocabulary-sized)``: the other operations on vocabulary-sized
  arrays (log-softmax, the loss, the gradient of the logits);
* ``scan slicing / stacking``: ``dynamic-slice`` and ``dynamic-update-slice`` fusions (a
  scan reading its inputs and stacking its outputs);
* ``copies / transposes``, ``reductions``, ``elementwise fusions``, ``loop control`` (the
  ``while``/``conditional`` thunks' own time) and ``other``.

``--framework torch`` profiles the PyTorch twin of the same row instead (``run.torch_step``,
as many threads as this process has cores) with ``torch.profiler``: each operator's self
time, grouped the same way by its name and input shapes (:func:`torch_group`;
"elementwise fusions" then holds PyTorch's unfused elementwise operators, "other" its
autograd and optimizer bookkeeping).

  taskset -c 1 python benchmarks/step_profile.py --step seq2seq/mle --framework torch

The matmul rate of the step is the analytic model FLOPs (:func:`harness.analytic_flops`,
where the step has a formula) over the time in matmul groups, against
:func:`harness.matmul_peak` measured in the same process.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
  sys.path.insert(0, HERE)

import harness  # pylint: disable=wrong-import-position
import run as bench_run  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top

#: --sizes name -> {step name: config overrides}
SIZES = {
    "issue24": {"seq2seq/mle": bench_run.S2S_ISSUE24, "latent_gan/gen": bench_run.GAN_ISSUE24,
                "latent_gan/disc": bench_run.GAN_ISSUE24},
    "micro": {"seq2seq/mle": bench_run.S2S_MICRO, "latent_gan/gen": bench_run.GAN_MICRO,
              "latent_gan/disc": bench_run.GAN_MICRO},
}
GROUPS = ("matmul, vocabulary-sized", "matmul, other",
          "softmax / cross-entropy (vocabulary-sized)", "scan slicing / stacking",
          "copies / transposes", "reductions", "elementwise fusions", "loop control", "other")
_LOOP = ("while", "conditional", "call")


def hlo_lines(hlo_text: str) -> dict[str, str]:
  """``{instruction name: its line}`` for every instruction of the compiled module; a
  fusion's line is followed by the header of the computation it calls, which gives its
  operands' shapes (``ynn_fusion.40 = f32[1920,256] fusion(%bitcast.102, ...)`` names
  its ``[1920, 8000]`` operand only there)."""
  headers, out = {}, {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*%?([\w.\-]+)\s+\(.*\)\s*->.*\{\s*$", line)
    if m:
      headers[m.group(1)] = line
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=", line)
    if m:
      called = re.search(r"calls=%?([\w.\-]+)", line)
      if called and called.group(1) in headers:
        line = line + " " + headers[called.group(1)]
      out.setdefault(m.group(1), line)
  return out


def group_of(name: str, line: str, vocab: int) -> str:
  """The group of the thunk ``name`` whose HLO instruction is ``line`` ("" if unknown)."""
  v_sized = re.search(rf"[\[,]{vocab}[\],]", line) is not None
  base = name.split(".")[0]
  if base.startswith(("dot", "convolution", "ynn_fusion", "onednn")) or " dot(" in line:
    return "matmul, vocabulary-sized" if v_sized else "matmul, other"
  if base in _LOOP or name.startswith("ThunkExecutor"):
    return "loop control"
  if v_sized:
    return "softmax / cross-entropy (vocabulary-sized)"
  if "dynamic-update-slice" in name or "dynamic-slice" in name:
    return "scan slicing / stacking"
  if base.startswith(("copy", "transpose")) or "transpose" in name:
    return "copies / transposes"
  if "reduce" in name:
    return "reductions"
  if "fusion" in name:
    return "elementwise fusions"
  return "other"


def exclusive_times(events: list[dict]) -> collections.Counter:
  """``{event name: exclusive microseconds}`` over the complete events of one thread: each
  event's duration, less the durations of the events directly nested in it."""
  out: collections.Counter = collections.Counter()
  stack: list[tuple[float, str]] = []          # (end, name) of the enclosing events
  for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
    while stack and stack[-1][0] <= e["ts"]:
      stack.pop()
    out[e["name"]] += e["dur"]
    if stack:
      out[stack[-1][1]] -= e["dur"]
    stack.append((e["ts"] + e["dur"], e["name"]))
  return out


def xla_events(trace_dir: str) -> list[dict]:
  """The complete events of XLA's threads (not the Python thread) in the trace."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  threads = {e["tid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  # "... (wait for completion)": a thread waiting for thunks that run on another: not work
  return [e for e in events if e.get("ph") == "X" and "python" not in threads.get(e["tid"], "")
          and "wait for completion" not in e["name"]]


#: PyTorch operators that are matrix products (the rest are grouped by name and shapes)
_TORCH_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")
_TORCH_COPIES = ("aten::copy_", "aten::fill_", "aten::zero_", "aten::cat", "aten::stack",
                 "aten::clone", "aten::contiguous", "aten::index_put_", "aten::scatter_add_")
_TORCH_REDUCTIONS = ("aten::sum", "aten::mean", "aten::max", "aten::linalg_vector_norm",
                     "aten::norm", "aten::argmax")


def torch_group(name: str, shapes: list, vocab: int) -> str:
  """The group of the PyTorch operator ``name`` called with inputs of ``shapes``: the
  groups of the XLA profile, with "elementwise fusions" holding PyTorch's unfused
  elementwise operators and "other" the profiler's autograd/optimizer bookkeeping."""
  v_sized = any(vocab in list(shape or []) for shape in shapes)
  if name in _TORCH_MATMUL:
    return "matmul, vocabulary-sized" if v_sized else "matmul, other"
  if v_sized:
    return "softmax / cross-entropy (vocabulary-sized)"
  if name in _TORCH_COPIES:
    return "copies / transposes"
  if name in _TORCH_REDUCTIONS:
    return "reductions"
  return "elementwise fusions" if name.startswith("aten::") else "other"


def profile_torch(step: str, sizes: str, steps: int) -> dict:
  """The PyTorch twin of ``step`` (``run.torch_step``, one thread per core of this process),
  profiled by ``torch.profiler``: each operator's self time, grouped by :func:`torch_group`."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch.profiler import ProfilerActivity  # pylint: disable=import-outside-toplevel
  load_before = harness.load_average()
  cfg_path, variant = bench_run.OBJECTIVES[step][:2]
  config = harness.load_config(cfg_path, variant, SIZES[sizes][step])
  vocab = int(config.tokenizer.vocab_size)
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  fn, sync = bench_run.torch_step(step, config, "cpu", False)
  timing = harness.interleave({"step": fn}, repeats=3, sync=sync)["step"]
  with torch.profiler.profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(steps):
      sync(fn())
  groups, ops = collections.Counter(), collections.Counter()
  for e in prof.key_averages(group_by_input_shape=True):
    shapes = tuple(tuple(x) for x in e.input_shapes if x)
    groups[torch_group(e.key, shapes, vocab)] += e.self_cpu_time_total
    ops[(e.key, shapes)] += e.self_cpu_time_total
  top = [{"op": f"{name} {[list(x) for x in shapes]}", "group": torch_group(name, shapes, vocab),
          "ms_per_step": round(us / steps / 1e3, 3)} for (name, shapes), us in ops.most_common(15)]
  return _result(step, sizes, steps, config, "torch", load_before, timing, groups, top,
                 {"torch_threads": torch.get_num_threads()})


def _result(step, sizes, steps, config, framework, load_before, timing, groups, top,
            extra) -> dict:
  """The JSON of one profile: the step's median time, the groups, the top operations and
  the analytic matmul rate against the measured peak."""
  total = sum(groups.values())
  per_step_ms = {g: groups[g] / steps / 1e3 for g in GROUPS}
  flops = harness.analytic_flops(config, step)
  matmul_ms = per_step_ms["matmul, vocabulary-sized"] + per_step_ms["matmul, other"]
  peak = harness.matmul_peak()
  out = {"step": step, "framework": framework, "sizes": sizes, "overrides": SIZES[sizes][step],
         "cores": sorted(os.sched_getaffinity(0)), "load_before": load_before,
         "step_median_ms": round(timing["median_s"] * 1e3, 1),
         "profiled_ms_per_step": round(total / steps / 1e3, 1),
         "groups_ms_per_step": {g: round(v, 2) for g, v in per_step_ms.items()},
         "groups_share": {g: round(v * 1e3 * steps / total, 3) for g, v in per_step_ms.items()},
         "top_ops": top, **extra,
         "matmul_peak_gflops": round(peak["best_flops_per_s"] / 1e9, 1)}
  if flops and matmul_ms > 0:
    out["matmul_gflops"] = round(flops["model_flops"] / (matmul_ms / 1e3) / 1e9, 1)
    out["matmul_share_of_peak"] = round(out["matmul_gflops"] / out["matmul_peak_gflops"], 3)
  out["load_after"] = harness.load_average()
  return out


def profile(step: str, sizes: str, steps: int) -> dict:
  """Builds, compiles and profiles ``step``; returns the groups and the top operations."""
  load_before = harness.load_average()
  cfg_path, variant, step_name, stage, kind = bench_run.OBJECTIVES[step]
  config = harness.load_config(cfg_path, variant, SIZES[sizes][step])
  vocab = int(config.tokenizer.vocab_size)
  built = harness.build(config, step_name, stage, kind)
  compiled, stats = harness.compile_step(built)
  runner = harness.Runner(compiled, built)
  timing = harness.interleave({"step": runner}, repeats=3)["step"]
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(steps):
        harness.block(runner())
    events = xla_events(trace_dir)
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[e["tid"]].append(e)
  times: collections.Counter = collections.Counter()
  for thread_events in by_thread.values():
    times.update(exclusive_times(thread_events))
  lines = hlo_lines(compiled.as_text())
  groups = collections.Counter()
  for name, us in times.items():
    groups[group_of(name, lines.get(name, ""), vocab)] += us
  top = [{"op": n, "group": group_of(n, lines.get(n, ""), vocab),
          "ms_per_step": round(us / steps / 1e3, 3)} for n, us in times.most_common(15)]
  return _result(step, sizes, steps, config, "vedgan", load_before, timing, groups, top,
                 {"compile_s": round(stats["compile_s"], 2)})


def markdown(result: dict) -> str:
  """The groups as a markdown table (ms per step and share of the profiled time)."""
  rows = ["| group | ms / step | share |", "|---|---|---|"]
  for g in GROUPS:
    rows.append(f"| {g} | {result['groups_ms_per_step'][g]:.1f} | "
                f"{100 * result['groups_share'][g]:.1f}% |")
  return "\n".join(rows)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--step", choices=sorted(bench_run.OBJECTIVES), default="seq2seq/mle")
  p.add_argument("--sizes", choices=sorted(SIZES), default="issue24")
  p.add_argument("--steps", type=int, default=3, help="profiled steps (after a warm-up)")
  p.add_argument("--framework", choices=("vedgan", "torch"), default="vedgan",
                 help="torch: profile the PyTorch twin of the side-by-side rows instead")
  p.add_argument("--out", default="", help="write the result as JSON here")
  args = p.parse_args(argv)
  if args.step not in SIZES[args.sizes]:
    p.error(f"--step {args.step} has no {args.sizes} sizes; use one of "
            f"{', '.join(sorted(SIZES[args.sizes]))}")
  result = (profile_torch if args.framework == "torch" else profile)(args.step, args.sizes,
                                                                      args.steps)
  print(json.dumps({k: v for k, v in result.items() if k != "top_ops"}, indent=1))
  print(markdown(result))
  for op in result["top_ops"]:
    print(f"  {op['ms_per_step']:9.3f} ms  {op['group']:<45} {op['op']}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
