"""Streaming training input (``config.data.input = "stream"``): corpora larger than memory.

The in-memory path (:class:`vedgan.data.pipeline.BatchIterator`) encodes the whole training
split before step 0. :class:`StreamIterator` instead reads and tokenises the examples when
batches need them, through grain:

    MapDataset.source(pairs)          # random access: (context, response) or None
      .shuffle(seed).repeat()         # epoch e: grain's index shuffle with seed + e, O(1) memory
      [process_index::process_count]  # this process's disjoint share of every epoch
      .batch(256, batch_fn=list)      # chunks of consecutive items (one grain element each)
      .map(encode_chunk)              # ids of the chunk's kept pairs (encode_pairs)
      .to_iter_dataset()              # grain's checkpointable iterator

and cuts the encoded chunks into batches of ``b`` rows, padded as the memory path pads them;
so what it holds is a chunk and a batch, whatever the corpus size (grain's own cost per
element is about that of encoding one pair, hence chunks). Batches have the keys, dtypes
and bucketed shapes of the memory path (``context`` int32 ``[b, Lc]``, ``response_in`` /
``response_out`` int32 ``[b, Lr]``, ``weight`` float32 ``[b]``, all 1), built by the same
encoder (:func:`vedgan.data.encoding.encode_pairs`) and padding
(:func:`vedgan.data.pipeline._layout_pairs`). Every padded length is the smallest bucket >= the
longest row of the *global* batch: with several processes the per-process maxima are
exchanged (a tiny all-gather of ints), so every process produces the same shapes.

Differences from the memory path: the order is grain's shuffle, not numpy's permutation; a
batch may span two epochs (nothing is dropped at an epoch's end); skipped examples (empty,
undecodable, too long with ``too_long="skip"``) are dropped as they are met, not counted
before step 0; ``num_examples`` counts source records (kept or not). The state
(:meth:`StreamIterator.get_state`) is, for every process, grain's iterator position before
the chunk being read and how many of its examples were batched (an all-gather when there are
several), JSON-safe and stored in the checkpoint like the memory
path's; a run resumes on the same number of processes.

Sources: a TFDS builder's array_record data source (``data.format = "tfds"``, read record by
record) or a ``tsv_pairs`` file (:class:`TsvPairs`, read line by line through an on-disk
index of line offsets). Validation splits stay in memory (they are small).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable, Optional, Sequence

import numpy as np

from vedgan.data import custom, pipeline, sources
from vedgan.data.encoding import EncodedPairs, encode_pairs
from vedgan.errors import ConfigError, DataError

#: the values of ``config.data.input``
INPUTS = ("memory", "stream")
#: the data formats a stream reads
STREAM_FORMATS = ("tfds", "tsv_pairs")
#: at most this many training pairs (spread over the split) train a new tokenizer
TOKENIZER_SAMPLE = 100_000
#: records read to fingerprint a streamed source (``data_hash``)
HASH_SAMPLE = 16
_CHUNK = 1 << 24  # bytes read at a time while indexing a file
#: items per grain element (grain's per-element cost is ~ the encoding of one pair)
CHUNK_SIZE = 256


def require_grain():
  """The ``grain`` module, or a one-line :class:`ConfigError` naming the extra."""
  try:
    import grain  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError('config.data.input="stream" needs grain: pip install "vedgan[stream]"'
                      ) from None
  return grain


def check_input(data_config) -> str:
  """``config.data.input`` (default ``"memory"``), checked: one-line :class:`ConfigError` for
  an unknown value, or for ``"stream"`` with a format it cannot stream."""
  mode = sources.config_value(data_config, "input", "memory") or "memory"
  if mode not in INPUTS:
    raise ConfigError(f"config.data.input={mode!r}; use one of {INPUTS}")
  fmt = sources.config_value(data_config, "format", "tfds") or "tfds"
  if mode == "stream" and fmt not in STREAM_FORMATS:
    raise ConfigError(f"config.data.input='stream' reads data.format in {STREAM_FORMATS}, not "
                      f"{fmt!r}; use data.input='memory' or convert the file to tsv_pairs")
  return mode


# -- random-access sources -------------------------------------------------------------


class LineIndex:
  """Random access to the lines of a large UTF-8 text file, holding none of them.

  ``index[k]`` is line ``k`` (0-based, without its line ending; a UTF-8 byte-order mark at
  the start dropped) as ``str``, or ``None`` if it is not valid UTF-8: the lines of
  :func:`vedgan.data.textio.read_lines`. The byte offsets of the line starts are written once
  to ``index_dir`` (a file named after the path, size and modification time, reused while the
  file is unchanged; default ``$TMPDIR/vedgan_line_index``) and read back 16 bytes per line
  with ``os.pread``: memory does not grow with the file.

  Raises:
    ConfigError: a ``.gz`` file (not seekable).
    DataError: a missing file, or one with NUL bytes (UTF-16/32, binary).
  """

  def __init__(self, path: str, index_dir: Optional[str] = None):
    self._fd: Optional[int] = None
    self._index_fd: Optional[int] = None
    if str(path).endswith(".gz"):
      raise ConfigError(f"config.data.input='stream' reads uncompressed files; decompress {path}")
    if not os.path.isfile(path):
      raise DataError(f"{path} does not exist")
    self.path = os.path.abspath(path)
    st = os.stat(self.path)
    key = hashlib.sha256(f"{self.path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    index_dir = index_dir or os.path.join(tempfile.gettempdir(), "vedgan_line_index")
    self.index_path = os.path.join(index_dir, key + ".i64")
    if not os.path.isfile(self.index_path):
      os.makedirs(index_dir, exist_ok=True)
      self._build(st.st_size)
    self._lines = os.path.getsize(self.index_path) // 8 - 1

  def _build(self, size: int) -> None:
    """Writes int64 line-start offsets, then ``size`` (so line k is ``[off[k], off[k+1])``)."""
    tmp = f"{self.index_path}.{os.getpid()}.tmp"
    try:
      self._write(size, tmp)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    os.replace(tmp, self.index_path)

  def _write(self, size: int, tmp: str) -> None:
    with open(self.path, "rb") as f, open(tmp, "wb") as out:
      np.zeros(min(size, 1), np.int64).tofile(out)  # an empty file has no line
      pos = 0
      while True:
        buf = f.read(_CHUNK)
        if not buf:
          break
        data = np.frombuffer(buf, np.uint8)
        if pos == 0 and buf.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
          raise DataError(f"{self.path} is UTF-16/32 text (byte-order mark); vedgan reads UTF-8")
        if (data == 0).any():
          raise DataError(f"{self.path} has NUL bytes at byte {pos + int(np.argmax(data == 0))}: "
                          "it is not UTF-8 text; convert it, e.g. iconv -f UTF-16LE -t UTF-8")
        starts = np.flatnonzero(data == 10).astype(np.int64) + (pos + 1)
        starts[starts < size].tofile(out)  # a final newline starts no line
        pos += len(buf)
      np.array([size], np.int64).tofile(out)

  def __len__(self) -> int:
    return self._lines

  def __getstate__(self):
    return dict(self.__dict__, _fd=None, _index_fd=None)

  def _open(self):
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
      self._index_fd = os.open(self.index_path, os.O_RDONLY)
    return self._fd, self._index_fd

  def __getitem__(self, k: int) -> Optional[str]:
    k = int(k)
    if not 0 <= k < self._lines:
      raise IndexError(f"line {k} of {self._lines}")
    fd, index_fd = self._open()
    start, end = np.frombuffer(os.pread(index_fd, 16, 8 * k), np.int64)
    raw = os.pread(fd, int(end - start), int(start))
    if k == 0 and raw.startswith(b"\xef\xbb\xbf"):
      raw = raw[3:]
    try:
      return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
      return None

  def __del__(self, _close=os.close):  # (os may be gone at interpreter exit)
    for fd in (getattr(self, "_fd", None), getattr(self, "_index_fd", None)):
      if fd is not None:
        _close(fd)


class TsvPairs:
  """The ``(context, response)`` pair of each line of a ``tsv_pairs`` split, by line number.

  ``pairs[k]`` is what the memory path (:func:`vedgan.data.custom.load_split` then
  :func:`vedgan.data.sources.dialogue_pairs`) makes of line ``k``, or ``None`` where it
  skips the line (blank, undecodable, not two fields, the header, empty, or hashed into the
  other split of a single file). ``len(pairs)`` is the number of lines.
  """

  def __init__(self, data_config, split: str, index_dir: Optional[str] = None):
    path, self._want = custom.resolve_path(data_config, split)
    get = custom._get  # pylint: disable=protected-access
    self._percent = float(get(data_config, "validation_percent", 10))
    self._eou = get(data_config, "eou", "<eou>")
    self._turns = int(get(data_config, "context_turns", 1))
    self.lines = LineIndex(path, index_dir)

  def __len__(self) -> int:
    return len(self.lines)

  def __getitem__(self, k: int) -> Optional[tuple[str, str]]:
    line = self.lines[k]
    if line is None or not line.strip():
      return None
    fields = line.split("\t")
    if len(fields) != 2:
      return None
    if k == 0 and [f.strip().lower() for f in fields] == ["context", "response"]:
      return None
    clean, (context, response) = custom.clean, fields
    history = [clean(t) for t in (context.split(self._eou) if self._eou else [context])]
    history = [t for t in history if t]
    answer = clean(response)
    if not history or not answer:
      return None
    if not custom._keep(f"{context}\t{response}", self._want, self._percent):  # pylint: disable=protected-access
      return None
    return f" {self._eou} ".join(history[-self._turns:]), answer


class RecordPairs:
  """``(context, response)`` of each dialogue record of a random-access source (a TFDS
  array_record data source), as :func:`vedgan.data.sources.dialogue_pairs` makes them;
  ``None`` for a record with undecodable text."""

  def __init__(self, records: Sequence, context_turns: int, eou: str):
    self.records, self._turns, self._sep = records, int(context_turns), f" {eou} "

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, k: int) -> Optional[tuple[str, str]]:
    record, _to_str = self.records[int(k)], sources._to_str  # pylint: disable=protected-access
    try:
      history = [_to_str(t) for t in record["history"]]
      return self._sep.join(history[-self._turns:]), _to_str(record["response"])
    except UnicodeDecodeError:
      return None


def open_pairs(data_config, split: str = "train"):
  """The random-access pair source of ``split`` (:class:`TsvPairs` or :class:`RecordPairs`)."""
  check_input(data_config)
  if (sources.config_value(data_config, "format", "tfds") or "tfds") == "tsv_pairs":
    return TsvPairs(data_config, split)
  records = sources.load_split(data_config, split)
  return RecordPairs(records, int(sources.config_value(data_config, "context_turns", 1)),
                     sources.config_value(data_config, "eou", "<eou>"))


def _spread(n: int, limit: int) -> np.ndarray:
  """At most ``limit`` distinct indices of ``range(n)``, evenly spread, ascending."""
  return np.unique(np.linspace(0, n - 1, min(n, limit)).astype(np.int64)) if n else np.zeros(0)


def sample_pairs(source, limit: int = TOKENIZER_SAMPLE):
  """Yields the pairs of at most ``limit`` items spread evenly over ``source`` (skipped items
  are left out): what a new tokenizer of a streamed run is trained on."""
  for k in _spread(len(source), limit):
    pair = source[int(k)]
    if pair is not None:
      yield pair


def source_fingerprint(source) -> str:
  """16 hex digits of sha256 over ``len(source)`` and :data:`HASH_SAMPLE` items spread over it:
  a resumed run checks that it reads the data it was trained on (cheaply: not every item)."""
  h = hashlib.sha256(str(len(source)).encode())
  for k in _spread(len(source), HASH_SAMPLE):
    h.update(json.dumps(source[int(k)]).encode())
  return h.hexdigest()[:16]


# -- the iterator ------------------------------------------------------------------------


def allgather_ints(values: np.ndarray) -> np.ndarray:
  """``[k]`` ints of this process -> ``[process_count, k]`` of every process (a collective:
  every process must call it at the same point)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int64)))


