"""The training driver: stages, evaluation, samples, checkpoints, logging, preemption.

``run(config, workdir)`` trains ``config.objective`` through ``config.stage_order``.
The global step decides everything: which stage runs (stages follow each other,
``num_steps`` each), which step function of the stage's cycle runs, the RNG of
the step and the learning-rate schedule. Restarting the same command restores
the latest checkpoint (state + data position) and continues as if never stopped.

Reliability (docs/reliability.md):

* A run killed anywhere (even while a checkpoint is being written) and restarted
  with the same command ends bit-identical to an uninterrupted run: orbax only
  renames a checkpoint into place once it is complete, and log rows written
  after the restored step (a torn last line included) are dropped and redone.
* SIGTERM (preemption) or SIGINT (Ctrl-C) saves a checkpoint and returns; the CLI exits 0
  after SIGTERM, 130 after SIGINT (as an interrupted command does).
* Non-finite guard: inside the jitted step, an update whose metrics or new
  parameters / optimizer / extra state hold a NaN or inf is not applied (the
  old state is kept, ``step + 1``). The host learns of it at the next log or
  checkpoint point (no per-step sync): ``train.nonfinite="stop"`` ends the run
  with a one-line error naming the step, the stage and the quantities, before
  any later checkpoint is written; ``"skip"`` counts the step in the logged
  ``skipped_nonfinite`` and stops only after ``train.max_consecutive_skips``
  skipped steps in a row.
* ``train.steps_per_call=K`` runs up to K consecutive steps of one step function
  in one jitted call (``lax.scan`` over K stacked batches of equal shapes),
  never across a log, eval, checkpoint, stage or cycle boundary; batches of
  different bucket shapes fall back to single steps. Logged rows are the same.

Workdir layout::

  config.json        the config the run was started with (checked on resume)
  tokenizer/         the run's tokenizer
  checkpoints/<step> orbax checkpoints (state + meta)
  checkpoints/best/<step>, selection.json  the best by train.select_by (vedgan/selection.py)
  metrics.jsonl      one JSON object per line: step, stage, split, scalars
  samples.jsonl      generated responses to validation contexts
  tensorboard/       TensorBoard event files
  plots/             PNG curves
  .vedgan.lock       held by the one training process (vedgan/workdir_lock.py)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from vedgan import configlib, decode, parallel, plots, selection as selection_lib
from vedgan import steps as steps_lib
from vedgan import compile_cache, host_malloc, resume, workdir_lock
from vedgan.stopping import SetupInterrupted, StopFlag
from vedgan.workdir_checks import (check_compatible, check_written_paths,
                                   check_workdir)  # noqa: F401 (check_workdir: re-exported)
from vedgan.checkpoint import Checkpointer, write_json_atomic
from vedgan.data import inputs as inputs_lib
from vedgan.errors import CheckpointError, ConfigError, VedganError
from vedgan.objective import get_objective_class, jit_init
from vedgan.plan import Plan, StageSpan
from vedgan.writers import MetricWriter


class Trainer:
  """Holds what one run needs; :func:`run` is the entry point."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    # before JAX starts its threads (make_mesh below), so that they share the one arena
    self.host_malloc = host_malloc.configure(config)
    self.plan = Plan.from_config(config)
    self.spans = self.plan.spans
    self.total_steps = self.plan.total_steps
    self.mesh = parallel.make_mesh()
    self.objective_cls = get_objective_class(config.objective)
    configlib.validate(config, self.objective_cls.STEPS)  # ranges first, then divisibility
    decode.check_mode(str(config.decode.mode))
    compile_cache.enable(config)  # before anything compiles (training, evaluation, sampling)
    parallel.check_batch_size(int(config.train.batch_size), self.mesh, "train.batch_size")
    parallel.check_batch_size(int(config.train.eval_batch_size), self.mesh,
                              "train.eval_batch_size")
    self.config_dict = json.loads(config.to_json())  # tuples -> lists, as saved
    check_compatible(self.config_dict, workdir)
    self.is_chief = jax.process_index() == 0
    self.selection = selection_lib.Selection.from_config(config)  # None: no model selection

  # -- setup --------------------------------------------------------------------
  def setup(self, write: bool = True, restore: tuple[str, int] | None = None) -> None:
    """Builds data, objective and state, restoring the latest checkpoint if any.

    ``write=False`` (evaluation of a finished run) leaves the workdir's files alone; it may
    ``restore`` another ``(directory, step)`` (:func:`vedgan.selection.resolve_checkpoint`).
    """
    config = self.config
    if write:
      check_written_paths(self.workdir)  # nothing written through a link out of the workdir
    if write and self.is_chief:  # one writer per workdir, taken before anything is written
      self.lock = workdir_lock.acquire(self.workdir)
    self.inputs, tokenizer_is_new = self.objective_cls.make_inputs(config, self.workdir)
    tok = self.inputs.tokenizer
    self.objective = self.objective_cls(config, tok)
    self.objective.bind_inputs(self.inputs)  # e.g. schedules given in epochs
    self.specs = self.objective.steps()
    if set(self.specs) != set(self.objective_cls.STEPS):
      raise AssertionError(f"{config.objective}.steps() gives {sorted(self.specs)} but STEPS "
                           f"declares {sorted(self.objective_cls.STEPS)}")
    missing = {s.stream for s in self.specs.values()} - set(self.inputs.streams)
    if missing:
      raise AssertionError(f"{config.objective}'s steps read stream(s) {sorted(missing)} that "
                           f"its inputs lack (it has {sorted(self.inputs.streams)})")
    example = parallel.shard_batch(self._peek_batch(self.plan.step_name(0)), self.mesh)
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                     int(config.train.max_checkpoints), read_only=not write)
    self.step, self.best_checkpointer = 0, None
    # pending-log entries of the log window that the latest checkpoint was saved in (its
    # steps are done, their row not yet written): restored on resume, set at each save
    self._window: list[dict] = []
    source, latest = self.checkpointer, self.checkpointer.latest_step()
    if restore is not None and not write:  # a reader's --checkpoint best|<step>
      source = self.best_checkpointer = Checkpointer(restore[0], read_only=True)
      latest = int(restore[1])
    init = jit_init(self.objective, out_shardings=parallel.replicated(self.mesh))
    rng = jax.random.key(int(config.seed))
    # a resume restores every leaf: its initialiser is only traced (not compiled, read or run)
    self.state = jax.eval_shape(init, rng, example) if latest is not None else init(rng, example)
    if latest is not None:
      if tokenizer_is_new:
        raise CheckpointError(f"--workdir {self.workdir} has checkpoints but no tokenizer/; "
                              "the run cannot be resumed; use a new --workdir")
      if source.read_meta(latest).get("tokenizer_fingerprint") != tok.fingerprint:
        raise CheckpointError(f"the tokenizer in {self.workdir}/tokenizer does not match the one "
                              "the checkpoint was trained with; restore it or use a new --workdir")
      self.state, meta = source.restore(latest, self.state)
      selection_lib.restore(self, meta, f"{source.directory}/{latest}")  # best so far
      self.step = int(meta["step"])
      try:
        self.inputs.set_state(meta["data_state"])
      except ValueError as e:
        message = resume.data_state_message(e, f"{source.directory}/{latest}")
        if write:
          raise CheckpointError(message) from None
        logging.warning("%s (a reader does not continue the data position: going on)", message)
      self._window = resume.window_from_meta(meta.get("log_window", []))
      if write:
        self._trim_logs(self.step)
        resume.warn_if_elastic(meta, self.mesh.devices.size, self._print)
      if write:
        self._print(f"resuming {self.workdir} from its checkpoint at step {self.step} of "
                    f"{self.total_steps}")
    elif write:
      self._trim_logs(-1)  # rows of a start that died before its first checkpoint
    if self.is_chief and write:
      os.makedirs(self.workdir, exist_ok=True)
      if tokenizer_is_new:
        tok.save(inputs_lib.tokenizer_dir(self.workdir))
      write_json_atomic(os.path.join(self.workdir, "config.json"), self.config_dict)
    self.writer = MetricWriter(self.workdir, enabled=self.is_chief and write)
    self.eval_fn = parallel.data_parallel_reduce(self.objective.eval_step, self.mesh)
    self.step_fns: dict[tuple[str, str, int], Any] = {}
    self.guard_names = [name for name, _ in guard_groups(self.state)]
    self._skips_in_a_row = 0

  def _stream(self, name: str):
    """The iterator of the stream step ``name`` reads."""
    return self.inputs.streams[self.specs[name].stream]

  def _peek_batch(self, name: str) -> dict:
    """One batch of step ``name``'s stream for shapes, without moving the iterator."""
    it = self._stream(name)
    saved = it.get_state()
    batch = next(it)
    it.set_state(saved)
    return batch

  def _trim_logs(self, step: int) -> None:
    """Drops log rows written after the restored checkpoint (they will be redone)."""
    if not self.is_chief:
      return
    for name in ("metrics.jsonl", "samples.jsonl"):
      path = os.path.join(self.workdir, name)
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          rows = [line if line.endswith("\n") else line + "\n"
                  for line in f if _row_step(line) <= step]
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
          f.writelines(rows)
        os.replace(tmp, path)

  def step_fn(self, span: StageSpan, name: str, num_steps: int = 1):
    """The jitted global step ``(state, batch) -> (state, (metrics, guard))`` of ``name`` in
    ``span``, guarded against non-finite updates (:func:`guard_step`).

    ``num_steps > 1``: ``(state, batches) -> (state, stacked outputs)`` running ``num_steps``
    steps with ``lax.scan`` over batch leaves stacked ``[num_steps, B, ...]``.
    """
    key = (span.name, name, num_steps)
    if key not in self.step_fns:
      per_device = guard_step(per_device_step(self.objective, name, span, self.plan,
                                              self.state.params, self.specs))
      if num_steps == 1:
        self.step_fns[key] = parallel.data_parallel(per_device, self.mesh)
      else:
        self.step_fns[key] = parallel.data_parallel_steps(
            lambda state, batches: jax.lax.scan(per_device, state, batches), self.mesh)
    return self.step_fns[key]

  def _call_length(self, span: StageSpan, name: str, limit: int) -> int:
    """How many steps from ``self.step`` one call may run: at most ``limit``, all with step
    function ``name``, ending at the first step after which the host logs, evaluates,
    checkpoints or changes stage."""
    cfg = self.config.train
    for n in range(1, limit + 1):
      t = self.step + n
      if (n == limit or t >= span.end or t % cfg.log_every == 0 or t % cfg.eval_every == 0
          or t % cfg.checkpoint_every == 0 or span.step_name(t) != name):
        return n
    return limit

  def _run_steps(self, span: StageSpan, name: str, batches: list[dict]) -> list[dict]:
    """Runs ``len(batches)`` steps from ``self.step``; returns pending-log entries."""
    shapes = [{k: np.shape(v) for k, v in b.items()} for b in batches]
    if len(batches) > 1 and all(s == shapes[0] for s in shapes):
      stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
      self.state, out = self.step_fn(span, name, len(batches))(
          self.state, shard_stacked_batch(stacked, self.mesh))
      return [{"step": self.step, "stage": span.name, "name": name, "n": len(batches),
               "out": out}]
    entries = []
    fn = self.step_fn(span, name)
    for i, batch in enumerate(batches):
      self.state, out = fn(self.state, parallel.shard_batch(batch, self.mesh))
      entries.append({"step": self.step + i, "stage": span.name, "name": name, "n": 0,
                      "out": out})
    return entries

  def _checked_rows(self, pending: list[dict]) -> list[dict]:
    """Per-step host rows ``{"step", "stage", "metrics", "ok"}`` of ``pending`` (fetching what
    is still on the devices) after the non-finite policy has looked at each new step: raises
    :class:`VedganError` under ``train.nonfinite="stop"`` for a skipped step, and under
    ``"skip"`` once ``train.max_consecutive_skips`` steps in a row were skipped."""
    cfg = self.config.train
    todo = [e for e in pending if "rows" not in e]
    for entry, (metrics, guard) in zip(todo, jax.device_get([e["out"] for e in todo])):
      rows = []
      for i in range(max(entry["n"], 1)):
        pick = (lambda x, i=i: np.asarray(x)[i]) if entry["n"] else np.asarray
        row = {"step": entry["step"] + i + 1, "stage": entry["stage"], "name": entry["name"],
               "ok": bool(pick(
            guard["ok"])), "metrics": {k: float(pick(v)) for k, v in metrics.items()}}
        if not row["ok"]:
          finite = pick(guard["finite"])
          self._skips_in_a_row += 1
          bad = [k for k, v in row["metrics"].items() if not np.isfinite(v)]
          bad += [name for name, good in zip(self.guard_names, finite) if not good]
          if cfg.nonfinite == "stop" or self._skips_in_a_row >= int(cfg.max_consecutive_skips):
            self._raise_nonfinite(row, bad)
        else:
          self._skips_in_a_row = 0
        rows.append(row)
      entry["rows"] = rows
      entry["out"] = None
    return [r for e in pending for r in e["rows"]]

  def _raise_nonfinite(self, row: dict, bad: list[str]) -> None:
    self.checkpointer.wait()
    latest = self.checkpointer.latest_step()
    kept = (f"the last good checkpoint (step {latest}) is kept" if latest is not None
            else "no checkpoint was written")
    what = ", ".join(bad) or "values"
    if self.config.train.nonfinite == "stop":
      head = f"non-finite {what} at step {row['step']} of stage {row['stage']!r}"
      fix = "; or set --config.train.nonfinite=skip"
    else:
      head = (f"{self._skips_in_a_row} consecutive non-finite steps (train.max_consecutive_skips)"
              f" up to step {row['step']} of stage {row['stage']!r}, the last with non-finite "
              f"{what}")
      fix = ""
    raise VedganError(f"{head}; the update was not applied and the run stopped; {kept}; lower "
                      f"the learning rate or enable gradient clipping{fix}")

  # -- evaluation ---------------------------------------------------------------
  def evaluate(self) -> dict[str, float]:
    sums = None
    for batch in self.inputs.validation_batches(self.config, int(self.config.train.eval_batches),
                                                self.objective.EVAL_STREAM):
      out = self.eval_fn(self.state, parallel.shard_batch(batch, self.mesh))
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    if sums is None:
      raise ConfigError("the validation split yields no batch; lower train.eval_batch_size")
    results = self.objective.summarize(jax.device_get(sums))
    if str(self.config.data.name).split("/")[0] == "oracle":  # issue 18 (vedgan/oracle_eval.py)
      from vedgan import oracle_eval  # pylint: disable=import-outside-toplevel
      results.update(oracle_eval.trainer_metrics(self))  # nll_oracle, nll_test, nll_oracle_data
    return results

  def eval_and_log(self, span: StageSpan) -> dict[str, float]:
    results = self.evaluate()
    selection_lib.check(self, results)  # an unknown train.select_by: one line, before writes
    self.writer.scalars(self.step, span.name, "validation", results)
    shown = " ".join(f"{k} {v:.4g}" for k, v in results.items())
    self._print(f"[step {self.step} | {span.name}] validation: {shown}")
    samples = self.objective.sample_texts(self.state, self.inputs, self.step)
    self.writer.samples(self.step, span.name, samples, dict(self.inputs.sample_pairs),
                        dataclasses.asdict(self.objective.decode_options()))
    for context, response in samples:
      self._print(f"    {context!r} -> {response!r}")
    selection_lib.record(self, span.name, results)  # best checkpoint, row, selection.json
    return results

  def _print(self, text: str) -> None:
    if self.is_chief:
      tqdm.write(text, file=sys.stdout)

  def checkpoint_meta(self) -> dict[str, Any]:
    return {"step": self.step, "data_state": self.inputs.get_state(),
            "tokenizer_fingerprint": self.inputs.tokenizer.fingerprint,
            "log_window": resume.window_to_meta(self._window), "num_devices": self.mesh.devices.size,
            **selection_lib.meta(self)}

  def save(self) -> None:
    self.checkpointer.save(self.step, self.state, self.checkpoint_meta())

  # -- the loop -----------------------------------------------------------------
  def train(self, stop: "StopFlag | None" = None) -> dict[str, Any]:
    """The training loop from ``self.step`` to the end (or to a SIGTERM: ``stop`` is the
    flag :func:`run` installed before :meth:`setup`; by default one is installed here)."""
    cfg = self.config.train
    last_eval: dict[str, float] = {}
    if self.step == 0:
      last_eval = self.eval_and_log(self.spans[0])
    elif self.step >= self.total_steps:  # rerunning a finished run: say so, report its end
      last_eval = resume.last_validation(self.workdir)
      self._print(f"the run in {self.workdir} is already complete (step {self.step} of "
                  f"{self.total_steps}); nothing to train: its last validation row follows. "
                  "Use a new --workdir to train again")
    bar = tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and
                                                                       self.is_chief),
               dynamic_ncols=True, file=sys.stderr, mininterval=1.0)
    # per call: outputs still on the devices, then host rows; a run resumed between two log
    # steps starts with the rows of the window its checkpoint was saved in, so that its
    # next row averages the same steps as an uninterrupted run's
    pending: list[dict] = list(self._window)
    tokens, t0 = 0.0, time.perf_counter()
    stopped = False
    early = selection_lib.stops_early(self)  # at step 0, or resumed after an early stop
    per_call = int(cfg.steps_per_call)
    with (contextlib.nullcontext(stop) if stop is not None else StopFlag()) as stop:
      while self.step < self.total_steps and not early:
        span = self.plan.span_at(self.step)
        name = span.step_name(self.step)
        stream = self._stream(name)
        batches = [next(stream) for _ in range(self._call_length(span, name, per_call))]
        tokens += sum(_count_tokens(b) for b in batches) * jax.process_count()
        pending += self._run_steps(span, name, batches)
        self.step += len(batches)
        bar.update(len(batches))  # the bar counts all stages; its label, the running one's
        bar.set_description_str(f"{span.name} {self.step - span.start}/{span.end - span.start}",
                                refresh=False)
        stage_end = self.step == span.end
        if self.step % cfg.log_every == 0 or stage_end:
          rows = self._checked_rows(pending)  # waits for the steps to finish
          elapsed = time.perf_counter() - t0
          # one row per step function of the window (a cycle's phases are not averaged)
          by_step = steps_lib.rows_by_step(rows, cfg.nonfinite == "skip")
          for step_name, scalars in by_step:
            scalars["tokens_per_sec"] = tokens / max(elapsed, 1e-9)
            _check_finite(scalars, self.step, span.name)
            self.writer.scalars(self.step, span.name, "train", scalars,
                                tags={steps_lib.STEP_NAME_FIELD: step_name})
          bar.set_postfix(bar_postfix(by_step, tokens / max(elapsed, 1e-9)))
          pending, tokens, t0 = [], 0.0, time.perf_counter()
        if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
          t_eval = time.perf_counter()
          last_eval = self.eval_and_log(span)
          t0 += time.perf_counter() - t_eval  # evaluation time is not training throughput
          early = selection_lib.stops_early(self)  # train.patience evaluations, no improvement
        stopping = stop.requested
        if jax.process_count() > 1:  # every process must stop (and save) at the same step
          stopping = (self.step % cfg.log_every == 0 or stage_end) and _any_process(stopping)
        if self.step % cfg.checkpoint_every == 0 or stage_end or stopping or early:
          self._checked_rows(pending)  # a skipped step under "stop" ends the run unsaved
          self._window = list(pending)
          self.save()
        if stage_end and self.is_chief:
          plots.stage_end(self.workdir, self.objective, self.state, self.inputs, span.name,
                          self.writer, self.step)
        if early:
          break
        if stopping and self.step < self.total_steps:
          self._print(f"{stop.name or 'stopped by another process'}: checkpoint saved at "
                      f"step {self.step}; rerun the same command to resume")
          stopped = True
          break
    bar.close()
    if early:
      self._print(self.selection.stop_message(self.step))
    self.checkpointer.wait()
    self.writer.flush()
    return {"step": self.step, "stopped": stopped, "validation": last_eval,
            **({"signal": stop.name or "remote"} if stopped else {}),
            **selection_lib.result(self, early)}

  def close(self) -> None:
    """Finishes pending checkpoint writes and closes the logs (also after a failed setup)."""
    for part in ("checkpointer", "best_checkpointer", "writer", "lock"):  # the lock last
      if getattr(self, part, None) is not None:
        getattr(self, part).close()


