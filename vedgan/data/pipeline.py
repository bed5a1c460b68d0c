"""Tokenised, bucketed, resumable, per-process batches.

Three kinds of examples share one iterator, :class:`BatchIterator`:

=======================  =====================================================
encoded by               one ``next()`` (``b`` = local rows)
=======================  =====================================================
:func:`encode_pairs`     ``context`` int32 ``[b, Lc]``,
                         ``response_in``/``response_out`` int32 ``[b, Lr]``
:func:`encode_sentences` ``tokens_in``/``tokens_out`` int32 ``[b, L]``
:func:`encode_labelled`  the same plus ``label`` int32 ``[b]``
:func:`encode_dialogues` ``turns`` int32 ``[b, T, Lt]``, ``num_turns`` int32
                         ``[b]``, ``response_in``/``response_out`` ``[b, Lr]``
                         (+ ``label`` int32 ``[b]`` if labels were given)
=======================  =====================================================

and every batch has ``weight`` float32 ``[b]`` (1 real row, 0 padding row).
Decoder rows are ``*_in = [bos, y_1 .. y_n, pad ...]`` and
``*_out = [y_1 .. y_n, eos, pad ...]``.

    pairs = sources.dialogue_pairs(load_split(cfg.data, "train"), 2, "<eou>")
    encoded = encode_pairs(pairs, tokenizer, max_context_len=32,
                           max_response_len=32)
    it = BatchIterator(encoded, global_batch_size=64, buckets=(8, 16, 32),
                       seed=0, process_index=jax.process_index(),
                       process_count=jax.process_count())
    batch = next(it)
    # {"context":      int32 [32, Lc]   (64 // 2 processes = 32 local rows)
    #  "response_in":  int32 [32, Lr]   [bos, y_1 .. y_n, pad ...]
    #  "response_out": int32 [32, Lr]   [y_1 .. y_n, eos, pad ...]
    #  "weight":       float32 [32]     1 real row / 0 padding row}
    state = it.get_state()     # {"epoch": 0, "position": 1, ...}, JSON-safe
    it.set_state(state)        # the same batches follow, in any process

    sents = encode_sentences(sources.sentences(records), tokenizer, max_len=32)
    next(BatchIterator(sents, 64, (16, 32), seed=0))
    # {"tokens_in": int32 [64, L], "tokens_out": int32 [64, L],
    #  "weight": float32 [64]}

Order. Epoch ``e`` visits ``perm_e = np.random.default_rng([seed, e])
.permutation(N)`` (``arange(N)`` without shuffle); global batch ``j`` is
``perm_e[j*B:(j+1)*B]`` and process ``p`` takes its rows ``[p*b:(p+1)*b]``
(``b = B // process_count``). Shapes come from the global batch, so every
process produces the same shapes, and the state (``epoch``, ``position`` =
batches consumed in the epoch) means the same on any number of processes.

Lengths. Each padded axis has a bucket list; its length in a batch is the
smallest bucket >= the longest row of the whole *global* batch, so jit sees a
bounded number of shapes. A maximum length of a decoder row counts the bos/eos
position: a response or sentence keeps at most ``max_len - 1`` tokens, so rows
are never longer than ``max_len``; buckets should therefore reach the maximum
lengths.

Encoding (:mod:`vedgan.data.encoding`, re-exported here). The ``encode_*`` functions
never raise on bad text: an item that is
undecodable ``bytes``, encodes to no tokens, or (with ``too_long="skip"``) is
too long is skipped and counted in ``counts``; over-long items are otherwise
truncated and counted.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator, Optional, Sequence

import numpy as np

# The encoders live in their own module; they are part of this API.
from vedgan.data.encoding import (EncodedDialogues, EncodedPairs, EncodedSentences,  # noqa: F401
                                  encode_dialogues, encode_labelled, encode_pairs,
                                  encode_sentences, num_source_rows, subset, with_fields)

__all__ = ["EncodedDialogues", "EncodedPairs", "EncodedSentences", "encode_dialogues",
           "encode_labelled", "encode_pairs", "encode_sentences", "num_source_rows", "subset",
           "with_fields", "BatchIterator"]
from vedgan.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from vedgan.errors import DataError

# -- dense layouts ----------------------------------------------------------------


def _check_buckets(buckets: Sequence[int], what: str) -> tuple[int, ...]:
  out = tuple(sorted(set(int(b) for b in buckets)))
  if not out or out[0] < 1:
    raise ValueError(f"{what} must be a non-empty list of positive lengths, "
                     f"got {tuple(buckets)}")
  return out


def _pad_rows(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
  """Ragged int rows -> int32 ``[len(rows), width]``, right-padded with 0."""
  out = np.full((len(rows), width), PAD_ID, dtype=np.int32)
  if not rows:
    return out
  lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
  flat = np.concatenate(rows) if lengths.sum() else np.zeros(0, np.int32)
  row_idx = np.repeat(np.arange(len(rows)), lengths)
  col_idx = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths,
                                             lengths)
  out[row_idx, col_idx] = flat
  return out


def _decoder_lengths(rows: Sequence[np.ndarray]) -> np.ndarray:
  """Decoder row lengths: tokens + the bos/eos position."""
  return np.array([len(r) + 1 for r in rows], np.int32)


def _decoder_rows(rows: Sequence[np.ndarray], width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Ragged ids -> (``[bos, y]``, ``[y, eos]``), int32 ``[N, width]``.

  Every row must satisfy ``len + 1 <= width``.
  """
  num = len(rows)
  padded = _pad_rows(rows, width + 1)
  rows_in = np.concatenate([np.full((num, 1), BOS_ID, np.int32),
                            padded[:, :width - 1]], axis=1)
  rows_out = padded[:, :width].copy()
  rows_out[np.arange(num), _decoder_lengths(rows) - 1] = EOS_ID
  return rows_in, rows_out


