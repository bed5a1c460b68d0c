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

import contextlib
import errno
import inspect
import json
import logging
import os
import re
import signal
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from vedgan.errors import CheckpointError


class Checkpointer:
  """``save``/``restore`` of ``(state, meta)`` under ``directory``.

  Retention: orbax's preservation policy ``LatestN(max_to_keep)`` deletes all but the
  ``max_to_keep`` latest checkpoints of ``directory`` after each save (the best checkpoint
  of model selection lives in another directory, with its own ``Checkpointer``).
  """

  def __init__(self, directory: str, max_to_keep: int = 2, read_only: bool = False):
    """``read_only``: for readers of a run (evaluation, sampling): nothing is created,
    cleaned up, saved or deleted in ``directory``."""
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self._writing: int | None = None   # the step of the asynchronous save not yet waited for
    keep = ocp.checkpoint_managers.LatestN(n=None if read_only else int(max_to_keep))
    if read_only:  # (not orbax's read_only option: it logs a warning on every open)
      options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=False,
                                             cleanup_tmp_directories=False)
    else:
      options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=True,
                                             cleanup_tmp_directories=True,
                                             temporary_path_class=_fault_path_class())
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         handler_registry=_handler_registry())

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
      with _quiet_reported_write_failures():
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except  (classified by _write_failure)
      cause = _write_failure(e)
      if cause is None:
        raise
      self._writing = None
      raise self._write_error(step, cause) from None

  def _write_error(self, step: int, cause: OSError) -> CheckpointError:
    """One line for a failed write (disk full, quota, permissions, read-only disk): the last
    complete checkpoint stays the latest one, so rerunning the same command resumes from it."""
    why = cause.strerror or os.strerror(cause.errno)
    kept = [s for s in self.manager.all_steps() if s < step]
    previous = (f"the checkpoint of step {max(kept)} is kept" if kept
                else "no earlier checkpoint exists")
    return CheckpointError(f"writing checkpoint {self.directory}/{step} failed ({why}); "
                           f"{previous}; free space or fix permissions and rerun the same "
                           "command to resume")

  def read_meta(self, step: int) -> dict:
    """The JSON ``meta`` item of a checkpoint (cheap; no arrays are read)."""
    try:
      with _quiet_orphaned_reads():
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a read error)
      cause = _first(e, _READ_ERRORS)
      if cause is None:
        raise
      raise CheckpointError(f"checkpoint {self.directory}/{step} has no readable metadata "
                            f"({type(cause).__name__}); use a new --workdir") from None

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restores onto the shapes, dtypes and shardings of ``target`` (a state built from
    the current config); a mismatch or a damaged checkpoint is a :class:`CheckpointError`."""
    abstract = jax.tree.map(ocp.tree.to_shape_dtype_struct, target)
    try:
      with _quiet_orphaned_reads():
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a read error)
      cause = _first(e, _READ_ERRORS)
      if cause is None:
        raise
      raise self._read_error(step, abstract, cause) from None
    _check_same_structure(out["state"], target, f"{self.directory}/{step}")
    return out["state"], out["meta"]

  def _read_error(self, step: int, target: Any, cause: Exception) -> CheckpointError:
    """Why restoring ``step`` onto ``target`` (shape structs) failed, in one line. The failure itself does not
    say (orbax raises ``ValueError`` for a tree or shape mismatch, tensorstore a ``ValueError``
    for a missing or garbled array file), so the checkpoint's own record of its arrays (the
    ``state`` item's metadata) decides: arrays that differ from ``target``'s is a checkpoint of
    another model; the same arrays (or a record that cannot be read) is a damaged checkpoint."""
    where = f"{self.directory}/{step}"
    stored = self._stored_shapes(step)
    difference = None if stored is None else _difference(stored, _leaf_shapes(target))
    if difference:
      return CheckpointError(
          f"checkpoint {where} does not fit the model built from this config ({difference}); "
          "use a new --workdir or the config the run was started with")
    text = " ".join(str(cause).split()) or type(cause).__name__
    return CheckpointError(
        f"checkpoint {where} is damaged or incomplete ({text[:200]}); delete that folder to "
        "resume from an earlier checkpoint, or use a new --workdir")

  def _stored_shapes(self, step: int) -> dict[str, tuple] | None:
    """``{leaf path: shape}`` of the arrays the ``state`` item of ``step`` records in its
    metadata (no array is read); None when that metadata is missing or cannot be read."""
    try:
      metadata = self.manager.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a read error)
      if _first(e, _READ_ERRORS) is None:
        raise
      return None
    if metadata is None:
      return None
    return _leaf_shapes(getattr(metadata, "tree", metadata))

  def wait(self) -> None:
    """Blocks until the last save is written; its failure names that save's step."""
    step, self._writing = self._writing, None
    try:
      with _quiet_reported_write_failures():
        self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (an asynchronous write failed)
      cause = _write_failure(e)
      if cause is None:
        raise
      raise self._write_error(step if step is not None else self.manager.latest_step() or 0,
                              cause) from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