def per_device_step(objective, name: str, span: StageSpan, plan: Plan, params: dict,
                    specs: dict | None = None):
  """The per-device update ``(state, batch) -> (state, metrics)`` of step ``name`` of
  ``objective`` in stage ``span`` (:func:`vedgan.steps.build_update` with the objective's
  networks and optimizers; ``params`` gives the parameter groups)."""
  specs = objective.steps() if specs is None else specs
  networks = objective.networks(params)
  return steps_lib.build_update(specs[name], name, span, plan, networks,
                                {net: objective.optimizer(net) for net in networks})


def step_function(objective, name: str, config, state, stage: str | None = None, mesh=None,
                  donate_state: bool = True):
  """A jitted global step ``(state, batch) -> (state, metrics)`` of step ``name``, as the
  driver runs it (without the non-finite guard): for tests, notebooks and benchmarks.

  ``stage``: the stage it runs in (default: the first stage whose cycle uses ``name``,
  else the first stage). With ``donate_state`` the state passed in is donated: keep no
  other reference to it.
  """
  plan = Plan.from_config(config)
  spans = [s for s in plan.spans if s.name == stage] if stage else plan.spans_using([name])
  span = (spans or list(plan.spans))[0]
  mesh = parallel.make_mesh() if mesh is None else mesh
  return parallel.data_parallel(per_device_step(objective, name, span, plan, state.params), mesh,
                                donate_state=donate_state)


