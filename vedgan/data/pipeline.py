"""Tokenised, bucketed, resumable, per-process batches of (context, response).

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

Order. Epoch ``e`` visits ``perm_e = np.random.default_rng([seed, e])
.permutation(N)`` (``arange(N)`` without shuffle); global batch ``j`` is
``perm_e[j*B:(j+1)*B]`` and process ``p`` takes its rows ``[p*b:(p+1)*b]``
(``b = B // process_count``). Shapes come from the global batch, so every
process produces the same shapes, and the state (``epoch``, ``position`` =
batches consumed in the epoch) means the same on any number of processes.

Lengths. ``Lc`` (``Lr``) is the smallest bucket >= the longest context
(response + 1) in the global batch: at most ``len(buckets)**2`` distinct shapes,
so jit compiles a bounded number of times. ``max_response_len`` counts the
bos/eos position: a response keeps at most ``max_response_len - 1`` tokens, so
``response_in``/``response_out`` rows are never longer than
``max_response_len``; buckets should therefore include ``max_context_len`` and
``max_response_len``.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from vedgan.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class EncodedPairs:
  """Token ids of (context, response) pairs, ragged, without bos/eos.

  Attributes:
    context: ``N`` int32 arrays, each of length in ``[1, max_context_len]``.
    response: ``N`` int32 arrays, each of length in
      ``[1, max_response_len - 1]``.
    counts: ``pairs`` (input pairs), ``examples`` (kept), ``skipped_empty``,
      ``truncated_context``, ``truncated_response``, ``context_tokens``,
      ``response_tokens`` (kept tokens).
    max_context_len: the truncation length used for contexts.
    max_response_len: decoder row length (response tokens + bos/eos).
  """
  context: list
  response: list
  counts: dict
  max_context_len: int
  max_response_len: int

  def __len__(self) -> int:
    return len(self.context)


def encode_pairs(pairs: Iterable[tuple[str, str]], tokenizer,
                 max_context_len: int, max_response_len: int) -> EncodedPairs:
  """Tokenises ``(context, response)`` string pairs.

  Args:
    pairs: ``(context, response)`` strings, e.g. from
      :func:`vedgan.data.sources.dialogue_pairs`.
    tokenizer: has ``encode(str) -> list[int]`` (a
      :class:`vedgan.data.tokenizer.Tokenizer`).
    max_context_len: contexts keep their LAST ``max_context_len`` tokens
      (the most recent words).
    max_response_len: length of the decoder rows ``[bos, y]``/``[y, eos]``;
      responses keep their FIRST ``max_response_len - 1`` tokens (>= 2).

  Returns:
    :class:`EncodedPairs`; a pair whose context or response encodes to no
    tokens is skipped and counted in ``counts["skipped_empty"]``.
  """
  if max_context_len < 1:
    raise ValueError(f"max_context_len must be >= 1, got {max_context_len}")
  if max_response_len < 2:
    raise ValueError("max_response_len must be >= 2 (it includes the bos/eos "
                     f"position), got {max_response_len}")
  keep_response = max_response_len - 1
  contexts, responses = [], []
  counts = dict(pairs=0, examples=0, skipped_empty=0, truncated_context=0,
                truncated_response=0, context_tokens=0, response_tokens=0)
  for context, response in pairs:
    counts["pairs"] += 1
    c = tokenizer.encode(context)
    r = tokenizer.encode(response)
    if not c or not r:
      counts["skipped_empty"] += 1
      continue
    if len(c) > max_context_len:
      counts["truncated_context"] += 1
      c = c[-max_context_len:]
    if len(r) > keep_response:
      counts["truncated_response"] += 1
      r = r[:keep_response]
    contexts.append(np.asarray(c, dtype=np.int32))
    responses.append(np.asarray(r, dtype=np.int32))
    counts["context_tokens"] += len(c)
    counts["response_tokens"] += len(r)
  counts["examples"] = len(contexts)
  return EncodedPairs(contexts, responses, counts, max_context_len,
                      max_response_len)


def _check_buckets(buckets: Sequence[int], what: str) -> tuple[int, ...]:
  out = tuple(sorted(set(int(b) for b in buckets)))
  if not out or out[0] < 1:
    raise ValueError(f"{what} must be a non-empty list of positive lengths, "
                     f"got {tuple(buckets)}")
  return out


def _pad_rows(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
  out = np.full((len(rows), width), PAD_ID, dtype=np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


class BatchIterator:
  """Infinite (or one-pass) iterator of bucketed, per-process batches.

  Each ``next()`` returns a dict of numpy arrays with ``b = global_batch_size
  // process_count`` rows (this process's slice of the global batch):

  * ``"context"``: int32 ``[b, Lc]``, right-padded with 0.
  * ``"response_in"``: int32 ``[b, Lr]``, ``[bos, y_1 .. y_n]`` then 0s.
  * ``"response_out"``: int32 ``[b, Lr]``, ``[y_1 .. y_n, eos]`` then 0s.
  * ``"weight"``: float32 ``[b]``, 1 for real rows, 0 for padding rows (only
    the last batch of an epoch with ``drop_remainder=False`` has any).

  ``Lc``/``Lr`` are the smallest buckets >= the longest context / response+1
  of the whole global batch. Padding rows are all 0 (also in ``response_in``).

  Training: ``repeat=True, drop_remainder=True`` (default), a new permutation
  each epoch. Evaluation: ``shuffle=False, repeat=False,
  drop_remainder=False`` visits every example exactly once (weight 1) over all
  processes; make a new iterator (or ``reset()``) for each evaluation pass.
  """

  def __init__(self, encoded: EncodedPairs, global_batch_size: int,
               buckets: Sequence[int], seed: int, shuffle: bool = True,
               process_index: int = 0, process_count: int = 1,
               drop_remainder: bool = True, repeat: bool = True,
               response_buckets: Optional[Sequence[int]] = None):
    """See the class docstring.

    Args:
      encoded: from :func:`encode_pairs`.
      global_batch_size: rows per step summed over all processes.
      buckets: allowed padded lengths for contexts (and responses unless
        ``response_buckets`` is given).
      seed: shuffling seed (epoch ``e`` uses ``default_rng([seed, e])``).
      shuffle: permute each epoch (else file order).
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).
      drop_remainder: drop the last partial global batch of an epoch; if
        False it is padded with weight-0 rows.
      repeat: loop over epochs forever; if False stop after one epoch.
      response_buckets: padded lengths for the decoder rows (default
        ``buckets``).

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
    num = len(encoded.context)
    if num != len(encoded.response):
      raise ValueError(f"{num} contexts but {len(encoded.response)} responses")
    if num == 0:
      raise ValueError("BatchIterator got no examples (all pairs empty?)")

    self._context_len = np.array([len(c) for c in encoded.context], np.int32)
    # Decoder rows hold the response plus one bos/eos position.
    self._decoder_len = np.array([len(r) + 1 for r in encoded.response],
                                 np.int32)
    if self._context_len.min() < 1 or self._decoder_len.min() < 2:
      raise ValueError("BatchIterator got an empty context or response")
    longest_c = int(self._context_len.max())
    longest_r = int(self._decoder_len.max())
    if longest_c > self._buckets[-1]:
      raise ValueError(f"buckets {self._buckets} do not cover the longest "
                       f"context ({longest_c} tokens); add a bucket >= "
                       f"{longest_c} or lower max_context_len")
    if longest_r > self._response_buckets[-1]:
      raise ValueError(f"buckets {self._response_buckets} do not cover the "
                       f"longest response+bos/eos ({longest_r} tokens); add a "
                       f"bucket >= {longest_r} or lower max_response_len")

    self._num_examples = num
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
      raise ValueError(f"{num} examples are fewer than global_batch_size="
                       f"{global_batch_size} with drop_remainder=True")

    # Dense copies padded to the largest bucket: a batch is then a gather
    # plus a slice.
    self._context = _pad_rows(encoded.context, self._buckets[-1])
    # Width >= n + 1, so every row has room for its eos.
    responses = _pad_rows(encoded.response, self._response_buckets[-1])
    rows = np.arange(num)
    self._response_in = np.concatenate(
        [np.full((num, 1), BOS_ID, np.int32), responses[:, :-1]], axis=1)
    self._response_out = responses.copy()
    self._response_out[rows, self._decoder_len - 1] = EOS_ID

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
  def local_batch_size(self) -> int:
    return self._local_batch_size

  @property
  def buckets(self) -> tuple[int, ...]:
    return self._buckets

  @property
  def response_buckets(self) -> tuple[int, ...]:
    return self._response_buckets

  # -- state -----------------------------------------------------------------
  def get_state(self) -> dict:
    """JSON-serialisable position: the next batch is batch ``position`` of
    epoch ``epoch``. Also records ``num_examples``, ``global_batch_size`` and
    ``seed``, which :meth:`set_state` checks when present."""
    epoch, position = self._epoch, self._position
    if self._repeat and position >= self._num_batches:
      epoch, position = epoch + 1, 0
    return {"epoch": int(epoch), "position": int(position),
            "num_examples": self._num_examples,
            "global_batch_size": self._global_batch_size, "seed": self._seed}

  def set_state(self, state: dict) -> None:
    """Continues from a :meth:`get_state` result (only epoch and position are
    required).

    Raises:
      ValueError: if the state belongs to different data / batch size / seed,
        or its position is out of range.
    """
    for key, mine in (("num_examples", self._num_examples),
                      ("global_batch_size", self._global_batch_size),
                      ("seed", self._seed)):
      if key in state and int(state[key]) != mine:
        raise ValueError(f"iterator state has {key}={state[key]} but this "
                         f"iterator has {mine}; cannot resume")
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

  def _bucket(self, length: int, buckets: tuple[int, ...]) -> int:
    return buckets[int(np.searchsorted(buckets, length))]

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
    real = idx >= 0
    lc = self._bucket(int(self._context_len[idx[real]].max()), self._buckets)
    lr = self._bucket(int(self._decoder_len[idx[real]].max()),
                      self._response_buckets)
    b = self._local_batch_size
    local = idx[self._process_index * b:(self._process_index + 1) * b]
    mask = local >= 0
    safe = np.where(mask, local, 0)
    keep = mask[:, None]
    batch = {
        "context": np.where(keep, self._context[safe, :lc], PAD_ID),
        "response_in": np.where(keep, self._response_in[safe, :lr], PAD_ID),
        "response_out": np.where(keep, self._response_out[safe, :lr], PAD_ID),
        "weight": mask.astype(np.float32),
    }
    for key in ("context", "response_in", "response_out"):
      batch[key] = batch[key].astype(np.int32, copy=False)
    self._position += 1
    return batch


