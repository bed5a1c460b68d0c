"""vedgan.checkpoint on orbax's current API, without a training loop.

Small :class:`TrainState` pytrees go through :class:`Checkpointer`: round trip, retention
(orbax's ``LatestN`` preservation policy), no deprecated orbax API (no ``item_names``, no
``max_to_keep``, no DeprecationWarning), and each failure class (disk full, missing,
truncated or garbled files, another model's shapes or tree) as its one-line
:class:`CheckpointError`, classified by exception type (and, for tensorstore's write errors,
by the errno it records).
"""
import errno
import glob
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from vedgan import checkpoint
from vedgan.errors import CheckpointError
from vedgan.steps import TrainState


def make_state(hidden=40, seed=0, extra_leaf=False):
  """A TrainState like the objectives build: params, an optax state (namedtuples), the rng."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {"dense": {"kernel": jax.random.normal(k1, (hidden, 100)),
                      "bias": jax.random.normal(k2, (100,))},
            "emb": [jnp.arange(12, dtype=jnp.float32).reshape(3, 4)]}
  if extra_leaf:
    params["head"] = jnp.zeros((5,))
  opt_state = {"gen": optax.adam(1e-3).init(params)}
  return TrainState(step=jnp.asarray(seed, jnp.int32),
                    rng=jax.random.key_data(jax.random.key(seed)),
                    params=params, opt_state=opt_state,
                    extra={"replay": (jnp.full((2, 3), seed, jnp.int32),)})


def save_steps(directory, steps, max_to_keep=2):
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=max_to_keep)
  try:
    for step in steps:
      ckpt.save(step, make_state(seed=step), {"step": step, "data_state": [step, "x"]})
  finally:
    ckpt.close()


def finished_steps(directory):
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def restore_error(directory, step, target=None, meta_first=False) -> str:
  ckpt = checkpoint.Checkpointer(directory)
  try:
    with pytest.raises(CheckpointError) as exc:
      if meta_first:
        ckpt.read_meta(step)
      ckpt.restore(step, make_state() if target is None else target)
  finally:
    ckpt.close()
  message = str(exc.value)
  assert "\n" not in message, message
  return message


@pytest.fixture(name="saved")
def _saved(tmp_path):
  """A directory with one finished checkpoint, step 1 (state ``make_state(seed=1)``)."""
  directory = str(tmp_path / "checkpoints")
  save_steps(directory, [1])
  return directory


# -- round trip and retention -----------------------------------------------------------------
def test_round_trip(saved):
  ckpt = checkpoint.Checkpointer(saved, read_only=True)
  try:
    assert ckpt.latest_step() == 1
    assert ckpt.read_meta(1) == {"step": 1, "data_state": [1, "x"]}
    state, meta = ckpt.restore(1, make_state(seed=7))  # the target's values do not matter
  finally:
    ckpt.close()
  assert meta == {"step": 1, "data_state": [1, "x"]}
  expected = make_state(seed=1)
  assert jax.tree.structure(state) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state.extra["replay"][0][0, 0]) == 1


@pytest.mark.parametrize("max_to_keep, steps, kept", [
    (2, [1, 2, 3, 4, 5], [4, 5]),
    (3, [1, 2, 3, 4, 5], [3, 4, 5]),
    (1, [10, 20, 30], [30]),
    (4, [1, 2], [1, 2]),
])
def test_retention_keeps_the_latest_n(max_to_keep, steps, kept, tmp_path):
  directory = str(tmp_path / "checkpoints")
  save_steps(directory, steps, max_to_keep)
  assert finished_steps(directory) == kept


def test_retention_counts_the_checkpoints_of_earlier_runs(tmp_path):
  """A resumed run (a new Checkpointer on the same folder) rotates the old checkpoints too;
  a reader opening the folder deletes nothing."""
  directory = str(tmp_path / "checkpoints")
  save_steps(directory, [1, 2, 3], max_to_keep=2)
  reader = checkpoint.Checkpointer(directory, read_only=True)
  reader.close()
  assert finished_steps(directory) == [2, 3]
  save_steps(directory, [4], max_to_keep=2)
  assert finished_steps(directory) == [3, 4]


def test_manager_uses_the_preservation_policy_and_no_item_names(tmp_path, monkeypatch):
  """The current API: ``preservation_policy=LatestN(n)`` (not the deprecated ``max_to_keep``)
  and a handler registry (not the deprecated ``item_names`` / ``item_handlers``)."""
  seen = []
  original = ocp.CheckpointManager.__init__

  def spy(self, directory, *args, **kwargs):
    seen.append(kwargs)
    original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "__init__", spy)
  checkpoint.Checkpointer(str(tmp_path / "a"), max_to_keep=3).close()
  checkpoint.Checkpointer(str(tmp_path / "a"), read_only=True).close()
  assert len(seen) == 2
  for kwargs, n in zip(seen, (3, None)):
    assert not {"item_names", "item_handlers", "checkpointers"} & set(kwargs), kwargs
    assert kwargs["handler_registry"] is not None
    options = kwargs["options"]
    assert options.max_to_keep is None and options.keep_period is None
    assert options.preservation_policy == ocp.checkpoint_managers.LatestN(n=n)


def test_no_deprecation_warnings(tmp_path):
  directory = str(tmp_path / "checkpoints")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    save_steps(directory, [1, 2, 3], max_to_keep=2)
    ckpt = checkpoint.Checkpointer(directory, read_only=True)
    try:
      ckpt.read_meta(3)
      ckpt.restore(3, make_state())
    finally:
      ckpt.close()
  deprecations = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                  if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                             FutureWarning))]
  assert deprecations == []


# -- failures: one line each, classified by exception type -------------------------------------
def test_disk_full_during_the_asynchronous_write(tmp_path, monkeypatch, caplog):
  """``VEDGAN_FAULT=enospc_during_checkpoint:2``: the write of step 2 fails with ENOSPC in
  orbax's finalize thread; orbax re-raises it from ``wait_until_finished``. Only the one
  line: no traceback of it logged by orbax (0.11 logs one) reaches the log."""
  directory = str(tmp_path / "checkpoints")
  monkeypatch.setenv(checkpoint.FAULT_ENV, "enospc_during_checkpoint:2")
  ckpt = checkpoint.Checkpointer(directory)
  try:
    ckpt.save(1, make_state(seed=1), {"step": 1})
    ckpt.save(2, make_state(seed=2), {"step": 2})
    with pytest.raises(CheckpointError) as exc:
      ckpt.wait()
  finally:
    ckpt.close()
  assert [r for r in caplog.records if r.exc_info] == []
  assert str(exc.value) == (
      f"writing checkpoint {directory}/2 failed (No space left on device); the checkpoint of "
      "step 1 is kept; free space or fix permissions and rerun the same command to resume")
  monkeypatch.delenv(checkpoint.FAULT_ENV)
  ckpt = checkpoint.Checkpointer(directory)  # the next run
  try:
    assert ckpt.latest_step() == 1
    _, meta = ckpt.restore(1, make_state())
  finally:
    ckpt.close()
  assert meta == {"step": 1} and finished_steps(directory) == [1]


@pytest.mark.parametrize("code, strerror", [
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "Disk quota exceeded"),
    (errno.EACCES, "Permission denied"),
    (errno.EROFS, "Read-only file system"),
])
def test_write_failures_in_the_save_call(code, strerror, tmp_path, monkeypatch):
  """An OSError of a fixable kind where orbax starts the save, wrapped as orbax does (a bare
  Exception raised while handling it): one line naming the errno's meaning."""
  directory = str(tmp_path / "checkpoints")
  save_steps(directory, [1])

  def failing_save(self, step, *args, **kwargs):
    del self, step, args, kwargs
    try:
      raise OSError(code, os.strerror(code), "/somewhere/_METADATA")
    except OSError:
      raise Exception(  # pylint: disable=broad-exception-raised
          "Failed to run 4 Handler Commit operations")

  ckpt = checkpoint.Checkpointer(directory)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(ocp.CheckpointManager, "save", failing_save)
      with pytest.raises(CheckpointError) as exc:
        ckpt.save(2, make_state(seed=2), {"step": 2})
  finally:
    ckpt.close()
  assert str(exc.value) == (
      f"writing checkpoint {directory}/2 failed ({strerror}); the checkpoint of step 1 is "
      "kept; free space or fix permissions and rerun the same command to resume")


