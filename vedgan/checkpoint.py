"""Checkpoints of the whole training state with orbax, and the workdir's run record.

A checkpoint holds two items: ``state`` (the objective's :class:`TrainState`:
every network, optimizer state and extra state, the RNG and the step) and
``meta`` (JSON: the data position, the tokenizer fingerprint). Orbax writes each
checkpoint into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoint as the latest one.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from vedgan.errors import CheckpointError


class Checkpointer:
  """``save``/``restore`` of ``(state, meta)`` under ``directory``."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (asynchronous) save; a save at an existing step is skipped."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

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
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} does not fit the model built from this config "
          f"({first}); use a new --workdir or the config the run was started with") from None
    _check_same_structure(out["state"], target, f"{self.directory}/{step}")
    return out["state"], out["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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