def bar_postfix(by_step: list[tuple[str, dict]], tokens_per_sec: float) -> dict[str, str]:
  """The progress bar's numbers for one logging window: the loss of each step function that
  computes one (``loss`` alone, or ``loss[name]`` in a cycle of several; a step that
  computes none, such as a replay refill, shows nothing instead of ``nan``) and the
  throughput."""
  losses = [(name, s["loss"]) for name, s in by_step if "loss" in s]
  out = ({"loss": f"{losses[0][1]:.4f}"} if len(losses) == 1 else
         {f"loss[{name}]": f"{value:.4f}" for name, value in losses})
  out["tok_s"] = f"{tokens_per_sec:.0f}"
  return out


def _any_process(flag: bool) -> bool:
  """Whether ``flag`` is set in any process (a collective: every process must call it)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _row_step(line: str) -> float:
  """The ``step`` of a JSON-lines log row; ``inf`` for a blank or torn (unparsable) line."""
  try:
    return float(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return float("inf")


def guard_groups(state) -> list[tuple[str, Any]]:
  """``[(name, subtree)]`` the non-finite guard checks in a :class:`TrainState`: each
  network's params (``"params of generator"``), each optimizer state, each extra entry."""
  groups = []
  for field, label in (("params", "params of {}"), ("opt_state", "optimizer state of {}"),
                       ("extra", "extra state {}")):
    tree = getattr(state, field)
    if isinstance(tree, dict):
      groups += [(label.format(k), tree[k]) for k in sorted(tree)]
    elif tree is not None:
      groups.append((field, tree))
  return groups


