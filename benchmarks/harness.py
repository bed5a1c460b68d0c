"""Benchmark harness: vedgan train steps built through the library, timed and costed.

The steps are built exactly as training builds them: the config file and variant
(:mod:`vedgan.configlib`), the registered objective, its step spec turned into
the update by the driver (:func:`vedgan.train.step_function`: the stage's plan,
:func:`vedgan.steps.build_update`, :func:`vedgan.parallel.data_parallel` on a 1-D
mesh, donated state). Only the data is synthetic: a full-length random batch with every field
any objective reads (``context[B, S]``, ``response_in/out[B, T]``, ``tokens_in/out``,
``turns[B, N, L]``, labels...), so no corpus has to be prepared.

What is measured for a step (:func:`measure`):

* compile time: ``jit(...).lower(state, batch).compile()`` wall time;
* XLA's ``cost_analysis()`` FLOPs and ``memory_analysis()`` byte counts of the
  compiled step (XLA counts a ``while`` loop body once, so for scanned RNNs its
  FLOPs undercount; :func:`seq2seq_flops` / :func:`latent_gan_flops` give the
  analytic model FLOPs used for utilisation);
* step time: the median over repetitions, each the mean of ``inner`` steps after
  warm-up, with the state fed back as in training; tokens/s from it.

:func:`interleave` times several steps (e.g. vedgan and PyTorch) round-robin, so
both see the same machine load. :func:`matmul_peak` measures the machine's f32
(or bf16) matmul rate with one large jitted matmul; :func:`fit_growth` fits
``time = a * x^k`` to a sweep.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from vedgan import host_malloc  # pylint: disable=g-import-not-at-top,wrong-import-position

#: The allocator as a training run sets it (``train.host_malloc``'s default, before JAX starts
#: its threads); ``VEDGAN_HOST_MALLOC=system`` measures glibc's defaults instead. It is
#: process-wide: a side-by-side twin's PyTorch model runs under the same setting.
HOST_MALLOC = host_malloc.configure(None)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from vedgan import parallel, train  # pylint: disable=g-import-not-at-top,wrong-import-position
from vedgan.errors import ConfigError  # pylint: disable=g-import-not-at-top,wrong-import-position
from vedgan.objective import get_objective_class, jit_init  # pylint: disable=g-import-not-at-top,wrong-import-position


# -- the machine ---------------------------------------------------------------------


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def machine_info(torch_threads: int | None = None) -> dict:
  """CPU model, cores, load, library versions and the devices JAX sees."""
  info = {
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "load_average_1_5_15": load_average(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jax_backend": jax.default_backend(),
      "jax_devices": [str(d) for d in jax.devices()],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "host_malloc": HOST_MALLOC,
  }
  try:
    import flax  # pylint: disable=import-outside-toplevel
    info["flax"] = flax.__version__
  except ImportError:
    pass
  try:  # the version without importing torch (seconds); the workers import it
    info["torch"] = importlib.metadata.version("torch")
  except importlib.metadata.PackageNotFoundError:
    info["torch"] = None
  if torch_threads is not None:
    info["torch_threads"] = torch_threads
  if info["torch"] and jax.default_backend() == "gpu":
    import torch  # pylint: disable=import-outside-toplevel
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
  info["env"] = {k: v for k, v in os.environ.items()
                 if k.startswith(("JAX_", "XLA_", "VEDGAN_", "OMP_", "MKL_"))}
  return info


def max_rss_mb() -> float:
  """Peak resident set size of this process so far (MiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- timing ----------------------------------------------------------------------------


def block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def interleave(fns: dict[str, Callable[[], Any]], repeats: int, inner: int = 1,
               warmup: int = 1, sync: Callable[[Any], Any] | None = None) -> dict[str, dict]:
  """Times each ``fn()`` round-robin; returns ``{name: {"median_s", "min_s", "times_s"}}``.

  Each repetition runs every function ``inner`` times in a row (after ``warmup``
  untimed calls each), and records the mean time per call; the functions
  alternate within every repetition so slow phases of a shared machine hit all
  of them. ``sync(result)`` must wait for the work (``jax.block_until_ready`` by
  default; PyTorch steps pass a callable that synchronizes).
  """
  sync = sync or block
  for fn in fns.values():
    for _ in range(warmup):
      sync(fn())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      out = None
      for _ in range(inner):
        out = fn()
      sync(out)
      times[name].append((time.perf_counter() - start) / inner)
  return {k: {"median_s": statistics.median(v), "min_s": min(v),
              "times_s": [round(x, 6) for x in v]}
          for k, v in times.items()}


def matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> dict:
  """Measured matmul rate: a jitted ``[n, n] x [n, n]`` product, best and median of ``repeats``."""
  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  a = jax.random.normal(jax.random.key(0), (n, n), dt)
  b = jax.random.normal(jax.random.key(1), (n, n), dt)
  f = jax.jit(lambda x, y: x @ y)
  block(f(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(f(a, b))
    times.append(time.perf_counter() - start)
  flops = 2.0 * n ** 3
  return {"n": n, "dtype": dtype, "best_flops_per_s": flops / min(times),
          "median_flops_per_s": flops / statistics.median(times)}


def fit_growth(xs, ys) -> dict:
  """Least-squares fit of ``log y = log a + k log x``; returns ``k``, ``a`` and ``r2``."""
  lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
  if len(lx) < 2:
    return {"exponent": None, "r2": None}
  k, la = np.polyfit(lx, ly, 1)
  pred = la + k * lx
  ss = float(((ly - ly.mean()) ** 2).sum())
  r2 = 1.0 - float(((ly - pred) ** 2).sum()) / ss if ss > 0 else 1.0
  return {"exponent": round(float(k), 3), "coefficient": float(np.exp(la)), "r2": round(r2, 4)}


# -- configs and synthetic data --------------------------------------------------------


class StubTokenizer:
  """What the objectives read from a tokenizer, without a trained model.

  Ids follow :mod:`vedgan.data.tokenizer`: pad 0, unk 1, bos 2, eos 3, eou 4, blank 5.
  """
  pad_id, unk_id, bos_id, eos_id, eou_id, blank_id = 0, 1, 2, 3, 4, 5
  model_type = "word"
  user_symbols = {"<eou>": 4, "<blank>": 5}
  fingerprint = "benchmark-stub"

  def __init__(self, vocab_size: int):
    self.vocab_size = int(vocab_size)

  def id_to_piece(self, i: int) -> str:
    return ["<pad>", "<unk>", "<s>", "</s>", "<eou>", "<blank>"][i] if i < 6 else f"w{i}"

  def decode(self, ids) -> str:
    return " ".join(self.id_to_piece(int(i)) for i in ids if int(i) > 5)

  def encode(self, text: str) -> list[int]:
    return [6 + (hash(w) % (self.vocab_size - 6)) for w in text.split()]


def load_config(path: str, variant: str, overrides: dict | None = None):
  """A config file's variant with dotted ``overrides`` (as ``--config.a.b=v``)."""
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  spec = importlib.util.spec_from_file_location("bench_cfg_" + os.path.basename(full)[:-3], full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  for dotted, value in (overrides or {}).items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"benchmark override {dotted}={value!r}: {path}:{variant} has no field "
                        f"{dotted}; check the spelling")
    node[leaf] = value
  return config


def lengths(config) -> dict:
  """The static lengths a config's batches have: S, T, sentence length, turns."""
  d = config.data
  return {"S": int(d.max_context_len), "T": int(d.max_response_len),
          "sentence": int(d.get("max_len", 0) or 0), "turns": int(d.get("max_turns", 0) or 0),
          "turn_len": int(d.get("max_turn_len", 0) or 0)}


def synthetic_batch(config, vocab_size: int, batch_size: int, seed: int = 0) -> dict:
  """A full-length random batch with every field the objectives read (numpy, int32/float32).

  Dialogue fields: ``context[B, S]``, ``response_in[B, T]`` = ``[bos, y_1..]``,
  ``response_out[B, T]`` = ``[y.., eos]`` (no padding, so every token counts);
  HappyBot's ``last_turn``/``next_turn[B, L]``, ``has_next[B]``, ``response_label[B]``;
  MojiTalk's ``label[B]``; the hierarchical ``turns[B, N, L]``, ``num_turns[B]``;
  sentence fields ``tokens_in/out[B, T_s]``, ``real`` (sentences end at the last position;
  ``T_s`` is ``data.max_len``, else ``max_turn_len`` (HappyBot's classifier), else ``T``).
  """
  r = np.random.RandomState(seed)
  b, ln = batch_size, lengths(config)
  words = lambda *shape: r.randint(6, vocab_size, size=shape).astype(np.int32)
  s, t = ln["S"], ln["T"]
  out = words(b, t)
  out[:, -1] = StubTokenizer.eos_id
  batch = {
      "context": words(b, s),
      "response_in": np.concatenate([np.full((b, 1), StubTokenizer.bos_id, np.int32),
                                     out[:, :-1]], axis=1),
      "response_out": out,
      "weight": np.ones((b,), np.float32),
  }
  u = ln["turn_len"] or t
  batch.update(last_turn=words(b, u), next_turn=words(b, u),
               has_next=np.ones((b,), np.float32),
               response_label=r.randint(-1, 2, size=(b,)).astype(np.int32))
  num_labels = int(config.model.get("num_labels", 0) or config.data.get("num_labels", 0) or 2)
  batch["label"] = r.randint(0, num_labels, size=(b,)).astype(np.int32)
  if ln["turns"]:
    batch["turns"] = words(b, ln["turns"], ln["turn_len"])
    batch["num_turns"] = np.full((b,), ln["turns"], np.int32)
  n = ln["sentence"] or ln["turn_len"] or t  # sentences: GAN data, HappyBot's classifier
  if n:
    rows = words(b, n)
    rows[:, -1] = StubTokenizer.eos_id
    batch["tokens_out"] = rows
    batch["tokens_in"] = np.concatenate([np.full((b, 1), StubTokenizer.bos_id, np.int32),
                                         rows[:, :-1]], axis=1)
    batch["real"] = np.where(rows == StubTokenizer.eos_id, StubTokenizer.blank_id, rows)
  return batch


def tokens_per_step(config, batch: dict, kind: str) -> int:
  """Tokens a step trains on: response tokens (dialogue) or sentence positions (sentence)."""
  if kind == "sentence":
    return int(np.prod(batch["tokens_out"].shape))
  return int((np.asarray(batch["response_out"]) != 0).sum())


# -- building and measuring vedgan steps ------------------------------------------------


def stage_of(config, stage_name: str):
  """``(stage config, global start step)`` of ``stage_name`` in the config's plan."""
  for span in train.Plan.from_config(config).spans:
    if span.name == stage_name:
      return span.config, span.start
  if stage_name in config.stages:
    return config.stages[stage_name], 0
  raise ConfigError(f"stage {stage_name!r} is not in config.stages ({sorted(config.stages)})")


class Built:
  """A jitted data-parallel step, its initial state and global batch, and their objective."""

  def __init__(self, objective, step_fn, state, batch, mesh, tokens):
    self.objective, self.step_fn, self.state, self.batch = objective, step_fn, state, batch
    self.mesh, self.tokens = mesh, tokens


def objective_on_synthetic_batch(config, seed: int = 0) -> tuple[Any, dict]:
  """``config.objective`` built on a :class:`StubTokenizer`, and a full global batch of
  :func:`synthetic_batch` (numpy)."""
  vocab = int(config.tokenizer.vocab_size)
  objective = get_objective_class(config.objective)(config, StubTokenizer(vocab))
  objective.steps_per_epoch = 1000        # the trainer learns it from the data (bind_inputs)
  return objective, synthetic_batch(config, vocab, int(config.train.batch_size), seed)


def build(config, step_name: str, stage_name: str, kind: str, devices=None,
          donate: bool = True, seed: int = 0) -> Built:
  """Builds ``step_name`` of ``config.objective`` as training does, on a synthetic batch."""
  objective, np_batch = objective_on_synthetic_batch(config, seed)
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(int(config.train.batch_size), mesh)
  batch = parallel.shard_batch(np_batch, mesh)
  state = parallel.replicate(jit_init(objective)(jax.random.key(seed), np_batch), mesh)
  stage_of(config, stage_name)  # a one-line error for an unknown stage
  step_fn = train.step_function(objective, step_name, config, state, stage=stage_name, mesh=mesh,
                                donate_state=donate)
  return Built(objective, step_fn, state, batch, mesh, tokens_per_step(config, np_batch, kind))


def compile_step(built: Built) -> tuple[Any, dict]:
  """AOT-compiles the step; returns ``(compiled, stats)`` with compile time, FLOPs, memory."""
  start, cpu = time.perf_counter(), time.process_time()
  lowered = built.step_fn.lower(built.state, built.batch)
  compiled = lowered.compile()
  # wall time, and the CPU time of this process (all threads): on a shared machine the
  # wall time grows with the load, the CPU time much less.
  stats = {"compile_s": time.perf_counter() - start, "compile_cpu_s": time.process_time() - cpu}
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    stats["xla_flops"] = float(cost.get("flops", 0.0))
    stats["xla_bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
  except Exception as e:  # pylint: disable=broad-except
    stats["xla_flops"] = None
    stats["cost_analysis_error"] = repr(e)[:200]
  try:
    mem = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
    m = {f: int(getattr(mem, f, 0) or 0) for f in fields}
    m["peak_estimate_bytes"] = (m["argument_size_in_bytes"] + m["output_size_in_bytes"]
                                - m["alias_size_in_bytes"] + m["temp_size_in_bytes"])
    stats["memory"] = m
  except Exception as e:  # pylint: disable=broad-except
    stats["memory"] = {"error": repr(e)[:200]}
  return compiled, stats


class Runner:
  """Calls a compiled step repeatedly, feeding the (donated) state back."""

  def __init__(self, compiled, built: Built):
    self.compiled, self.state, self.batch = compiled, built.state, built.batch
    self.metrics = None

  def __call__(self):
    self.state, self.metrics = self.compiled(self.state, self.batch)
    return self.metrics


# -- analytic model FLOPs (fwd + bwd = 3x the forward matmuls) --------------------------


def seq2seq_flops(b: int, s: int, t: int, e: int, h: int, v: int, tie: bool,
                  attention: str = "general") -> dict:
  """Matmul FLOPs of one seq2seq MLE train step (forward x 3) and the output layer's share.

  Encoder: two GRU directions over S steps (input 3H and recurrent 3H projections);
  memory projection 2H -> H (and H -> H "general" keys); bridge; decoder GRU over T;
  attention scores and context ``2 B T S H`` each; combine 2H -> H; output layer
  ``B T H V`` (tied: ``B T (H E + E V)``).
  """
  gru = lambda n, d: 2 * b * n * (d * 3 * h + h * 3 * h)
  enc = 2 * gru(s, e)
  mem = 2 * b * s * 2 * h * h + (2 * b * s * h * h if attention == "general" else 0)
  bridge = 2 * b * 2 * h * h
  dec = gru(t, e)
  attn = 2 * (2 * b * t * s * h)
  combine = 2 * b * t * 2 * h * h
  out = 2 * b * t * (h * e + e * v) if tie else 2 * b * t * h * v
  fwd = enc + mem + bridge + dec + attn + combine + out
  return {"model_flops": 3.0 * fwd, "output_share": out / fwd}


def latent_gan_flops(b: int, t: int, v: int, e: int, gh: int, dh: int, rh: int, p: int,
                     step: str) -> dict:
  """Matmul FLOPs of one latent-GAN step (forward x 3 where a backward pass follows).

  Generator per position: LSTM ``(E + P) 4H + H 4H`` and the output ``H V``;
  discriminator / reconstructor: soft-embedding ``V E`` and their LSTMs. ``gen``
  back-propagates through all three; ``disc`` runs the rollout forward only and
  the discriminator on ``2B`` rows with a backward pass.
  """
  lstm = lambda n, d, hh: 2 * n * t * (d * 4 * hh + hh * 4 * hh)
  gen = lstm(b, e + p, gh) + 2 * b * t * gh * v
  disc = lambda n: 2 * n * t * v * e + lstm(n, e + p, dh)
  rec = 2 * b * t * v * e + lstm(b, e + p, rh)
  if step == "gen":
    fwd_bwd = 3.0 * (gen + disc(b) + rec)
    out_share = 2 * b * t * gh * v / (gen + disc(b) + rec)
  else:
    fwd_bwd = gen + 3.0 * disc(2 * b)
    out_share = 2 * b * t * gh * v / fwd_bwd
  return {"model_flops": fwd_bwd, "output_share": out_share}


def analytic_flops(config, spec_name: str) -> dict | None:
  """Model FLOPs for the steps that have a formula (seq2seq mle, latent_gan gen/disc)."""
  m, b = config.model, int(config.train.batch_size)
  if spec_name == "seq2seq/mle":
    ln = lengths(config)
    return seq2seq_flops(b, ln["S"], ln["T"], int(m.embed_dim), int(m.hidden),
                         int(config.tokenizer.vocab_size), bool(m.tie_embeddings),
                         str(m.attention))
  if spec_name in ("latent_gan/gen", "latent_gan/disc"):
    return latent_gan_flops(b, int(config.data.max_len), int(config.tokenizer.vocab_size),
                            int(m.embed_dim), int(m.gen_hidden), int(m.disc_hidden),
                            int(m.rec_hidden), int(m.position_features), spec_name.split("/")[1])
  return None


def git_revision() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""
