"""Your own data, selected by config, no code: plain text, TSV pairs, JSONL dialogues.

``config.data.format`` picks the reader and ``config.data.path`` the file(s):

================  ===========================================  =====================
format            one line is                                  records (per item)
================  ===========================================  =====================
``text_lines``    a sentence (unconditional generation)        ``{"text"}``
``tsv_pairs``     ``context<TAB>response``                     ``{"dialogue_id",
                                                               "turn", "history",
                                                               "response"}``
``jsonl_dialogues`` ``{"turns": ["hi", "hello", ...],           the same per turn
                  "label": ...}`` (label optional), or the     >= 1, plus
                  chat format ``{"messages": [{"role":         ``"label"`` (int)
                  "user", "content": "hi"}, ...]}``
================  ===========================================  =====================

The chat format (:func:`chat_turns`) is read from ``messages`` when a line has no
``turns`` (or from ``config.data.turns_field`` when that names a list of messages):
``system`` messages are dropped and consecutive messages of one role are one turn.

The records have the same fields as the TFDS builders', so
:func:`vedgan.data.sources.dialogue_pairs`, :func:`~vedgan.data.sources.sentences`,
:func:`~vedgan.data.sources.labelled_texts` and every objective work on them
unchanged. In ``tsv_pairs`` a context holding ``config.data.eou`` (``<eou>``) is
split into several history turns.

Splits. If ``path`` contains ``{split}`` it is formatted with the split name
(``data/{split}.tsv`` -> ``data/train.tsv``, ``data/validation.tsv``,
``data/test.tsv``). Otherwise the one file is split: an item goes to
``validation`` when a stable hash of its text (a dialogue: of all its turns)
falls in the first ``config.data.validation_percent`` percent, else to
``train``; identical items always share a split.

Labels (``jsonl_dialogues`` with ``config.data.label_field`` set): a scalar
labels every response of the dialogue, a list gives one label per turn. Integer
labels are kept; string labels become ids in the sorted list of the training
split's distinct labels (an unseen one is -1); ``label_names`` on the result
lists them.

Bad lines never stop a run: empty lines, undecodable bytes, malformed TSV/JSON
(also JSON nested too deep to parse), JSON strings holding lone surrogates
(``"\\ud800"``: counted as undecodable), dialogues with fewer than two turns, and
label mismatches are skipped and counted in the result's ``counts``. Text is
cleaned by :func:`vedgan.data.textio.clean_user_text`: control characters are
spaces, and a turn of nothing but invisible characters counts as empty. A file
whose integer labels collide with the ids its string labels get is refused
(:class:`DataError`).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from typing import Any, Optional

from vedgan.data.sources import config_value as _get
from vedgan.data.textio import clean_user_text as clean
from vedgan.data.textio import has_surrogates, read_lines
from vedgan.errors import ConfigError, DataError

FORMATS = ("tfds", "text_lines", "tsv_pairs", "jsonl_dialogues", "hf")  # hf: hf_format.py
SPLITS = ("train", "validation", "test")


class Records(list):
  """A list of record dicts with ``counts`` (skips per reason, ``lines``,
  ``records``) and ``label_names`` (string labels in id order, or None)."""

  def __init__(self, items=(), counts=None, label_names=None):
    super().__init__(items)
    self.counts = dict(counts or {})
    self.label_names = label_names


def _in_validation(key: str, percent: float) -> bool:
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % 10_000 < percent * 100


def resolve_path(data_config: Any, split: str) -> tuple[str, Optional[bool]]:
  """``(file, want_validation)`` for ``split``.

  ``want_validation`` is None when the path has ``{split}`` (the whole file
  is the split), else True/False: keep the items hashed into validation or
  the others.

  Raises:
    ConfigError: no ``data.path``, or a split the layout does not have.
    DataError: the file does not exist.
  """
  path = _get(data_config, "path", "") or ""
  fmt = _get(data_config, "format", "tfds")
  if not path:
    raise ConfigError(f"config.data.format={fmt!r} needs config.data.path "
                      "(a file, or a pattern with {split})")
  if split not in SPLITS:
    raise ConfigError(f"split {split!r} of config.data.format={fmt!r}: use one "
                      f"of {SPLITS} (slices like 'train[:10%]' are TFDS-only)")
  path = os.path.expanduser(os.fspath(path))
  if "{split}" in path:
    path, want = path.replace("{split}", split), None
  elif split == "test":
    raise ConfigError(f"config.data.path={path!r} is a single file: it has "
                      "train and validation only; use a path with {split} for "
                      "a test split")
  else:
    want = split == "validation"
  if not os.path.isfile(path):
    raise DataError(f"config.data.path: {path} does not exist (format "
                    f"{fmt!r}, split {split!r})")
  return path, want


def _dialogue_key(turns: list[str]) -> str:
  """What a dialogue's split is hashed from: all its turns (case and spacing folded). Not
  only the first: dialogues that open alike ("do you like pizza ?") would all land in one
  split, and a validation set could be copies of one opening line."""
  return "\n".join(" ".join(t.lower().split()) for t in turns)


def _keep(key: str, want: Optional[bool], percent: float) -> bool:
  return want is None or _in_validation(key, percent) == want


def _numbered_lines(path, counts):
  """``(line number, line)`` of the decodable, non-blank lines (blank ones are counted)."""
  for number, line in enumerate(read_lines(path, counts)):
    if line is None:
      continue
    if not line.strip():
      counts["empty_lines"] += 1
      continue
    yield number, line


def _text_lines(path, want, percent, counts):
  out = []
  for line in read_lines(path, counts):
    if line is None:
      continue
    text = clean(line)
    if not text:
      counts["empty_lines"] += 1
      continue
    if _keep(text, want, percent):
      out.append({"text": text})
  return out


def _tsv_pairs(path, want, percent, counts, eou):
  out = []
  for number, line in _numbered_lines(path, counts):
    fields = line.split("\t")
    if len(fields) != 2:
      counts["malformed_lines"] += 1
      continue
    if number == 0 and [f.strip().lower() for f in fields] == [
        "context", "response"]:
      continue  # header
    context, response = fields
    history = [clean(t) for t in (context.split(eou) if eou else [context])]
    history = [t for t in history if t]
    response = clean(response)
    if not history or not response:
      counts["empty_pairs"] += 1
      continue
    if _keep(f"{context}\t{response}", want, percent):
      out.append({"dialogue_id": f"{number:08d}", "turn": 1,
                  "history": history, "response": response})
  return out


def _parse_dialogue(line, turns_field, label_field, counts):
  """A JSONL line -> ``(id, turns, labels or None)``, or None (counted)."""
  try:
    obj = json.loads(line)
  except (ValueError, RecursionError):   # RecursionError: nested too deep to parse
    counts["malformed_json"] += 1
    return None
  if not isinstance(obj, dict):
    counts["malformed_json"] += 1
    return None
  turns = obj.get(turns_field)
  if turns is None and turns_field == "turns" and "messages" in obj:
    turns = obj["messages"]          # the chat format, found without configuring it
  if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
    turns = chat_turns(turns)
  if not isinstance(turns, list) or not all(
      isinstance(t, str) or t is None for t in turns):
    counts["missing_turns"] += 1
    return None
  # only a \uD800-\uDFFF escape makes one (the line itself was decoded as UTF-8)
  if "\\ud" in line.lower() and has_surrogates(json.dumps(obj, ensure_ascii=False)):
    counts["undecodable_lines"] += 1
    return None
  labels = None
  if label_field:
    if label_field not in obj:
      counts["missing_label"] += 1
      return None
    raw = obj[label_field]
    labels = list(raw) if isinstance(raw, list) else [raw] * len(turns)
    if len(labels) != len(turns):
      counts["label_count_mismatch"] += 1
      return None
    if not all(isinstance(x, (str, int)) and not isinstance(x, bool)
               for x in labels):
      counts["bad_labels"] += 1
      return None
  kept = [(i, clean(t)) for i, t in enumerate(turns) if t and clean(t)]
  if len(kept) < 2:
    counts["too_few_turns"] += 1
    return None
  texts = [t for _, t in kept]
  labels = None if labels is None else [labels[i] for i, _ in kept]
  return obj.get("id"), texts, labels


def chat_turns(messages: list[dict]) -> Optional[list[str]]:
  """The turns of a chat-format dialogue ``[{"role": ..., "content": "..."}, ...]``: the
  ``system`` messages dropped, consecutive messages of one role joined into one turn (with
  a space). None when a message has no string ``content``.

  >>> chat_turns([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
  ...             {"role": "assistant", "content": "hello"}, {"role": "assistant",
  ...             "content": "how are you?"}])
  ['hi', 'hello how are you?']
  """
  turns, roles = [], []
  for m in messages:
    content = m.get("content")
    if not isinstance(content, str):
      return None
    role = m.get("role")
    if role == "system":
      continue
    if roles and role is not None and role == roles[-1]:
      turns[-1] = f"{turns[-1]} {content}"
    else:
      turns.append(content)
      roles.append(role)
  return turns


def _jsonl_dialogues(path, want, percent, counts, turns_field, label_field,
                     label_ids):
  out = []
  for number, line in _numbered_lines(path, counts):
    parsed = _parse_dialogue(line, turns_field, label_field, counts)
    if parsed is None:
      continue
    dialogue_id, turns, labels = parsed
    if not _keep(_dialogue_key(turns), want, percent):
      continue
    dialogue_id = str(dialogue_id) if dialogue_id is not None else (
        f"{number:08d}")
    for t in range(1, len(turns)):
      record = {"dialogue_id": dialogue_id, "turn": t,
                "history": turns[:t], "response": turns[t]}
      if labels is not None:
        label = labels[t]
        record["label"] = (label if isinstance(label, int)
                           else label_ids.get(label, -1))
      out.append(record)
  return out


def _label_vocabulary(data_config, turns_field, label_field) -> dict:
  """String labels of the training split -> ids (sorted)."""
  path, want = resolve_path(data_config, "train")
  percent = float(_get(data_config, "validation_percent", 10))
  names, numbers = set(), set()
  scratch = collections.Counter()
  for line in read_lines(path, scratch):
    if not line or not line.strip():
      continue
    parsed = _parse_dialogue(line, turns_field, label_field, scratch)
    if parsed is None:
      continue
    _, turns, labels = parsed
    if _keep(_dialogue_key(turns), want, percent):
      names.update(x for x in labels[1:] if isinstance(x, str))
      numbers.update(x for x in labels[1:] if isinstance(x, int))
  return label_ids(names, numbers, path, label_field)


def label_ids(names, numbers, where: str, label_field: str) -> dict:
  """``{string label: id}`` in sorted order for a training split's string labels
  ``names``; its integer labels ``numbers`` are kept as they are, so one that would share
  an id with a string label is refused (:class:`DataError` naming ``where``)."""
  ids = {name: i for i, name in enumerate(sorted(names))}
  clash = sorted(n for n in numbers if 0 <= n < len(ids))
  if clash:
    name = sorted(names)[clash[0]]
    raise DataError(f"{where}: the {label_field!r} labels mix integers and strings, and the "
                    f"integer label {clash[0]} and the string label {name!r} would both be id "
                    f"{clash[0]} (string labels become ids 0, 1, ... in sorted order): write "
                    "every label one way")
  return ids


def load_split(data_config: Any, split: str) -> Records:
  """Reads ``split`` of a custom-format dataset (see the module docstring).

  Args:
    data_config: has ``format`` (one of :data:`FORMATS` but ``"tfds"``),
      ``path``, and optionally ``validation_percent`` (default 10), ``eou``
      (tsv_pairs), ``turns_field`` (default ``"turns"``) and ``label_field``
      (jsonl_dialogues).
    split: ``"train"``, ``"validation"`` or (with ``{split}`` paths)
      ``"test"``.

  Returns:
    :class:`Records`.

  Raises:
    ConfigError / DataError: one line, for a bad format, path or split.
  """
  fmt = _get(data_config, "format", "tfds")
  if fmt not in FORMATS or fmt == "tfds":
    raise ConfigError(f"config.data.format={fmt!r}; custom formats are "
                      f"{FORMATS[1:]}")
  if fmt == "hf":   # Hugging Face datasets (the optional `datasets` package)
    from vedgan.data import hf_format  # pylint: disable=g-import-not-at-top
    return hf_format.load_split(data_config, split)
  path, want = resolve_path(data_config, split)
  percent = float(_get(data_config, "validation_percent", 10))
  if not 0 <= percent <= 100:
    raise ConfigError(f"config.data.validation_percent={percent} must be in "
                      "[0, 100]")
  counts = collections.Counter()
  label_names = None
  if fmt == "text_lines":
    items = _text_lines(path, want, percent, counts)
  elif fmt == "tsv_pairs":
    items = _tsv_pairs(path, want, percent, counts,
                       _get(data_config, "eou", "<eou>"))
  else:
    turns_field = _get(data_config, "turns_field", "turns") or "turns"
    label_field = _get(data_config, "label_field", "") or ""
    label_ids = (_label_vocabulary(data_config, turns_field, label_field)
                 if label_field else {})
    label_names = sorted(label_ids, key=label_ids.get) if label_ids else None
    items = _jsonl_dialogues(path, want, percent, counts, turns_field,
                             label_field, label_ids)
  counts = dict(sorted(counts.items()))
  counts["records"] = len(items)
  return Records(items, counts, label_names)
