r"""Command-line entry point.

  python -m vedgan.main --config configs/seq2seq.py:demo --workdir /tmp/run \
      [--config.train.batch_size=64 ...]

Rerunning the same command resumes from the latest checkpoint in ``--workdir``.

Multi-process runs start one such command per process (per host), all with
``--config.train.distributed=True``. On TPU pods that is all; elsewhere each
process also gets ``--coordinator_address=HOST0:PORT --num_processes=N
--process_id=I`` (or ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``,
``$JAX_PROCESS_ID``), and every process must see the same ``--workdir``.
"""
from __future__ import annotations

import json
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vedgan import config_files

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file or shipped config name (seq2seq, "
                                "mojitalk, ...), optionally with ':variant'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_bool("debug_errors", False, "Show full tracebacks for configuration errors.")
flags.DEFINE_bool("dry_run", False, "Check the config and overrides, read the data and build "
                  "the tokenizer and objective (catching, e.g., a vocabulary too large for the "
                  "corpus), print the training plan and exit without writing to --workdir.")
flags.DEFINE_string("coordinator_address", None, "Multi-process runs: 'host:port' of process 0 "
                    "(default: $JAX_COORDINATOR_ADDRESS, or found by JAX on TPU pods, SLURM, MPI).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes "
                     "(default: $JAX_NUM_PROCESSES, or found by JAX).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process, 0..num_processes-1 "
                     "(default: $JAX_PROCESS_ID, or found by JAX).")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  """Prints ``vedgan: error: <first line of message>`` to stderr and exits with status 2."""
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  print(f"vedgan: error: {lines[0] if lines else 'unknown error'}", file=sys.stderr)
  sys.exit(2)


def _flag_error_message(error: Exception, argv: list[str]) -> str:
  """One line for a mistake found while parsing the command line."""
  text = str(error)
  if "Error whilst parsing config file" in text:
    # The config file's get_config() raised; ml_collections packs its traceback
    # into the message. Its last line is "module.ErrorClass: message".
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    return re.sub(r"^[\w.]*(Error|Exception):\s*", "", last)
  if isinstance(error, (AttributeError, KeyError)):
    # A typo'd --config.<path>: ml_collections raises on the missing field.
    clean = text.replace("\\n", " ").replace("\n", " ")
    guess = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', clean)
    bad = guess.group(2) if guess else clean.strip("'\" ").split("'")[0]
    flag = next((a.split("=", 1)[0] for a in argv
                 if re.match(r"-{1,2}config\.", a) and a.split("=", 1)[0].split(".")[-1] == bad),
                f"--config...{bad}")
    hint = f"did you mean {guess.group(1)!r}?" if guess else "check the spelling"
    return (f"{flag}: the config has no field {bad!r} ({hint}); overrides can only set fields "
            "the config file defines")
  if isinstance(error, flags.UnrecognizedFlagError):
    return f"{text.splitlines()[0]}; see --helpfull for the flags"
  first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
  if first.startswith("flag --config.") and ":" in first:
    return f"{first}; give a value of the field's type"
  return first


def _repeated_overrides(argv: list[str]) -> list[str]:
  """The ``--config.FIELD`` names given more than once, in order of their second use."""
  seen, repeated = set(), []
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("--config."):
      name = arg[2:].split("=", 1)[0]
      if name in seen and name not in repeated:
        repeated.append(name)
      seen.add(name)
  return repeated


def _check_repeated_tuples(repeated: list[str]) -> None:
  """A tuple field overridden twice is a one-line error: absl joins the two values
  (``--config.data.buckets=(8,16) --config.data.buckets=(32,)`` became ``(8, 16, 32)``).
  A scalar given twice keeps absl's rule: the last one wins."""
  for name in repeated:
    try:
      node = FLAGS.config
      for part in name.split(".")[1:]:
        node = node[part]
    except (KeyError, TypeError, AttributeError, OSError):
      continue  # an unknown field or a config that does not load: reported later
    if isinstance(node, (tuple, list)):
      _fail(f"--{name} is given more than once, and two tuple values would be joined into one; "
            f"give it once, e.g. --{name}='(8, 16)'")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with every command-line mistake reported as one line (exit 2)."""
  try:
    rest = FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(_flag_error_message(e, argv))
  _check_repeated_tuples(_repeated_overrides(argv))
  return rest


def _loaded_config():
  """``FLAGS.config``, or a one-line error if the config file could not be loaded."""
  config = FLAGS.config
  try:
    config.objective  # pylint: disable=pointless-statement
  except (OSError, AttributeError) as e:
    filename = config_flags.get_config_filename(FLAGS["config"])
    if isinstance(e, OSError):
      if not os.path.isfile(filename):
        _fail(config_files.unknown_message(filename))
      why = str(e.__cause__ or e).strip().splitlines()[-1].strip()
      _fail(f"--config {filename}: the config file cannot be loaded ({why}); give an existing "
            "config file, e.g. --config configs/seq2seq.py:demo")
    _fail(f"--config {filename}: the config has no 'objective' field; start it from "
          "vedgan.configlib.base_config()")
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  from vedgan import train  # pylint: disable=import-outside-toplevel
  from vedgan.errors import VedganError  # pylint: disable=import-outside-toplevel

  config = _loaded_config()
  try:
    _initialize_distributed(config, join=not FLAGS.dry_run)
    _check_config(config)
    if FLAGS.dry_run:
      print(train.dry_run(config, FLAGS.workdir, read_data=True))
      return
    result = train.run(config, FLAGS.workdir)
  except (VedganError, OSError) as e:
    if FLAGS.debug_errors:
      raise
    if isinstance(e, VedganError):
      _fail(str(e))
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    _fail(f"{e.strerror or e}{where}; free space or fix permissions and rerun the same command "
          "(it resumes from the last checkpoint)")
  print("final: " + json.dumps(result, sort_keys=True))
  if result.get("signal") == "SIGINT":
    sys.exit(130)  # saved and stopped by Ctrl-C: the shell's status of an interrupted command


def _initialize_distributed(config, join: bool = True) -> None:
  """Joins the multi-process job when ``train.distributed`` is set (``join=False``: only checks
  the settings, as ``--dry_run`` does; the plan then shows this process's devices).

  ``--coordinator_address``/``--num_processes``/``--process_id`` fall back to
  ``$JAX_COORDINATOR_ADDRESS``/``$JAX_NUM_PROCESSES``/``$JAX_PROCESS_ID``; what is
  still unset is left to JAX's cluster detection (TPU pods need none of them).
  """
  from vedgan.errors import ConfigError  # pylint: disable=import-outside-toplevel
  names = (("coordinator_address", "JAX_COORDINATOR_ADDRESS"),
           ("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
  if not config.train.distributed:
    if any(FLAGS[name].present for name, _ in names):
      raise ConfigError("--coordinator_address/--num_processes/--process_id need "
                        "--config.train.distributed=True")
    return
  values = {}
  for name, env in names:
    value = FLAGS[name].value
    if value is None and os.environ.get(env, "").strip():
      value = os.environ[env].strip()
      if name != "coordinator_address":
        if not value.isdigit():
          raise ConfigError(f"${env}={value!r} is not a non-negative integer; set it to a "
                            "whole number or unset it")
        value = int(value)
    values[name] = value
  from vedgan import parallel  # pylint: disable=import-outside-toplevel
  parallel.initialize_distributed(**values, join=join)


def _check_config(config) -> None:
  """Range and recipe checks before anything else (so a negative batch size is reported as
  out of range rather than as not divisible by the devices)."""
  from vedgan import configlib  # pylint: disable=import-outside-toplevel
  from vedgan.objective import get_objective_class  # pylint: disable=import-outside-toplevel
  configlib.validate(config, get_objective_class(config.objective).STEPS)


def run_cli(argv: list[str] | None = None):
  """The entry point of ``python -m vedgan.main`` and ``vedgan train``; ``argv`` (default
  ``sys.argv``) is for in-process tests. ``--config`` may name a shipped config
  (:mod:`vedgan.config_files`)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  argv = config_files.resolve_argv(sys.argv if argv is None else argv)
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  run_cli()