@contextlib.contextmanager
def _quiet_reported_write_failures():
  """Within: orbax's log records that carry a write failure (``_write_failure``) are dropped,
  since the caller reports that failure as its one-line :class:`CheckpointError` (orbax 0.11
  logs it with its traceback from ``wait_until_finished`` before re-raising it)."""
  def keep(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return error is None or _write_failure(error) is None

  logger = logging.getLogger("absl")  # the logger of absl.logging, which orbax logs with
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def _is_orphaned_read(unraisable) -> bool:
  """Whether ``unraisable`` (``sys.unraisablehook``'s argument) is an echo of a failed read.

  When one array of a restore cannot be read, orbax stops waiting and closes its event
  loop while tensorstore's other reads are still in flight: each of them, as it finishes,
  calls back into the closed loop (``RuntimeError: Event loop is closed``, reported with no
  object), and orbax's unfinished read coroutines are closed when collected. Each would
  print a traceback after the one line the caller reports."""
  error = unraisable.exc_value
  if (unraisable.object is None and isinstance(error, RuntimeError)
      and str(error) == "Event loop is closed"):
    return True
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


@contextlib.contextmanager
def _quiet_orphaned_reads():
  """Within, and after a failure inside (the echoes arrive later), ``sys.unraisablehook``
  drops :func:`_is_orphaned_read` reports and passes every other one on."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_orphaned_read(unraisable):
      previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  except BaseException:
    raise                          # the hook stays: the failed reads' echoes are still coming
  else:
    if sys.unraisablehook is hook:
      sys.unraisablehook = previous


def _handler_registry():
  """orbax's handlers of the two items: ``state`` (a pytree of arrays) and ``meta`` (JSON)."""
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item, args in (("state", ocp.args.StandardSave), ("state", ocp.args.StandardRestore),
                     ("meta", ocp.args.JsonSave), ("meta", ocp.args.JsonRestore)):
    registry.add(item, args)
  return registry


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
  base = ocp.path.atomicity.AtomicRenameTemporaryPath

  def fail_if_target(path) -> None:
    if path.get_final().name == arg:
      if kind == "kill_during_checkpoint":
        os.kill(os.getpid(), signal.SIGKILL)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  # orbax's finalize is a coroutine in 0.12 and a plain method in 0.11: override in kind
  if inspect.iscoroutinefunction(base.finalize):
    class FailBeforeRename(base):
      async def finalize(self, *args, **kwargs):
        fail_if_target(self)
        return await super().finalize(*args, **kwargs)
  else:
    class FailBeforeRename(base):  # pylint: disable=function-redefined
      def finalize(self, *args, **kwargs):
        fail_if_target(self)
        return super().finalize(*args, **kwargs)

  return FailBeforeRename


# Errors of a failed read: a missing file (FileNotFoundError, also for a missing ``meta``
# file), garbled JSON (json.JSONDecodeError, a ValueError), an item folder that is missing
# (KeyError from orbax), an array file cut short, garbled or missing (ValueError from
# tensorstore, sometimes wrapped by orbax in a bare Exception whose __cause__ it is), a tree
# or shape that differs from the target (ValueError from orbax). Anything else is re-raised.
_READ_ERRORS = (OSError, ValueError, KeyError)

# What "free space or fix permissions" fixes: disk full, quota, permissions, read-only disk.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})

# tensorstore reports a failed file write as a bare ValueError (its status code, e.g.
# RESOURCE_EXHAUSTED, PERMISSION_DENIED, as a prefix of the text) whose type carries no errno;
# the errno is only in the text, as "[os_error_code='28']" (tensorstore 0.1.86) or
# "[OS error 28: ENOSPC ...]" (0.1.71). This is the one case read from text: an array write
# that fails in tensorstore (e.g. the disk fills while the arrays are written; a JSON or
# directory write that fails raises OSError with its errno).
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='(\d+)'\]|\[OS error (\d+)\b")


def _chain(error: BaseException):
  """``error`` and every exception reachable from it through ``__cause__``, ``__context__``
  and the members of exception groups (orbax re-raises its writer threads' errors)."""
  todo, seen = [error], set()
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    todo.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])


def _first(error: BaseException, types: tuple) -> BaseException | None:
  """The first exception of ``error``'s chain that is an instance of ``types``, or None."""
  return next((e for e in _chain(error) if isinstance(e, types)), None)


def _write_failure(error: BaseException) -> OSError | None:
  """The OS error behind a failed write that the user can fix (errno in ``_WRITE_ERRNOS``),
  found anywhere in ``error``'s chain; None if ``error`` is not one."""
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
      return e
    if type(e) is ValueError:  # pylint: disable=unidiomatic-typecheck  (tensorstore's errors)
      match = _TENSORSTORE_ERRNO.search(str(e))
      code = int(next(g for g in match.groups() if g)) if match else None
      if code in _WRITE_ERRNOS:
        return OSError(code, os.strerror(code))
  return None


def _key_name(key: Any) -> str:
  """One entry of a pytree key path as text: a dict key, an attribute or a sequence index
  (orbax's metadata tree holds dicts and lists where the state has dataclasses and tuples)."""
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
  """``{"params/encoder/kernel": shape}`` of every leaf of ``tree`` (arrays, shape structs or
  orbax's array metadata); a leaf without a shape (a Python scalar) has shape ``()``."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in leaves}


def _difference(stored: dict[str, tuple], wanted: dict[str, tuple]) -> str | None:
  """The first difference between a checkpoint's arrays and the ones a config builds, as a
  phrase; None if they have the same paths and shapes."""
  extra, missing = sorted(set(stored) - set(wanted)), sorted(set(wanted) - set(stored))
  if extra or missing:
    parts = []
    if extra:
      parts.append(f"it holds {len(extra)} array(s) this config does not build, e.g. {extra[0]}")
    if missing:
      parts.append(f"this config builds {len(missing)} array(s) it lacks, e.g. {missing[0]}")
    return "; ".join(parts)
  for path in sorted(stored):
    if stored[path] != wanted[path]:
      return f"{path}: it holds shape {stored[path]} where this config builds {wanted[path]}"
  return None


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
