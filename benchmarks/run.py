"""vedgan train-step benchmarks, side by side with PyTorch (issues #11 and 24).

Usage (from the repository root)::

  python benchmarks/run.py --suite cpu --out benchmarks/results/cpu.json
  python benchmarks/run.py --suite gpu --out benchmarks/results/gpu.json    # bf16, cuDNN
  python benchmarks/run.py --suite micro --out /tmp/micro.json              # seconds; the test
  python benchmarks/run.py --sections objectives --sizes demo,paper --compile-only
  python benchmarks/run.py --sections resume                                # resumed demo run

Sections of the JSON (``--markdown`` also prints the tables of docs/benchmarks.md):

* ``machine``: CPU model, cores, load average, jax/flax/torch versions, the
  JAX/XLA environment, the command line; ``twins``: the cores of the one-core and
  two-core runs;
* ``peak``: the measured matmul rate (``[n, n] x [n, n]`` jitted, f32 on CPU, bf16
  on GPU), measured at the start and at the end of the run (unpinned), and in each
  side-by-side worker on its cores;
* ``side_by_side``: the seq2seq-attention teacher-forced MLE step and the latent
  GAN's free-running Gumbel-softmax ``gen`` and ``disc`` steps, vedgan and PyTorch
  timed round-robin in one process, per row twice (:mod:`twins`): ``twins["1"]`` a
  worker process pinned to one core, ``twins["2"]`` to two, each with as many XLA
  and PyTorch threads as cores and the load average before and after it; the
  tokens/s ratio and the issue's target per twin, only when the one-core twin has a
  ratio (else ``ratio_withheld``);
* ``objectives``: every step function of every objective (each ``(stage, step)`` of
  the config's plan) built through :func:`vedgan.train.step_function` (the driver's
  update) in its own pinned process at demo (and, with ``--sizes demo,paper``,
  paper) size: compile wall and CPU time, the worker process's wall and CPU time,
  XLA FLOPs, memory analysis, and (without ``--compile-only``) step time;
* ``resume``: the seq2seq demo run started, stopped, and resumed with and without
  its compilation cache: process start to first step;
* ``growth``: step time against batch, length, hidden size and vocabulary with a
  power-law fit ``time ~ x^k`` per axis (k = 1: linear); in this process, unpinned;
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
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
  sys.path.insert(0, HERE)

import twins  # pylint: disable=wrong-import-position  # benchmarks/twins.py: stdlib only

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

#: objective -> (config file, paper variant, demo variant): the ``objectives`` (compile) section
CONFIGS = {"seq2seq": ("configs/seq2seq.py", "default", "demo"),
           "happybot": ("configs/happybot.py", "paper", "demo"),
           "mojitalk": ("configs/mojitalk.py", "paper", "demo"),
           "collaborative_ved": ("configs/collaborative_ved.py", "co_ss", "co_ss,demo"),
           "latent_gan": ("configs/latent_gan.py", "paper", "demo"),
           "topk_gan": ("configs/topk_gan.py", "paper", "demo")}

#: the sizes issue 24 measured (seq2seq: untied, general attention, no dropout; GAN: V 6577)
S2S_ISSUE24 = {"train.batch_size": 64, "data.max_context_len": 30, "data.max_response_len": 30,
               "model.embed_dim": 128, "model.hidden": 256, "tokenizer.vocab_size": 8000,
               "model.tie_embeddings": False, "model.attention": "general", "model.dropout": 0.0}
GAN_ISSUE24 = {"train.batch_size": 256, "data.max_len": 20, "tokenizer.vocab_size": 6577}
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
        side_by_side=[("seq2seq/mle", "issue24", S2S_ISSUE24),
                      ("latent_gan/disc", "issue24", GAN_ISSUE24),
                      ("latent_gan/gen", "issue24", GAN_ISSUE24),
                      ("seq2seq/mle", "small", S2S_SMALL), ("seq2seq/mle", "paper", {}, 2),
                      ("latent_gan/gen", "small", GAN_SMALL),
                      ("latent_gan/disc", "small", GAN_SMALL, 3),
                      ("latent_gan/gen", "paper", {}, 2)],
        objectives=list(CONFIGS), repeats=5, inner=1, peak_n=2048,
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


def _worker_cmd(kind: str, spec: dict) -> list[str]:
  return [sys.executable, os.path.abspath(__file__), "--worker", kind, "--spec", json.dumps(spec)]


def _twin_keys(args) -> list[str]:
  return [k.strip() for k in str(args.cores).split(",") if k.strip()]


def _pinned_twins(args) -> dict:
  """``{"1": cores, "2": cores}`` restricted to ``--cores``; ``--core`` picks the core."""
  sets = twins.core_sets(os.sched_getaffinity(0), args.core)
  return {k: sets[k] for k in _twin_keys(args) if k in sets}


def run_twin(kind: str, spec: dict, cores, timeout: float | None = None) -> dict:
  """Runs worker ``kind`` pinned to ``cores``; its result with the process's wall and CPU
  time and the load before and after, or ``{"error": ...}`` with them."""
  proc = twins.run_pinned(_worker_cmd(kind, spec), cores, env=twins.worker_env(), timeout=timeout)
  out = twins.last_json(proc["stdout"])
  meta = {k: proc[k] for k in ("cores", "wall_s", "cpu_s", "load_before", "load_after")}
  if proc["returncode"] != 0 or out is None:
    lines = [l.strip() for l in proc["stderr"].splitlines() if l.strip()]
    errors = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b", l)]
    why = (errors or lines or ["no output"])[-1]
    return dict(meta, error=f"worker exited {proc['returncode']}: {why}"[:400])
  return dict(out, **meta)


def side_by_side(suite: dict, args) -> list[dict]:
  """Every side-by-side row, once per core set of ``--cores`` (one pinned process each);
  ratios only for rows with a one-core twin (:func:`twins.finish_row`)."""
  rows = []
  gpu = args.suite == "gpu"
  sets = _pinned_twins(args)
  for name, label, overrides, *rest in suite["side_by_side"]:
    repeats = min(rest[0], suite["repeats"]) if rest else suite["repeats"]
    if (args.only and name not in args.only) or (args.sizes and label not in args.sizes):
      continue
    spec = {"name": name, "label": label, "overrides": overrides, "repeats": repeats,
            "inner": suite["inner"], "peak_n": suite["peak_n"], "gpu": gpu,
            "skip_torch": args.skip_torch, "single_thread": args.single_thread,
            "extra_overrides": EXTRA_OVERRIDES}
    row = {"name": name, "size": label, "twins": {}}
    for key, cores in sets.items():
      log(f"side by side {name} [{label}] on cores {list(cores)}")
      twin = run_twin("row", spec, cores)
      sizes = twin.pop("sizes", None)
      row["sizes"] = row.get("sizes") or sizes
      row["twins"][key] = twin
      log(f"  {twin.get('error') or ''}vedgan {twin.get('vedgan', {}).get('step_s')}  "
          f"torch {twin.get('torch', {}).get('step_s')}  load {twin['load_after']}")
    rows.append(twins.finish_row(row, (GPU_TARGETS if gpu else TARGETS).get(name)))
  return rows


def row_worker(spec: dict) -> dict:
  """One side-by-side row in this (pinned) process: vedgan and PyTorch round-robin on as
  many threads as cores of the affinity (1 with ``single_thread``)."""
  cores = sorted(os.sched_getaffinity(0))
  threads = 1 if spec["single_thread"] else len(cores)
  EXTRA_OVERRIDES.update(spec["extra_overrides"])
  import harness as h  # pylint: disable=import-outside-toplevel
  name, gpu = spec["name"], spec["gpu"]
  config = _config(h, name, spec["overrides"], gpu=gpu)
  out = {"sizes": _sizes(config, name), "affinity": cores, "threads": threads}
  peak = h.matmul_peak(spec["peak_n"], "bfloat16" if gpu else "float32")
  out["peak"] = peak
  extra, sync = {}, None
  if not spec["skip_torch"]:
    try:
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(threads)
      out["torch_version"], out["torch_threads"] = torch.__version__, torch.get_num_threads()
      fn, sync = torch_step(name, config, "cuda" if gpu else "cpu", gpu)
      extra = {"torch": fn}
    except ImportError as e:
      out["torch_error"] = f"PyTorch not installed ({e}); pip install '.[bench]'"
  vedgan, others = _measure(h, name, config, spec["repeats"], spec["inner"], extra, sync,
                            peak["best_flops_per_s"])
  out["vedgan"] = vedgan
  if "torch" in others:
    t = others["torch"]
    out["torch"] = dict(t, step_s=t["median_s"],
                        tokens_per_s=vedgan["tokens_per_step"] / t["median_s"])
  out["xla_threads"] = xla_pool_threads()
  return out


def xla_pool_threads() -> int:
  """Threads of this process named like XLA's CPU Eigen pool (``tf_XLAEigen``)."""
  n = 0
  for task in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as f:
        n += f.read().startswith("tf_XLAEigen")
    except OSError:
      continue  # the thread ended between listing and reading: not in the pool any more
  return n


