"""vedgan train-step benchmarks, side by side with PyTorch (issue #11, item 6).

Usage (from the repository root)::

  python benchmarks/run.py --suite cpu --out benchmarks/results/cpu.json
  python benchmarks/run.py --suite gpu --out benchmarks/results/gpu.json    # bf16, cuDNN
  python benchmarks/run.py --suite micro --out /tmp/micro.json              # seconds; the test

Sections of the JSON (``--markdown`` also prints the tables of docs/benchmarks.md):

* ``machine``: CPU model, cores, load average before/after, jax/flax/torch versions,
  thread counts, the command line;
* ``peak``: the measured matmul rate (``[n, n] x [n, n]`` jitted, f32 on CPU, bf16
  on GPU), measured at the start and at the end of the run;
* ``side_by_side``: the seq2seq-attention teacher-forced MLE step and the latent
  GAN's free-running Gumbel-softmax ``gen`` and ``disc`` steps, vedgan and PyTorch
  timed round-robin in this process (same threads), with the tokens/s ratio and
  the issue's target;
* ``objectives``: each objective's main train step(s) built through
  :func:`vedgan.train.step_function` (the driver's update): compile time, step
  time, tokens/s, XLA FLOPs, memory analysis, analytic model FLOPs and
  utilisation of the measured peak;
* ``growth``: step time against batch, length, hidden size and vocabulary with a
  power-law fit ``time ~ x^k`` per axis (k = 1: linear);
* ``data_parallel``: 1/2/4/8 simulated CPU devices (one subprocess each, XLA's
  ``--xla_force_host_platform_device_count``): step time at a fixed per-device
  batch and, at a fixed global batch, the loss and parameters after one step
  compared with one device (equivalence). Simulated devices share the same cores,
  so on CPU this shows equivalence and overhead, not speed-up;
* ``targets``: the issue's targets, met or not, with the numbers.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

# -- what runs --------------------------------------------------------------------------

#: name -> (config file, variant, step, stage, batch kind)
OBJECTIVES = {
    "seq2seq/mle": ("configs/seq2seq.py", "default", "mle", "mle", "dialogue"),
    "happybot/rl": ("configs/happybot.py", "paper", "rl", "rl", "dialogue"),
    "mojitalk/cvae": ("configs/mojitalk.py", "paper", "cvae", "cvae", "dialogue"),
    "mojitalk/rl": ("configs/mojitalk.py", "paper", "rl", "rl", "dialogue"),
    "collaborative_ved/cvae": ("configs/collaborative_ved.py", "co_ss", "cvae", "co", "dialogue"),
    "latent_gan/gen": ("configs/latent_gan.py", "paper", "gen", "gan", "sentence"),
    "latent_gan/disc": ("configs/latent_gan.py", "paper", "disc", "gan", "sentence"),
    "topk_gan/gadv": ("configs/topk_gan.py", "paper", "gadv", "adversarial", "dialogue"),
    "topk_gan/dstep": ("configs/topk_gan.py", "paper", "dstep", "adversarial", "dialogue"),
}

#: demo variants (the "smaller" size of every objective)
DEMO_VARIANT = {"seq2seq": "demo", "happybot": "demo", "mojitalk": "demo",
                "collaborative_ved": "co_ss,demo", "latent_gan": "demo", "topk_gan": "demo"}

S2S_SMALL = {"train.batch_size": 32, "model.embed_dim": 256, "model.hidden": 256}
GAN_SMALL = {"train.batch_size": 64}
S2S_MICRO = {"train.batch_size": 4, "model.embed_dim": 16, "model.hidden": 16,
             "tokenizer.vocab_size": 64, "data.max_context_len": 6, "data.max_response_len": 5,
             "model.dropout": 0.0}
GAN_MICRO = {"train.batch_size": 4, "model.embed_dim": 8, "model.gen_hidden": 16,
             "model.disc_hidden": 8, "model.rec_hidden": 8, "tokenizer.vocab_size": 64,
             "data.max_len": 5}

SUITES = {
    "micro": dict(
        side_by_side=[("seq2seq/mle", "micro", S2S_MICRO), ("latent_gan/gen", "micro", GAN_MICRO)],
        objectives=[], repeats=2, inner=1, peak_n=256,
        growth={"seq2seq/mle": dict(base=S2S_MICRO, axes={"batch": [2, 4]})},
        dp_devices=[1, 2], dp=dict(base=S2S_MICRO, per_device_batch=2)),
    "cpu": dict(
        side_by_side=[("seq2seq/mle", "small", S2S_SMALL), ("seq2seq/mle", "paper", {}, 2),
                      ("latent_gan/gen", "small", GAN_SMALL),
                      ("latent_gan/disc", "small", GAN_SMALL, 3),
                      ("latent_gan/gen", "paper", {}, 2)],
        objectives=list(OBJECTIVES), repeats=5, inner=1, peak_n=2048,
        growth={
            "seq2seq/mle": dict(
                base={"train.batch_size": 16, "model.embed_dim": 128, "model.hidden": 128,
                      "tokenizer.vocab_size": 2000, "data.max_context_len": 16,
                      "data.max_response_len": 16},
                axes={"batch": [8, 32, 128], "length": [8, 32, 128], "hidden": [64, 256, 1024],
                      "vocab": [1000, 8000, 32000]}),
            "latent_gan/gen": dict(
                base={"train.batch_size": 32, "data.max_len": 16, "tokenizer.vocab_size": 2000},
                axes={"batch": [16, 64, 256]}),
        },
        dp_devices=[1, 2, 4, 8], dp=dict(base=dict(S2S_SMALL, **{"model.dropout": 0.0}),
                                         per_device_batch=8)),
}
SUITES["gpu"] = dict(SUITES["cpu"], peak_n=8192, dp_devices=[1])

#: growth axis -> the config fields it sets
AXES = {
    "seq2seq/mle": {"batch": ("train.batch_size",),
                    "length": ("data.max_context_len", "data.max_response_len"),
                    "hidden": ("model.hidden", "model.embed_dim"),
                    "vocab": ("tokenizer.vocab_size",)},
    "latent_gan/gen": {"batch": ("train.batch_size",), "length": ("data.max_len",),
                       "hidden": ("model.gen_hidden",), "vocab": ("tokenizer.vocab_size",)},
}

#: ``--set model.unroll=4 ...``: applied to every vedgan config of the run (not to PyTorch)
EXTRA_OVERRIDES: dict = {}

TARGETS = {"seq2seq/mle": 1.3, "latent_gan/gen": 1.5, "latent_gan/disc": 1.5}
GPU_TARGETS = {"seq2seq/mle": 1.0, "latent_gan/gen": 2.0, "latent_gan/disc": 2.0}


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _config(h, name: str, overrides: dict, variant: str | None = None, gpu: bool = False):
  path, default_variant, _, _, _ = OBJECTIVES[name]
  config = h.load_config(path, variant or default_variant, dict(overrides, **EXTRA_OVERRIDES))
  if gpu and "dtype" in config.model and "model.dtype" not in overrides:
    config.model.dtype = "bfloat16"        # bf16 compute, float32 parameters (issue #11 item 4)
  return config


def _measure(h, name: str, config, repeats: int, inner: int, extra_fns=None, sync=None,
             peak: float | None = None) -> dict:
  """Builds, compiles and times one vedgan step (round-robin with ``extra_fns``)."""
  _, _, step, stage, kind = OBJECTIVES[name]
  built = h.build(config, step, stage, kind)
  compiled, stats = h.compile_step(built)
  runner = h.Runner(compiled, built)
  fns = {"vedgan": runner}
  fns.update(extra_fns or {})
  syncs = {"vedgan": h.block}
  timed = {}
  if extra_fns and sync is not None:
    # alternate: one repetition of each in turn, with its own sync
    for k in fns:
      fn, s = fns[k], syncs.get(k, sync)
      s(fn())                                     # warm-up
    import statistics  # pylint: disable=import-outside-toplevel
    times = {k: [] for k in fns}
    for _ in range(repeats):
      for k, fn in fns.items():
        s = syncs.get(k, sync)
        start = time.perf_counter()
        out = None
        for _ in range(inner):
          out = fn()
        s(out)
        times[k].append((time.perf_counter() - start) / inner)
    timed = {k: {"median_s": statistics.median(v), "min_s": min(v),
                 "times_s": [round(x, 6) for x in v]} for k, v in times.items()}
  else:
    timed = h.interleave(fns, repeats, inner)
  metrics = {k: float(v) for k, v in runner.metrics.items() if getattr(v, "ndim", 1) == 0}
  out = dict(stats, step_s=timed["vedgan"]["median_s"], step_min_s=timed["vedgan"]["min_s"],
             times_s=timed["vedgan"]["times_s"], tokens_per_step=built.tokens,
             tokens_per_s=built.tokens / timed["vedgan"]["median_s"],
             batch_size=int(config.train.batch_size), last_metrics=metrics)
  flops = h.analytic_flops(config, name)
  if flops:
    out.update(model_flops=flops["model_flops"], output_share=round(flops["output_share"], 4))
    if peak:
      out["utilisation"] = flops["model_flops"] / out["step_s"] / peak
  if peak and out.get("xla_flops"):
    out["xla_flops_utilisation"] = out["xla_flops"] / out["step_s"] / peak
  del built, compiled, runner
  return out, {k: v for k, v in timed.items() if k != "vedgan"}


def _sizes(config, name: str) -> dict:
  m, d = config.model, config.data
  if name.startswith("seq2seq"):
    return {"B": int(config.train.batch_size), "S": int(d.max_context_len),
            "T": int(d.max_response_len), "E": int(m.embed_dim), "H": int(m.hidden),
            "V": int(config.tokenizer.vocab_size), "tie": bool(m.tie_embeddings),
            "attention": str(m.attention), "dropout": float(m.dropout), "dtype": str(m.dtype)}
  if name.startswith("latent_gan"):
    return {"B": int(config.train.batch_size), "T": int(d.max_len), "E": int(m.embed_dim),
            "H_gen": int(m.gen_hidden), "H_disc": int(m.disc_hidden), "H_rec": int(m.rec_hidden),
            "N_z": int(m.latent_dim), "V": int(config.tokenizer.vocab_size),
            "dtype": str(m.dtype)}
  return {"B": int(config.train.batch_size), "V": int(config.tokenizer.vocab_size)}


def torch_step(name: str, config, device: str, gpu: bool):
  """The PyTorch step of ``name`` at ``config``'s sizes: ``(fn, sync)``."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch_models  # pylint: disable=import-outside-toplevel
  import harness as h  # pylint: disable=import-outside-toplevel
  m = config.model
  amp = torch.bfloat16 if gpu else None
  np_batch = h.synthetic_batch(config, int(config.tokenizer.vocab_size),
                               int(config.train.batch_size))
  sync = lambda _: torch_models.synchronize(device)
  if name == "seq2seq/mle":
    if gpu:
      torch.backends.cudnn.enabled = True
    step = torch_models.Seq2SeqStep(
        int(config.tokenizer.vocab_size), int(m.embed_dim), int(m.hidden), str(m.attention),
        bool(m.tie_embeddings), float(m.dropout), float(config.stages.mle.learning_rate),
        float(config.optimizer.grad_clip_norm), device, amp)
    batch = step.batch(np_batch)
    return (lambda: step(batch)), sync
  step = torch_models.LatentGANStep(
      int(config.tokenizer.vocab_size), int(m.embed_dim), int(m.gen_hidden),
      int(m.disc_hidden), int(m.rec_hidden), int(m.latent_dim), int(config.data.max_len),
      int(m.position_features), float(m.gumbel_temperature), float(m.word_temperature),
      float(m.recon_weight), float(m.disc_dropout), float(m.disc_weight_decay),
      float(config.stages.gan.learning_rate), device=device, autocast_dtype=amp)
  batch = step.batch(np_batch)
  fn = step.gen_step if name.endswith("/gen") else step.disc_step
  return (lambda: fn(batch)), sync


