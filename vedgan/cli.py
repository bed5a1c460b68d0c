"""The ``vedgan`` console command: one subcommand per job.

  vedgan train --config seq2seq:demo --workdir /tmp/run     (= python -m vedgan.main)
  vedgan evaluate --workdir /tmp/run --suite likelihood     (= python -m vedgan.evaluate)
  vedgan sample --workdir /tmp/run --input "hi"             (= python -m vedgan.sample)
  vedgan chat --workdir /tmp/run                            (= python -m vedgan.chat)
  vedgan export --workdir /tmp/run --out /tmp/model         (= python -m vedgan.export)
  vedgan prepare chatterbot_corpus                          (= python -m vedgan.data.prepare)

Each subcommand takes exactly the flags of its module (``vedgan train --help``).
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: subcommand -> (module, entry function, what it does)
COMMANDS = {
    "train": ("vedgan.main", "run_cli", "train a config (resumes a workdir)"),
    "evaluate": ("vedgan.evaluate", "run_cli", "evaluate a run's checkpoint with metric suites"),
    "sample": ("vedgan.sample", "main", "decode responses from a run's checkpoint"),
    "chat": ("vedgan.chat", "main", "talk to a trained dialogue model"),
    "export": ("vedgan.export", "main",
               "write a run as a folder: safetensors weights, tokenizer, config, model card"),
    "prepare": ("vedgan.data.prepare", "main", "download/prepare corpora (TFDS builders)"),
}
#: the absl-flag modules take ``argv`` with the program name first
_ABSL = ("train", "evaluate")


def usage() -> str:
  from vedgan import __version__  # pylint: disable=import-outside-toplevel
  lines = [f"vedgan {__version__}: usage: vedgan COMMAND [flags]  (vedgan COMMAND --help)", ""]
  lines += [f"  {name:<9} {what}" for name, (_, _, what) in COMMANDS.items()]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``vedgan COMMAND ...``; returns the exit status (absl commands exit themselves)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0 if argv else 2
  if argv[0] == "--version":
    from vedgan import __version__  # pylint: disable=import-outside-toplevel
    print(f"vedgan {__version__}")
    return 0
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"vedgan: error: unknown command {command!r}; use one of {', '.join(COMMANDS)} "
          "(vedgan --help)", file=sys.stderr)
    return 2
  module_name, entry, _ = COMMANDS[command]
  program = f"vedgan {command}"
  sys.argv = [program] + rest  # argparse and absl name the program from sys.argv[0]
  function = getattr(importlib.import_module(module_name), entry)
  if command in _ABSL:
    function([program] + rest)
    return 0
  return int(function(rest) or 0)


def run() -> None:
  """The console script's entry point."""
  sys.exit(main())


if __name__ == "__main__":
  run()