def _all_finite(tree) -> jax.Array:
  """bool scalar: every float leaf of ``tree`` is finite (True for a tree without any)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def _select(ok: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(new.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(
        jnp.where(ok, jax.random.key_data(new), jax.random.key_data(old)),
        impl=jax.random.key_impl(new))
  return jnp.where(ok, new, jnp.asarray(old, new.dtype))


def guard_step(per_device_step):
  """Wraps ``per_device_step(state, batch) -> (state, metrics)`` so that a non-finite update
  is never applied.

  The wrapped step returns ``(state, (metrics, guard))``: ``guard["ok"]`` (bool scalar) is
  True when every float metric and every float leaf of the new state is finite;
  ``guard["finite"]`` (bool ``[G]``) tells which of :func:`guard_groups` are. When ``ok`` is
  False the old state is returned with ``step`` advanced (``state.step + 1`` as the step
  made it), so data, RNG and schedules move on as if the step had run. Metrics and state are
  identical on every device (averaged / replicated), so are the flags.
  """

  def step(state, batch):
    new, metrics = per_device_step(state, batch)
    finite = jnp.stack([_all_finite(tree) for _, tree in guard_groups(new)])
    ok = _all_finite(metrics) & jnp.all(finite)
    kept = jax.tree.map(lambda a, b: _select(ok, a, b), new, state)
    return kept.replace(step=new.step), (metrics, {"ok": ok, "finite": finite})

  return step


def shard_stacked_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Global arrays ``[K, B, ...]`` split on their second axis from this process's
  ``[K, b, ...]`` rows (the input of :func:`parallel.data_parallel_steps`)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


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

  Returns ``{"step", "stopped", "validation": {...}}`` (+ ``"signal"``: SIGTERM, SIGINT or
  "remote" when a signal stopped it, ``"selection"`` with select_by).
  """
  workdir = check_workdir(workdir)
  trainer = Trainer(config, workdir)
  with StopFlag() as stop:
    try:
      stop.in_setup = True  # a signal now interrupts setup at once: nothing to save yet
      try:
        trainer.setup()
        stop.in_setup = False
      except SetupInterrupted:
        step = int(getattr(trainer, "step", 0))
        if jax.process_index() == 0:
          print(f"{stop.name} during setup: stopped before training (step {step}); rerun the "
                "same command to start or resume", flush=True)
        return {"step": step, "stopped": True, "signal": stop.name, "validation": {}}
      return trainer.train(stop)
    finally:
      trainer.close()