def test_other_os_errors_of_the_save_are_not_disk_full(tmp_path, monkeypatch):
  """EIO is not fixed by freeing space or fixing permissions: it stays the OSError it is."""
  directory = str(tmp_path / "checkpoints")

  def failing_save(self, step, *args, **kwargs):
    del self, step, args, kwargs
    raise OSError(errno.EIO, os.strerror(errno.EIO))

  ckpt = checkpoint.Checkpointer(directory)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(ocp.CheckpointManager, "save", failing_save)
      with pytest.raises(OSError) as exc:
        ckpt.save(1, make_state(), {"step": 1})
  finally:
    ckpt.close()
  assert exc.value.errno == errno.EIO and not isinstance(exc.value, CheckpointError)


# What tensorstore raised here when the disk filled during an array write (a bare ValueError;
# the errno only in its text, in the format of each version; seen on a 200 KiB tmpfs).
TENSORSTORE_086 = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file '
                   '"/c/1.orbax-checkpoint-tmp/state/": Failed writing: "/c/d/c668": Failed to '
                   "write 567713 bytes to file 8: No space left on device [os_error_code='28']")
TENSORSTORE_071 = ('PERMISSION_DENIED: Error opening "zarr" driver: Error writing local file '
                   '"/r/z/.zarray": Failed to create directory: "/r/z" [OS error 30: EROFS '
                   "Read-only file system] [source locations='tensorstore/internal/os/f.cc:488']")


