"""Checks on ``--workdir`` before a run writes anything: that it can be written, and that
a resumed run keeps the config its checkpoints were made with."""
import json
import os
import tempfile

from vedgan import configlib
from vedgan.errors import CheckpointError, ConfigError


def check_workdir(workdir: str) -> str:
  """Absolute workdir path; a one-line error unless it is (or can be made) a writable folder.

  Writability is probed by creating and removing a temporary file in the workdir
  (or its nearest existing ancestor), which also catches read-only file systems
  and runs as root.
  """
  if not str(workdir).strip():  # "" would train into the current directory
    raise ConfigError("--workdir is empty; give the run's folder, e.g. --workdir /tmp/vedgan-run")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  probe_dir = workdir
  while not os.path.exists(probe_dir):
    probe_dir = os.path.dirname(probe_dir)
  if not os.path.isdir(probe_dir):
    raise ConfigError(f"--workdir {workdir} cannot be created: {probe_dir} is not a directory; "
                      "choose another path")
  try:
    fd, probe = tempfile.mkstemp(prefix=".vedgan-probe-", dir=probe_dir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} is not writable ({e.strerror} in {probe_dir}); "
                      "choose a directory you can write to") from None
  return workdir


def check_compatible(config_dict: dict, workdir: str) -> None:
  """A workdir started with another model/data/tokenizer config cannot be resumed."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); use a new --workdir") from None
  diffs = configlib.structural_diff(saved, config_dict)
  if diffs:
    shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    raise CheckpointError(f"--workdir {workdir} was started with a different config ({shown}); "
                          "use a new --workdir or the original settings")


#: What a run writes directly under its workdir (folders and files).
WRITTEN = ("checkpoints", "tokenizer", "plots", "eval", "tensorboard", "metrics.jsonl",
           "config.json", "selection.json")


def check_no_links_out(workdir: str) -> None:
  """A one-line error if something a run writes under ``workdir`` is a symbolic link (or
  sits behind one) leading outside the workdir: vedgan writes only inside its workdir. The
  workdir itself may be a link."""
  root = os.path.realpath(workdir)
  for name in WRITTEN:
    path = os.path.join(workdir, name)
    if not os.path.islink(path):
      continue
    target = os.path.realpath(path)
    if os.path.commonpath([root, target]) != root:
      raise ConfigError(f"{path} is a symbolic link to {target}, outside the workdir; vedgan "
                        "writes only inside its workdir: remove the link (or point it inside)")
