"""Runs ``python -m vedgan.main`` in subprocesses and kills them: helpers of test_kill_resume.py.

Every process runs the same command line (what a user reruns after a crash); only the
test-only fault injection of :mod:`vedgan.checkpoint` (``VEDGAN_FAULT``) may differ. To keep
each start to a few seconds, processes share a JAX persistent compilation cache, and the
launcher blocks ``import torch`` (a guard: nothing vedgan imports may load it, seconds per start)
and stubs the stage-end plots (PNG drawing; it reads and writes no training state).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO

#: ``python -c LAUNCHER <flags>`` is ``python -m vedgan.main <flags>`` without torch and plots.
LAUNCHER = ("import sys; sys.modules['torch'] = None; import vedgan.plots as plots; "
            "plots.stage_end = lambda *args, **kwargs: []; import runpy; "
            "runpy.run_module('vedgan.main', run_name='__main__', alter_sys=True)")


def flag(key: str, value) -> str:
  if isinstance(value, tuple):
    value = "(" + ",".join(repr(v) for v in value) + ",)"
  return f"--config.{key}={value}"


def command(config: str, workdir, overrides: dict) -> list[str]:
  """The command line (``config`` is ``"configs/x.py:variant"``)."""
  return ([sys.executable, "-c", LAUNCHER, "--config", config, "--workdir", str(workdir)]
          + [flag(k, v) for k, v in overrides.items()])


def environment(fault: str | None = None) -> dict:
  env = dict(os.environ)
  # JAX_COMPILATION_CACHE_DIR and its thresholds come from conftest (the session's cache).
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("VEDGAN_FAULT", None)
  if fault:
    env["VEDGAN_FAULT"] = fault
  return env


class Process:
  """One run of the command; stdout and stderr go to ``<log>.out`` / ``<log>.err``."""

  def __init__(self, args: list[str], log: str, fault: str | None = None):
    self.log = log
    self._out, self._err = open(log + ".out", "w"), open(log + ".err", "w")
    self.proc = subprocess.Popen(args, cwd=REPO, env=environment(fault), stdout=self._out,
                                 stderr=self._err, text=True)

  def wait(self, timeout: float = 300) -> int:
    try:
      return self.proc.wait(timeout=timeout)
    finally:
      self._out.close()
      self._err.close()

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGKILL)

  def stdout(self) -> str:
    with open(self.log + ".out", encoding="utf-8") as f:
      return f.read()

  def stderr(self) -> str:
    with open(self.log + ".err", encoding="utf-8") as f:
      return f.read()


def trained_steps(workdir) -> int:
  """The last ``train`` row's step in ``metrics.jsonl`` (0 if none yet)."""
  path = os.path.join(str(workdir), "metrics.jsonl")
  last = 0
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # a line being written
        if row.get("split") == "train":
          last = int(row["step"])
  except FileNotFoundError:
    pass
  return last


def _modified_after(workdir, when: float) -> bool:
  try:
    return os.stat(os.path.join(str(workdir), "metrics.jsonl")).st_mtime > when
  except FileNotFoundError:
    return False


def wait_for(predicate, proc: Process, timeout: float = 300, poll: float = 0.02) -> bool:
  """Polls ``predicate()`` until True (returns True) or the process ends (returns False)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    if proc.proc.poll() is not None:
      return predicate()
    time.sleep(poll)
  raise TimeoutError(f"no progress within {timeout}s; see {proc.log}.err")


def checkpoint_steps(workdir) -> list[int]:
  root = os.path.join(str(workdir), "checkpoints")
  return sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []


def leftovers(workdir) -> list[str]:
  """orbax temporary directories (unfinished checkpoints) in ``workdir/checkpoints``."""
  root = os.path.join(str(workdir), "checkpoints")
  return sorted(s for s in os.listdir(root) if not s.isdigit()) if os.path.isdir(root) else []


def run_with_faults(args: list[str], workdir, plan: list[tuple[str, float]],
                    log: str) -> list[dict]:
  """Runs the command once per fault of ``plan``, then until it finishes.

  ``plan`` items: ``("step", k)``: SIGKILL once this process has logged train step ``k``;
  ``("checkpoint", k)``: the process SIGKILLs itself while finalizing checkpoint ``k``
  (``VEDGAN_FAULT``); ``("enospc", k)``: the asynchronous write of checkpoint ``k`` fails
  with a full disk (the run must stop with one line); ``("time", s)``: SIGKILL ``s`` seconds after the start (setup,
  restore or compilation); ``("sigterm", k)``: SIGTERM once train step ``k`` is logged
  (the run must save and exit 0). Returns one event per process.
  """
  events = []
  for i, (kind, arg) in enumerate(plan + [("finish", 0)]):
    before = checkpoint_steps(workdir)
    fault = {"checkpoint": f"kill_during_checkpoint:{int(arg)}",
             "enospc": f"enospc_during_checkpoint:{int(arg)}"}.get(kind)
    started = time.time()
    proc = Process(args, f"{log}.{i}", fault)
    if kind in ("step", "sigterm"):
      # Rows this process logged: the file is rewritten (trimmed to the restored step) at
      # start-up, so an old row cannot trigger the fault.
      if wait_for(lambda: _modified_after(workdir, started) and trained_steps(workdir) >= arg,
                  proc):
        if kind == "step":
          proc.kill()
        else:
          proc.proc.send_signal(signal.SIGTERM)
    elif kind == "time":
      try:
        proc.proc.wait(timeout=arg)
      except subprocess.TimeoutExpired:
        proc.kill()
    code = proc.wait()
    events.append({"kind": kind, "arg": arg, "code": code, "resumed_from": before[-1:],
                   "checkpoints": checkpoint_steps(workdir), "leftovers": leftovers(workdir),
                   "stdout": proc.stdout(), "stderr": proc.stderr()[-3000:]})
    if kind == "finish" or (code == 0 and kind != "sigterm"):
      break
  return events
