r"""Command-line entry point.

  python -m vedgan.main --config configs/seq2seq.py:demo --workdir /tmp/run \
      [--config.train.batch_size=64 ...]

Rerunning the same command resumes from the latest checkpoint in ``--workdir``.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':variant'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_bool("debug_errors", False, "Show full tracebacks for configuration errors.")
flags.DEFINE_bool("dry_run", False, "Check the config and overrides, print the training plan "
                  "(stages, steps, step functions) and exit without reading data or writing.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  from vedgan import train  # pylint: disable=import-outside-toplevel
  from vedgan.errors import VedganError  # pylint: disable=import-outside-toplevel

  config = FLAGS.config
  if config.train.get("distributed", False):
    from vedgan import parallel  # pylint: disable=import-outside-toplevel
    parallel.initialize_distributed()
  try:
    if FLAGS.dry_run:
      print(train.dry_run(config, FLAGS.workdir))
      return
    result = train.run(config, FLAGS.workdir)
  except (VedganError, FileNotFoundError, PermissionError) as e:
    if FLAGS.debug_errors:
      raise
    print(f"vedgan: error: {e}", file=sys.stderr)
    sys.exit(2)
  print("final: " + json.dumps(result, sort_keys=True))


def run_cli():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)


if __name__ == "__main__":
  run_cli()
