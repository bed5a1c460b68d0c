"""Checkpoints of the whole training state with orbax, and the workdir's run record.

A checkpoint holds two items: ``state`` (the objective's :class:`TrainState`:
every network, optimizer state and extra state, the RNG and the step) and
``meta`` (JSON: the data position, the tokenizer fingerprint). Orbax writes each
checkpoint into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoint as the latest one; the leftover
temporary directory is removed when the next run opens the checkpoints.

Fault injection (tests only): with the environment variable
``VEDGAN_FAULT=kill_during_checkpoint:<step>`` the process SIGKILLs itself while
saving checkpoint ``<step>``: after every array and the metadata have been
written to orbax's temporary directory, just before the rename that finalizes it
(see ``tests/test_kill_resume.py``); with ``VEDGAN_FAULT=enospc_during_checkpoint:<step>``
that last write fails with ``ENOSPC`` instead (a disk that fills while the asynchronous
save runs). Unset, nothing changes.
"""
from __future__ import annotations

import errno
import json
import os
import signal
from typing import Any

import jax
import orbax.checkpoint as ocp

from vedgan.errors import CheckpointError


class Checkpointer:
  """``save``/``restore`` of ``(state, meta)`` under ``directory``."""

  def __init__(self, directory: str, max_to_keep: int = 2, read_only: bool = False):
    """``read_only``: for readers of a run (evaluation, sampling): nothing is created,
    cleaned up, saved or deleted in ``directory``."""
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self._writing: int | None = None   # the step of the asynchronous save not yet waited for
    if read_only:  # (not orbax's read_only option: it logs a warning on every open)
      options = ocp.CheckpointManagerOptions(max_to_keep=None, create=False,
                                             cleanup_tmp_directories=False)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True,
                                             temporary_path_class=_fault_path_class())
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (asynchronous) save; a save at an existing step is skipped."""
    if self.read_only:
      raise AssertionError(f"{self.directory} was opened read-only")
    if step in self.manager.all_steps():
      return
    # a failure of the previous (asynchronous) save is that save's, not this one's
    self.wait()
    self._writing = step
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_write_failure(e):
        raise
      self._writing = None
      raise self._write_error(step, e) from None

  def _write_error(self, step: int, error: Exception) -> CheckpointError:
    """One line for a failed write (disk full, permissions): the last complete checkpoint
    stays the latest one, so rerunning the same command resumes from it."""
    why = (getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
           or type(error).__name__)
    kept = [s for s in self.manager.all_steps() if s < step]
    previous = (f"the checkpoint of step {max(kept)} is kept" if kept
                else "no earlier checkpoint exists")
    return CheckpointError(f"writing checkpoint {self.directory}/{step} failed ({why}); "
                           f"{previous}; free space or fix permissions and rerun the same "
                           "command to resume")

  def read_meta(self, step: int) -> dict:
    """The JSON ``meta`` item of a checkpoint (cheap; no arrays are read)."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except (ValueError, KeyError, TypeError, OSError) as e:
      raise CheckpointError(f"checkpoint {self.directory}/{step} has no readable metadata "
                            f"({type(e).__name__}); use a new --workdir") from None

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restores onto the shapes, dtypes and shardings of ``target`` (a state built from
    the current config); a mismatch is a :class:`CheckpointError`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (tensorstore raises bare Exception)
      text = " ".join(str(e).split()) or type(e).__name__
      if _is_damage(e, text):
        raise CheckpointError(
            f"checkpoint {self.directory}/{step} is damaged or incomplete ({text[:200]}); "
            f"delete that folder to resume from an earlier checkpoint, or use a new --workdir"
        ) from None
      first = text.split(" Truncating/padding")[0][:300]
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} does not fit the model built from this config "
          f"({first}); use a new --workdir or the config the run was started with") from None
    _check_same_structure(out["state"], target, f"{self.directory}/{step}")
    return out["state"], out["meta"]

  def wait(self) -> None:
    """Blocks until the last save is written; its failure names that save's step."""
    step, self._writing = self._writing, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (an asynchronous write failed)
      if not _is_write_failure(e):
        raise
      raise self._write_error(step if step is not None else self.manager.latest_step() or 0,
                              e) from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


FAULT_ENV = "VEDGAN_FAULT"


def _fault_path_class():
  """orbax's temporary-path class, or (``VEDGAN_FAULT=kill_during_checkpoint:<step>``, tests
  only) a subclass that SIGKILLs the process right before it renames step ``<step>``'s
  finished temporary directory to its final name. ``None`` = orbax's default."""
  spec = os.environ.get(FAULT_ENV, "")
  if not spec:
    return None
  kind, _, arg = spec.partition(":")
  if kind not in ("kill_during_checkpoint", "enospc_during_checkpoint") or not arg.isdigit():
    raise CheckpointError(f"{FAULT_ENV}={spec!r} is not understood; unset it (it is for tests) "
                          "or write kill_during_checkpoint:<step> or enospc_during_checkpoint:<step>")
  target = arg
  base = ocp.path.atomicity.AtomicRenameTemporaryPath

  class FailBeforeRename(base):
    async def finalize(self, *args, **kwargs):
      if self.get_final().name == target:
        if kind == "kill_during_checkpoint":
          os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      return await super().finalize(*args, **kwargs)

  return FailBeforeRename


def _is_write_failure(error: Exception) -> bool:
  """An OS-level write failure (disk full, quota, permissions), also when orbax or
  tensorstore re-raise it as another exception type from their writer threads."""
  text = str(error)
  return isinstance(error, OSError) or any(
      marker in text for marker in ("No space left", "ENOSPC", "Disk quota", "Permission denied",
                                    "Read-only file system"))


_DAMAGE_MARKERS = ("NOT_FOUND", "DATA_LOSS", "OUT_OF_RANGE", "Error reading", "Error opening",
                   "while reading", "Expecting", "Unterminated", "No such file")


def _is_damage(error: Exception, text: str) -> bool:
  """True for a checkpoint whose files are missing, cut short or garbled (as opposed to one
  that is intact but holds other shapes or another tree)."""
  if isinstance(error, (OSError, json.JSONDecodeError)):
    return True
  if type(error) is Exception:  # pylint: disable=unidiomatic-typecheck  (tensorstore read errors)
    return True
  return any(marker in text for marker in _DAMAGE_MARKERS)


def _check_same_structure(restored: Any, target: Any, where: str) -> None:
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    if a.shape != b.shape or a.dtype != b.dtype:
      raise CheckpointError(f"checkpoint {where} holds an array of shape {a.shape} {a.dtype} where "
                            f"this config builds {b.shape} {b.dtype}; use a new --workdir or the "
                            "original config")


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to ``path`` through a temporary file and a rename."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
