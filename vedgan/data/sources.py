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
import io
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from vedgan.data import registration
from vedgan.errors import ConfigError, DataError

#: Builder registry: config name -> "module:ClassName" (imported lazily). vedgan's own
#: corpora (:data:`vedgan.data.registration.SHIPPED`, also TFDS's names for them); add yours
#: here (or with :func:`register_builder`).
BUILDERS: dict[str, str | type] = dict(registration.SHIPPED)

#: Environment variables naming the data directory, in order of precedence (after an
#: explicit ``data_dir``): vedgan's own, then TFDS's (the one ``tfds.builder`` reads).
DATA_DIR_ENV = "VEDGAN_DATA_DIR"
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
#: The data directory when neither is set (vedgan's; TFDS's own is ~/tensorflow_datasets).
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "vedgan", "tfds")

_FILE_FORMAT = "array_record"


def register_builder(name: str, builder: str | type) -> None:
  """Registers a TFDS builder class (or a ``"module:Class"`` string)."""
  BUILDERS[name] = builder


def config_value(config: Any, key: str, default: Any = None) -> Any:
  """Reads ``key`` from a ConfigDict / dataclass / namespace / mapping (``default`` if it
  has none): the data functions also take plain dicts of the fields they use."""
  if isinstance(config, Mapping):
    return config.get(key, default)
  try:
    return getattr(config, key)
  except (AttributeError, KeyError):
    return default


def split_name(name: str) -> tuple[str, str | None]:
  """``"persona_chat/both_original"`` -> ``("persona_chat", "both_original")``."""
  base, _, config = str(name).partition("/")
  return base, (config or None)


def builder_class(name: str) -> type:
  """Returns the builder class registered under ``name`` (``"name[/config]"``).

  Raises:
    ConfigError (a ValueError): one line listing the known names, if ``name`` is unknown.
  """
  name, _ = split_name(name)
  if name not in BUILDERS:
    raise ConfigError(f"unknown data.name={name!r}; known: "
                      f"{', '.join(sorted(BUILDERS))} (or set data.format for your own files)")
  return registration.load_class(BUILDERS[name])


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
  """The TFDS data directory: the first of ``data_dir`` (``config.data.data_dir``,
  ``--data_dir``), ``$VEDGAN_DATA_DIR``, ``$TFDS_DATA_DIR`` and ~/.cache/vedgan/tfds that is
  set and not empty; ``~`` expanded and made absolute unless it is a URL (``gs://...``)."""
  if not data_dir:
    data_dir = (os.environ.get(DATA_DIR_ENV) or os.environ.get(TFDS_DATA_DIR_ENV)
                or DEFAULT_DATA_DIR)
  data_dir = os.fspath(data_dir)
  if "://" not in data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return data_dir


@contextlib.contextmanager
def _quiet_tfds(verbose: bool):
  """Without ``verbose``: TFDS's progress bars off and its two stdout prints swallowed.

  The bars are switched with TFDS's public ``tfds.disable_progress_bar()`` and, afterwards,
  ``tfds.enable_progress_bar()`` (TFDS's default): TFDS has no public getter of their state,
  so a caller who had turned them off turns them off again after a quiet build.
  """
  if verbose:
    yield
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.enable_progress_bar()


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


def _check_manual_dir(manual_dir, cls, name: str) -> str:
  """``manual_dir`` made absolute; one that is missing or empty is a one-line DataError
  (a builder may word the second: ``cls.empty_manual_dir_message(path)``)."""
  manual_dir = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
  exists = os.path.isdir(manual_dir)
  if exists and os.listdir(manual_dir):
    return manual_dir
  if exists and hasattr(cls, "empty_manual_dir_message"):
    raise DataError(cls.empty_manual_dir_message(manual_dir))
  what = getattr(cls, "MANUAL_HELP", "") or "the released files"
  home = getattr(cls, "HOMEPAGE", "") or "docs/data.md"
  raise DataError(f"config.data.manual_dir={manual_dir} "
                  f"{'is empty' if exists else 'does not exist'}; get {name} from "
                  f"{home} and put {what} there, or leave data.manual_dir empty to "
                  "download it (docs/data.md)")