def _wrapped(inner):
  """``inner`` as orbax re-raises it from a writer thread: the __cause__ of a bare Exception."""
  try:
    raise inner
  except Exception as e:  # pylint: disable=broad-except
    try:
      raise Exception(  # pylint: disable=broad-exception-raised
          "Save Finalize thread failed") from e
    except Exception as outer:  # pylint: disable=broad-except
      return outer


@pytest.mark.parametrize("error, code", [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (PermissionError(errno.EACCES, "Permission denied"), errno.EACCES),
    (_wrapped(OSError(errno.EDQUOT, "Disk quota exceeded")), errno.EDQUOT),
    (_wrapped(ValueError(TENSORSTORE_086)), errno.ENOSPC),
    (ValueError(TENSORSTORE_071), errno.EROFS),
    (ExceptionGroup("writers", [RuntimeError("x"), _wrapped(ValueError(TENSORSTORE_086))]),
     errno.ENOSPC),
    (OSError(errno.EIO, "Input/output error"), None),
    (ValueError("RESOURCE_EXHAUSTED: out of memory"), None),  # no errno: not a disk
    (ValueError("No space left on device"), None),           # wording alone decides nothing
    (ValueError("[os_error_code='5']"), None),               # EIO
    (RuntimeError("[os_error_code='28']"), None),            # only tensorstore's ValueError
])
def test_write_failure_classification(error, code):
  cause = checkpoint._write_failure(error)  # pylint: disable=protected-access
  if code is None:
    assert cause is None
  else:
    assert isinstance(cause, OSError) and cause.errno == code
    assert (cause.strerror or os.strerror(code)) == os.strerror(code)


