"""Hugging Face datasets as a data format: ``config.data.format = "hf"``.

``config.data.path`` is one of

* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (read with ``datasets.load_from_disk``, memory-mapped);
* Parquet (``.parquet``) or Arrow (``.arrow``, stream or file format) files: one file, a
  glob (``data/train-*.parquet``), or a pattern with ``{split}``
  (``data/{split}.parquet``) formatted with the dataset's split name;
* another local folder (data files that ``datasets.load_dataset`` recognises);
* otherwise a dataset name for ``datasets.load_dataset(path, config.data.hf_config)``
  (the Hugging Face Hub; needs the network or the Hub cache).

Splits. ``config.data.hf_splits`` maps vedgan's ``train`` / ``validation`` / ``test`` to
the dataset's split names (default: the same names; ``--config.data.hf_splits.validation=dev``).
When the dataset has no ``validation`` split (or is one table without splits), its train
split is split like the single files of :mod:`vedgan.data.custom`: an item goes to validation
when a stable hash of its text falls in the first ``config.data.validation_percent`` percent.
Any other missing split (a renamed validation split too) is a one-line error listing the
dataset's splits.

Columns. What the rows hold decides the records (the same fields as the other custom
formats, so every objective reads them unchanged):

================================  =======================================================
columns                           records
================================  =======================================================
``config.data.turns_field``       dialogues: a list of strings, or chat messages
(``turns``; else ``messages``)    ``[{"role", "content"}, ...]`` -> one record per turn >= 1
                                  ``{"dialogue_id", "turn", "history", "response"}``
``config.data.context_field`` +   pairs: ``context`` a string (``config.data.eou`` splits it
``config.data.response_field``    into turns) or a list of turns -> one dialogue record
(``context`` + ``response``)
``config.data.text_field``        sentences -> ``{"text"}``
(``text``)
================================  =======================================================

A field set in the config must name a column (else a one-line error listing the columns);
with none set, the first of ``turns``, ``messages``, ``context`` + ``response``, ``text``
that the dataset has is read. ``config.data.label_field`` adds ``"label"``: a scalar per
row (a dialogue: every response), or one per turn; integers are kept, strings become ids
in the sorted list of the training split's labels (unseen: -1; ``label_names`` lists
them), and a ``ClassLabel`` column's names are its ``label_names``. An ``id`` column, when
present, gives ``dialogue_id``; else the row number does.

Rows that cannot be used are skipped and counted in the result's ``counts``:
``empty_texts`` / ``empty_pairs`` (no text after cleaning), ``bad_texts`` / ``bad_pairs``
(a cell that is not a string), ``missing_turns`` (no list of strings or messages),
``too_few_turns`` (under two non-empty turns), ``missing_label``, ``bad_labels`` (not an
int or a string), ``label_count_mismatch``; ``rows`` is the rows read.
"""
from __future__ import annotations

import collections
import glob
import logging
import os
from typing import Any, Optional

from vedgan.data import custom
from vedgan.data.sources import config_value as _get
from vedgan.data.textio import clean_user_text as clean
from vedgan.errors import ConfigError, DataError

#: ``(record shape, the config fields naming its columns)``, in the order they are looked for.
SHAPES = (("dialogues", ("turns_field",)), ("pairs", ("context_field", "response_field")),
          ("sentences", ("text_field",)))
_DEFAULT_COLUMNS = {"turns_field": "turns", "context_field": "context",
                    "response_field": "response", "text_field": "text"}
_ROWS_PER_READ = 1024


def import_datasets():
  """The ``datasets`` module, or a one-line :class:`ConfigError` naming the extra."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("config.data.format='hf' needs the Hugging Face `datasets` package: "
                      'pip install "vedgan[hf]"') from None
  return datasets


def _is_local(path: str) -> bool:
  """Whether ``path`` is meant as local files (else it is a dataset name for the Hub)."""
  return (os.path.exists(path) or glob.has_magic(path) or "{split}" in path
          or path.startswith((".", "/", "~")) or path.endswith((".parquet", ".arrow")))


def _read_table(file: str):
  """One ``.parquet`` / ``.arrow`` file as a ``pyarrow.Table``."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    if file.endswith(".parquet"):
      return pq.read_table(file)
    with pa.memory_map(file) as source:
      try:
        return pa.ipc.open_stream(source).read_all()    # what save_to_disk writes
      except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source).read_all()      # the Arrow IPC file format
  except (pa.ArrowException, OSError) as e:
    first = " ".join(str(e).split())[:160]
    raise DataError(f"config.data.path: {file} is not a readable "
                    f"{os.path.splitext(file)[1]} file ({first})") from None


