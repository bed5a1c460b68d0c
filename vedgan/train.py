"""The training driver: stages, evaluation, samples, checkpoints, logging, preemption.

``run(config, workdir)`` trains ``config.objective`` through ``config.stage_order``.
The global step decides everything: which stage runs (stages follow each other,
``num_steps`` each), which step function of the stage's cycle runs, the RNG of
the step and the learning-rate schedule. Restarting the same command restores
the latest checkpoint (state + data position) and continues as if never stopped.

Workdir layout::

  config.json        the config the run was started with (checked on resume)
  tokenizer/         the run's tokenizer
  checkpoints/<step> orbax checkpoints (state + meta)
  metrics.jsonl      one JSON object per line: step, stage, split, scalars
  samples.jsonl      generated responses to validation contexts
  tensorboard/       TensorBoard event files
  plots/             PNG curves
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from vedgan import configlib, parallel, plots
from vedgan.checkpoint import Checkpointer, write_json_atomic
from vedgan.data import inputs as inputs_lib
from vedgan.errors import CheckpointError, ConfigError, VedganError
from vedgan.objectives.base import get_objective_class
from vedgan.writers import MetricWriter, read_metrics


@dataclasses.dataclass(frozen=True)
class StageSpan:
  """A stage placed on the global step axis: steps ``[start, end)``."""
  name: str
  config: Any
  start: int
  end: int
  cycle: tuple[tuple[str, int], ...]

  def step_name(self, step: int) -> str:
    """The step function the cycle prescribes at global ``step``."""
    period = sum(n for _, n in self.cycle)
    pos = (step - self.start) % period
    for name, n in self.cycle:
      if pos < n:
        return name
      pos -= n
    raise AssertionError("unreachable: pos < period")


def plan_stages(config) -> list[StageSpan]:
  spans, start = [], 0
  for name, stage in configlib.ordered_stages(config):
    end = start + int(stage.num_steps)
    spans.append(StageSpan(name, stage, start, end, tuple(configlib.parse_cycle(stage.step))))
    start = end
  return spans


def stage_at(spans: list[StageSpan], step: int) -> StageSpan:
  for span in spans:
    if span.start <= step < span.end:
      return span
  return spans[-1]


class _StopFlag:
  """Set by SIGTERM (preemption notice): the loop checkpoints and returns."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def check_workdir(workdir: str) -> str:
  """Absolute workdir path; a one-line error unless it is (or can be made) a writable folder.

  Writability is probed by creating and removing a temporary file in the workdir
  (or its nearest existing ancestor), which also catches read-only file systems
  and runs as root.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  probe_dir = workdir
  while not os.path.exists(probe_dir):
    probe_dir = os.path.dirname(probe_dir)
  if not os.path.isdir(probe_dir):
    raise ConfigError(f"--workdir {workdir} cannot be created: {probe_dir} is not a directory; "
                      "choose another path")
  try:
    fd, probe = tempfile.mkstemp(prefix=".vedgan-probe-", dir=probe_dir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} is not writable ({e.strerror} in {probe_dir}); "
                      "choose a directory you can write to") from None
  return workdir


def check_compatible(config_dict: dict, workdir: str) -> None:
  """A workdir started with another model/data/tokenizer config cannot be resumed."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); use a new --workdir") from None
  diffs = configlib.structural_diff(saved, config_dict)
  if diffs:
    shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    raise CheckpointError(f"--workdir {workdir} was started with a different config ({shown}); "
                          "use a new --workdir or the original settings")