@dataclasses.dataclass
class _Group:
  """A padded axis: per-example lengths, allowed buckets, error wording."""
  lengths: np.ndarray
  buckets: tuple[int, ...]
  what: str            # "context", "response+bos/eos", ...
  knob: str            # what to lower, e.g. "max_context_len"
  option: str          # the iterator argument holding these buckets


@dataclasses.dataclass
class _Layout:
  """Dense arrays (leading axis = example) and which axes are bucketed."""
  arrays: dict         # name -> np.ndarray [N, ...]
  axes: dict           # name -> tuple of group names for axes 1..ndim-1
  groups: dict         # group name -> _Group


def _check_cover(group: _Group) -> None:
  longest = int(group.lengths.max())
  if longest > group.buckets[-1]:
    raise ValueError(f"{group.option} {group.buckets} do not cover the longest "
                     f"{group.what} ({longest} tokens); add a bucket >= "
                     f"{longest} or lower {group.knob}")


def _layout_pairs(enc: EncodedPairs, buckets, response_buckets) -> _Layout:
  if len(enc.context) != len(enc.response):
    raise ValueError(f"{len(enc.context)} contexts but {len(enc.response)} "
                     "responses")
  context_len = np.array([len(c) for c in enc.context], np.int32)
  groups = {"context": _Group(context_len, buckets, "context",
                              "max_context_len", "buckets")}
  decoder_len = _decoder_lengths(enc.response)
  if len(enc.context) and (context_len.min() < 1 or decoder_len.min() < 2):
    raise ValueError("BatchIterator got an empty context or response")
  groups["response"] = _Group(decoder_len, response_buckets,
                              "response+bos/eos", "max_response_len",
                              "response_buckets")
  for g in groups.values():
    _check_cover(g)
  rows_in, rows_out = _decoder_rows(enc.response, response_buckets[-1])
  arrays = {"context": _pad_rows(enc.context, buckets[-1]),
            "response_in": rows_in, "response_out": rows_out}
  axes = {"context": ("context",), "response_in": ("response",),
          "response_out": ("response",)}
  return _Layout(arrays, axes, groups)


def _layout_sentences(enc: EncodedSentences, buckets) -> _Layout:
  group = _Group(_decoder_lengths(enc.tokens), buckets, "sentence+bos/eos",
                 "max_len", "buckets")
  _check_cover(group)
  rows_in, rows_out = _decoder_rows(enc.tokens, buckets[-1])
  arrays = {"tokens_in": rows_in, "tokens_out": rows_out}
  axes = {"tokens_in": ("tokens",), "tokens_out": ("tokens",)}
  if enc.labels is not None:
    if len(enc.labels) != len(enc.tokens):
      raise ValueError(f"{len(enc.tokens)} sentences but {len(enc.labels)} "
                       "labels")
    arrays["label"] = np.asarray(enc.labels, np.int32)
    axes["label"] = ()
  return _Layout(arrays, axes, {"tokens": group})