# -- sections ---------------------------------------------------------------------------


def side_by_side(h, suite: dict, args, peak: float) -> list[dict]:
  rows = []
  gpu = args.suite == "gpu"
  device = "cuda" if gpu else "cpu"
  for name, label, overrides, *rest in suite["side_by_side"]:
    repeats = min(rest[0], suite["repeats"]) if rest else suite["repeats"]
    if (args.only and name not in args.only) or (args.sizes and label not in args.sizes):
      continue
    config = _config(h, name, overrides, gpu=gpu)
    log(f"side by side {name} [{label}] {_sizes(config, name)}")
    row = {"name": name, "size": label, "sizes": _sizes(config, name),
           "load_before": h.load_average()}
    extra, sync = {}, None
    if not args.skip_torch:
      try:
        fn, sync = torch_step(name, config, device, gpu)
        extra = {"torch": fn}
      except ImportError as e:
        row["torch_error"] = f"PyTorch not installed ({e}); pip install '.[bench]'"
    vedgan, others = _measure(h, name, config, repeats, suite["inner"], extra, sync, peak)
    row["vedgan"] = vedgan
    if "torch" in others:
      t = others["torch"]
      row["torch"] = dict(t, step_s=t["median_s"],
                          tokens_per_s=vedgan["tokens_per_step"] / t["median_s"])
      row["ratio_tokens_per_s"] = row["torch"]["step_s"] / vedgan["step_s"]
      per_rep = [a / b for a, b in zip(t["times_s"], vedgan["times_s"])]
      row["ratio_per_repetition"] = [round(x, 3) for x in per_rep]
      target = (GPU_TARGETS if gpu else TARGETS).get(name)
      row["target"] = target
      row["met"] = bool(target is not None and row["ratio_tokens_per_s"] >= target)
    row["load_after"] = h.load_average()
    rows.append(row)
    log(f"  vedgan {vedgan['step_s']:.4f}s  torch {row.get('torch', {}).get('step_s')}  "
        f"ratio {row.get('ratio_tokens_per_s')}")
  return rows


