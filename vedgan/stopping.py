"""Stop signals of a training run: SIGTERM (preemption notice) and SIGINT (Ctrl-C).

:class:`StopFlag` is installed before a run's setup; the training loop polls it after
each call, then checkpoints and returns (:func:`vedgan.train.run`). The CLI exits 0 after
SIGTERM and 130 after SIGINT.
"""
import signal


class StopFlag:
  """Set by SIGTERM (preemption notice) or SIGINT (Ctrl-C): the loop checkpoints and returns.

  ``name`` is the first signal's name. A second SIGINT while the checkpoint is being
  written raises ``KeyboardInterrupt`` (the unfinished checkpoint folder is left as a
  temporary one that no reader takes and the next run removes).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.name = ""
    self._previous = {}

  def __enter__(self):
    try:
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._previous = {}
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if not self.requested:
      self.name = signal.Signals(signum).name
    self.requested = True

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