def _open(path: str, name: str, data_config):
  """``path`` as a ``datasets.Dataset`` or ``DatasetDict``; ``name`` is what the user wrote
  (for messages)."""
  datasets = import_datasets()
  if os.path.isdir(path):
    marks = ("dataset_dict.json", "state.json")     # what save_to_disk writes
    if any(os.path.isfile(os.path.join(path, m)) for m in marks):
      try:
        return datasets.load_from_disk(path)
      except (OSError, ValueError) as e:
        raise DataError(f"config.data.path: {path} is not a readable save_to_disk folder "
                        f"({' '.join(str(e).split())[:160]})") from None
    return _load_dataset(datasets, path, data_config)
  files = sorted(glob.glob(path)) if glob.has_magic(path) else (
      [path] if os.path.isfile(path) else [])
  if not files:
    raise DataError(f"config.data.path: {path} does not exist (format 'hf'"
                    + (f", from {name!r})" if name != path else ")"))
  odd = [f for f in files if not f.endswith((".parquet", ".arrow"))]
  if odd:
    raise ConfigError(f"config.data.path: {odd[0]} is neither .parquet nor .arrow; format "
                      "'hf' reads those, save_to_disk folders and dataset names")
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  tables = [_read_table(f) for f in files]
  try:
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
  except pa.ArrowInvalid:
    raise DataError(f"config.data.path: the files of {path} have different columns") from None
  return datasets.Dataset(table)


def _load_dataset(datasets, name: str, data_config):
  """``datasets.load_dataset(name, config.data.hf_config)`` (a Hub name or a folder of data
  files), every split; a failure is one :class:`DataError` line."""
  subset = _get(data_config, "hf_config", "") or None
  try:
    return datasets.load_dataset(name, subset)
  except Exception as e:  # pylint: disable=broad-except  # network, Hub, builder errors
    first = " ".join(str(e).split())[:200]
    raise DataError(f"config.data.path={name!r}: datasets.load_dataset failed "
                    f"({type(e).__name__}: {first})") from None


def split_names(data_config) -> dict:
  """vedgan split -> the dataset's split name (``config.data.hf_splits``, default same)."""
  mapping = _get(data_config, "hf_splits", None) or {}
  out = {}
  for split in custom.SPLITS:
    value = mapping.get(split, split) if hasattr(mapping, "get") else split
    if not isinstance(value, str) or not value:
      raise ConfigError(f"config.data.hf_splits.{split}={value!r} must be a split name "
                        "of the dataset")
    out[split] = value
  return out


def _single(opened, what: str):
  """A ``Dataset`` from what one file or folder held (a one-split ``DatasetDict`` too)."""
  if isinstance(opened, import_datasets().Dataset):
    return opened
  if len(opened) == 1:
    return next(iter(opened.values()))
  raise ConfigError(f"config.data.path: {what} holds the splits {sorted(opened)}; write the "
                    "path without {split}")


def open_split(data_config, split: str):
  """``(dataset, want_validation, name)`` for vedgan's ``split``: the ``datasets.Dataset``
  to read, None (all of it) or True/False (the items hashed into validation, or the
  others), and the dataset's split name.

  Raises:
    ConfigError / DataError: one line (no path, a missing split or file).
  """
  path = _get(data_config, "path", "") or ""
  if not path:
    raise ConfigError("config.data.format='hf' needs config.data.path (a dataset name, a "
                      "save_to_disk folder, or .parquet/.arrow files, with {split} or not)")
  if split not in custom.SPLITS:
    raise ConfigError(f"split {split!r} of config.data.format='hf': use one of "
                      f"{custom.SPLITS} (slices like 'train[:10%]' are TFDS-only)")
  names = split_names(data_config)
  path = os.path.expanduser(os.fspath(path))
  if "{split}" in path:
    def exists(name):
      p = path.replace("{split}", name)
      return os.path.exists(p) or bool(glob.has_magic(p) and glob.glob(p))
    has_validation = exists(names["validation"])
    if not has_validation:
      _no_validation(data_config, f"{path.replace('{split}', names['validation'])} does not "
                     "exist", names)
    hashed = split != "test" and not has_validation
    name = names["train"] if hashed else names[split]
    where = path.replace("{split}", name)
    dataset = _single(_open(where, path, data_config), where)
    return dataset, (split == "validation") if hashed else None, name
  opened = _open(path, path, data_config) if _is_local(path) else _load_dataset(
      import_datasets(), path, data_config)
  if isinstance(opened, import_datasets().Dataset):
    if split == "test":
      raise ConfigError(f"config.data.path={path!r} is one table without splits: it has train "
                        "and validation only; use a path with {split} for a test split")
    return opened, split == "validation", ""
  available = sorted(opened)
  has_validation = names["validation"] in opened
  if not has_validation:
    _no_validation(data_config, f"dataset {path!r} has no split {names['validation']!r} (it "
                   f"has {available})", names)
  hashed = split != "test" and not has_validation
  asked = "train" if hashed else split
  name = names[asked]
  if name not in opened:
    raise ConfigError(f"dataset {path!r} has no split {name!r} for vedgan's {asked!r} (it has "
                      f"{available}); set --config.data.hf_splits.{asked} to one of them")
  return opened[name], (split == "validation") if hashed else None, name