def prepare_builder(data_config: Any, verbose: bool = False, *,
                    register_checksums: bool = False,
                    force_checksums_validation: bool = False):
  """Returns the prepared TFDS builder for ``data_config`` (builds it once).

  Args:
    data_config: has ``name`` (``"builder"`` or ``"builder/config"``) and
      optionally ``data_dir`` (see :func:`resolve_data_dir`) and ``manual_dir``
      (where manually downloaded files are; see each builder).
    verbose: let TFDS print its progress (default: quiet).
    register_checksums: TFDS's ``register_checksums``: download, record each URL's size
      and sha256 in the builder's ``checksums.tsv`` (the builder's folder must be
      writable, e.g. a checkout) and rebuild the dataset.
      Needs an empty ``manual_dir`` (a manual file is not a download).
    force_checksums_validation: refuse to download a URL that has no entry in the
      builder's ``checksums.tsv`` (by default such a file is used unverified, with a
      warning; a registered one is always verified).

  Raises:
    vedgan.errors.DataError: (one line) the data is missing, saying where to
      get it and where to put it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  full_name = config_value(data_config, "name")
  cls = builder_class(full_name)
  name, config_name = split_name(full_name)
  data_dir = resolve_data_dir(config_value(data_config, "data_dir"))
  kwargs = dict(data_dir=data_dir, file_format=_FILE_FORMAT)
  if config_name:
    known = [c.name for c in (getattr(cls, "BUILDER_CONFIGS", None) or [])]
    if config_name not in known:
      raise ConfigError(f"data.name={full_name!r}: {name} has no config "
                        f"{config_name!r}; known: {', '.join(known) or 'none'}")
    kwargs["config"] = config_name
  builder = cls(**kwargs)
  if _is_prepared(builder) and not register_checksums:
    return builder
  manual_dir = config_value(data_config, "manual_dir") or None
  if manual_dir and register_checksums:
    raise ConfigError("register_checksums records what TFDS downloads: leave "
                      "data.manual_dir / --manual_dir empty")
  if manual_dir:
    manual_dir = _check_manual_dir(manual_dir, cls, name)
  mode = tfds.download.GenerateMode
  download_config = tfds.download.DownloadConfig(
      try_download_gcs=False,
      manual_dir=manual_dir,
      register_checksums=register_checksums,
      force_checksums_validation=force_checksums_validation,
      download_mode=(mode.REUSE_CACHE_IF_EXISTS if register_checksums
                     else mode.REUSE_DATASET_IF_EXISTS),
  )
  with _prepare_lock(data_dir, name), _quiet_tfds(verbose):
    builder = cls(**kwargs)
    if register_checksums or not _is_prepared(builder):
      logging.info("preparing TFDS dataset %s in %s", name, data_dir)
      try:
        # (the file format is the builder's, set by its constructor: passing it again
        # would be refused when register_checksums rebuilds a prepared dataset)
        builder.download_and_prepare(download_config=download_config)
      except OSError:
        # Lost the final-rename race against another host (remote data_dir):
        # fine if the winner's copy is complete.
        builder = cls(**kwargs)
        if not _is_prepared(builder):
          raise
  return cls(**kwargs)


def load_split(data_config: Any, split: str, verbose: bool = False
               ) -> Sequence[dict]:
  """Returns ``split`` of the configured dataset, building a TFDS one if needed.

  Args:
    data_config: ``format`` (default ``"tfds"``) picks the source. For
      ``"tfds"``: ``name`` (a key of :data:`BUILDERS`, optionally
      ``"name/config"``) and optionally ``data_dir`` (None ->
      ``$VEDGAN_DATA_DIR``, ``$TFDS_DATA_DIR`` or ``~/.cache/vedgan/tfds``) and
      ``manual_dir``.
      For ``"text_lines"``, ``"tsv_pairs"``, ``"jsonl_dialogues"``: ``path``
      etc., see :mod:`vedgan.data.custom`.
    split: a TFDS split spec, e.g. ``"train"``, ``"validation"``,
      ``"train[:10%]"`` (custom formats: ``"train"``, ``"validation"``,
      ``"test"``).
    verbose: let TFDS print its progress when building.

  Returns:
    A random-access ``Sequence[dict]``: ``len(records)``, ``records[i]`` ->
    dict. From TFDS an ``ArrayRecordDataSource`` (numpy scalars, ``bytes``
    for ``Text`` features, lists for ``Sequence`` features; no TensorFlow);
    from a custom format a :class:`vedgan.data.custom.Records` list of dicts
    of ``str``/``int``/lists with a ``counts`` attribute.

  Raises:
    vedgan.errors.DataError / ConfigError: one line (missing data says where
      to get it and where to put it).
  """
  fmt = config_value(data_config, "format", "tfds") or "tfds"
  if fmt != "tfds":
    from vedgan.data import custom  # pylint: disable=g-import-not-at-top
    return custom.load_split(data_config, split)
  if split_name(config_value(data_config, "name"))[0] == "oracle":
    # SeqGAN/Texygen's synthetic corpus (issue 18): sampled from the oracle LSTM and cached.
    from vedgan.data import oracle_data  # pylint: disable=g-import-not-at-top
    return oracle_data.load_split(data_config, split)
  builder = prepare_builder(data_config, verbose=verbose)
  try:   # (TFDS parses slices and sums: "train[:10%]", "train+validation")
    return builder.as_data_source(split=split)
  except ValueError as e:
    if "Unknown split" not in str(e):
      raise
    splits = sorted(builder.info.splits)
    raise ConfigError(f"dataset {builder.name!r} has no split {split!r} (it has {splits}); set "
                      "--config.data.validation_split to one of them") from None


def _to_str(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):  # numpy scalar / 0-d array
    value = value.item()
    if isinstance(value, bytes):
      return value.decode("utf-8")
  return str(value)


def _bulk(records):
  """A TFDS data source read in one call (much faster than item by item)."""
  if hasattr(records, "__getitems__") and hasattr(records, "__len__"):
    try:
      return records.__getitems__(list(range(len(records))))
    except RuntimeError as e:  # array_record/riegeli: a truncated or overwritten file
      info = getattr(records, "dataset_info", None)
      where = getattr(info, "data_dir", None) or "the prepared dataset folder"
      first = " ".join(str(e).split())[:160]
      name = getattr(info, "name", None) or "NAME"
      raise DataError(f"the prepared files in {where} are damaged ({first}); delete that folder "
                      f"and rerun to rebuild them (python -m vedgan.data.prepare {name})") from None
  return records


def sentences(records: Sequence[Mapping[str, Any]],
              text_key: str = "text") -> list[str]:
  """Every distinct utterance of a split, in first-seen order.

  Args:
    records: dicts with ``text_key`` (single-sentence corpora: ``sst2``,
      ``coco_captions_texygen``, ``text_lines``), or dialogue records with
      ``history`` (earlier turns) and ``response`` (every dialogue builder,
      ``tsv_pairs``, ``jsonl_dialogues``), e.g. :func:`load_split` of one
      split.
    text_key: the field of single-sentence records.

  Returns:
    ``[str, ...]``: for dialogue records every turn of every conversation
    (history turns and responses), each distinct stripped string once; empty
    strings and undecodable bytes are left out. Records with ``distinct = False``
    (the ``oracle`` samples, :mod:`vedgan.data.oracle_data`) keep repeated strings.
  """
  seen, out = set(), []
  distinct = getattr(records, "distinct", True)

  def add(value):
    try:
      text = _to_str(value).strip()
    except UnicodeDecodeError:
      return
    if text and (not distinct or text not in seen):
      seen.add(text)
      out.append(text)

  for record in _bulk(records):
    if text_key in record:
      add(record[text_key])
      continue
    for turn in record["history"]:
      add(turn)
    add(record["response"])
  return out


def labelled_texts(records: Sequence[Mapping[str, Any]], label_key: str,
                   text_key: str = "text") -> tuple[list[str], list[int]]:
  """``(texts, labels)`` of labelled records, in record order (no dedup).

  Args:
    records: dicts with ``label_key`` and either ``text_key`` or
      ``response`` (the labelled utterance of dialogue records, e.g.
      ``daily_dialog``'s ``emotion``, ``mojitalk_twitter``'s ``emoji``).
    label_key: the integer label field.
    text_key: the text field of single-sentence records.

  Returns:
    ``texts`` (str) and ``labels`` (int), same length; records with a
    negative label (``-1`` marks "unlabelled", e.g. the SST-2 test split) are
    left out.
  """
  texts, labels = [], []
  for record in _bulk(records):
    label = int(np.asarray(record[label_key]).item())
    if label < 0:
      continue
    value = record[text_key] if text_key in record else record["response"]
    texts.append(_to_str(value))
    labels.append(label)
  return texts, labels


def dialogue_examples(records: Sequence[Mapping[str, Any]], max_turns: int
                      ) -> list[tuple[list[str], str]]:
  """``(turns, response)`` for hierarchical models.

  Args:
    records: dicts with ``history`` and ``response``.
    max_turns: how many of the most recent history turns to keep (>= 1).

  Returns:
    ``[(history[-max_turns:], response), ...]`` in record order.
  """
  if max_turns < 1:
    raise ValueError(f"max_turns must be >= 1, got {max_turns}")
  records = _bulk(records)
  _require_dialogues(records)
  return [([_to_str(t) for t in record["history"]][-max_turns:],
           _to_str(record["response"])) for record in records]


def _require_dialogues(records) -> None:
  """A one-line error when ``records`` are single sentences (``{"text"}``: a sentence
  dataset of any format) instead of dialogue records (``history``/``response``)."""
  if len(records) and "history" not in records[0] and "text" in records[0]:
    raise ConfigError("the dataset has single sentences ({'text'}), no (context, response) "
                      "pairs: use an unconditional objective (latent_gan), or dialogue "
                      "columns (data.turns_field, or data.context_field and "
                      "data.response_field)")


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
  records = _bulk(records)
  _require_dialogues(records)
  separator = f" {eou} "
  pairs = []
  for record in records:
    history = [_to_str(turn) for turn in record["history"]]
    context = separator.join(history[-context_turns:])
    pairs.append((context, _to_str(record["response"])))
  return pairs
