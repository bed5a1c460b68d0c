"""Where the text comes from: TFDS builders picked by name, read without TF.

    records = load_split(config.data, "train")     # Sequence[dict] (random access)
    pairs = dialogue_pairs(records, context_turns=2, eou="<eou>")
    # [("hi <eou> how are you?", "fine, thanks."), ...]

``data_config`` only needs ``name`` (a key of :data:`BUILDERS`) and optionally
``data_dir``. Builders are registered as ``"module:Class"`` strings and
imported on first use, so importing this module does not import TFDS.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from typing import Any, Mapping, Sequence

#: Builder registry: config name -> "module:ClassName" (imported lazily).
#: Add corpora here (or with :func:`register_builder`).
BUILDERS: dict[str, str] = {
    "chatterbot_corpus":
        "vedgan.data.chatterbot_corpus.chatterbot_corpus:ChatterbotCorpus",
}

#: Environment variable overriding the default data directory.
DATA_DIR_ENV = "VEDGAN_DATA_DIR"
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "vedgan", "tfds")

_FILE_FORMAT = "array_record"


def register_builder(name: str, builder: str | type) -> None:
  """Registers a TFDS builder class (or a ``"module:Class"`` string)."""
  BUILDERS[name] = builder


def _cfg_get(config: Any, key: str, default: Any = None) -> Any:
  """Reads ``key`` from a ConfigDict / dataclass / namespace / mapping."""
  if isinstance(config, Mapping):
    return config.get(key, default)
  try:
    return getattr(config, key)
  except (AttributeError, KeyError):
    return default


def builder_class(name: str) -> type:
  """Returns the builder class registered under ``name``.

  Raises:
    ValueError: one line listing the known names, if ``name`` is unknown.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown data.name={name!r}; known: "
                     f"{', '.join(sorted(BUILDERS))}")
  entry = BUILDERS[name]
  if isinstance(entry, str):
    module_name, _, class_name = entry.partition(":")
    entry = getattr(importlib.import_module(module_name), class_name)
  return entry


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
  """``data_dir`` if given, else ``$VEDGAN_DATA_DIR``, else ~/.cache/vedgan/tfds."""
  if not data_dir:
    data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
  data_dir = os.fspath(data_dir)
  if "://" not in data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return data_dir


@contextlib.contextmanager
def _quiet_tfds(verbose: bool):
  """Silences TFDS progress bars and its two stdout prints, then restores."""
  if verbose:
    yield
    return
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  previous = getattr(tqdm_utils, "_active", True)
  tqdm_utils.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tqdm_utils.display_progress_bar(previous)


@contextlib.contextmanager
def _prepare_lock(data_dir: str, name: str):
  """Inter-process lock (local file systems) so racing processes build once.

  On remote file systems (``gs://``...) no lock is taken; TFDS prepares into a
  unique ``incomplete.*`` directory that is renamed at the end, and a loser of
  that race is handled in :func:`prepare_builder`.
  """
  if "://" in data_dir:
    yield
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{name}.prepare.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _is_prepared(builder) -> bool:
  # TFDS renames a fully written version directory into place, so its
  # dataset_info.json marks a complete dataset. (builder.is_prepared() logs a
  # warning for a directory that does not exist yet.)
  return (builder.data_path / "dataset_info.json").exists()


def prepare_builder(data_config: Any, verbose: bool = False):
  """Returns the prepared TFDS builder for ``data_config`` (builds it once).

  Args:
    data_config: has ``name`` and optionally ``data_dir``.
    verbose: let TFDS print its progress (default: quiet).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  name = _cfg_get(data_config, "name")
  cls = builder_class(name)
  data_dir = resolve_data_dir(_cfg_get(data_config, "data_dir"))
  builder = cls(data_dir=data_dir, file_format=_FILE_FORMAT)
  if _is_prepared(builder):
    return builder
  download_config = tfds.download.DownloadConfig(
      try_download_gcs=False,
      manual_dir=_cfg_get(data_config, "manual_dir"),
  )
  with _prepare_lock(data_dir, name), _quiet_tfds(verbose):
    builder = cls(data_dir=data_dir, file_format=_FILE_FORMAT)
    if not _is_prepared(builder):
      logging.info("preparing TFDS dataset %s in %s", name, data_dir)
      try:
        builder.download_and_prepare(
            file_format=_FILE_FORMAT, download_config=download_config)
      except OSError:
        # Lost the final-rename race against another host (remote data_dir):
        # fine if the winner's copy is complete.
        builder = cls(data_dir=data_dir, file_format=_FILE_FORMAT)
        if not _is_prepared(builder):
          raise
  return cls(data_dir=data_dir, file_format=_FILE_FORMAT)


def load_split(data_config: Any, split: str, verbose: bool = False
               ) -> Sequence[dict]:
  """Builds the dataset if needed and returns ``split`` as a data source.

  Args:
    data_config: has ``name`` (a key of :data:`BUILDERS`) and optionally
      ``data_dir`` (None -> ``$VEDGAN_DATA_DIR`` or ``~/.cache/vedgan/tfds``)
      and ``manual_dir``.
    split: a TFDS split spec, e.g. ``"train"``, ``"validation"``,
      ``"train[:10%]"``.
    verbose: let TFDS print its progress when building.

  Returns:
    A random-access ``Sequence[dict]`` (``tfds`` ``ArrayRecordDataSource``):
    ``len(records)``, ``records[i]`` -> dict of numpy scalars / ``bytes``
    (``Text`` features) / lists (``Sequence`` features). Read with numpy only.
  """
  builder = prepare_builder(data_config, verbose=verbose)
  return builder.as_data_source(split=split)


def _to_str(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):  # numpy scalar / 0-d array
    value = value.item()
    if isinstance(value, bytes):
      return value.decode("utf-8")
  return str(value)


def dialogue_pairs(records: Sequence[Mapping[str, Any]], context_turns: int,
                   eou: str) -> list[tuple[str, str]]:
  """Turns dialogue records into ``(context, response)`` strings.

  Args:
    records: dicts with ``history`` (earlier turns, oldest first) and
      ``response`` (str or utf-8 bytes), e.g. from :func:`load_split`.
    context_turns: how many of the most recent history turns form the
      context (>= 1).
    eou: end-of-utterance marker placed between turns, e.g. ``"<eou>"``.

  Returns:
    ``[(context, response), ...]`` in record order, with
    ``context = f" {eou} ".join(history[-context_turns:])``.
  """
  if context_turns < 1:
    raise ValueError(f"context_turns must be >= 1, got {context_turns}")
  if hasattr(records, "__getitems__") and hasattr(records, "__len__"):
    records = records.__getitems__(list(range(len(records))))  # bulk read
  separator = f" {eou} "
  pairs = []
  for record in records:
    history = [_to_str(turn) for turn in record["history"]]
    context = separator.join(history[-context_turns:])
    pairs.append((context, _to_str(record["response"])))
  return pairs
