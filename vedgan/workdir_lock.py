"""One writer per workdir: an exclusive lock that training holds for the whole run.

Two trainers writing one workdir would interleave ``metrics.jsonl`` and overwrite each
other's checkpoints, so :meth:`vedgan.train.Trainer.setup` (``write=True``, process 0 of
the run only: the other processes of a multi-process run never write the workdir) takes
:func:`acquire` before it writes anything, and :meth:`vedgan.train.Trainer.close` releases
it (normal end, exception, SIGTERM save-and-exit, early stop all go through ``close``).
Readers (``setup(write=False)``: evaluation, sampling, notebooks) neither take nor check it.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``WORKDIR/.vedgan.lock``. The file holds
the holder's pid, host and start time, only for the error message a second writer gets.
The operating system drops a flock when its holder's file is closed, including when the
process dies (SIGKILL, OOM, a crashed machine's NFS client aside), so stale information
left by a killed process never blocks: the next writer takes the lock and overwrites it.
The holder removes the file on a clean release; :func:`acquire` checks after locking that
the path still names the locked file (else retries), so a release racing a new writer
cannot hand the lock to two processes.

Where ``flock`` does not work (no ``fcntl`` module, or a filesystem answering ENOLCK /
EOPNOTSUPP, e.g. some network filesystems) :func:`acquire` raises a one-line
:class:`~vedgan.errors.ConfigError` instead of training unlocked.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time

from vedgan.errors import ConfigError

LOCK_NAME = ".vedgan.lock"


class WorkdirLock:
  """A held lock on ``workdir`` (from :func:`acquire`); :meth:`close` releases it."""

  def __init__(self, workdir: str, fd: int, created_dir: bool):
    self.workdir, self.path = workdir, os.path.join(workdir, LOCK_NAME)
    self._fd, self._created_dir = fd, created_dir

  @property
  def held(self) -> bool:
    return self._fd is not None

  def close(self) -> None:
    """Releases the lock (idempotent); removes a workdir this lock created if left empty."""
    if self._fd is None:
      return
    with contextlib.suppress(OSError):  # best effort: the lock is the flock, not the file
      os.remove(self.path)  # while still locked: a racing acquire() sees the inode change
    os.close(self._fd)  # drops the flock
    self._fd = None
    if self._created_dir:
      with contextlib.suppress(OSError):
        os.rmdir(self.workdir)  # only succeeds if nothing else was written

  def __del__(self):
    self.close()


def _holder(fd: int) -> str:
  """``pid P on host H since HH:MM:SS UTC`` from the lock file's record, or a fallback."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    info = json.loads(os.read(fd, 4096).decode("utf-8"))
    since = time.strftime("%H:%M:%S UTC", time.gmtime(float(info["since"])))
    return f"pid {int(info['pid'])} on host {info['host']} since {since}"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process"  # the holder has not written its record yet


def acquire(workdir: str) -> WorkdirLock:
  """Takes the exclusive writer lock of ``workdir`` (creating the directory if needed).

  Raises:
    ConfigError: one line naming the holder if another process holds it, or saying that
      the filesystem of ``workdir`` does not support locks.
  """
  try:
    import fcntl  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError(f"--workdir {workdir} cannot be locked: this platform has no "
                      "fcntl.flock; train on Linux or macOS") from None
  created_dir = not os.path.isdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(f"--workdir {workdir}: cannot open its lock file {path} "
                        f"({e.strerror}); choose a directory you can write to") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _holder(fd)
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise ConfigError(f"workdir {workdir} is being trained by {holder}; wait for it to "
                          "finish or stop it, or use another --workdir") from None
      if created_dir:  # leave nothing behind: this call created the directory and the file
        WorkdirLock(workdir, os.open(path, os.O_RDONLY), True).close()
      raise ConfigError(f"--workdir {workdir} cannot be locked against a second trainer "
                        f"(flock: {e.strerror}); use a workdir on a local filesystem") from None
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)  # the previous holder removed the file as we locked it: lock the new one
  record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
  return WorkdirLock(workdir, fd, created_dir)