class Prefetcher:
  """Runs an iterator in one background thread, ``size`` items ahead.

  The sequence is exactly that of the wrapped iterator. If it has
  ``get_state``/``set_state``, so does the prefetcher, and ``get_state``
  describes the items *consumed* (not the ones queued).
  """

  _DONE = object()

  def __init__(self, iterator: Iterator, size: int = 2):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._iterator = iterator
    self._size = size
    self._has_state = hasattr(iterator, "get_state")
    self._state = iterator.get_state() if self._has_state else None
    self._thread = None
    self._queue = None
    self._stop = None
    self._finished = False

  def _start(self) -> None:
    self._queue = queue.Queue(maxsize=self._size)
    self._stop = threading.Event()
    self._thread = threading.Thread(
        target=self._work, args=(self._queue, self._stop), daemon=True,
        name="vedgan-prefetch")
    self._thread.start()

  def _work(self, q: queue.Queue, stop: threading.Event) -> None:
    def put(item) -> bool:
      while not stop.is_set():
        try:
          q.put(item, timeout=0.1)
          return True
        except queue.Full:
          continue
      return False

    try:
      while not stop.is_set():
        try:
          item = next(self._iterator)
        except StopIteration:
          put((self._DONE, None))
          return
        state = self._iterator.get_state() if self._has_state else None
        if not put((item, state)):
          return
    except BaseException as e:  # pylint: disable=broad-except
      put((self._DONE, e))

  def __iter__(self) -> "Prefetcher":
    return self

  def __next__(self):
    if self._finished:
      raise StopIteration
    if self._thread is None:
      self._start()
    item, extra = self._queue.get()
    if item is self._DONE:
      self._finished = True
      self._thread.join()
      if extra is not None:
        raise extra
      raise StopIteration
    self._state = extra
    return item

  def get_state(self) -> dict:
    if not self._has_state:
      raise AttributeError("the wrapped iterator has no get_state")
    return dict(self._state)

  def set_state(self, state: dict) -> None:
    if not self._has_state:
      raise AttributeError("the wrapped iterator has no set_state")
    self.close()
    self._iterator.set_state(state)
    self._state = self._iterator.get_state()
    self._finished = False

  def close(self) -> None:
    """Stops the background thread and drops the queued items.

    A stateful wrapped iterator is rewound to the consumed position, so
    iterating again continues without a gap; a stateless one loses the
    dropped items.
    """
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      self._queue = None
      if self._has_state:
        self._iterator.set_state(self._state)

  def __del__(self):
    try:
      if self._thread is not None:
        self._stop.set()
    except Exception:  # pylint: disable=broad-except
      pass


def prefetch(iterator: Iterator, size: int = 2) -> Prefetcher:
  """Wraps ``iterator`` in a deterministic one-thread :class:`Prefetcher`."""
  return Prefetcher(iterator, size)