def _layout_dialogues(enc: EncodedDialogues, buckets, response_buckets,
                      turn_buckets) -> _Layout:
  num = len(enc.response)
  num_turns = np.array([len(t) for t in enc.turns], np.int32)
  turn_len = np.array([max((len(x) for x in t), default=0)
                       for t in enc.turns], np.int32)
  groups = {
      "num_turns": _Group(num_turns, turn_buckets, "dialogue context (turns)",
                          "max_turns", "turn_buckets"),
      "turn": _Group(turn_len, buckets, "turn", "max_turn_len", "buckets"),
  }
  groups["response"] = _Group(_decoder_lengths(enc.response),
                              response_buckets, "response+bos/eos",
                              "max_response_len", "response_buckets")
  for g in groups.values():
    _check_cover(g)
  rows_in, rows_out = _decoder_rows(enc.response, response_buckets[-1])
  flat = [ids for t in enc.turns for ids in t]
  padded = _pad_rows(flat, buckets[-1])
  turns = np.zeros((num, turn_buckets[-1], buckets[-1]), np.int32)
  ex = np.repeat(np.arange(num), num_turns)
  pos = np.arange(len(flat)) - np.repeat(np.cumsum(num_turns) - num_turns,
                                         num_turns)
  turns[ex, pos] = padded
  arrays = {"turns": turns, "num_turns": num_turns,
            "response_in": rows_in, "response_out": rows_out}
  axes = {"turns": ("num_turns", "turn"), "num_turns": (),
          "response_in": ("response",), "response_out": ("response",)}
  if enc.labels is not None:
    arrays["label"] = np.asarray(enc.labels, np.int32)
    axes["label"] = ()
  return _Layout(arrays, axes, groups)


# -- the iterator -------------------------------------------------------------------


class StateMismatch(ValueError):
  """An iterator state saved for other data, another batch size or seed: ``key`` and the
  ``saved`` and ``current`` values."""

  def __init__(self, key: str, saved, current):
    super().__init__(f"iterator state has {key}={saved} but this iterator has {current}; "
                     "cannot resume")
    self.key, self.saved, self.current = key, saved, current