def step_functions(config) -> list[tuple[str, str]]:
  """``[(stage, step)]``: every step function a run of ``config`` compiles (one per stage
  whose cycle uses it, as the driver keys them), in plan order."""
  from vedgan.plan import Plan  # pylint: disable=import-outside-toplevel
  return [(span.name, step) for span in Plan.from_config(config).spans
          if span.end > span.start for step in span.step_names]


def objectives(suite: dict, args) -> list[dict]:
  """Compile time (wall and CPU) of every step function of every objective, at the sizes of
  ``--sizes`` (``demo`` by default; ``paper``), one fresh process each, pinned to the
  one-core set; step time too unless ``--compile-only``."""
  import harness as h  # pylint: disable=import-outside-toplevel
  rows = []
  gpu = args.suite == "gpu"
  sizes = [s for s in (args.sizes or ["demo"]) if s in ("demo", "paper")]
  cores = twins.core_sets(os.sched_getaffinity(0), args.core)["1"]
  for objective in suite["objectives"]:
    path, paper, demo = CONFIGS[objective]
    if args.only and not any(o == objective or o.startswith(objective + "/") for o in args.only):
      continue
    for size in sizes:
      variant = demo if size == "demo" else paper
      config = h.load_config(path, variant, dict(EXTRA_OVERRIDES))
      for stage, step in step_functions(config):
        name = f"{objective}/{step}"
        if args.only and objective not in args.only and name not in args.only:
          continue
        spec = {"path": path, "variant": variant, "stage": stage, "step": step, "gpu": gpu,
                "kind": "sentence" if objective == "latent_gan" else "dialogue",
                "repeats": 0 if args.compile_only else max(2, suite["repeats"] // 2),
                "extra_overrides": EXTRA_OVERRIDES}
        log(f"objective {name} [{size}, stage {stage}] on cores {list(cores)}")
        res = run_twin("objective", spec, cores)
        proc = {k: res.pop(k) for k in ("cores", "wall_s", "cpu_s", "load_before",
                                        "load_after")}
        rows.append(dict(res, objective=objective, name=name, stage=stage, step=step,
                         size=size, variant=variant, process=proc))
        log(f"  compile {res.get('compile_s')} s wall, {res.get('compile_cpu_s')} s CPU "
            f"{res.get('error', '')}"[:300])
  return rows


def objective_worker(spec: dict) -> dict:
  """Builds, compiles and (``repeats`` > 0) times one step function in this process."""
  EXTRA_OVERRIDES.update(spec["extra_overrides"])
  import harness as h  # pylint: disable=import-outside-toplevel
  config = h.load_config(spec["path"], spec["variant"], dict(EXTRA_OVERRIDES))
  if spec["gpu"] and "dtype" in config.model:
    config.model.dtype = "bfloat16"
  built = h.build(config, spec["step"], spec["stage"], spec["kind"])
  compiled, stats = h.compile_step(built)
  out = dict(stats, tokens_per_step=built.tokens, batch_size=int(config.train.batch_size),
             affinity=sorted(os.sched_getaffinity(0)), xla_threads=xla_pool_threads())
  if spec["repeats"]:
    timed = h.interleave({"v": h.Runner(compiled, built)}, spec["repeats"])["v"]
    out.update(step_s=timed["median_s"], times_s=timed["times_s"],
               tokens_per_s=built.tokens / timed["median_s"])
  return out


def resume(args) -> list[dict]:
  """A seq2seq demo run (``python -m vedgan.main``) started, stopped by SIGTERM after a few
  steps, and resumed twice: with its compilation cache (filled by the first start) and
  with the cache off. Each start's time from spawn to its first step is the wall time of
  its first new ``metrics.jsonl`` train row (``train.log_every=1``) minus the spawn time.
  All starts pinned to the one-core set, in a temporary workdir and cache."""
  import signal  # pylint: disable=import-outside-toplevel
  cores = twins.core_sets(os.sched_getaffinity(0), args.core)["1"]
  rows = []
  with tempfile.TemporaryDirectory(prefix="vedgan-resume-") as tmp:
    workdir, cache = os.path.join(tmp, "run"), os.path.join(tmp, "cache")
    cmd = [sys.executable, "-m", "vedgan.main", "--config", "seq2seq:demo", "--workdir",
           workdir, "--config.train.log_every=1", "--config.train.progress=False"]
    metrics = os.path.join(workdir, "metrics.jsonl")
    starts = [("first", cache, args.resume_steps), ("resumed", cache, 1),
              ("resumed", "off", 1)]
    for start, cache_setting, steps in starts:
      env = twins.worker_env()
      env["VEDGAN_COMPILATION_CACHE"] = cache_setting
      before = twins.last_step(metrics)
      row = {"start": start, "cache": "off" if cache_setting == "off" else "on (filled by the "
             "first start)" if start == "resumed" else "on (empty)", "resumed_from": before,
             "load_before": twins.load_average()}
      err_path = os.path.join(tmp, f"stderr-{len(rows)}.txt")
      t0 = time.time()
      with open(err_path, "w", encoding="utf-8") as err_file:
        proc = subprocess.Popen(twins.pinned_command(cmd, cores), env=env, cwd=REPO,  # pylint: disable=consider-using-with
                                stdout=subprocess.DEVNULL, stderr=err_file)
      first = None
      while proc.poll() is None:
        first = first or twins.first_train_row(metrics, before)
        if first and twins.last_step(metrics) >= before + steps:
          proc.send_signal(signal.SIGTERM)
          break
        time.sleep(0.05)
      proc.wait(timeout=600)
      with open(err_path, encoding="utf-8", errors="replace") as f:
        err = f.read()
      first = first or twins.first_train_row(metrics, before)
      row.update(first_step=None if first is None else first["step"],
                 first_step_s=None if first is None else first["wall_time"] - t0,
                 returncode=proc.returncode, load_after=twins.load_average())
      if first is None:
        row["error"] = (err or "").strip().splitlines()[-1:] or ["no train row"]
      log(f"resume: {row}")
      rows.append(row)
      if first is None:
        break
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
  rows = twins.side_by_side_targets(result.get("side_by_side", []))
  peak_name = "bf16" if gpu else "f32"
  dominated = []
  for name, g in result.get("growth", {}).items():
    for axis in g["axes"].values():
      for p in axis["points"]:
        if (p.get("output_share") or 0) >= 0.5 and p.get("utilisation") is not None:
          dominated.append((name, p))
  for r in result.get("side_by_side", []):
    for key, twin in sorted(r.get("twins", {}).items()):
      v = twin.get("vedgan", {})
      if (v.get("output_share") or 0) >= 0.5 and v.get("utilisation") is not None:
        dominated.append((f"{r['name']} [{r['size']}, {key} core(s)]", v))
  for name, p in dominated:
    rows.append({"target": f"output-projection-dominated step ({name}, output share "
                           f"{p['output_share']:.2f}) >= 50% of measured {peak_name} matmul peak",
                 "value": round(p["utilisation"], 3), "met": p["utilisation"] >= 0.5})
  for r in result.get("objectives", []):
    if "compile_s" in r:
      cpu = r.get("compile_cpu_s")
      rows.append({"target": f"compile time {r['name']} [{r['size']}, stage {r.get('stage')}] "
                             f"<= {twins.COMPILE_TARGET_S:.0f} s (wall; CPU time)",
                   "value": [round(r["compile_s"], 2), None if cpu is None else round(cpu, 2)],
                   "met": twins.compile_met(r)})
  for r in result.get("resume", []):
    if r.get("start") == "resumed" and r.get("cache", "").startswith("on"):
      t = r.get("first_step_s")
      rows.append({"target": f"resumed seq2seq demo reaches its first step in < "
                             f"{twins.RESUME_TARGET_S:.0f} s (compilation cache on)",
                   "value": None if t is None else round(t, 2),
                   "met": t is not None and t < twins.RESUME_TARGET_S})
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
               f"jax {m['jax']}, flax {m.get('flax')}, torch {m.get('torch')}; backend "
               f"{m['jax_backend']}; side-by-side twins on cores {result.get('twins')} "
               "(threads = cores).")
  peak = result["peak"]
  lines.append(f"Measured matmul peak ({peak['start']['dtype']}, n={peak['start']['n']}): "
               f"{peak['start']['best_flops_per_s'] / 1e9:.1f} GFLOP/s at the start, "
               f"{peak['end']['best_flops_per_s'] / 1e9:.1f} GFLOP/s at the end.")
  if result.get("side_by_side"):
    lines.append("")
    lines.extend(twins.side_by_side_table(result["side_by_side"], _short))
  if result.get("objectives"):
    lines.append("")
    lines.extend(twins.compile_table(result["objectives"]))
  timed = [r for r in result.get("objectives", []) if "step_s" in r]
  if timed:
    lines.append("")
    lines.append("| objective step | size | compile | step | tokens/s | XLA GFLOP | model GFLOP "
                 "| utilisation | peak memory (XLA) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
  for r in timed:
    mf = r.get("model_flops")
    util = r.get("utilisation")
    mem = r.get("memory", {}).get("peak_estimate_bytes")
    cpu = r.get("compile_cpu_s")
    lines.append(f"| {r['name']} ({r.get('stage')}) | {r['size']} | {r['compile_s']:.1f} s "
                 f"({'n/a' if cpu is None else f'{cpu:.1f} s'} CPU) | "
                 f"{r['step_s'] * 1e3:.1f} ms | {r['tokens_per_s']:.0f} | "
                 f"{(r.get('xla_flops') or 0) / 1e9:.2f} | "
                 f"{'' if mf is None else f'{mf / 1e9:.2f}'} | "
                 f"{'' if util is None else f'{util:.1%}'} | "
                 f"{'' if mem is None else f'{mem / 2**20:.0f} MiB'} |")
  if result.get("resume"):
    lines.append("")
    lines.extend(twins.resume_table(result["resume"]))
  if result.get("growth"):
    lines.append("")
    lines.append("| step | axis | values | step times | fitted exponent k (time ~ x^k) | R^2 |")
    lines.append("|---|---|---|---|---|---|")
  for name, g in result.get("growth", {}).items():
    for axis, a in g["axes"].items():
      lines.append(f"| {name} | {axis} | {', '.join(str(p['x']) for p in a['points'])} | "
                   f"{', '.join('%.1f' % (p['step_s'] * 1e3) for p in a['points'])} ms | "
                   f"{a['fit']['exponent']} | {a['fit']['r2']} |")
  if result.get("data_parallel"):
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
      if key in ("side_by_side", "objectives", "data_parallel", "resume") and key in result:
        result[key] = result[key] + value
      elif key == "growth" and key in result:
        result[key].update(value)
      elif key not in result or key in ("load_after", "finished", "peak"):
        result[key] = value if key != "peak" or key not in result else {
            "start": result["peak"]["start"], "end": value["end"]}
  result["merged_from"] = [os.path.basename(p) for p in args.merge]
  gpu = result.get("suite") == "gpu"
  for row in result.get("side_by_side", []):  # older files: rows without twins get no ratio
    twins.finish_row(row, (GPU_TARGETS if gpu else TARGETS).get(row["name"]))
  result["targets"] = targets(result, gpu)
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
                 help="size labels to run, space- or comma-separated: side-by-side rows "
                      "(micro, small, paper) and the objectives' compile section (demo, paper; "
                      "default demo)")
  p.add_argument("--sections", default="side_by_side,objectives,growth,data_parallel",
                 help="comma-separated sections to run (also: resume)")
  p.add_argument("--repeats", type=int, default=None, help="timed repetitions per step")
  p.add_argument("--cores", default="1,2",
                 help="side-by-side twins to run: 1 (one core), 2 (two cores) or 1,2; a row "
                      "without its one-core twin gets no ratio")
  p.add_argument("--core", type=int, default=None,
                 help="the core of one-core runs (default: the highest of this process's "
                      "affinity); the two-core twin adds the highest other one")
  p.add_argument("--compile-only", action="store_true",
                 help="objectives section: compile times only, no step times")
  p.add_argument("--resume-steps", type=int, default=3,
                 help="resume section: steps of the first start before its SIGTERM")
  p.add_argument("--single-thread", action="store_true",
                 help="one thread for both in every twin: XLA's CPU backend without its Eigen "
                      "thread pool and PyTorch with 1 intra-op thread")
  p.add_argument("--skip-torch", action="store_true", help="vedgan only")
  p.add_argument("--markdown", action="store_true", help="print the markdown tables")
  p.add_argument("--merge", nargs="*", default=None, metavar="JSON",
                 help="combine the sections of earlier result files into --out")
  p.add_argument("--worker", choices=["dp", "row", "objective"], default=None,
                 help=argparse.SUPPRESS)
  p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--dp-spec", default="{}", help=argparse.SUPPRESS)
  p.add_argument("--spec", default="{}", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.sizes:
    args.sizes = [x for item in args.sizes for x in item.split(",") if x]
  bad = set(_twin_keys(args)) - {"1", "2"}
  if bad or not _twin_keys(args):
    p.error(f"--cores {args.cores!r}: expected 1, 2 or 1,2")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  sys.path.insert(0, HERE)
  if args.worker == "dp":
    dp_worker(args)
    return {}
  if args.worker in ("row", "objective"):
    worker = row_worker if args.worker == "row" else objective_worker
    print(json.dumps(worker(json.loads(args.spec))), flush=True)
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
  import harness as h  # pylint: disable=import-outside-toplevel
  suite = dict(SUITES[args.suite])
  if args.repeats:
    suite["repeats"] = args.repeats
  gpu = args.suite == "gpu"
  if gpu and h.jax.default_backend() != "gpu":
    raise SystemExit("--suite gpu needs a GPU (jax.default_backend() is "
                     f"{h.jax.default_backend()!r}); use --suite cpu")
  sections = set(args.sections.split(","))
  result = {"suite": args.suite, "command": " ".join([os.path.basename(sys.executable)] +
                                                     (sys.argv if argv is None else argv)),
            "git": h.git_revision(), "overrides": dict(EXTRA_OVERRIDES),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": h.machine_info(),
            "twins": {k: list(v) for k, v in _pinned_twins(args).items()},
            "threads_note": ("each side-by-side row runs in fresh processes pinned from their "
                             "start to one core (twin 1) and to two cores (twin 2); XLA's CPU "
                             "pool and PyTorch's intra-op threads match the cores"
                             + (" (--single-thread: 1 thread each)" if args.single_thread
                                else ""))}
  peak_dtype = "bfloat16" if gpu else "float32"
  result["peak"] = {"start": h.matmul_peak(suite["peak_n"], peak_dtype)}
  peak = result["peak"]["start"]["best_flops_per_s"]
  log(f"matmul peak {peak / 1e9:.1f} GFLOP/s (this process, unpinned)")
  if "side_by_side" in sections:
    result["side_by_side"] = side_by_side(suite, args)
  if "objectives" in sections:
    result["objectives"] = objectives(suite, args)
  if "resume" in sections:
    result["resume"] = resume(args)
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