def dry_run(config, workdir: str, read_data: bool = False) -> str:
  """Validates ``config`` as a run in ``workdir`` would, without writing to ``workdir``.

  Checks the objective, the stages and their step functions, the batch sizes
  against the devices, and compatibility with an existing ``workdir``; with
  ``read_data`` (the CLI's ``--dry_run``) it also reads the data, builds the tokenizer
  (trained anew, not saved, unless the workdir has one) and the objective, so that what
  only the data decides (a vocabulary too large for the corpus, labels that do not fit)
  fails here too. Returns a few lines describing the plan. Errors are the same one-line
  :class:`vedgan.errors.VedganError` s the run itself raises.
  """
  trainer = Trainer(config, os.path.abspath(os.path.expanduser(workdir)))
  lines = [f"objective {config.objective}: {trainer.total_steps} steps on "
           f"{trainer.mesh.devices.size} device(s), global batch {config.train.batch_size}"]
  for span in trainer.spans:
    cycle = ",".join(f"{name}*{n}" for name, n in span.cycle)
    lines.append(f"  stage {span.name}: steps [{span.start}, {span.end}) cycle {cycle} "
                 f"lr {float(span.config.learning_rate):g}")
  if read_data:
    inputs, is_new = trainer.objective_cls.make_inputs(config, trainer.workdir)
    trainer.objective_cls(config, inputs.tokenizer)
    sizes = ", ".join(f"{name} {getattr(it, 'num_examples', '?')}"
                      for name, it in inputs.streams.items())
    lines.append(f"  data: training streams {sizes}; validation "
                 f"{', '.join(f'{k} {len(v)}' for k, v in inputs.validation.items())}; "
                 f"tokenizer {config.tokenizer.kind}, {inputs.tokenizer.vocab_size} ids "
                 f"({'new' if is_new else 'from the workdir'})")
  return "\n".join(lines)
