"""One writer per workdir (vedgan/workdir_lock.py): a second trainer is refused in one line
before it writes anything; readers are not; the lock goes with its holder however it ends."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, make_config, tiny_overrides

import killharness
from vedgan import eval_suites, sample, train, workdir_lock
from vedgan.errors import ConfigError

HOLDER = ("import sys, time; from vedgan import workdir_lock; "
          "lock = workdir_lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)")


def _config():
  return make_config(stages__mle__num_steps=2, train__num_samples=0)


def _hold(workdir):
  """A subprocess holding the lock of ``workdir`` (until killed)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def _listing(workdir):
  """Every file under ``workdir`` with its size and modification time."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      st = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), workdir)] = (st.st_size, st.st_mtime_ns)
  return out


def _expected_message(workdir, pid):
  with open(os.path.join(workdir, workdir_lock.LOCK_NAME), encoding="utf-8") as f:
    record = json.load(f)
  since = time.strftime("%H:%M:%S", time.gmtime(record["since"]))
  return (f"workdir {workdir} is being trained by pid {pid} on host {record['host']} since "
          f"{since} UTC; wait for it to finish or stop it, or use another --workdir")


@pytest.mark.slow  # a whole training run / subprocess: the slow tier
def test_second_writer_refused_readers_allowed_and_sigkill_releases(tmp_path):
  workdir = str(tmp_path / "run")
  config = _config()
  train.run(config, workdir)
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))  # released
  holder = _hold(workdir)
  try:
    before = _listing(workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      metrics = f.read()
    trainer = train.Trainer(config, workdir)
    with pytest.raises(ConfigError) as e:
      trainer.setup()
    trainer.close()
    assert str(e.value) == _expected_message(workdir, holder.pid)  # one line, the holder
    assert _listing(workdir) == before  # nothing written, not even the lock file
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      assert f.read() == metrics
    # Readers neither take nor check the lock.
    gen = sample.open_generator(workdir)
    assert gen is not None
    results = eval_suites.run_suites(workdir, "likelihood", echo=None)
    assert "likelihood" in results
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The killed holder's record stays in the file but blocks nothing.
  assert os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))
  assert train.run(config, workdir)["step"] == 2


def test_in_process_second_trainer_refused_until_the_first_closes(tmp_path):
  workdir = str(tmp_path / "run")
  config = _config()
  first = train.Trainer(config, workdir)
  first.setup()
  second = train.Trainer(config, workdir)
  with pytest.raises(ConfigError, match=f"being trained by pid {os.getpid()} on host"):
    second.setup()  # same process, another open file description: still refused
  second.close()
  first.train(None)
  with pytest.raises(ConfigError, match="being trained by"):
    train.Trainer(config, workdir).setup()  # held for the whole run, until close()
  first.close()
  assert train.run(config, workdir)["step"] == 2


def test_released_after_an_exception_in_training(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = _config()

  def boom(self, stop=None):
    raise RuntimeError("boom")

  with monkeypatch.context() as m:
    m.setattr(train.Trainer, "train", boom)
    with pytest.raises(RuntimeError, match="boom") as e:
      train.run(config, workdir)
  # The traceback keeps run()'s Trainer alive: its close() (run's finally) released the lock.
  assert e.value is not None
  workdir_lock.acquire(workdir).close()  # free again
  assert train.run(config, workdir)["step"] == 2


def test_a_new_workdir_left_empty_is_removed_on_release(tmp_path):
  workdir = str(tmp_path / "new")
  lock = workdir_lock.acquire(workdir)
  assert os.listdir(workdir) == [workdir_lock.LOCK_NAME]
  lock.close()
  assert not os.path.exists(workdir)  # created by the lock and left empty: removed
  lock.close()  # idempotent


def test_cli_second_writer_gets_one_error_line_and_exit_2(tmp_path):
  workdir = tmp_path / "run"
  holder = _hold(workdir)
  try:
    args = killharness.command("configs/seq2seq.py:demo", workdir,
                               {**tiny_overrides(), "stages.mle.num_steps": 2,
                                "train.num_samples": 0})
    proc = subprocess.run(args, cwd=REPO, env=killharness.environment(), capture_output=True,
                          text=True, timeout=300)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("vedgan: error:")]
    assert proc.returncode == 2, proc.stderr
    assert errors == ["vedgan: error: " + _expected_message(str(workdir), holder.pid)]
    assert os.listdir(workdir) == [workdir_lock.LOCK_NAME]
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_a_filesystem_without_flock_is_a_one_line_error(tmp_path, monkeypatch):
  import errno  # pylint: disable=import-outside-toplevel
  import fcntl  # pylint: disable=import-outside-toplevel

  def no_locks(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

  monkeypatch.setattr(fcntl, "flock", no_locks)
  workdir = str(tmp_path / "nfs")
  with pytest.raises(ConfigError) as e:
    workdir_lock.acquire(workdir)
  assert str(e.value) == (f"--workdir {workdir} cannot be locked against a second trainer "
                          f"(flock: {os.strerror(errno.ENOLCK)}); use a workdir on a local "
                          "filesystem")
  assert not os.path.exists(workdir)  # nothing left behind


def test_a_release_racing_the_lock_call_is_retried_on_the_new_file(tmp_path, monkeypatch):
  """The holder removes the file as we lock it: we must end up locking the file at the path
  (else a third writer could lock a new file beside us)."""
  import fcntl  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  path = os.path.join(workdir, workdir_lock.LOCK_NAME)
  real_flock, calls = fcntl.flock, []

  def racing_flock(fd, op):
    calls.append(fd)
    if len(calls) == 1:  # the previous holder's close(): remove, then a new file appears
      os.remove(path)
      os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    real_flock(fd, op)

  monkeypatch.setattr(fcntl, "flock", racing_flock)
  lock = workdir_lock.acquire(workdir)
  monkeypatch.setattr(fcntl, "flock", real_flock)
  assert len(calls) == 2
  assert os.path.samestat(os.fstat(lock._fd), os.stat(path))  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
    workdir_lock.acquire(workdir)  # the file at the path is the held one
  lock.close()
