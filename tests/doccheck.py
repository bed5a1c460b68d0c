"""Checks documented command lines without running their work (used by test_docs_blocks.py).

  python tests/doccheck.py COMMANDS.json

``COMMANDS.json`` is a list of argv lists as typed after ``python`` (e.g.
``["-m", "vedgan.main", "--config", "configs/seq2seq.py:demo", ...]``). Each
module or script runs as ``__main__`` in this one process with its argument
parser cut short: an argparse parser or absl's ``app.run`` parses the command
line (unknown flags, missing required flags and bad values fail as they would
for a user) and then stops the program before it does any work. Every
``--config``-style flag is then checked by :func:`vedgan.train.dry_run`, which
validates the objective, stages, overrides and batch sizes without data (with the data,
tokenizer and objective when the config reads a custom data file).

Prints one JSON object per command: ``{"argv", "ok", "error"}``.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import traceback

from absl import app, flags

FLAGS = flags.FLAGS


class _Parsed(Exception):
  """Raised once the command line has been parsed: the program stops there."""

  def __init__(self, values):
    super().__init__("parsed")
    self.values = values


def _argparse_stop(original):
  def parse_args(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))
  return parse_args


def _absl_stop(main, argv=None, **unused):
  del main, unused
  FLAGS(argv if argv is not None else sys.argv)  # validators and required flags run here
  raise _Parsed(FLAGS)


def _config_checks(values) -> None:
  """Dry-runs every parsed ConfigDict flag (``--config``, ``--baseline_config``)."""
  from vedgan import train  # pylint: disable=import-outside-toplevel
  if not isinstance(values, flags.FlagValues):
    return
  for name in ("config", "baseline_config"):
    if name in values and values[name].value is not None:
      # A fresh workdir: runs left on this machine under a documented path must not matter.
      # A config on a custom data file (the examples of docs/your_own_data.md, shipped in
      # docs/examples/) also reads it and builds the tokenizer and objective, as --dry_run.
      config = values[name].value
      custom = (config.data.get("format", "tfds") or "tfds") != "tfds"
      train.dry_run(config, "/nonexistent/vedgan-doccheck", read_data=custom)


def _strip_interpreter_options(argv: list[str]) -> list[str]:
  argv = list(argv)
  while argv and argv[0] in ("-W", "-u", "-O", "-X", "-B") or (argv and argv[0].startswith("-W")):
    takes_value = argv[0] in ("-W", "-X")
    argv = argv[2:] if takes_value else argv[1:]
  return argv


def check(argv: list[str]) -> None:
  """Parses one documented command; raises on any error a user would see."""
  argv = _strip_interpreter_options(argv)
  base_flags = set(FLAGS)
  try:
    if argv[0] == "-m":
      sys.argv = [argv[1]] + argv[2:]
      runner = lambda: runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
      if not os.path.exists(argv[0]):
        raise FileNotFoundError(f"documented script {argv[0]} does not exist")
      sys.argv = list(argv)
      runner = lambda: runpy.run_path(argv[0], run_name="__main__")
    try:
      runner()
    except _Parsed as parsed:
      _config_checks(parsed.values)
      return
    raise AssertionError("the program ran to completion instead of parsing its command line "
                         "with argparse or absl.app.run")
  finally:
    for name in set(FLAGS) - base_flags:  # the next module defines its own flags
      delattr(FLAGS, name)
    FLAGS.unparse_flags()


def main() -> None:
  sys.path.insert(0, os.getcwd())  # the repository (the test runs this from its root)
  with open(sys.argv[1], encoding="utf-8") as f:
    commands = json.load(f)
  argparse.ArgumentParser.parse_args = _argparse_stop(argparse.ArgumentParser.parse_args)
  app.run = _absl_stop
  for argv in commands:
    try:
      check(argv)
      result = {"argv": argv, "ok": True, "error": ""}
    except SystemExit as e:  # argparse/absl usage errors exit
      result = {"argv": argv, "ok": False, "error": f"exit {e.code}"}
    except Exception as e:  # pylint: disable=broad-except
      last = traceback.format_exception_only(type(e), e)[-1].strip()
      result = {"argv": argv, "ok": False, "error": last}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