def _no_validation(data_config, why: str, names: dict) -> None:
  """A dataset without its validation split (``why`` says so): an error when
  ``hf_splits.validation`` names another split than ``validation`` (a typo must not fall
  back silently), else the hashed split is logged."""
  if names["validation"] != "validation":
    raise ConfigError(f"config.data.hf_splits.validation={names['validation']!r}: {why}; set "
                      "it to one of the dataset's splits")
  logging.info("data hf: %s; %s%% of split %r goes to validation by a stable hash "
               "(config.data.validation_percent)", why,
               _get(data_config, "validation_percent", 10), names["train"])


def _columns(data_config, dataset) -> tuple[str, dict]:
  """``(shape, {field: column})`` the records are read from (see the module docstring)."""
  columns = list(dataset.column_names)
  chosen = {f: _get(data_config, f, "") or "" for f in _DEFAULT_COLUMNS}
  if chosen["turns_field"] == "turns":
    chosen["turns_field"] = ""          # the default of jsonl_dialogues: not a choice
  label = _get(data_config, "label_field", "") or ""
  for field, column in list(chosen.items()) + [("label_field", label)]:
    if column and column not in columns:
      raise ConfigError(f"config.data.{field}={column!r} is not a column of the dataset "
                        f"(columns: {columns})")
  set_shapes = [s for s, fields in SHAPES if any(chosen[f] for f in fields)]
  if len(set_shapes) > 1:
    raise ConfigError(f"config.data sets columns of several record shapes {set_shapes}; set "
                      "turns_field, context_field + response_field, or text_field")
  if set_shapes:
    shape = set_shapes[0]
    fields = dict(SHAPES)[shape]
    missing = [f for f in fields if not chosen[f]]
    if missing:
      raise ConfigError(f"config.data.{fields[0]} and config.data.{fields[1]} go together: "
                        f"set --config.data.{missing[0]} too (columns: {columns})")
    return shape, {f: chosen[f] for f in fields}
  if "turns" in columns or "messages" in columns:
    return "dialogues", {"turns_field": "turns" if "turns" in columns else "messages"}
  for shape, fields in SHAPES[1:]:
    if all(_DEFAULT_COLUMNS[f] in columns for f in fields):
      return shape, {f: _DEFAULT_COLUMNS[f] for f in fields}
  raise ConfigError(f"config.data.format='hf': the dataset has none of the columns turns, "
                    f"messages, context + response, text (columns: {columns}); set "
                    "--config.data.turns_field, context_field + response_field, or text_field")


def _label_names(dataset, column: str) -> Optional[list]:
  """The names of a ``ClassLabel`` column (or a list of them), else None."""
  feature = dataset.features.get(column)
  feature = getattr(feature, "feature", feature)       # a list of class labels
  names = getattr(feature, "names", None)
  return list(names) if type(feature).__name__ == "ClassLabel" and names else None


def _labels(raw, count, counts) -> Optional[list]:
  """A row's label cell -> one label per turn (``count``), or None (counted)."""
  if raw is None:
    counts["missing_label"] += 1
    return None
  labels = list(raw) if isinstance(raw, (list, tuple)) else [raw] * count
  if len(labels) != count:
    counts["label_count_mismatch"] += 1
    return None
  if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in labels):
    counts["bad_labels"] += 1
    return None
  return labels


def _turns(value, counts) -> Optional[list]:
  """A dialogue cell -> its turns (strings or None), or None (counted in ``missing_turns``).
  Chat messages come as a list of dicts, or (an old ``Sequence`` feature) a dict of lists."""
  if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
    value = [dict(zip(value, m)) for m in zip(*value.values())]
  if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
    value = custom.chat_turns(value)
  if not isinstance(value, list) or not all(isinstance(t, str) or t is None for t in value):
    counts["missing_turns"] += 1
    return None
  return value