def objectives(h, suite: dict, args, peak: float, done: dict) -> list[dict]:
  rows = []
  gpu = args.suite == "gpu"
  for name in suite["objectives"]:
    if args.only and name not in args.only:
      continue
    sizes = [("demo", DEMO_VARIANT[name.split("/")[0]])]
    if name in done:
      sizes = [("paper", None)] + sizes
    for label, variant in sizes:
      if label == "paper":
        rows.append(dict(done[name], name=name, size="paper (side by side)"))
        continue
      try:
        config = _config(h, name, {}, variant=variant, gpu=gpu)
        log(f"objective {name} [{label}]")
        res, _ = _measure(h, name, config, max(2, suite["repeats"] // 2), 1, peak=peak)
        rows.append(dict(res, name=name, size=label, sizes=_sizes(config, name)))
      except Exception as e:  # pylint: disable=broad-except
        rows.append({"name": name, "size": label, "error": repr(e)[:300]})
        log(f"  failed: {e!r}"[:300])
  return rows


def growth(h, suite: dict, args, peak: float) -> dict:
  out = {}
  gpu = args.suite == "gpu"
  for name, spec in suite["growth"].items():
    if args.only and name not in args.only:
      continue
    out[name] = {"base": spec["base"], "axes": {}}
    for axis, values in spec["axes"].items():
      points = []
      for x in values:
        over = dict(spec["base"])
        for field in AXES[name][axis]:
          over[field] = x
        config = _config(h, name, over, gpu=gpu)
        log(f"growth {name} {axis}={x}")
        res, _ = _measure(h, name, config, max(2, suite["repeats"] // 2), 1, peak=peak)
        points.append({"x": x, "step_s": res["step_s"], "compile_s": res["compile_s"],
                       "tokens_per_s": res["tokens_per_s"], "model_flops": res.get("model_flops"),
                       "output_share": res.get("output_share"),
                       "utilisation": res.get("utilisation"),
                       "peak_memory_bytes": res.get("memory", {}).get("peak_estimate_bytes")})
      fit = h.fit_growth([p["x"] for p in points], [p["step_s"] for p in points])
      out[name]["axes"][axis] = {"fields": AXES[name][axis], "points": points, "fit": fit}
  return out


def data_parallel(suite: dict, args) -> list[dict]:
  """One subprocess per device count; each prints a JSON line."""
  rows = []
  spec = suite["dp"]
  for n in suite["dp_devices"]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "dp", "--devices", str(n),
           "--dp-spec", json.dumps(spec), "--repeats", str(max(2, suite["repeats"] // 2))]
    log(f"data parallel: {n} simulated device(s)")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
      rows.append({"devices": n, "error": proc.stderr[-500:]})
      continue
    rows.append(json.loads(lines[-1]))
  base = next((r for r in rows if r.get("devices") == 1 and "error" not in r), None)
  for r in rows:
    if base and "error" not in r:
      r["loss_diff_vs_1"] = abs(r["equivalence_loss"] - base["equivalence_loss"])
      r["params_max_abs_diff_vs_1"] = _max_diff(r.pop("equivalence_params"),
                                                base.get("equivalence_params_ref"))
      r["weak_scaling_time_ratio_vs_1"] = r["step_s"] / base["step_s"]
  for r in rows:
    r.pop("equivalence_params_ref", None)
    r.pop("equivalence_params", None)
  return rows


def _max_diff(a, b):
  if a is None or b is None:
    return None
  import numpy as np  # pylint: disable=import-outside-toplevel
  return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b)))


def dp_worker(args) -> None:
  """Runs in a subprocess with ``n`` simulated devices; prints one JSON line."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import harness as h  # pylint: disable=import-outside-toplevel
  from vedgan import parallel  # pylint: disable=import-outside-toplevel
  spec = json.loads(args.dp_spec)
  n = jax.device_count()
  if n != args.devices:
    raise SystemExit(f"expected {args.devices} devices, JAX sees {n}")
  name = "seq2seq/mle"
  # weak scaling: per-device batch fixed
  config = _config(h, name, dict(spec["base"], **{"train.batch_size":
                                                  spec["per_device_batch"] * n}))
  built = h.build(config, "mle", "mle", "dialogue")
  compiled, stats = h.compile_step(built)
  timed = h.interleave({"v": h.Runner(compiled, built)}, args.repeats)["v"]
  # equivalence: global batch fixed (the largest weak-scaling batch), one step from the same init
  global_b = spec["per_device_batch"] * max(8, n)
  config = _config(h, name, dict(spec["base"], **{"train.batch_size": global_b}))
  built_eq = h.build(config, "mle", "mle", "dialogue", donate=False)
  state, metrics = built_eq.step_fn(built_eq.state, built_eq.batch)
  leaves = [np.asarray(x).ravel()[:4096].tolist() for x in jax.tree.leaves(state.params)]
  out = {"devices": n, "per_device_batch": spec["per_device_batch"],
         "global_batch": spec["per_device_batch"] * n, "compile_s": stats["compile_s"],
         "step_s": timed["median_s"], "times_s": timed["times_s"],
         "tokens_per_s": built.tokens / timed["median_s"],
         "equivalence_global_batch": global_b, "equivalence_loss": float(metrics["loss"]),
         "equivalence_params": leaves}
  if n == 1:
    out["equivalence_params_ref"] = leaves
  print(json.dumps(out))


# -- targets and markdown ------------------------------------------------------------------


def targets(result: dict, gpu: bool) -> list[dict]:
  rows = []
  for r in result.get("side_by_side", []):
    if "ratio_tokens_per_s" in r and r.get("target") is not None:
      rows.append({"target": f"{r['name']} [{r['size']}] >= {r['target']}x PyTorch tokens/s",
                   "value": round(r["ratio_tokens_per_s"], 3), "met": r["met"]})
  peak_name = "bf16" if gpu else "f32"
  dominated = []
  for name, g in result.get("growth", {}).items():
    for axis in g["axes"].values():
      for p in axis["points"]:
        if (p.get("output_share") or 0) >= 0.5 and p.get("utilisation") is not None:
          dominated.append((name, p))
  for r in result.get("side_by_side", []):
    v = r.get("vedgan", {})
    if (v.get("output_share") or 0) >= 0.5 and v.get("utilisation") is not None:
      dominated.append((f"{r['name']} [{r['size']}]", v))
  for name, p in dominated:
    rows.append({"target": f"output-projection-dominated step ({name}, output share "
                           f"{p['output_share']:.2f}) >= 50% of measured {peak_name} matmul peak",
                 "value": round(p["utilisation"], 3), "met": p["utilisation"] >= 0.5})
  for r in result.get("objectives", []):
    if "compile_s" in r:
      cpu = r.get("compile_cpu_s")
      rows.append({"target": f"compile time {r['name']} [{r['size']}] < 20 s (wall; CPU time)",
                   "value": [round(r["compile_s"], 2), None if cpu is None else round(cpu, 2)],
                   "met": r["compile_s"] < 20})
  for r in result.get("data_parallel", []):
    if r.get("loss_diff_vs_1") is not None:
      ok = r["loss_diff_vs_1"] <= 1e-4 and (r["params_max_abs_diff_vs_1"] or 0) <= 1e-4
      rows.append({"target": f"data parallel {r['devices']} devices == 1 device "
                             "(loss and params, tol 1e-4)",
                   "value": [r["loss_diff_vs_1"], r["params_max_abs_diff_vs_1"]], "met": ok})
  return rows


def markdown(result: dict) -> str:
  """The tables of docs/benchmarks.md from a result JSON."""
  lines = []
  m = result["machine"]
  lines.append(f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, load average "
               f"{m.get('load_average_1_5_15')} -> {result.get('load_after')}; "
               f"jax {m['jax']}, flax {m.get('flax')}, torch {m.get('torch')} "
               f"({m.get('torch_threads')} threads); backend {m['jax_backend']}.")
  peak = result["peak"]
  lines.append(f"Measured matmul peak ({peak['start']['dtype']}, n={peak['start']['n']}): "
               f"{peak['start']['best_flops_per_s'] / 1e9:.1f} GFLOP/s at the start, "
               f"{peak['end']['best_flops_per_s'] / 1e9:.1f} GFLOP/s at the end.")
  lines.append("")
  lines.append("| step | size | vedgan step | PyTorch step | vedgan tokens/s | ratio (per rep.) "
               "| target | met |")
  lines.append("|---|---|---|---|---|---|---|---|")
  for r in result.get("side_by_side", []):
    v, t = r["vedgan"], r.get("torch", {})
    lines.append(f"| {r['name']} | {r['size']} {_short(r['sizes'])} | {v['step_s'] * 1e3:.1f} ms "
                 f"| {t.get('step_s', float('nan')) * 1e3:.1f} ms | {v['tokens_per_s']:.0f} | "
                 f"**{r.get('ratio_tokens_per_s', float('nan')):.2f}x** "
                 f"({', '.join(f'{x:.2f}' for x in r.get('ratio_per_repetition', []))}) | "
                 f"{r.get('target')}x | {'yes' if r.get('met') else 'no'} |")
  lines.append("")
  lines.append("| objective step | size | compile | step | tokens/s | XLA GFLOP | model GFLOP "
               "| utilisation | peak memory (XLA) |")
  lines.append("|---|---|---|---|---|---|---|---|---|")
  for r in result.get("objectives", []):
    if "error" in r:
      lines.append(f"| {r['name']} | {r['size']} | failed: {r['error'][:80]} | | | | | | |")
      continue
    mf = r.get("model_flops")
    util = r.get("utilisation")
    mem = r.get("memory", {}).get("peak_estimate_bytes")
    cpu = r.get("compile_cpu_s")
    lines.append(f"| {r['name']} | {r['size']} | {r['compile_s']:.1f} s "
                 f"({'n/a' if cpu is None else f'{cpu:.1f} s'} CPU) | "
                 f"{r['step_s'] * 1e3:.1f} ms | {r['tokens_per_s']:.0f} | "
                 f"{(r.get('xla_flops') or 0) / 1e9:.2f} | "
                 f"{'' if mf is None else f'{mf / 1e9:.2f}'} | "
                 f"{'' if util is None else f'{util:.1%}'} | "
                 f"{'' if mem is None else f'{mem / 2**20:.0f} MiB'} |")
  lines.append("")
  lines.append("| step | axis | values | step times | fitted exponent k (time ~ x^k) | R^2 |")
  lines.append("|---|---|---|---|---|---|")
  for name, g in result.get("growth", {}).items():
    for axis, a in g["axes"].items():
      lines.append(f"| {name} | {axis} | {', '.join(str(p['x']) for p in a['points'])} | "
                   f"{', '.join('%.1f' % (p['step_s'] * 1e3) for p in a['points'])} ms | "
                   f"{a['fit']['exponent']} | {a['fit']['r2']} |")
  lines.append("")
  lines.append("| devices | per-device batch | step | time vs 1 device | loss diff vs 1 | "
               "max param diff vs 1 |")
  lines.append("|---|---|---|---|---|---|")
  for r in result.get("data_parallel", []):
    if "error" in r:
      lines.append(f"| {r['devices']} | failed | | | | |")
      continue
    lines.append(f"| {r['devices']} | {r['per_device_batch']} | {r['step_s'] * 1e3:.1f} ms | "
                 f"{r.get('weak_scaling_time_ratio_vs_1', float('nan')):.2f}x | "
                 f"{r.get('loss_diff_vs_1', float('nan')):.2e} | "
                 f"{r.get('params_max_abs_diff_vs_1') or 0:.2e} |")
  lines.append("")
  lines.append("| target | value | met |")
  lines.append("|---|---|---|")
  for t in result.get("targets", []):
    lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |")
  return "\n".join(lines)


def _short(sizes: dict) -> str:
  keys = ("B", "S", "T", "E", "H", "H_gen", "V")
  return "(" + " ".join(f"{k}={sizes[k]}" for k in keys if k in sizes) + ")"


def merge(args) -> dict:
  """Sections of several result files (e.g. one invocation per section) in one file."""
  result = {}
  for path in args.merge:
    with open(path, encoding="utf-8") as f:
      part = json.load(f)
    for key, value in part.items():
      if key in ("side_by_side", "objectives", "data_parallel") and key in result:
        result[key] = result[key] + value
      elif key == "growth" and key in result:
        result[key].update(value)
      elif key not in result or key in ("load_after", "finished", "peak"):
        result[key] = value if key != "peak" or key not in result else {
            "start": result["peak"]["start"], "end": value["end"]}
  result["merged_from"] = [os.path.basename(p) for p in args.merge]
  done = {r["name"]: r["vedgan"] for r in result.get("side_by_side", []) if r["size"] == "paper"}
  for name, v in done.items():
    if not any(r["name"] == name and r["size"].startswith("paper")
               for r in result.get("objectives", [])):
      result.setdefault("objectives", []).insert(0, dict(v, name=name, size="paper (side by side)"))
  result["targets"] = targets(result, result.get("suite") == "gpu")
  out = args.out or os.path.join(HERE, "results", f"{result.get('suite', 'merged')}.json")
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  if args.markdown:
    print(markdown(result))
  return result


# -- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--suite", choices=sorted(SUITES), default="cpu")
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/SUITE.json)")
  p.add_argument("--only", nargs="*", default=None, help="objective step names to run")
  p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                 help="config overrides for every vedgan step (e.g. model.unroll=4); "
                      "values are parsed as Python literals")
  p.add_argument("--sizes", nargs="*", default=None,
                 help="side-by-side size labels to run (e.g. small paper)")
  p.add_argument("--sections", default="side_by_side,objectives,growth,data_parallel",
                 help="comma-separated sections to run")
  p.add_argument("--repeats", type=int, default=None, help="timed repetitions per step")
  p.add_argument("--threads", type=int, default=None,
                 help="PyTorch intra-op threads (default: the cores JAX's CPU backend uses)")
  p.add_argument("--single-thread", action="store_true",
                 help="one thread for both: XLA's CPU backend without its Eigen thread pool "
                      "and PyTorch with 1 intra-op thread (less sensitive to a loaded machine)")
  p.add_argument("--skip-torch", action="store_true", help="vedgan only")
  p.add_argument("--markdown", action="store_true", help="print the markdown tables")
  p.add_argument("--merge", nargs="*", default=None, metavar="JSON",
                 help="combine the sections of earlier result files into --out")
  p.add_argument("--worker", choices=["dp"], default=None, help=argparse.SUPPRESS)
  p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--dp-spec", default="{}", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  sys.path.insert(0, HERE)
  if args.worker == "dp":
    dp_worker(args)
    return {}
  if args.merge:
    return merge(args)
  for item in args.set:
    field, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected FIELD=VALUE, e.g. model.unroll=4")
    try:
      EXTRA_OVERRIDES[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      EXTRA_OVERRIDES[field] = value
  if args.single_thread:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               "false").strip()
    args.threads = 1
  import harness as h  # pylint: disable=import-outside-toplevel
  suite = dict(SUITES[args.suite])
  if args.repeats:
    suite["repeats"] = args.repeats
  gpu = args.suite == "gpu"
  if gpu and h.jax.default_backend() != "gpu":
    raise SystemExit("--suite gpu needs a GPU (jax.default_backend() is "
                     f"{h.jax.default_backend()!r}); use --suite cpu")
  threads = args.threads or len(os.sched_getaffinity(0))
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
  except ImportError:
    pass
  sections = set(args.sections.split(","))
  result = {"suite": args.suite, "command": " ".join([os.path.basename(sys.executable)] +
                                                     sys.argv),
            "git": h.git_revision(), "overrides": dict(EXTRA_OVERRIDES),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": h.machine_info(threads),
            "threads_note": (f"PyTorch set to {threads} intra-op threads; XLA's CPU backend "
                             + ("single-threaded (--single-thread)" if args.single_thread else
                                "uses one thread per core of the process's affinity "
                                f"({len(os.sched_getaffinity(0))})"))}
  peak_dtype = "bfloat16" if gpu else "float32"
  result["peak"] = {"start": h.matmul_peak(suite["peak_n"], peak_dtype)}
  peak = result["peak"]["start"]["best_flops_per_s"]
  log(f"matmul peak {peak / 1e9:.1f} GFLOP/s")
  if "side_by_side" in sections:
    result["side_by_side"] = side_by_side(h, suite, args, peak)
  done = {r["name"]: r["vedgan"] for r in result.get("side_by_side", [])
          if r["size"] == "paper"}
  if "objectives" in sections:
    result["objectives"] = objectives(h, suite, args, peak, done)
  if "growth" in sections:
    result["growth"] = growth(h, suite, args, peak)
  if "data_parallel" in sections and not gpu:
    result["data_parallel"] = data_parallel(suite, args)
    result["data_parallel_note"] = ("simulated devices share this machine's cores: the "
                                    "table shows equivalence and overhead, not speed-up; "
                                    "real scaling needs multi-core or multi-chip hardware")
  result["peak"]["end"] = h.matmul_peak(suite["peak_n"], peak_dtype)
  result["load_after"] = h.load_average()
  result["max_rss_mb"] = h.max_rss_mb()
  result["targets"] = targets(result, gpu)
  result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  out = args.out or os.path.join(HERE, "results", f"{args.suite}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  log(f"wrote {out}")
  if args.markdown:
    print(markdown(result))
  return result


if __name__ == "__main__":
  main()