@pytest.mark.parametrize("code, dropped", [(errno.ENOSPC, True), (errno.EIO, False)])
def test_orbax_log_of_a_reported_write_failure_is_dropped(code, dropped, caplog):
  """orbax logs a failed save with its traceback before re-raising it; a failure that becomes
  the one-line CheckpointError is not logged again, any other stays in the log."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

  def log_failure():
    try:
      raise _wrapped(OSError(code, os.strerror(code)))
    except Exception:  # pylint: disable=broad-except
      absl_logging.exception("Save Finalize thread failed.")

  with caplog.at_level("ERROR"):
    with checkpoint._quiet_reported_write_failures():  # pylint: disable=protected-access
      log_failure()
    inside = [r.getMessage() for r in caplog.records]
    caplog.clear()
    log_failure()  # outside: kept
    outside = [r.getMessage() for r in caplog.records]
  assert inside == ([] if dropped else ["Save Finalize thread failed."])
  assert outside == ["Save Finalize thread failed."]


def _array_files(directory):
  return sorted(glob.glob(f"{directory}/1/state/**/d/*", recursive=True))


def _damage(directory, kind):
  if kind == "array_files_removed":
    for path in _array_files(directory):
      os.remove(path)
  elif kind == "array_file_truncated":
    path = max(_array_files(directory), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  elif kind == "array_file_garbled":
    path = max(_array_files(directory), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.write(b"\xff" * os.path.getsize(path))
  elif kind == "state_metadata_garbled":
    with open(f"{directory}/1/state/_METADATA", "w", encoding="utf-8") as f:
      f.write("{garbage")
  elif kind == "state_folder_removed":
    for base, dirs, files in os.walk(f"{directory}/1/state", topdown=False):
      for name in files:
        os.remove(os.path.join(base, name))
      for name in dirs:
        os.rmdir(os.path.join(base, name))
    os.rmdir(f"{directory}/1/state")
  else:
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["array_files_removed", "array_file_truncated",
                                  "array_file_garbled", "state_metadata_garbled",
                                  "state_folder_removed"])
def test_damaged_state(kind, saved):
  _damage(saved, kind)
  message = restore_error(saved, 1)
  prefix = f"checkpoint {saved}/1 is damaged or incomplete ("
  suffix = ("); delete that folder to resume from an earlier checkpoint, or use a new "
            "--workdir")
  assert message.startswith(prefix) and message.endswith(suffix), message
  assert "does not fit" not in message


def test_missing_array_file_names_tensorstore_status(saved):
  _damage(saved, "array_files_removed")
  assert "NOT_FOUND" in restore_error(saved, 1)


@pytest.mark.parametrize("content, error", [
    ("{garbage", "JSONDecodeError"),
    (None, "FileNotFoundError"),
])
def test_damaged_meta(content, error, saved):
  path = f"{saved}/1/meta/metadata"
  if content is None:
    os.remove(path)
  else:
    with open(path, "w", encoding="utf-8") as f:
      f.write(content)
  assert restore_error(saved, 1, meta_first=True) == (
      f"checkpoint {saved}/1 has no readable metadata ({error}); use a new --workdir")
  message = restore_error(saved, 1)  # restore reads the meta item too
  assert "is damaged or incomplete" in message, message


def test_another_shape(saved):
  message = restore_error(saved, 1, target=make_state(hidden=48))
  assert message == (
      f"checkpoint {saved}/1 does not fit the model built from this config "
      "(opt_state/gen/0/mu/dense/kernel: it holds shape (40, 100) where this config builds "
      "(48, 100)); use a new --workdir or the config the run was started with")


def test_another_tree(saved):
  message = restore_error(saved, 1, target=make_state(extra_leaf=True))
  assert message == (
      f"checkpoint {saved}/1 does not fit the model built from this config "
      "(this config builds 3 array(s) it lacks, e.g. opt_state/gen/0/mu/head); use a new "
      "--workdir or the config the run was started with")
  smaller = make_state()
  smaller.params.pop("emb")
  message = restore_error(saved, 1, target=smaller)
  assert "does not fit the model built from this config (it holds 1 array(s) this config " \
         "does not build, e.g. params/emb/0)" in message, message


def test_another_dtype_is_cast(saved):
  """As before: a dtype change (e.g. another param_dtype) restores, cast to the target's."""
  target = make_state()
  target = target.replace(params=jax.tree.map(lambda x: x.astype(jnp.bfloat16), target.params))
  ckpt = checkpoint.Checkpointer(saved, read_only=True)
  try:
    state, _ = ckpt.restore(1, target)
  finally:
    ckpt.close()
  assert state.params["emb"][0].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(state.params["emb"][0], np.float32),
                                np.arange(12, dtype=np.float32).reshape(3, 4))


def test_unexpected_errors_are_not_hidden(saved, monkeypatch):
  """An exception that is no read error (a bug) is re-raised as it is, not called damage."""
  def broken_restore(self, *args, **kwargs):
    del self, args, kwargs
    raise RuntimeError("a bug")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", broken_restore)
  ckpt = checkpoint.Checkpointer(saved, read_only=True)
  try:
    with pytest.raises(RuntimeError, match="a bug"):
      ckpt.restore(1, make_state())
    with pytest.raises(RuntimeError, match="a bug"):
      ckpt.read_meta(1)
  finally:
    ckpt.close()


def test_leaf_shapes_and_difference():
  """The path/shape table that decides "does not fit", on hand-written trees."""
  tree = {"b": [jnp.zeros((2, 3)), None], "a": TrainState(step=jnp.zeros(()), rng=jnp.zeros(2),
                                                          params={}, opt_state=(), extra=None)}
  shapes = checkpoint._leaf_shapes(tree)  # pylint: disable=protected-access
  assert shapes == {"a/step": (), "a/rng": (2,), "b/0": (2, 3)}
  difference = checkpoint._difference  # pylint: disable=protected-access
  assert difference(shapes, dict(shapes)) is None
  assert difference(shapes, {**shapes, "b/0": (2, 4)}) == (
      "b/0: it holds shape (2, 3) where this config builds (2, 4)")
  assert difference({"x": (1,), "y": (2,)}, {"y": (2,), "z": (3,), "w": (4,)}) == (
      "it holds 1 array(s) this config does not build, e.g. x; this config builds 2 array(s) "
      "it lacks, e.g. w")