def _content_hash(arrays: dict) -> str:
  """16 hex digits of sha256 over the named arrays (names, dtypes, shapes and bytes)."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


class BatchShape:
  """The batch geometry an iterator of training batches reports (rows of the global and of
  this process's batch, the padded lengths); the subclass sets the private fields."""
  _global_batch_size: int
  _local_batch_size: int
  _buckets: tuple[int, ...]
  _response_buckets: tuple[int, ...]

  @property
  def global_batch_size(self) -> int:
    return self._global_batch_size

  @property
  def local_batch_size(self) -> int:
    return self._local_batch_size

  @property
  def buckets(self) -> tuple[int, ...]:
    return self._buckets

  @property
  def response_buckets(self) -> tuple[int, ...]:
    return self._response_buckets


class BatchIterator(BatchShape):
  """Infinite (or one-pass) iterator of bucketed, per-process batches.

  Accepts :class:`EncodedPairs`, :class:`EncodedSentences` (from
  :func:`encode_sentences` or :func:`encode_labelled`) or
  :class:`EncodedDialogues`; see the module docstring for the batch keys.
  Each ``next()`` returns a dict of numpy arrays with ``b = global_batch_size
  // process_count`` rows (this process's slice of the global batch), for
  pairs:

  * ``"context"``: int32 ``[b, Lc]``, right-padded with 0.
  * ``"response_in"``: int32 ``[b, Lr]``, ``[bos, y_1 .. y_n]`` then 0s.
  * ``"response_out"``: int32 ``[b, Lr]``, ``[y_1 .. y_n, eos]`` then 0s.
  * ``"weight"``: float32 ``[b]``, 1 for real rows, 0 for padding rows (only
    the last batch of an epoch with ``drop_remainder=False`` has any).

  Every padded length is the smallest bucket >= the longest row of the whole
  global batch. Padding rows are all 0 (every key, also ``label``).

  Training: ``repeat=True, drop_remainder=True`` (default), a new permutation
  each epoch. Evaluation: ``shuffle=False, repeat=False,
  drop_remainder=False`` visits every example exactly once (weight 1) over all
  processes; make a new iterator (or ``reset()``) for each evaluation pass.
  """

  def __init__(self, encoded, global_batch_size: int,
               buckets: Sequence[int], seed: int, shuffle: bool = True,
               process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = True, repeat: bool = True,
               response_buckets: Optional[Sequence[int]] = None,
               turn_buckets: Optional[Sequence[int]] = None):
    """See the class docstring.

    Args:
      encoded: from :func:`encode_pairs`, :func:`encode_sentences`,
        :func:`encode_labelled` or :func:`encode_dialogues`.
      global_batch_size: rows per step summed over all processes.
      buckets: allowed padded lengths for contexts (and responses unless
        ``response_buckets`` is given), sentences, or dialogue turns.
      seed: shuffling seed (epoch ``e`` uses ``default_rng([seed, e])``).
      shuffle: permute each epoch (else file order).
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).
      drop_remainder: drop the last partial global batch of an epoch; if
        False it is padded with weight-0 rows.
      repeat: loop over epochs forever; if False stop after one epoch.
      response_buckets: padded lengths for the decoder rows of pairs and
        dialogues (default ``buckets``).
      turn_buckets: allowed numbers of turns ``T`` of dialogue batches
        (default ``(max_turns,)``: a fixed ``T``).

    Raises:
      ValueError: one line, for a batch size not divisible by
        ``process_count``, a bad process index, buckets that do not cover the
        longest row, or too few examples for one batch.
    """
    if global_batch_size < 1:
      raise ValueError(f"global_batch_size must be >= 1, got "
                       f"{global_batch_size}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must be in "
                       f"[0, process_count={process_count})")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} is not "
                       f"divisible by process_count={process_count}")
    self._buckets = _check_buckets(buckets, "buckets")
    self._response_buckets = _check_buckets(
        self._buckets if response_buckets is None else response_buckets,
        "response_buckets")
    self._turn_buckets = turn_buckets
    num = len(encoded)
    if num == 0:
      raise ValueError("BatchIterator got no examples (all items empty or "
                       "skipped? see the encoder's counts)")
    if isinstance(encoded, EncodedPairs):
      layout = _layout_pairs(encoded, self._buckets, self._response_buckets)
    elif isinstance(encoded, EncodedSentences):
      layout = _layout_sentences(encoded, self._buckets)
    elif isinstance(encoded, EncodedDialogues):
      turn_buckets = _check_buckets(
          (encoded.max_turns,) if turn_buckets is None else turn_buckets,
          "turn_buckets")
      layout = _layout_dialogues(encoded, self._buckets,
                                 self._response_buckets, turn_buckets)
    else:
      raise TypeError(f"BatchIterator cannot batch {type(encoded).__name__}; "
                      "use encode_pairs / encode_sentences / encode_labelled "
                      "/ encode_dialogues")
    for name, values in encoded.fields.items():
      if name in layout.arrays or name == "weight":
        raise ValueError(f"field {name!r} clashes with a batch key of {type(encoded).__name__}")
      if len(values) != num:
        raise ValueError(f"field {name!r} has {len(values)} rows for {num} examples")
      layout.arrays[name] = np.asarray(values)
      layout.axes[name] = ()
    self._layout = layout

    self._num_examples = num
    self._data_hash: Optional[str] = None  # computed when a state is saved or checked
    self._global_batch_size = int(global_batch_size)
    self._process_index = int(process_index)
    self._process_count = int(process_count)
    self._local_batch_size = self._global_batch_size // self._process_count
    self._seed = int(seed)
    self._shuffle = bool(shuffle)
    self._drop_remainder = bool(drop_remainder)
    self._repeat = bool(repeat)
    if drop_remainder:
      self._num_batches = num // self._global_batch_size
    else:
      self._num_batches = -(-num // self._global_batch_size)
    if self._num_batches == 0:
      raise DataError(f"{num} examples are fewer than global_batch_size="
                      f"{global_batch_size} with drop_remainder=True; lower "
                      "config.train.batch_size or use more data")

    self._epoch = 0
    self._position = 0
    self._perm_epoch = None
    self._perm = None

  # -- properties ----------------------------------------------------------
  @property
  def num_batches_per_epoch(self) -> int:
    """Global batches per epoch (the last one padded if not dropped)."""
    return self._num_batches

  @property
  def num_examples(self) -> int:
    return self._num_examples

  @property
  def keys(self) -> tuple[str, ...]:
    """The keys of every batch (``"weight"`` last)."""
    return tuple(self._layout.arrays) + ("weight",)

  @property
  def data_hash(self) -> str:
    """16 hex digits of sha256 over the encoded examples (computed once, on first use)."""
    if self._data_hash is None:
      self._data_hash = _content_hash(self._layout.arrays)
    return self._data_hash

  def one_pass(self, encoded, global_batch_size: int) -> "BatchIterator":
    """A fresh single ordered pass over ``encoded`` (e.g. the validation split) with
    this iterator's buckets and processes; the last batch is padded (weight 0)."""
    return BatchIterator(encoded, global_batch_size, self._buckets, seed=self._seed,
                         shuffle=False, process_index=self._process_index,
                         process_count=self._process_count, drop_remainder=False,
                         repeat=False, response_buckets=self._response_buckets,
                         turn_buckets=self._turn_buckets)

  # -- state -----------------------------------------------------------------
  def get_state(self) -> dict:
    """JSON-serialisable position: the next batch is batch ``position`` of
    epoch ``epoch``. Also records ``num_examples``, ``data_hash`` (of the
    encoded examples), ``global_batch_size`` and ``seed``, which
    :meth:`set_state` checks when present."""
    epoch, position = self._epoch, self._position
    if self._repeat and position >= self._num_batches:
      epoch, position = epoch + 1, 0
    return {"epoch": int(epoch), "position": int(position),
            "num_examples": self._num_examples, "data_hash": self.data_hash,
            "global_batch_size": self._global_batch_size, "seed": self._seed}

  def set_state(self, state: dict) -> None:
    """Continues from a :meth:`get_state` result (only epoch and position are
    required).

    Raises:
      StateMismatch: if the state belongs to different data (``num_examples``,
        ``data_hash``), batch size or seed.
      ValueError: if its position is out of range.
    """
    if state.get("input", "memory") != "memory":  # e.g. a streamed run's position
      raise StateMismatch("input", state["input"], "memory")
    for key, mine in (("num_examples", self._num_examples),
                      ("data_hash", None),
                      ("global_batch_size", self._global_batch_size),
                      ("seed", self._seed)):
      if key in state:
        mine = self.data_hash if key == "data_hash" else mine
        if str(state[key]) != str(mine):
          raise StateMismatch(key, state[key], mine)
    epoch, position = int(state["epoch"]), int(state["position"])
    if epoch < 0 or not 0 <= position <= self._num_batches:
      raise ValueError(f"bad iterator state epoch={epoch} position={position} "
                       f"(num_batches_per_epoch={self._num_batches})")
    if not self._repeat and epoch != 0:
      raise ValueError(f"iterator state epoch={epoch} but repeat=False has "
                       "only epoch 0")
    self._epoch, self._position = epoch, position

  def reset(self) -> None:
    """Back to the first batch of epoch 0."""
    self._epoch, self._position = 0, 0

  # -- iteration ---------------------------------------------------------------
  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_epoch != epoch:
      if self._shuffle:
        rng = np.random.default_rng([self._seed, epoch])
        self._perm = rng.permutation(self._num_examples)
      else:
        self._perm = np.arange(self._num_examples)
      self._perm_epoch = epoch
    return self._perm

  def global_indices(self, epoch: int, position: int) -> np.ndarray:
    """Example indices of global batch ``position`` of ``epoch``
    (``[global_batch_size]`` int64, -1 for padding rows)."""
    b = self._global_batch_size
    idx = self._permutation(epoch)[position * b:(position + 1) * b]
    if len(idx) < b:
      idx = np.concatenate([idx, np.full(b - len(idx), -1, idx.dtype)])
    return idx

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self._position >= self._num_batches:
      if not self._repeat:
        raise StopIteration
      self._epoch += 1
      self._position = 0
    idx = self.global_indices(self._epoch, self._position)
    batch = self._gather(idx)
    self._position += 1
    return batch

  def _gather(self, idx: np.ndarray) -> dict:
    """Global indices (-1 = padding) -> this process's batch."""
    real = idx[idx >= 0]
    width = {}
    for name, g in self._layout.groups.items():
      longest = int(g.lengths[real].max())
      width[name] = g.buckets[int(np.searchsorted(g.buckets, longest))]
    b = self._local_batch_size
    local = idx[self._process_index * b:(self._process_index + 1) * b]
    mask = local >= 0
    safe = np.where(mask, local, 0)
    pad = ~mask
    any_pad = bool(pad.any())
    batch = {}
    for key, array in self._layout.arrays.items():
      index = (safe,) + tuple(slice(0, width[g]) for g in self._layout.axes[key])
      out = array[index]
      if any_pad:
        out[pad] = 0
      batch[key] = out
    batch["weight"] = mask.astype(np.float32)
    return batch
