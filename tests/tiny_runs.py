"""Tiny trained runs shared by the test modules of one session (trained once, then reused).

``trained_run(name, config, steps)`` trains ``config`` into a folder of this
test session (``$TMPDIR/vedgan-test-runs-<session>/<name>``; the session is the
pytest-xdist run id, or the pytest process) the first time a test module asks
for it; a file lock keeps xdist workers from training it twice. Tests must only
read the run (copy it to write). A new session never reuses an older run.
"""
import atexit
import fcntl
import os
import shutil
import tempfile

_DONE = ".trained"  # written after training: a run interrupted mid-training is redone


def runs_root() -> str:
  session = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
  return os.path.join(tempfile.gettempdir(), f"vedgan-test-runs-{session}")


def trained_run(name: str, config, steps: int) -> str:
  """The workdir of ``config`` trained for its stages (``steps`` in all, checked)."""
  from vedgan import train  # pylint: disable=import-outside-toplevel

  root = runs_root()
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, name)
  with open(os.path.join(root, f"{name}.lock"), "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(root, f"{name}{_DONE}")):
      shutil.rmtree(path, ignore_errors=True)
      result = train.run(config, path)
      assert result["step"] == steps, result
      with open(os.path.join(root, f"{name}{_DONE}"), "w", encoding="utf-8"):
        pass
  return path


def seq2seq_chat_run() -> str:
  """seq2seq, 2 steps, contexts of the last 3 turns (``data.context_turns=3``)."""
  from conftest import make_config  # pylint: disable=import-outside-toplevel

  config = make_config(stages__mle__num_steps=2, train__num_samples=0, data__context_turns=3)
  return trained_run("seq2seq_context3", config, 2)


_OPENED: dict = {}


def snapshot(root) -> list:
  """(relative path, size, mtime) of every file below ``root``."""
  out = []
  for base, _, files in os.walk(root):
    for f in files:
      st = os.stat(os.path.join(base, f))
      out.append((os.path.relpath(os.path.join(base, f), root), st.st_size, st.st_mtime_ns))
  return sorted(out)


def opened(path: str):
  """``(vedgan.sample.Generator, snapshot of the run before it was opened)``, opened once per
  process (test modules share it; closed at exit)."""
  from vedgan import sample  # pylint: disable=import-outside-toplevel

  path = os.path.abspath(path)
  if path not in _OPENED:
    before = snapshot(path)
    gen = sample.open_generator(path)
    atexit.register(gen.close)
    _OPENED[path] = (gen, before)
  return _OPENED[path]
