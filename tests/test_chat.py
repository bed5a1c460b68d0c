"""``python -m vedgan.chat``: a real session in a pseudo-terminal, and the commands in-process.

A tiny seq2seq run (2 steps, ``data.context_turns=3``), shared with
tests/test_sample_cli.py through tests/tiny_runs.py. The
terminal tests start the CLI as a subprocess on a pty (stdlib ``pty``/``os.openpty``),
type turns, commands, Ctrl-D and Ctrl-C, and read what comes back under
timeouts, so nothing can hang. Time budget (with tests/test_sample_cli.py):
40 s on an idle 2-core machine.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import tiny_runs
from conftest import REPO

from vedgan import chat, sample
from vedgan.errors import ConfigError

TIMEOUT = 240  # seconds for start-up (JAX import, data, compilation) on a loaded machine
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
# The child makes the pty its controlling terminal, so Ctrl-C (\x03) becomes SIGINT for it.
_CTTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
         "os.execv(sys.executable, [sys.executable, '-m', 'vedgan.chat'] + sys.argv[1:])")


@pytest.fixture(scope="module")
def run_dir():
  return tiny_runs.seq2seq_chat_run()  # shared with tests/test_sample_cli.py


class Terminal:
  """The chat CLI on a pseudo-terminal: ``send`` keys, ``expect`` output patterns."""

  def __init__(self, *args):
    master, slave = os.openpty()
    env = dict(os.environ, JAX_PLATFORMS="cpu", TERM="dumb", PYTHONUNBUFFERED="1")
    self.proc = subprocess.Popen([sys.executable, "-c", _CTTY, *map(str, args)], cwd=REPO,
                                 env=env, stdin=slave, stdout=slave, stderr=slave,
                                 start_new_session=True, close_fds=True)
    os.close(slave)
    self.fd = master
    self.buffer = ""

  def send(self, text: str) -> None:
    os.write(self.fd, text.encode())

  def expect(self, pattern: str, timeout: float = 60.0) -> re.Match:
    """Reads until ``pattern`` matches the output; consumes the output up to the match."""
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while True:
      match = regex.search(self.buffer)
      if match:
        self.buffer = self.buffer[match.end():]
        return match
      left = deadline - time.monotonic()
      if left <= 0:
        raise AssertionError(f"timed out waiting for {pattern!r}; output so far: "
                             f"{self.buffer[-2000:]!r}")
      ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
      if ready:
        try:
          data = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
          data = b""
        if not data and self.proc.poll() is not None:
          raise AssertionError(f"chat exited ({self.proc.returncode}) before {pattern!r}; "
                               f"output: {self.buffer[-2000:]!r}")
        self.buffer += _ESCAPES.sub("", data.decode("utf-8", "replace")).replace("\r", "")

  def wait(self, timeout: float = 60.0) -> int:
    try:
      return self.proc.wait(timeout=timeout)
    finally:
      os.close(self.fd)

  def kill(self) -> None:
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait()


def test_terminal_session_context_reset_ctrl_d_and_ctrl_c(run_dir):
  # Two sessions start together (their start-up overlaps): one talks and ends with Ctrl-D,
  # the other is interrupted by Ctrl-C at the prompt.
  talk = Terminal("--workdir", run_dir)
  interrupt = Terminal("--workdir", run_dir)
  try:
    talk.expect(r"context: the last 3 turns joined with ' <eou> '", TIMEOUT)
    talk.expect(r"you> $", TIMEOUT)
    talk.send("hello there\n")
    first = talk.expect(r"bot> (.*)\n").group(1)
    talk.expect(r"you> $")
    talk.send("/context\n")
    turns = [t for t in ["hello there", first] if t != "(empty response)"]
    shown = talk.expect(r"context \((\d) of at most 3 turns\): (.*)\n")
    assert shown.groups() == (str(len(turns)), " <eou> ".join(turns))
    talk.expect(r"you> $")
    talk.send("how are you\n")
    second = talk.expect(r"bot> (.*)\n").group(1)
    talk.expect(r"you> $")
    talk.send("/context\n")
    # The kept context grows turn by turn, then keeps the last data.context_turns = 3.
    turns = [t for t in ["hello there", first, "how are you", second]
             if t != "(empty response)"][-3:]
    shown = talk.expect(r"context \((\d) of at most 3 turns\): (.*)\n")
    assert shown.groups() == (str(len(turns)), " <eou> ".join(turns))
    talk.expect(r"you> $")
    talk.send("/reset\n")
    talk.expect(r"context cleared\.\n")
    talk.send("/context\n")
    talk.expect(r"context \(0 of at most 3 turns\): \(empty\)\n")
    talk.expect(r"you> $")
    talk.send("\x04")  # Ctrl-D at the start of a line: end of input
    talk.expect(r"bye\.\n")
    assert talk.wait() == 0

    interrupt.expect(r"you> $", TIMEOUT)
    # Ctrl-C at an idle prompt. Python's readline prints the prompt, then blocks in select();
    # a SIGINT landing between the two is only acted on at the next key, so a key pressed the
    # instant the prompt appears can be lost (one fresh-clone CI run under load timed out
    # here; not reproduced in isolation). A person presses it later: so does the test.
    time.sleep(1.0)
    interrupt.send("\x03")  # Ctrl-C: SIGINT from the terminal
    interrupt.expect(r"bye\.\n")
    assert interrupt.wait() == 0
  finally:
    talk.kill()
    interrupt.kill()


@pytest.fixture(scope="module")
def opened(run_dir):
  return tiny_runs.opened(run_dir)[0]  # shared with tests/test_sample_cli.py


def _chat(opened, lines, **flags):
  """Runs the chat loop on ``lines`` (a ``KeyboardInterrupt`` item raises it); returns output."""
  out = []
  args = sample.build_parser().parse_args(["--workdir", "unused"] + [
      x for k, v in flags.items() for x in (f"--{k}", str(v))])
  session = chat.Chat(opened, sample.settings_from_args(opened, args), write=out.append)
  feed = iter(lines)

  def read(prompt):
    out.append(prompt)
    item = next(feed, None)
    if item is None:
      raise EOFError
    if item is KeyboardInterrupt:
      raise KeyboardInterrupt
    if isinstance(item, Exception):
      raise item
    return item

  chat.loop(session, read)
  return out, session


def test_commands_and_settings(opened):
  out, session = _chat(opened, ["", "hi", "/temperature 0.5", "/mode sample", "/mode beam",
                                "/temperature -1", "/mode nope", "/emoji x", "/frobnicate",
                                "/help", "/quit", "never read"])
  text = "\n".join(out)
  assert "temperature: 0.5 (used by /mode sample)" in text
  assert "mode: sample (temperature 0.5)" in text
  assert "mode: beam (width 4, length penalty 0)" in text
  assert "error: /temperature -1 must be a finite number > 0" in text
  assert "error: /mode 'nope' is unknown" in text
  assert "error: /emoji applies to MojiTalk only" in text
  assert "unknown command /frobnicate" in text
  assert chat.HELP in out
  assert out[-1] == chat.GOODBYE and "never read" not in text
  assert session.settings.mode == "beam" and session.settings.temperature == 0.5
  assert len(session.history) == 2  # one turn and its reply; commands add none


def test_sampled_replies_change_with_the_turn_and_ctrl_c_ends(opened):
  hot = dict(mode="sample", temperature=2.0, seed=3)
  out, session = _chat(opened, ["same words", "/reset", "same words", KeyboardInterrupt], **hot)
  replies = [l for l in out if l.startswith(chat.BOT)]
  # Each reply folds its number into the key: the same context is not answered identically.
  assert len(replies) == 2 and replies[0] != replies[1]
  assert out[-1] == chat.GOODBYE
  again, _ = _chat(opened, ["same words", "/reset", "same words"], **hot)
  assert [l for l in again if l.startswith(chat.BOT)] == replies  # same seed, same replies


def test_text_that_is_not_utf8_is_refused_and_the_session_goes_on(opened):
  """An undecodable line (a terminal's raw bytes: UnicodeDecodeError from ``input``, or lone
  surrogates under a surrogateescape locale) gets one error line; the next line works."""
  bad = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
  out, session = _chat(opened, [bad, "caf\udcc3 ok", "hi"])
  errors = [l for l in out if l.startswith("error: that line is not valid UTF-8")]
  assert len(errors) == 2 and out[-1] == chat.GOODBYE
  assert len(session.history) == 2  # only "hi" and its reply


def test_unconditional_model_points_to_sample(monkeypatch, capsys):
  class Unconditional:
    kind, objective_name, workdir = "unconditional", "latent_gan", "/runs/gan"
    closed = False

    def close(self):
      Unconditional.closed = True

  monkeypatch.setattr(sample, "open_generator", lambda workdir: Unconditional())
  assert chat.main(["--workdir", "/runs/gan"], write=lambda _: None) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("vedgan: error: objective 'latent_gan' is "
                                             "unconditional")
  assert "python -m vedgan.sample --workdir /runs/gan" in err[0] and Unconditional.closed
  with pytest.raises(ConfigError, match="--mode 'x' is unknown"):
    chat.open_chat(sample.build_parser().parse_args(["--workdir", "w", "--mode", "x"]))
