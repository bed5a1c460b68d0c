"""Background prefetching of batches (optionally placed on the devices)."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

# -- prefetch -----------------------------------------------------------------------


class Prefetcher:
  """Runs an iterator in one background thread, ``size`` items ahead.

  The sequence is exactly that of the wrapped iterator (after ``transform``,
  which also runs in the background thread: e.g. placing a batch on the
  devices). If the iterator has ``get_state``/``set_state``, so does the
  prefetcher, and ``get_state`` describes the items *consumed* (not the ones
  queued).
  """

  _DONE = object()

  def __init__(self, iterator: Iterator, size: int = 2,
               transform: Optional[Callable[[Any], Any]] = None):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._iterator = iterator
    self._size = size
    self._transform = transform
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
        if self._transform is not None:
          item = self._transform(item)
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
      self._thread = None
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


def prefetch(iterator: Iterator, size: int = 2,
             transform: Optional[Callable[[Any], Any]] = None) -> Prefetcher:
  """Wraps ``iterator`` in a deterministic one-thread :class:`Prefetcher`."""
  return Prefetcher(iterator, size, transform)


def prefetch_to_devices(iterator: Iterator, mesh, size: int = 2) -> Prefetcher:
  """Background thread that also places each local batch on ``mesh``.

  Each item becomes a dict of global ``jax.Array`` split on its first axis
  over the mesh's ``"data"`` axis (``jax.make_array_from_process_local_data``),
  so the transfer overlaps the training step.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top

  sharding = NamedSharding(mesh, PartitionSpec("data"))

  def to_devices(batch):
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}

  return Prefetcher(iterator, size, to_devices)
