"""Text -> token ids: the encoders of every kind of example, and per-example fields.

Each ``encode_*`` function tokenises one kind of example (dialogue pairs,
sentences, labelled sentences, hierarchical dialogues) into ragged id arrays,
never raising on bad text: an item that is undecodable, encodes to no tokens
or (with ``too_long="skip"``) is too long is skipped and counted. Every encoded
dataset keeps ``index`` (the input position of each kept example) and
``fields`` (per-example arrays attached with :func:`with_fields`, given per
INPUT item, so no caller re-derives which items were skipped). The texts of
:data:`ENCODE_CHUNK` items at a time go through one ``tokenizer.encode_batch``
call (SentencePiece: batched and multi-threaded), with the ids of
``tokenizer.encode`` text by text. Batching is :mod:`vedgan.data.pipeline`.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from vedgan.errors import ConfigError

_TOO_LONG = ("truncate", "skip")


# -- text -> ids ----------------------------------------------------------------


def _as_text(value) -> Optional[str]:
  """``str``/``bytes``/numpy scalar -> ``str``; ``None`` if not valid UTF-8."""
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    value = value.item()
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError:
      return None
  if value is None:
    return ""
  text = str(value)
  try:  # lone surrogates (e.g. from errors="surrogateescape") are undecodable
    text.encode("utf-8")
  except UnicodeEncodeError:
    return None
  return text


#: items whose texts go through one ``tokenizer.encode_batch`` call (bounds what one call holds)
ENCODE_CHUNK = 8192


def batch_encoder(tokenizer) -> Callable[[list], list]:
  """``texts -> [ids of each text]``: the tokenizer's ``encode_batch`` (one batched,
  multi-threaded call for a SentencePiece :class:`~vedgan.data.tokenizer.Tokenizer`), or
  ``encode`` text by text for a tokenizer that has no ``encode_batch``."""
  batch = getattr(tokenizer, "encode_batch", None)
  if batch is not None:
    return batch
  return lambda texts: [tokenizer.encode(t) for t in texts]


def _encode_items(items: Iterable, prepare: Callable[[Any], tuple], tokenizer):
  """Yields ``(info, ids)`` for each of ``items``, in order.

  ``prepare(item) -> (info, texts)``: ``texts`` is the list of strings of the item to
  encode, or ``None`` for an item skipped before encoding (its ``ids`` is then ``None``);
  otherwise ``ids`` holds the token ids (a list of ints) of each of ``texts``. The texts of
  :data:`ENCODE_CHUNK` items at a time are encoded by one ``encode_batch`` call, with the
  same ids as ``tokenizer.encode`` text by text.
  """
  encode = batch_encoder(tokenizer)
  it = iter(items)
  while True:
    block = [prepare(item) for item in itertools.islice(it, ENCODE_CHUNK)]
    if not block:
      return
    flat = [t for _, texts in block if texts is not None for t in texts]
    encoded = encode(flat) if flat else []
    if len(encoded) != len(flat):
      raise ValueError(f"{type(tokenizer).__name__}.encode_batch returned {len(encoded)} "
                       f"results for {len(flat)} texts")
    pos = 0
    for info, texts in block:
      if texts is None:
        yield info, None
      else:
        yield info, encoded[pos:pos + len(texts)]
        pos += len(texts)


def _check_too_long(too_long: str) -> None:
  if too_long not in _TOO_LONG:
    raise ConfigError(f"config.data.too_long={too_long!r}; expected one of {_TOO_LONG}")


@dataclasses.dataclass(frozen=True)
class Kept:
  """What every encoded dataset keeps besides its token ids (keyword-only fields).

  Attributes:
    index: int64 ``[N]``, the position in the encoder's input of each kept example.
    fields: per-example arrays ``{name: [N, ...]}`` (see :func:`with_fields`).
  """
  index: Optional[np.ndarray] = dataclasses.field(default=None, kw_only=True)
  fields: dict = dataclasses.field(default_factory=dict, kw_only=True)
  _ROWS = ""  # the per-example list whose length is the number of examples

  def __len__(self) -> int:
    return len(getattr(self, self._ROWS))


@dataclasses.dataclass(frozen=True)
class EncodedPairs(Kept):
  """Token ids of (context, response) pairs, ragged, without bos/eos.

  Attributes:
    context: ``N`` int32 arrays, each of length in ``[1, max_context_len]``.
    response: ``N`` int32 arrays, each of length in
      ``[1, max_response_len - 1]``.
    counts: ``pairs`` (input pairs), ``examples`` (kept), ``skipped_empty``,
      ``skipped_undecodable``, ``skipped_too_long``, ``truncated_context``,
      ``truncated_response``, ``context_tokens``, ``response_tokens`` (kept
      tokens).
    max_context_len: the truncation length used for contexts.
    max_response_len: decoder row length (response tokens + bos/eos).
    index, fields: see :class:`Kept`.
  """
  _ROWS = "context"
  context: list
  response: list
  counts: dict
  max_context_len: int
  max_response_len: int


def encode_pairs(pairs: Iterable[tuple[str, str]], tokenizer,
                 max_context_len: int, max_response_len: int,
                 too_long: str = "truncate") -> EncodedPairs:
  """Tokenises ``(context, response)`` string pairs.

  Args:
    pairs: ``(context, response)`` strings (or UTF-8 bytes), e.g. from
      :func:`vedgan.data.sources.dialogue_pairs`.
    tokenizer: has ``encode(str) -> list[int]`` (a
      :class:`vedgan.data.tokenizer.Tokenizer` or ``WordTokenizer``); its
      ``encode_batch(list[str]) -> list[list[int]]`` (same ids) is used when present.
    max_context_len: contexts keep their LAST ``max_context_len`` tokens
      (the most recent words).
    max_response_len: length of the decoder rows ``[bos, y]``/``[y, eos]``;
      responses keep their FIRST ``max_response_len - 1`` tokens (>= 2).
    too_long: ``"truncate"`` (default) or ``"skip"`` pairs whose context or
      response is longer than allowed.

  Returns:
    :class:`EncodedPairs`; skipped pairs are counted in ``counts``.
  """
  if max_context_len < 1:
    raise ValueError(f"max_context_len must be >= 1, got {max_context_len}")
  if max_response_len < 2:
    raise ValueError("max_response_len must be >= 2 (it includes the bos/eos "
                     f"position), got {max_response_len}")
  _check_too_long(too_long)
  keep_response = max_response_len - 1
  contexts, responses, index = [], [], []
  counts = dict(pairs=0, examples=0, skipped_empty=0, skipped_undecodable=0,
                skipped_too_long=0, truncated_context=0, truncated_response=0,
                context_tokens=0, response_tokens=0)
  for _, ids in _encode_items(pairs, _pair_texts, tokenizer):
    counts["pairs"] += 1
    if ids is None:
      counts["skipped_undecodable"] += 1
      continue
    c, r = ids
    if not c or not r:
      counts["skipped_empty"] += 1
      continue
    long_c, long_r = len(c) > max_context_len, len(r) > keep_response
    if too_long == "skip" and (long_c or long_r):
      counts["skipped_too_long"] += 1
      continue
    if long_c:
      counts["truncated_context"] += 1
      c = c[-max_context_len:]
    if long_r:
      counts["truncated_response"] += 1
      r = r[:keep_response]
    contexts.append(np.asarray(c, dtype=np.int32))
    responses.append(np.asarray(r, dtype=np.int32))
    index.append(counts["pairs"] - 1)
    counts["context_tokens"] += len(c)
    counts["response_tokens"] += len(r)
  counts["examples"] = len(contexts)
  return EncodedPairs(contexts, responses, counts, max_context_len,
                      max_response_len, index=np.asarray(index, np.int64))


def _pair_texts(pair) -> tuple[None, Optional[list[str]]]:
  """``(context, response)`` -> ``(None, [context, response])`` as ``str``; ``(None, None)``
  when either is undecodable."""
  context, response = pair
  context, response = _as_text(context), _as_text(response)
  return None, (None if context is None or response is None else [context, response])


@dataclasses.dataclass(frozen=True)
class EncodedSentences(Kept):
  """Token ids of single sentences (optionally labelled), without bos/eos.

  Attributes:
    tokens: ``N`` int32 arrays, each of length in ``[1, max_len - 1]``.
    counts: ``sentences`` (input items), ``examples`` (kept),
      ``skipped_empty``, ``skipped_undecodable``, ``skipped_too_long``,
      ``skipped_bad_label``, ``truncated``, ``tokens`` (kept tokens).
    max_len: decoder row length (sentence tokens + the bos/eos position).
    labels: int32 ``[N]`` (from :func:`encode_labelled`) or ``None``.
    index, fields: see :class:`Kept`.
  """
  _ROWS = "tokens"
  tokens: list
  counts: dict
  max_len: int
  labels: Optional[np.ndarray] = None


def _encode_sentences(texts, labels, tokenizer, max_len, too_long):
  if max_len < 2:
    raise ValueError("max_len must be >= 2 (it includes the bos/eos "
                     f"position), got {max_len}")
  _check_too_long(too_long)
  keep = max_len - 1
  rows, kept_labels, index = [], [], []
  counts = dict(sentences=0, examples=0, skipped_empty=0,
                skipped_undecodable=0, skipped_too_long=0,
                skipped_bad_label=0, truncated=0, tokens=0)
  items = zip(texts, labels) if labels is not None else (
      (t, None) for t in texts)

  def prepare(item):  # -> (label, [text]), or (the count to raise, None)
    text, label = item
    if labels is not None:
      try:
        label = _as_label(label)
      except (TypeError, ValueError):
        return "skipped_bad_label", None
    text = _as_text(text)
    return ("skipped_undecodable", None) if text is None else (label, [text])

  for label, encoded in _encode_items(items, prepare, tokenizer):
    counts["sentences"] += 1
    if encoded is None:
      counts[label] += 1
      continue
    ids = encoded[0]
    if not ids:
      counts["skipped_empty"] += 1
      continue
    if len(ids) > keep:
      if too_long == "skip":
        counts["skipped_too_long"] += 1
        continue
      counts["truncated"] += 1
      ids = ids[:keep]
    rows.append(np.asarray(ids, dtype=np.int32))
    kept_labels.append(label)
    index.append(counts["sentences"] - 1)
    counts["tokens"] += len(ids)
  counts["examples"] = len(rows)
  label_array = (np.asarray(kept_labels, dtype=np.int32).reshape(-1)
                 if labels is not None else None)
  return EncodedSentences(rows, counts, int(max_len), label_array,
                          index=np.asarray(index, np.int64))


def _as_label(value) -> int:
  """int-like -> int (``True``/floats with a fraction/strings of words fail)."""
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, bytes):
    value = value.decode("ascii")
  if isinstance(value, bool) or value is None:
    raise ValueError(f"bad label {value!r}")
  if isinstance(value, float):
    if not value.is_integer():
      raise ValueError(f"bad label {value!r}")
    value = int(value)
  out = int(value)
  if not -2**31 <= out < 2**31:
    raise ValueError(f"label {out} does not fit int32")
  return out


def encode_sentences(texts: Iterable[str], tokenizer, max_len: int,
                     too_long: str = "truncate") -> EncodedSentences:
  """Tokenises sentences for unconditional generation.

  Args:
    texts: strings (or UTF-8 bytes), e.g. :func:`vedgan.data.sources.sentences`.
    tokenizer: has ``encode(str) -> list[int]`` (and, used when present,
      ``encode_batch(list[str]) -> list[list[int]]`` giving the same ids).
    max_len: length of the rows ``tokens_in = [bos, y]`` /
      ``tokens_out = [y, eos]``; a sentence keeps its FIRST ``max_len - 1``
      tokens (>= 2).
    too_long: ``"truncate"`` (default) or ``"skip"`` longer sentences.

  Returns:
    :class:`EncodedSentences` with ``labels=None``; skipped items counted.
  """
  return _encode_sentences(texts, None, tokenizer, max_len, too_long)


def encode_labelled(texts: Iterable[str], labels: Iterable[int], tokenizer,
                    max_len: int, too_long: str = "truncate"
                    ) -> EncodedSentences:
  """Like :func:`encode_sentences`, keeping an integer label per sentence.

  Args:
    texts: ``N`` strings (or UTF-8 bytes).
    labels: ``N`` integer labels (ints, numpy ints, integral floats or digit
      strings); an item with another label is skipped and counted in
      ``counts["skipped_bad_label"]``.
    tokenizer, max_len, too_long: as in :func:`encode_sentences`.

  Returns:
    :class:`EncodedSentences` whose ``labels`` is int32 ``[examples]``;
    batches then carry ``"label"`` int32 ``[b]``.

  Raises:
    ValueError: if ``texts`` and ``labels`` differ in length.
  """
  texts, labels = list(texts), list(labels)
  if len(texts) != len(labels):
    raise ValueError(f"encode_labelled got {len(texts)} texts but "
                     f"{len(labels)} labels")
  return _encode_sentences(texts, labels, tokenizer, max_len, too_long)


@dataclasses.dataclass(frozen=True)
class EncodedDialogues(Kept):
  """Token ids of (context turns, response) examples for hierarchical models.

  Attributes:
    turns: ``N`` lists of ``1 .. max_turns`` int32 arrays (oldest first), each
      of length in ``[1, max_turn_len]``.
    response: ``N`` int32 arrays of length in ``[1, max_response_len - 1]``.
    counts: ``dialogues`` (input items), ``examples``, ``skipped_empty``,
      ``skipped_undecodable``, ``skipped_too_long``, ``skipped_bad_label``,
      ``dropped_turns`` (older turns beyond ``max_turns``, and empty turns),
      ``truncated_turn``, ``truncated_response``, ``turn_tokens``,
      ``response_tokens``.
    max_turns, max_turn_len, max_response_len: the limits used.
    labels: int32 ``[N]`` or ``None``.
    index, fields: see :class:`Kept`.
  """
  _ROWS = "response"
  turns: list
  response: list
  counts: dict
  max_turns: int
  max_turn_len: int
  max_response_len: int
  labels: Optional[np.ndarray] = None


def encode_dialogues(examples: Iterable[tuple[Sequence[str], str]], tokenizer,
                     max_turns: int, max_turn_len: int, max_response_len: int,
                     labels: Optional[Iterable[int]] = None,
                     too_long: str = "truncate") -> EncodedDialogues:
  """Tokenises ``(history_turns, response)`` examples turn by turn.

  Args:
    examples: ``(turns, response)`` with ``turns`` the earlier utterances,
      oldest first, e.g. from :func:`vedgan.data.sources.dialogue_examples`.
    tokenizer: has ``encode(str) -> list[int]`` (and, used when present,
      ``encode_batch(list[str]) -> list[list[int]]`` giving the same ids).
    max_turns: the LAST ``max_turns`` non-empty turns are kept.
    max_turn_len: each turn keeps its FIRST ``max_turn_len`` tokens.
    max_response_len: decoder row length; responses keep their first
      ``max_response_len - 1`` tokens.
    labels: optional integer label per example.
    too_long: ``"truncate"`` or ``"skip"`` examples with an over-long turn or
      response (extra turns are always dropped, oldest first).

  Returns:
    :class:`EncodedDialogues`; batches are ``turns`` ``[b, T, Lt]``,
    ``num_turns`` ``[b]``, ``response_in``/``response_out`` ``[b, Lr]``.
  """
  if max_turns < 1 or max_turn_len < 1:
    raise ValueError(f"max_turns={max_turns} and max_turn_len={max_turn_len} "
                     "must be >= 1")
  if max_response_len < 2:
    raise ValueError("max_response_len must be >= 2 (it includes the bos/eos "
                     f"position), got {max_response_len}")
  _check_too_long(too_long)
  examples = list(examples)
  if labels is not None:
    labels = list(labels)
    if len(labels) != len(examples):
      raise ValueError(f"encode_dialogues got {len(examples)} examples but "
                       f"{len(labels)} labels")
  keep_response = max_response_len - 1
  all_turns, responses, kept_labels, index = [], [], [], []
  counts = dict(dialogues=0, examples=0, skipped_empty=0,
                skipped_undecodable=0, skipped_too_long=0,
                skipped_bad_label=0, dropped_turns=0, truncated_turn=0,
                truncated_response=0, turn_tokens=0, response_tokens=0)

  def prepare(item):  # -> ((k, label), [response, *turns]), or (the count to raise, None)
    k, (history, response) = item
    label = None
    if labels is not None:
      try:
        label = _as_label(labels[k])
      except (TypeError, ValueError):
        return "skipped_bad_label", None
    if isinstance(history, (str, bytes)):
      history = [history]
    texts = [_as_text(response)] + [_as_text(t) for t in history]
    return ("skipped_undecodable", None) if None in texts else ((k, label), texts)

  for info, ids in _encode_items(enumerate(examples), prepare, tokenizer):
    counts["dialogues"] += 1
    if ids is None:
      counts[info] += 1
      continue
    (k, label), r, encoded = info, ids[0], ids[1:]
    nonempty = [ids for ids in encoded if ids]
    if not r or not nonempty:
      counts["skipped_empty"] += 1
      continue
    kept = nonempty[-max_turns:]
    long_turn = any(len(ids) > max_turn_len for ids in kept)
    long_r = len(r) > keep_response
    if too_long == "skip" and (long_turn or long_r):
      counts["skipped_too_long"] += 1
      continue
    counts["dropped_turns"] += len(encoded) - len(kept)
    if long_turn:
      counts["truncated_turn"] += 1
      kept = [ids[:max_turn_len] for ids in kept]
    if long_r:
      counts["truncated_response"] += 1
      r = r[:keep_response]
    all_turns.append([np.asarray(ids, np.int32) for ids in kept])
    responses.append(np.asarray(r, np.int32))
    kept_labels.append(label)
    index.append(k)
    counts["turn_tokens"] += sum(len(ids) for ids in kept)
    counts["response_tokens"] += len(r)
  counts["examples"] = len(responses)
  label_array = (np.asarray(kept_labels, np.int32).reshape(-1)
                 if labels is not None else None)
  return EncodedDialogues(all_turns, responses, counts, int(max_turns),
                          int(max_turn_len), int(max_response_len),
                          label_array, index=np.asarray(index, np.int64))


# -- per-example fields --------------------------------------------------------------


def num_source_rows(encoded) -> int:
  """How many input items the encoder read (kept or skipped)."""
  c = encoded.counts
  for key in ("pairs", "sentences", "dialogues"):
    if key in c:
      return int(c[key])
  raise ValueError(f"{type(encoded).__name__} has no input count")


def with_fields(encoded, **source_fields):
  """``encoded`` carrying extra per-example arrays, given per INPUT row.

  Each ``source_fields[name]`` has one entry per item the encoder was given
  (``[num_source_rows, ...]``, in input order); the entries of the kept
  examples (``encoded.index``) become ``encoded.fields[name]`` ``[N, ...]``
  and every batch of :class:`BatchIterator` carries them under ``name``
  (padding rows 0). Nobody has to re-derive which rows the encoder skipped.

  Raises:
    ValueError: a field of the wrong length, or a name a batch already uses.
  """
  n = num_source_rows(encoded)
  fields = dict(encoded.fields)
  for name, values in source_fields.items():
    values = np.asarray(values)
    if values.shape[:1] != (n,):
      raise ValueError(f"field {name!r} has {values.shape[:1]} rows; the encoder "
                       f"read {n} items (give one entry per input item)")
    fields[name] = values[encoded.index]
  return dataclasses.replace(encoded, fields=fields)


def subset(encoded, keep: np.ndarray):
  """The examples of ``encoded`` where ``keep`` (bool ``[N]``) holds, with
  their fields and source indices; ``counts["examples"]`` is updated and
  ``counts["subset_dropped"]`` counts the rest."""
  keep = np.asarray(keep, bool)
  if keep.shape != (len(encoded),):
    raise ValueError(f"subset mask has shape {keep.shape}, expected ({len(encoded)},)")
  pick = np.flatnonzero(keep)
  ragged = {f.name: [getattr(encoded, f.name)[i] for i in pick]
            for f in dataclasses.fields(encoded)
            if isinstance(getattr(encoded, f.name), list)}
  counts = dict(encoded.counts, examples=int(keep.sum()),
                subset_dropped=int((~keep).sum()))
  labels = getattr(encoded, "labels", None)
  extra = {} if labels is None else {"labels": np.asarray(labels)[pick]}
  return dataclasses.replace(encoded, counts=counts, index=encoded.index[pick],
                             fields={k: v[pick] for k, v in encoded.fields.items()},
                             **ragged, **extra)
