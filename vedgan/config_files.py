"""Where the paper configs are, and what ``--config NAME[:VARIANT]`` names.

The config files live in the repository's top-level ``configs/`` folder and are
installed as the package ``vedgan.configs``, so one ``--config`` works both in a
checkout and after a plain ``pip install``:

* an existing file: ``--config configs/seq2seq.py:demo``, ``--config my_config.py``;
* a name of a shipped config: ``--config seq2seq:demo`` (or ``seq2seq.py:demo``);
* a path into a ``configs`` folder that does not exist here, e.g. the README's
  ``configs/seq2seq.py:demo`` run outside a checkout: the shipped config of that name.

>>> resolve("seq2seq:demo").endswith(os.path.join("configs", "seq2seq.py") + ":demo")
True
"""
from __future__ import annotations

import difflib
import importlib.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def config_dir() -> str | None:
  """The folder holding the shipped config files: the installed ``vedgan.configs``
  package, else a checkout's top-level ``configs/`` beside the ``vedgan`` package;
  ``None`` if neither exists (a broken install)."""
  try:
    spec = importlib.util.find_spec("vedgan.configs")
  except ImportError:
    spec = None
  candidates = list(spec.submodule_search_locations or []) if spec else []
  candidates.append(os.path.join(os.path.dirname(_HERE), "configs"))
  for folder in candidates:
    if os.path.isfile(os.path.join(folder, "seq2seq.py")):
      return os.path.abspath(folder)
  return None


def shipped_configs() -> tuple[str, ...]:
  """The names of the shipped configs (``"seq2seq"``, ``"mojitalk"``, ...), sorted."""
  folder = config_dir()
  if folder is None:
    return ()
  return tuple(sorted(name[:-3] for name in os.listdir(folder)
                      if name.endswith(".py") and not name.startswith("_")))


def resolve(spec: str) -> str:
  """``FILE[:VARIANT]`` with FILE made an existing path where it names a shipped config.

  ``spec`` is returned unchanged when FILE exists, or names nothing shipped (the
  caller reports the missing file)."""
  path, sep, variant = spec.partition(":")
  if os.path.isfile(path):
    return spec
  folder, base = os.path.split(path)
  name = base[:-3] if base.endswith(".py") else base
  in_configs = folder == "" or os.path.basename(os.path.normpath(folder)) == "configs"
  shipped = config_dir()
  if not in_configs or shipped is None or name not in shipped_configs():
    return spec
  return os.path.join(shipped, f"{name}.py") + sep + variant


def unknown_message(path: str) -> str:
  """One line for a ``--config`` that is neither a file nor a shipped config's name."""
  shipped = shipped_configs()
  names = ", ".join(shipped) or "(none found: reinstall vedgan)"
  base = os.path.basename(path.partition(":")[0])
  close = difflib.get_close_matches(base[:-3] if base.endswith(".py") else base, shipped, n=1)
  guess = f"did you mean {close[0]}? " if close else ""
  return (f"--config {path}: no such config file, and no shipped config has that name; {guess}"
          f"give a config file or a shipped config ({names}), e.g. --config seq2seq:demo")


def resolve_argv(argv: list[str]) -> list[str]:
  """``argv`` with the value of ``--config`` (``--config X`` or ``--config=X``) resolved."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg in ("--config", "-config") and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
    elif arg.startswith(("--config=", "-config=")):
      flag, _, value = arg.partition("=")
      out[i] = f"{flag}={resolve(value)}"
  return out