class Trainer:
  """Holds what one run needs; :func:`run` is the entry point."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    self.spans = plan_stages(config)
    self.total_steps = self.spans[-1].end
    self.mesh = parallel.make_mesh()
    parallel.check_batch_size(int(config.train.batch_size), self.mesh, "train.batch_size")
    parallel.check_batch_size(int(config.train.eval_batch_size), self.mesh,
                              "train.eval_batch_size")
    self.objective_cls = get_objective_class(config.objective)
    configlib.validate(config, self.objective_cls.STEPS)
    self.config_dict = json.loads(config.to_json())  # tuples -> lists, as saved
    check_compatible(self.config_dict, workdir)
    self.is_chief = jax.process_index() == 0

  # -- setup --------------------------------------------------------------------
  def setup(self, write: bool = True) -> None:
    """Builds data, objective and state, restoring the latest checkpoint if any.

    ``write=False`` (evaluation of a finished run) leaves the workdir's files alone.
    """
    config = self.config
    self.inputs, tokenizer_is_new = self.objective_cls.make_inputs(config, self.workdir)
    tok = self.inputs.tokenizer
    self.objective = self.objective_cls(config, tok)
    self.objective.bind_inputs(self.inputs)  # e.g. schedules given in epochs
    example = parallel.shard_batch(next(iter(self._peek_batch())), self.mesh)
    init = jax.jit(self.objective.init, out_shardings=parallel.replicated(self.mesh))
    self.state = init(jax.random.key(int(config.seed)), example)
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                     int(config.train.max_checkpoints))
    self.step = 0
    latest = self.checkpointer.latest_step()
    if latest is not None:
      if tokenizer_is_new:
        raise CheckpointError(f"--workdir {self.workdir} has checkpoints but no tokenizer/; "
                              "the run cannot be resumed; use a new --workdir")
      if self.checkpointer.read_meta(latest).get("tokenizer_fingerprint") != tok.fingerprint:
        raise CheckpointError(f"the tokenizer in {self.workdir}/tokenizer does not match the one "
                              "the checkpoint was trained with; restore it or use a new --workdir")
      self.state, meta = self.checkpointer.restore(latest, self.state)
      self.step = int(meta["step"])
      self.inputs.train.set_state(meta["data_state"])
      if write:
        self._trim_logs(self.step)
      logging.info("resumed from step %d", self.step)
    if self.is_chief and write:
      os.makedirs(self.workdir, exist_ok=True)
      if tokenizer_is_new:
        tok.save(inputs_lib.tokenizer_dir(self.workdir))
      write_json_atomic(os.path.join(self.workdir, "config.json"), self.config_dict)
    self.writer = MetricWriter(self.workdir, enabled=self.is_chief and write)
    self.eval_fn = parallel.data_parallel_reduce(self.objective.eval_step, self.mesh)
    self.step_fns: dict[tuple[str, str], Any] = {}

  def _peek_batch(self):
    """One training batch for shapes, without moving the iterator."""
    it = self.inputs.train
    saved = it.get_state()
    batch = next(iter(it))
    it.set_state(saved)
    yield batch

  def _trim_logs(self, step: int) -> None:
    """Drops log rows written after the restored checkpoint (they will be redone)."""
    if not self.is_chief:
      return
    for name in ("metrics.jsonl", "samples.jsonl"):
      path = os.path.join(self.workdir, name)
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
          f.writelines(rows)
        os.replace(tmp, path)

  def step_fn(self, span: StageSpan, name: str):
    key = (span.name, name)
    if key not in self.step_fns:
      per_device = self.objective.step_builders[name](span.config, span.start)
      self.step_fns[key] = parallel.data_parallel(per_device, self.mesh)
    return self.step_fns[key]

  # -- evaluation ---------------------------------------------------------------
  def evaluate(self) -> dict[str, float]:
    sums = None
    for batch in self.inputs.validation_batches(self.config, int(self.config.train.eval_batches)):
      out = self.eval_fn(self.state, parallel.shard_batch(batch, self.mesh))
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    if sums is None:
      raise ConfigError("the validation split yields no batch; lower train.eval_batch_size")
    return self.objective.summarize(jax.device_get(sums))

  def eval_and_log(self, span: StageSpan) -> dict[str, float]:
    results = self.evaluate()
    self.writer.scalars(self.step, span.name, "validation", results)
    shown = " ".join(f"{k} {v:.4g}" for k, v in results.items())
    self._print(f"[step {self.step} | {span.name}] validation: {shown}")
    samples = self.objective.sample_texts(self.state, self.inputs, self.step)
    self.writer.samples(self.step, span.name, samples)
    for context, response in samples:
      self._print(f"    {context!r} -> {response!r}")
    return results

  def _print(self, text: str) -> None:
    if self.is_chief:
      tqdm.write(text, file=sys.stdout)

  def save(self) -> None:
    meta = {"step": self.step, "data_state": self.inputs.train.get_state(),
            "tokenizer_fingerprint": self.inputs.tokenizer.fingerprint}
    self.checkpointer.save(self.step, self.state, meta)

  # -- the loop -----------------------------------------------------------------
  def train(self) -> dict[str, Any]:
    cfg = self.config.train
    last_eval: dict[str, float] = {}
    if self.step == 0:
      last_eval = self.eval_and_log(self.spans[0])
    bar = tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and
                                                                       self.is_chief),
               dynamic_ncols=True, file=sys.stderr, mininterval=1.0)
    pending: list[dict] = []
    tokens, t0 = 0.0, time.perf_counter()
    stopped = False
    with _StopFlag() as stop:
      while self.step < self.total_steps:
        span = stage_at(self.spans, self.step)
        fn = self.step_fn(span, span.step_name(self.step))
        local = next(self.inputs.train)
        tokens += _count_tokens(local) * jax.process_count()
        self.state, metrics = fn(self.state, parallel.shard_batch(local, self.mesh))
        pending.append(metrics)
        self.step += 1
        bar.update(1)
        stage_end = self.step == span.end
        if self.step % cfg.log_every == 0 or stage_end:
          scalars = _average(jax.device_get(pending))  # waits for the steps to finish
          elapsed = time.perf_counter() - t0
          scalars["tokens_per_sec"] = tokens / max(elapsed, 1e-9)
          _check_finite(scalars, self.step, span.name)
          self.writer.scalars(self.step, span.name, "train", scalars)
          bar.set_description(span.name)
          bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}",
                          tok_s=f"{scalars['tokens_per_sec']:.0f}")
          pending, tokens, t0 = [], 0.0, time.perf_counter()
        if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
          t_eval = time.perf_counter()
          last_eval = self.eval_and_log(span)
          t0 += time.perf_counter() - t_eval  # evaluation time is not training throughput
        if self.step % cfg.checkpoint_every == 0 or stage_end or stop.requested:
          self.save()
        if stage_end and self.is_chief:
          plots.training_curves(self.workdir)
        if stop.requested and self.step < self.total_steps:
          self._print(f"SIGTERM: checkpoint saved at step {self.step}; rerun the same command "
                      "to resume")
          stopped = True
          break
    bar.close()
    self.checkpointer.wait()
    self.writer.flush()
    return {"step": self.step, "stopped": stopped, "validation": last_eval}

  def close(self) -> None:
    self.checkpointer.close()
    self.writer.close()


def _average(rows: list[dict]) -> dict[str, float]:
  keys = {k for r in rows for k in r}
  return {k: float(np.mean([np.asarray(r[k]) for r in rows if k in r])) for k in sorted(keys)}


def _count_tokens(batch: dict) -> float:
  """Target tokens of a local batch (``response_out`` of pairs, ``tokens_out`` of sentences)."""
  for key in ("response_out", "tokens_out"):
    if key in batch:
      return float(np.count_nonzero(batch[key]))
  return 0.0


def _check_finite(scalars: dict[str, float], step: int, stage: str) -> None:
  bad = [k for k, v in scalars.items() if not np.isfinite(v)]
  if bad:
    raise VedganError(f"non-finite {', '.join(bad)} at step {step} of stage {stage!r}; the last "
                      "good checkpoint is kept; lower the learning rate or enable clipping")


def run(config, workdir: str) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns ``{"step", "stopped", "validation": {...}}``.
  """
  workdir = check_workdir(workdir)
  trainer = Trainer(config, workdir)
  trainer.setup()
  try:
    return trainer.train()
  finally:
    trainer.close()


def dry_run(config, workdir: str) -> str:
  """Validates ``config`` as a run in ``workdir`` would, without data or writes.

  Checks the objective, the stages and their step functions, the batch sizes
  against the devices, and compatibility with an existing ``workdir``; returns
  a few lines describing the plan. Errors are the same one-line
  :class:`vedgan.errors.VedganError` s the run itself raises.
  """
  trainer = Trainer(config, os.path.abspath(os.path.expanduser(workdir)))
  lines = [f"objective {config.objective}: {trainer.total_steps} steps on "
           f"{trainer.mesh.devices.size} device(s), global batch {config.train.batch_size}"]
  for span in trainer.spans:
    cycle = ",".join(f"{name}*{n}" for name, n in span.cycle)
    lines.append(f"  stage {span.name}: steps [{span.start}, {span.end}) cycle {cycle} "
                 f"lr {float(span.config.learning_rate):g}")
  return "\n".join(lines)
