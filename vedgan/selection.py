"""Model selection: the best checkpoint by a validation metric, and early stopping (issue 20).

``train.select_by`` names a validation metric (a key of the ``"validation"`` rows of
``metrics.jsonl``: ``nll``, ``perplexity``, ...; ``""`` = no selection, the default);
``train.select_mode`` says which way is better (``"min"`` or ``"max"``); ``train.patience``
> 0 ends the run after that many evaluations in a row without an improvement (0 = never).

At each evaluation the driver (:mod:`vedgan.train`) calls :func:`record`:

* an improvement is strict (``value < best`` for ``"min"``, ``>`` for ``"max"``); a
  non-finite value never is one. The first finite value is always an improvement.
* The state of each improvement is saved to ``checkpoints/best/<step>`` (orbax, one kept),
  a directory the rotation of the latest checkpoints (``train.max_checkpoints``) never
  touches, so the best weights survive any number of later checkpoints.
* A ``"selection"`` row goes to ``metrics.jsonl`` (``best_step``, ``best_value``,
  ``evaluations_since_best``, ``stopped_early``) and ``WORKDIR/selection.json`` is rewritten
  atomically (after the best checkpoint is complete).

The selection state (:meth:`Selection.state`) is part of every checkpoint's meta, so a
resumed run continues with the same best value, best step and count of evaluations since
the best: a run killed between an evaluation and the next checkpoint redoes that
evaluation from the previous checkpoint and, training being bit-exact, makes the same
decision (a best checkpoint that already exists is not written twice).

Readers (``vedgan.evaluate``, ``vedgan.sample``, ``vedgan.chat``) choose the weights with
``--checkpoint best|latest|<step>`` (:func:`resolve_checkpoint`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from vedgan.errors import CheckpointError, ConfigError

MODES = ("min", "max")
BEST_DIR = "best"          # checkpoints/best/<step>
SUMMARY_FILE = "selection.json"


@dataclasses.dataclass
class Selection:
  """Best-so-far of one validation metric.

  Attributes:
    metric: the validation metric (``train.select_by``).
    mode: ``"min"`` (lower is better) or ``"max"``.
    patience: evaluations without improvement that end the run; 0 = never.
    best_value: the best value so far (None before the first finite one).
    best_step: the global step of ``best_value`` (None likewise).
    evaluations: evaluations seen.
    since_best: evaluations since the last improvement (0 right after one).
  """
  metric: str
  mode: str
  patience: int
  best_value: float | None = None
  best_step: int | None = None
  evaluations: int = 0
  since_best: int = 0

  @classmethod
  def from_config(cls, config) -> "Selection | None":
    """The selection ``config.train`` asks for; None when ``train.select_by`` is empty."""
    metric = str(config.train.select_by).strip()
    if not metric:
      return None
    return cls(metric, str(config.train.select_mode), int(config.train.patience))

  def is_better(self, value: float) -> bool:
    if not math.isfinite(value):
      return False
    if self.best_value is None:
      return True
    return value < self.best_value if self.mode == "min" else value > self.best_value

  def check(self, results: dict[str, Any]) -> None:
    """One-line :class:`ConfigError` when ``results`` lacks the selected metric."""
    if self.metric not in results:
      raise ConfigError(f"config.train.select_by={self.metric!r} is not a validation metric of "
                        f"this run (it logs {', '.join(sorted(results))}); set "
                        "--config.train.select_by to one of them")

  def update(self, step: int, results: dict[str, Any]) -> bool:
    """Counts the evaluation of ``step``; True when it improves on the best so far."""
    self.check(results)
    value = float(results[self.metric])
    self.evaluations += 1
    if self.is_better(value):
      self.best_value, self.best_step, self.since_best = value, int(step), 0
      return True
    self.since_best += 1
    return False

  @property
  def should_stop(self) -> bool:
    """True once ``patience`` evaluations in a row did not improve (never for patience 0)."""
    return self.patience > 0 and self.since_best >= self.patience

  def state(self) -> dict[str, Any]:
    """JSON-safe state for a checkpoint's meta (``meta["selection"]``)."""
    return {"metric": self.metric, "mode": self.mode, "best_value": self.best_value,
            "best_step": self.best_step, "evaluations": self.evaluations,
            "since_best": self.since_best}

  def restore(self, meta: dict, where: str) -> None:
    """Takes the best-so-far from a checkpoint's meta. A checkpoint written without
    selection starts it afresh; one selected by another metric or mode is an error."""
    saved = meta.get("selection")
    if saved is None:
      return
    if (saved["metric"], saved["mode"]) != (self.metric, self.mode):
      raise ConfigError(
          f"the checkpoint {where} was selected by {saved['mode']} {saved['metric']!r}; resume "
          f"with --config.train.select_by={saved['metric']} "
          f"--config.train.select_mode={saved['mode']} or use a new --workdir")
    best = saved["best_value"]
    self.best_value = None if best is None else float(best)
    self.best_step = None if saved["best_step"] is None else int(saved["best_step"])
    self.evaluations, self.since_best = int(saved["evaluations"]), int(saved["since_best"])

  def summary(self, step: int, stopped_early: bool) -> dict[str, Any]:
    """What ``selection.json`` and the run's result hold."""
    return dict(self.state(), patience=self.patience, step=int(step),
                stopped_early=bool(stopped_early),
                best_checkpoint=(None if self.best_step is None
                                 else f"checkpoints/{BEST_DIR}/{self.best_step}"))

  def row(self, stopped_early: bool) -> dict[str, float]:
    """The scalars of the ``"selection"`` row of ``metrics.jsonl``."""
    return {"best_step": -1.0 if self.best_step is None else float(self.best_step),
            "best_value": math.nan if self.best_value is None else self.best_value,
            "evaluations_since_best": float(self.since_best),
            "stopped_early": float(stopped_early)}

  def stop_message(self, step: int) -> str:
    if self.best_step is None:
      return (f"early stop at step {step}: {self.metric} was not finite in {self.patience} "
              "evaluations (train.patience); no best checkpoint")
    return (f"early stop at step {step}: {self.metric} did not improve on {self.best_value:.6g} "
            f"(step {self.best_step}) in {self.since_best} evaluations (train.patience="
            f"{self.patience}); best weights: checkpoints/{BEST_DIR}/{self.best_step}")