class StreamIterator(pipeline.BatchShape):
  """Infinite iterator of this process's training batches of ``(context, response)`` pairs,
  read and tokenised lazily (see the module docstring).

  Args:
    source: random access ``source[k] -> (context, response) | None`` and ``len``.
    tokenizer, max_context_len, max_response_len, too_long: as :func:`encode_pairs`.
    global_batch_size: rows per step summed over all processes.
    buckets, response_buckets: allowed padded lengths, as :class:`pipeline.BatchIterator`;
      they must reach ``max_context_len`` and ``max_response_len``.
    seed: epoch ``e`` is grain's shuffle with seed ``seed + e`` (0 <= seed < 2**32).
    process_index, process_count: this process's share (``jax.process_index()`` ...).
    exchange: ``[k] ints -> [process_count, k]`` of all processes; default
      :func:`allgather_ints` (for one process: ``[1, k]``, no collective).
    num_threads: grain's reading threads (0: read in the caller's thread).
    chunk_size: consecutive items of this process read and encoded together (one grain
      element, one ``encode_batch`` call).

  Raises:
    ValueError: one line, for bad batch sizes, processes, buckets or seed.
  """

  def __init__(self, source, tokenizer, max_context_len: int, max_response_len: int,
               global_batch_size: int, buckets: Sequence[int], seed: int,
               process_index: int = 0, process_count: int = 1,
               response_buckets: Optional[Sequence[int]] = None, too_long: str = "truncate",
               exchange: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               num_threads: int = 0, chunk_size: int = CHUNK_SIZE):
    grain = require_grain()
    if global_batch_size < 1 or process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"global_batch_size={global_batch_size}, process_index={process_index}, "
                       f"process_count={process_count}: need a batch >= 1 and 0 <= index < count")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                       f"process_count={process_count}")
    if not 0 <= int(seed) < 2**32:
      raise ValueError(f"seed={seed} must be in [0, 2**32) for a streamed input")
    self._buckets = pipeline._check_buckets(buckets, "buckets")  # pylint: disable=protected-access
    self._response_buckets = pipeline._check_buckets(  # pylint: disable=protected-access
        self._buckets if response_buckets is None else response_buckets, "response_buckets")
    encode_pairs([], tokenizer, max_context_len, max_response_len, too_long)  # checks the limits
    if self._buckets[-1] < max_context_len or self._response_buckets[-1] < max_response_len:
      raise ValueError(f"buckets {self._buckets} / response buckets {self._response_buckets} "
                       f"must reach max_context_len={max_context_len} / max_response_len="
                       f"{max_response_len} (a streamed batch may hold the longest rows)")
    if len(source) == 0:
      raise DataError("the streamed training split has no records")
    self._source, self._tokenizer = source, tokenizer
    self._limits = (int(max_context_len), int(max_response_len), too_long)
    self._global_batch_size = int(global_batch_size)
    self._process_index, self._process_count = int(process_index), int(process_count)
    self._local_batch_size = self._global_batch_size // self._process_count
    self._seed, self._chunk_size = int(seed), int(chunk_size)
    if exchange is None:
      exchange = (lambda v: np.asarray(v, np.int64)[None]) if process_count == 1 else allgather_ints
    self._exchange = exchange
    self._data_hash: Optional[str] = None
    items = (grain.MapDataset.source(source).shuffle(seed=self._seed).repeat()
             [self._process_index::self._process_count])
    self._chunks = items.batch(self._chunk_size, batch_fn=list).map(self._encode_chunk) \
        .to_iter_dataset(grain.ReadOptions(num_threads=int(num_threads)))
    self.reset()

  # -- reading ---------------------------------------------------------------------------
  def _encode_chunk(self, pairs: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive source items of this process -> ``(context ids, response ids)`` int32 of
    each kept one (skipped items and pairs left out), in order."""
    enc = encode_pairs([p for p in pairs if p is not None], self._tokenizer, *self._limits)
    return list(zip(enc.context, enc.response))

  def _take(self) -> tuple[np.ndarray, np.ndarray]:
    """The next encoded example of this process.

    Raises:
      DataError: a whole epoch's share of this process gave no example (all skipped).
    """
    empty, limit = 0, len(self._source) // (self._chunk_size * self._process_count) + 2
    while self._rows is None or self._taken == len(self._rows):
      if self._rows is not None:
        self._chunk_state, self._taken = self._iterator.get_state(), 0
      self._rows = next(self._iterator)
      empty = 0 if self._rows else empty + 1
      if empty > limit:
        raise DataError(f"no item of the streamed training split ({len(self._source)} items) "
                        "gives an example: every one is skipped (empty, undecodable, or too "
                        "long with data.too_long='skip'); check config.data")
    self._taken += 1
    return self._rows[self._taken - 1]

  def _pad(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    """``b`` encoded pairs -> the batch dict, padded to the global batch's buckets."""
    max_c, max_r, _ = self._limits
    enc = EncodedPairs([c for c, _ in rows], [r for _, r in rows], {}, max_c, max_r)
    layout = pipeline._layout_pairs(enc, self._buckets, self._response_buckets)  # pylint: disable=protected-access
    local = np.array([g.lengths.max() for g in layout.groups.values()], np.int64)
    longest = self._exchange(local).max(axis=0)
    width = {name: g.buckets[int(np.searchsorted(g.buckets, int(n)))]
             for (name, g), n in zip(layout.groups.items(), longest)}
    batch = {key: np.ascontiguousarray(array[(slice(None),) + tuple(
        slice(0, width[g]) for g in layout.axes[key])]) for key, array in layout.arrays.items()}
    batch["weight"] = np.ones(len(rows), np.float32)
    return batch

  # -- BatchIterator's interface ------------------------------------------------------
  @property
  def num_examples(self) -> int:
    """Records of the source (kept or skipped: skips are only known when they are read)."""
    return len(self._source)

  @property
  def num_batches_per_epoch(self) -> int:
    """Global batches per epoch, counting every record (at least 1)."""
    return max(len(self._source) // self._global_batch_size, 1)

  @property
  def keys(self) -> tuple[str, ...]:
    return ("context", "response_in", "response_out", "weight")

  @property
  def data_hash(self) -> str:
    """:func:`source_fingerprint` of the source (computed once)."""
    if self._data_hash is None:
      self._data_hash = source_fingerprint(self._source)
    return self._data_hash

  def one_pass(self, encoded, global_batch_size: int) -> pipeline.BatchIterator:
    """A single ordered in-memory pass over ``encoded`` (the validation split) with these
    buckets and processes; the last batch is padded (weight 0)."""
    return pipeline.BatchIterator(encoded, global_batch_size, self._buckets, seed=self._seed,
                                  shuffle=False, process_index=self._process_index,
                                  process_count=self._process_count, drop_remainder=False,
                                  repeat=False, response_buckets=self._response_buckets)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._pad([self._take() for _ in range(self._local_batch_size)])

  def reset(self) -> None:
    """Back to the first batch of epoch 0."""
    self._iterator = iter(self._chunks)
    self._chunk_state, self._rows, self._taken = self._iterator.get_state(), None, 0

  def get_state(self) -> dict:
    """JSON-safe position: for every process (``processes``, in process order; an all-gather
    when there are several) grain's iterator state before the chunk being read and
    ``taken``, its examples already batched; with ``input="stream"``, ``num_examples``,
    ``data_hash``, ``global_batch_size`` and ``seed``, which :meth:`set_state` checks."""
    mine = dict(self._chunk_state, taken=self._taken)
    keys = sorted(mine)
    if any(not isinstance(mine[k], (int, np.integer)) for k in keys):
      raise TypeError(f"grain's iterator state {mine} is not a dict of ints")
    every = self._exchange(np.array([mine[k] for k in keys], np.int64))
    return {"input": "stream", "processes": [dict(zip(keys, map(int, row))) for row in every],
            "num_examples": self.num_examples, "data_hash": self.data_hash,
            "global_batch_size": self._global_batch_size, "seed": self._seed}

  def set_state(self, state: dict) -> None:
    """Continues from a :meth:`get_state` result.

    Raises:
      pipeline.StateMismatch: a state of the memory path, of other data, batch size, seed
        or number of processes.
    """
    if state.get("input") != "stream" or "processes" not in state:
      raise pipeline.StateMismatch("input", state.get("input", "memory"), "stream")
    for key, mine in (("num_examples", self.num_examples), ("data_hash", self.data_hash),
                      ("global_batch_size", self._global_batch_size), ("seed", self._seed),
                      ("process_count", self._process_count)):
      saved = len(state["processes"]) if key == "process_count" else state.get(key, mine)
      if str(saved) != str(mine):
        raise pipeline.StateMismatch(key, saved, mine)
    chunk_state = dict(state["processes"][self._process_index])
    taken = int(chunk_state.pop("taken"))
    self._iterator.set_state(chunk_state)
    self._chunk_state, self._rows, self._taken = chunk_state, None, taken