def _row_items(shape, row, number, counts, eou, columns):
  """One row (``{column: value}``) -> ``(hash key, [(record, raw label or None), ...])``, or
  None (counted). ``columns`` maps ``turns`` / ``context`` / ``response`` / ``text`` (those
  of ``shape``) and ``label`` (``""``: none) to the dataset's columns."""
  label_column = columns["label"]
  raw_label = row[label_column] if label_column else None
  dialogue_id = row.get("id")
  dialogue_id = f"{number:08d}" if dialogue_id is None else str(dialogue_id)
  if shape == "sentences":
    text = row[columns["text"]]
    if text is not None and not isinstance(text, str):
      counts["bad_texts"] += 1
      return None
    text = clean(text or "")
    if not text:
      counts["empty_texts"] += 1
      return None
    labels = _labels(raw_label, 1, counts) if label_column else [None]
    return None if labels is None else (text, [({"text": text}, labels[0])])
  if shape == "pairs":
    context, response = row[columns["context"]], row[columns["response"]]
    listed = isinstance(context, list) and all(isinstance(t, str) or t is None for t in context)
    if not (isinstance(context, str) or listed) or not isinstance(response, (str, type(None))):
      counts["bad_pairs"] += 1
      return None
    raw = context if listed else (context.split(eou) if eou else [context])
    history = [clean(t) for t in raw if t and clean(t)]
    key = f"{f' {eou} '.join(t or '' for t in context) if listed else context}\t{response}"
    response = clean(response or "")
    if not history or not response:
      counts["empty_pairs"] += 1
      return None
    labels = _labels(raw_label, 1, counts) if label_column else [None]
    if labels is None:
      return None
    return key, [({"dialogue_id": dialogue_id, "turn": 1, "history": history,
                   "response": response}, labels[0])]
  value = _turns(row[columns["turns"]], counts)   # checked in the order of jsonl_dialogues
  if value is None:
    return None
  labels = _labels(raw_label, len(value), counts) if label_column else [None] * len(value)
  if labels is None:
    return None
  kept = [(i, clean(t)) for i, t in enumerate(value) if t and clean(t)]
  if len(kept) < 2:
    counts["too_few_turns"] += 1
    return None
  turns, labels = [t for _, t in kept], [labels[i] for i, _ in kept]
  return custom._dialogue_key(turns), [  # pylint: disable=protected-access
      ({"dialogue_id": dialogue_id, "turn": t, "history": turns[:t], "response": turns[t]},
       labels[t]) for t in range(1, len(turns))]


def _read(data_config, split: str):
  """``(items [(record, raw label)], counts, ClassLabel names or None)`` of ``split``."""
  dataset, want, _ = open_split(data_config, split)
  shape, fields = _columns(data_config, dataset)
  label_column = _get(data_config, "label_field", "") or ""
  percent = float(_get(data_config, "validation_percent", 10))
  if not 0 <= percent <= 100:
    raise ConfigError(f"config.data.validation_percent={percent} must be in [0, 100]")
  eou = _get(data_config, "eou", "<eou>")
  columns = {f.replace("_field", ""): c for f, c in fields.items()}
  columns["label"] = label_column
  wanted = set(columns.values()) - {""} | ({"id"} & set(dataset.column_names))
  dataset = dataset.remove_columns([c for c in dataset.column_names if c not in wanted])
  dataset = dataset.with_format(None)
  counts = collections.Counter()
  items = []
  for start in range(0, len(dataset), _ROWS_PER_READ):
    block = dataset[start:start + _ROWS_PER_READ]
    for offset in range(len(next(iter(block.values())))):
      row = {c: values[offset] for c, values in block.items()}
      counts["rows"] += 1
      got = _row_items(shape, row, start + offset, counts, eou, columns)
      if got is not None and custom._keep(got[0], want, percent):  # pylint: disable=protected-access
        items.extend(got[1])
  names = _label_names(dataset, label_column) if label_column else None
  return items, counts, names


def load_split(data_config: Any, split: str) -> "custom.Records":
  """Reads vedgan's ``split`` (``"train"``, ``"validation"``, ``"test"``) of an ``hf``
  dataset as :class:`vedgan.data.custom.Records` (see the module docstring).

  Raises:
    ConfigError / DataError: one line (no ``datasets``, a missing path, split or column).
  """
  items, counts, names = _read(data_config, split)
  label_column = _get(data_config, "label_field", "") or ""
  label_ids = {}
  if label_column and names is None:
    train = items if split == "train" else _read(data_config, "train")[0]
    label_ids = custom.label_ids({label for _, label in train if isinstance(label, str)},
                                 {label for _, label in train if isinstance(label, int)},
                                 f"hf:{_get(data_config, 'path', '')}", label_column)
    names = sorted(label_ids, key=label_ids.get) or None
  records = []
  for record, label in items:
    if label_column:
      record["label"] = label if isinstance(label, int) else label_ids.get(label, -1)
    records.append(record)
  counts = dict(sorted(counts.items()))
  counts["records"] = len(records)
  return custom.Records(records, counts, names)
