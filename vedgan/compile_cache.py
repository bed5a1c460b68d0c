"""JAX's persistent compilation cache, on by default for training, sampling, chat and evaluation.

Without it every start of a run (a resume included) compiles every step function again:
tens of seconds per step function for the heavier objectives on a CPU. With it a program
compiled once is read back from disk (the cache key covers the program, the XLA flags,
the JAX version and the devices, so a hit is the executable that compiling would give).

Where the cache lives, first match wins:

1. JAX's own setting, when something already chose it (``$JAX_COMPILATION_CACHE_DIR`` or
   ``jax.config.update("jax_compilation_cache_dir", ...)``): left as it is;
2. ``$VEDGAN_COMPILATION_CACHE``: a folder, or ``off`` (also ``0``, ``false``, ``none``);
3. the config's ``train.compilation_cache``: ``"auto"`` (the default:
   ``$XDG_CACHE_HOME/vedgan/jax-compilation-cache``, else ``~/.cache/vedgan/...``),
   ``"off"``, or a folder.

JAX's own thresholds (``jax_persistent_cache_min_compile_time_secs``, 1 s by default:
programs that compile faster are not worth a disk entry) are left as they are. The
cache is set up when a process first compiles; call :func:`enable` before that.
"""
from __future__ import annotations

import os

import jax

from vedgan.errors import ConfigError

ENV = "VEDGAN_COMPILATION_CACHE"
_OFF = ("off", "0", "false", "none", "no")


def default_dir() -> str:
  """``$XDG_CACHE_HOME/vedgan/jax-compilation-cache`` (``~/.cache`` without the variable)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "vedgan", "jax-compilation-cache")


def choose(setting: str = "auto") -> str | None:
  """The cache folder for the config value ``setting`` after the environment's say
  (``None`` = off). Does not look at JAX's own setting (:func:`enable` does)."""
  env = os.environ.get(ENV)
  where, value = (f"${ENV}", env) if env is not None else ("train.compilation_cache", setting)
  value = str(value).strip()
  if value.lower() in _OFF:
    return None
  if value.lower() == "auto":
    return default_dir()
  if not value:
    raise ConfigError(f"{where} is empty; set it to auto, off or a folder")
  return os.path.abspath(os.path.expanduser(value))


def enable(config=None) -> str | None:
  """Turns the persistent cache on as the module docstring says; returns its folder (or
  ``None`` when off). ``config``: a run's config (its ``train.compilation_cache``), or
  ``None`` for the default."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  folder = choose("auto" if config is None else config.train.compilation_cache)
  if folder is None:
    return None
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"compilation cache folder {folder} cannot be created ({e.strerror}); set "
                      f"${ENV}=off or --config.train.compilation_cache to a writable folder"
                      ) from None
  jax.config.update("jax_compilation_cache_dir", folder)
  return folder
