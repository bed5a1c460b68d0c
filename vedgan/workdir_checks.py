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
  if os.path.islink(workdir) and not os.path.exists(workdir):
    raise ConfigError(f"--workdir {workdir} is a symbolic link to {os.path.realpath(workdir)}, "
                      "which does not exist; create that folder or use another --workdir")
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


#: What a run writes directly under its workdir: folders, then files.
WRITTEN_FOLDERS = ("checkpoints", "tokenizer", "plots", "eval", "tensorboard")
WRITTEN_FILES = ("metrics.jsonl", "config.json", "selection.json")


def check_written_paths(workdir: str) -> None:
  """One-line errors, before anything is written, for what a run writes under ``workdir``:
  a symbolic link leading outside the workdir (vedgan writes only inside it; the workdir
  itself may be a link), a link to nothing, a file where a folder goes or a folder where a
  file goes."""
  root = os.path.realpath(workdir)
  for name in WRITTEN_FOLDERS + WRITTEN_FILES:
    path = os.path.join(workdir, name)
    if os.path.islink(path):
      target = os.path.realpath(path)
      if os.path.commonpath([root, target]) != root:
        raise ConfigError(f"{path} is a symbolic link to {target}, outside the workdir; vedgan "
                          "writes only inside its workdir: remove the link (or point it inside)")
      if not os.path.exists(path):
        raise ConfigError(f"{path} is a symbolic link to {target}, which does not exist; remove "
                          "the link or create its target")
    if not os.path.exists(path):
      continue
    folder = name in WRITTEN_FOLDERS
    if folder != os.path.isdir(path):
      raise ConfigError(f"{path} is a {'file' if folder else 'folder'}, where vedgan keeps its "
                        f"{'folder' if folder else 'file'} {name}; move it away or use another "
                        "--workdir")
