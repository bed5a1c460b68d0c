"""Stop signals of a training run: SIGTERM (preemption notice) and SIGINT (Ctrl-C).

:class:`StopFlag` is installed before a run's setup (:func:`vedgan.train.run`). During
setup (data preparation, tokenizer training, restoring, compiling) a signal interrupts it at
once (:class:`SetupInterrupted`): there is nothing new to save, and a setup can take
minutes or hang. During training the loop polls the flag after each call, then
checkpoints and returns. The CLI exits 0 after SIGTERM and 130 after SIGINT.
"""
import signal


class SetupInterrupted(BaseException):
  """Raised by :class:`StopFlag` for a signal during setup (a ``BaseException``, like
  ``KeyboardInterrupt``, so that no ``except Exception`` in library code swallows it)."""


class StopFlag:
  """Set by SIGTERM (preemption notice) or SIGINT (Ctrl-C).

  While ``in_setup`` is True a signal raises :class:`SetupInterrupted`; afterwards it sets
  ``requested`` and the loop checkpoints and returns. ``name`` is the first signal's name.
  A second SIGINT while the checkpoint is being written raises ``KeyboardInterrupt`` (the
  unfinished checkpoint folder is left as a temporary one that no reader takes and the next
  run removes).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.in_setup = False
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
    if self.in_setup:
      self.in_setup = False  # once: the handler of the interrupted setup's clean-up is quiet
      raise SetupInterrupted(self.name)

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