def best_directory(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints", BEST_DIR)


def stops_early(trainer) -> bool:
  """True when ``trainer`` (a :class:`vedgan.train.Trainer`) has to stop before its last step:
  ``train.patience`` evaluations in a row did not improve."""
  sel = trainer.selection
  return sel is not None and sel.should_stop and trainer.step < trainer.total_steps


def result(trainer, stopped_early: bool) -> dict[str, Any]:
  """``{"selection": summary}`` for the result of ``train.run`` ({} without selection)."""
  sel = trainer.selection
  return {} if sel is None else {"selection": sel.summary(trainer.step, stopped_early)}


def meta(trainer) -> dict[str, Any]:
  """``{"selection": state}`` for a checkpoint's meta ({} without selection)."""
  return {} if trainer.selection is None else {"selection": trainer.selection.state()}


def restore(trainer, meta_: dict, where: str) -> None:
  """Takes the best-so-far from the restored checkpoint's meta (nothing without selection),
  and checks ``train.select_by`` against the run's logged validation rows, so that a run
  resumed with an unknown metric fails now rather than at its next evaluation."""
  if trainer.selection is None:
    return
  trainer.selection.restore(meta_, where)
  logged = logged_validation_names(trainer.workdir)
  if logged:
    trainer.selection.check(dict.fromkeys(logged))


def logged_validation_names(workdir: str) -> list[str]:
  """The scalar names of the last ``"validation"`` row of ``metrics.jsonl`` ([] if none;
  unparsable lines, e.g. a torn last one, are passed over)."""
  names: list[str] = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if isinstance(row, dict) and row.get("split") == "validation":
          names = [k for k in row if k not in ("step", "stage", "split")]
  except OSError:
    return []
  return names


def check(trainer, results: dict[str, Any]) -> None:
  """One-line :class:`ConfigError` when the evaluation ``results`` lack ``train.select_by``."""
  if trainer.selection is not None:
    trainer.selection.check(results)


def record(trainer, span_name: str, results: dict[str, Any]) -> None:
  """After the validation row of an evaluation at ``trainer.step`` (nothing without
  selection): updates ``trainer.selection``, saves an improvement to
  ``checkpoints/best/<step>``, logs the ``"selection"`` row and rewrites ``selection.json``."""
  sel, step = trainer.selection, trainer.step
  if sel is None:
    return
  if sel.update(step, results):
    if trainer.best_checkpointer is None:  # created with the first best: none, no folder
      from vedgan.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
      trainer.best_checkpointer = Checkpointer(best_directory(trainer.workdir), max_to_keep=1)
    trainer.best_checkpointer.save(step, trainer.state, trainer.checkpoint_meta())
    trainer.best_checkpointer.wait()  # selection.json never names an unfinished checkpoint
  stopped = stops_early(trainer)
  trainer.writer.scalars(step, span_name, "selection", sel.row(stopped))
  if trainer.is_chief and trainer.writer.enabled:
    from vedgan.checkpoint import write_json_atomic  # pylint: disable=import-outside-toplevel
    write_json_atomic(os.path.join(trainer.workdir, SUMMARY_FILE), sel.summary(step, stopped))


def _steps(directory: str) -> list[int]:
  """Finished (step-named) checkpoints in ``directory``, ascending; [] if it is absent."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(n) for n in names
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def check_choice(choice: str) -> str:
  """``--checkpoint`` normalised: ``"latest"``, ``"best"`` or a step number (a string)."""
  text = str(choice).strip().lower()
  if text in ("latest", "best") or text.isdigit():
    return text
  raise ConfigError(f"--checkpoint {choice!r} must be best, latest or a step number, e.g. "
                    "--checkpoint best")


def resolve_checkpoint(workdir: str, choice: str) -> tuple[str, int] | None:
  """The checkpoint ``--checkpoint choice`` names in ``workdir``: ``(directory, step)``,
  or None for ``latest`` (the latest of ``checkpoints/``). Lists directories only (reads no
  checkpoint); one-line :class:`CheckpointError` for ``best`` in a run without one and for
  a step that was not kept."""
  text = check_choice(choice)
  if text == "latest":
    return None
  root, best_root = os.path.join(workdir, "checkpoints"), best_directory(workdir)
  best = _steps(best_root)
  if text == "best":
    if not best:
      raise CheckpointError(f"--checkpoint best: {workdir} has no best checkpoint (it is kept "
                            "only by runs trained with --config.train.select_by=METRIC); use "
                            "--checkpoint latest or a step")
    return best_root, best[-1]
  step, steps = int(text), _steps(root)
  if step in steps:
    return root, step
  if step in best:
    return best_root, step
  kept = ", ".join(str(s) for s in steps) or "none"
  raise CheckpointError(f"--checkpoint {step}: {workdir}/checkpoints has no step {step} (kept: "
                        f"{kept}; best: {', '.join(str(s) for s in best) or 'none'}); use one "
                        "of them, best or latest")
