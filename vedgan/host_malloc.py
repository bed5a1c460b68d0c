"""The host's memory allocator, set up for a training loop: on by default for every run.

A step on a CPU backend asks for the same large buffers at every call (XLA's buffer of a
step's temporaries is tens of MiB at the ``medium`` sizes). glibc's ``malloc`` serves a
request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it back
with ``munmap`` when freed, and trims the top of its heaps back to the kernel: the next
step's buffers are then new zero-filled pages, one page fault per 4 KiB touched. In a
collaborative VED ``medium`` run on two cores that was about 70,000 page faults per step and
a quarter of the process's CPU time in the kernel (``docs/benchmarks.md``, "The host
allocator").

``"steady"`` (``train.host_malloc``, the default) tells glibc, through ``mallopt``:

- ``M_MMAP_MAX = 0``: no allocation gets a mapping of its own; large ones come from the
  heap and are reused there;
- ``M_TRIM_THRESHOLD`` at its maximum (2 GiB): freed memory stays with the process for
  the next step instead of going back to the kernel;
- ``M_ARENA_MAX = 1``: one heap for every thread, so a buffer freed by one of XLA's
  threads is reused by the next, whichever thread asks.

The price: the process keeps the memory of its largest step until it exits (its resident
size does not shrink after a peak). ``"system"`` leaves the allocator as it is.
``$VEDGAN_HOST_MALLOC`` (``steady`` or ``system``) overrides the config, like
``$VEDGAN_COMPILATION_CACHE``. Where the C library is not glibc (macOS, musl) nothing is
changed and :func:`configure` says so. The settings act from the call on; an arena a
thread already uses stays its arena, so call it before JAX starts its threads
(:class:`vedgan.train.Trainer` does, first thing).
"""
from __future__ import annotations

import ctypes
import os

from vedgan.errors import ConfigError

ENV = "VEDGAN_HOST_MALLOC"
MODES = ("steady", "system")
# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_STEADY = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))
_applied: dict = {}


def choose(setting: str = "steady") -> str:
  """The mode for the config value ``setting`` after the environment's say.

  >>> choose("System")
  'system'
  """
  env = os.environ.get(ENV)
  where, value = (f"${ENV}", env) if env is not None else ("train.host_malloc", setting)
  mode = str(value).strip().lower()
  if mode not in MODES:
    raise ConfigError(f"{where}={value!r} must be one of {MODES}: 'steady' keeps freed "
                      "memory for the next step, 'system' leaves the allocator alone")
  return mode


def _glibc():
  """The process's C library if it is glibc (it has ``gnu_get_libc_version`` and
  ``mallopt``), else ``None``."""
  try:
    libc = ctypes.CDLL(None)
    version = libc.gnu_get_libc_version
    libc.mallopt  # pylint: disable=pointless-statement
  except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) (Windows)
    return None
  version.restype = ctypes.c_char_p
  return libc


def configure(config=None) -> dict:
  """Sets the allocator as the module docstring says; returns what was done:
  ``{"mode": "steady" | "system", "applied": bool, "detail": str}``. ``config``: a run's
  config (its ``train.host_malloc``; a config without the field counts as "steady"), or
  ``None`` for the default. Repeated calls change nothing; "system" after "steady" in the
  same process cannot undo it, and the answer says that "steady" holds.

  >>> configure(None)["mode"]
  'steady'
  """
  setting = "steady"
  if config is not None:
    setting = config.train.get("host_malloc", "steady")
  mode = choose(setting)
  if _applied:
    if mode == "system":
      return dict(_applied, detail=_applied["detail"] + " (set earlier in this process; "
                  "'system' takes effect in a new process)")
    return dict(_applied)
  if mode == "system":
    return {"mode": mode, "applied": False, "detail": "left as the system set it"}
  libc = _glibc()
  if libc is None:
    return {"mode": mode, "applied": False,
            "detail": "the C library is not glibc: left as the system set it"}
  ok = all(libc.mallopt(param, value) == 1 for param, value in _STEADY)
  _applied.update(mode=mode, applied=ok,
                  detail=(f"glibc {libc.gnu_get_libc_version().decode()}: mmap_max=0, "
                          f"trim_threshold=2GiB, arena_max=1" if ok
                          else "glibc refused a mallopt setting"))
  return dict(_applied)
