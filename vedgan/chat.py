r"""Interactive multi-turn chat with a trained dialogue model.

  python -m vedgan.chat --workdir DIR [--mode greedy|sample|beam] [--temperature T] \
      [--top_k K] [--top_p P] [--repetition_penalty R] [--no_repeat_ngram N] [--min_len M] \
      [--beam_width W] [--seed S] [--emoji E] [--checkpoint latest|best|STEP]

Opens the run read-only (as ``python -m vedgan.sample`` does) and answers each
line typed at the ``you>`` prompt with a ``bot>`` line. The conversation is
kept as the model was trained: the context of a reply is the last
``data.context_turns`` turns (yours and the bot's, oldest first) joined with
``" <eou> "`` (the run's ``data.eou``), or, for the hierarchical
collaborative VED, the last ``data.max_turns`` turns encoded one by one.

Commands: see :data:`HELP` (``/help`` prints it).

Ctrl-D (end of input) and Ctrl-C print a goodbye line and exit with status 0.
An unconditional model (latent_gan, lstm_lm) has no dialogue: the chat stops
with a one-line error pointing to ``python -m vedgan.sample``.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from vedgan import sample as sample_lib
from vedgan.errors import ConfigError, VedganError

PROMPT = "you> "
BOT = "bot> "
GOODBYE = "bye."

HELP = """commands:
  /context          show the kept context (the last turns, joined as in training)
  /reset            forget the conversation
  /mode M           greedy | sample | beam
  /temperature T    sampling temperature (> 0; used by /mode sample)
  /emoji E          MojiTalk: the emoji to express (name or index)
  /help             this list
  /quit             leave (also Ctrl-D or Ctrl-C)"""


class Chat:
  """The conversation state and the commands, independent of the terminal.

  Attributes:
    gen: the opened run (:class:`vedgan.sample.Generator`, a dialogue model).
    settings: the current :class:`vedgan.sample.DecodeSettings`.
    history: the turns so far, oldest first (user and bot alternating).
    label: the designated emoji index (MojiTalk) or None.
  """

  def __init__(self, gen: sample_lib.Generator, settings: sample_lib.DecodeSettings,
               seed: int = 0, label: int | None = None,
               write: Callable[[str], None] = print):
    self.gen = gen
    self.settings = settings
    self.seed = int(seed)
    self.label = label
    self.write = write
    self.history: list[str] = []
    self.replies = 0  # folded into the sampling key: each reply draws new numbers

  # -- the conversation ---------------------------------------------------------------
  def context_turns(self) -> list[str]:
    """The turns the next reply sees: the last ``gen.context_turns`` non-empty turns."""
    turns = [t for t in self.history if t.strip()]
    return turns[-self.gen.context_turns:]

  def context(self) -> str:
    """The context string as in training (turns joined with ``" eou "``)."""
    return f" {self.gen.eou} ".join(self.context_turns())

  def reply(self, text: str) -> str:
    """Adds the user's turn, decodes the bot's answer, adds it, returns it."""
    self.history.append(" ".join(text.split()))
    response = self.gen.respond([self.context()], self.settings, num_samples=1, seed=self.seed,
                                label=self.label, salt=self.replies)[0][0]
    self.replies += 1
    self.history.append(response)
    return response

  # -- commands -----------------------------------------------------------------------
  def command(self, line: str) -> bool:
    """Runs a ``/command``; returns False when the chat should end."""
    name, _, arg = line[1:].strip().partition(" ")
    name, arg = name.lower(), arg.strip()
    if name in ("quit", "exit"):
      return False
    if name == "help":
      self.write(HELP)
    elif name == "reset":
      self.history.clear()
      self.write("context cleared.")
    elif name == "context":
      turns = self.context_turns()
      shown = self.context() if turns else "(empty)"
      self.write(f"context ({len(turns)} of at most {self.gen.context_turns} turns): {shown}")
    elif name == "mode":
      if not arg:
        self.write(f"mode: {self.settings.describe()}")
      else:
        self.settings.mode = sample_lib.check_mode(arg, "/mode")
        self.write(f"mode: {self.settings.describe()}")
    elif name == "temperature":
      if not arg:
        self.write(f"temperature: {self.settings.temperature:g}")
      else:
        self.settings.temperature = sample_lib.check_temperature(arg, "/temperature")
        note = "" if self.settings.mode == "sample" else " (used by /mode sample)"
        self.write(f"temperature: {self.settings.temperature:g}{note}")
    elif name == "emoji":
      if not self.gen.needs_label:
        raise ConfigError(f"/emoji applies to MojiTalk only; objective "
                          f"{self.gen.objective_name!r} takes no emoji label")
      if arg:
        self.label = self.gen.label_id(arg)
      self.write(f"emoji: {self.gen.label_names[self.label]}")
    else:
      self.write(f"unknown command /{name}; /help lists the commands")
    return True

  def handle(self, line: str) -> bool:
    """One input line: a command or a turn. Returns False when the chat should end."""
    line = line.strip()
    if not line:
      return True
    if line.startswith("/"):
      try:
        return self.command(line)
      except VedganError as e:
        self.write(f"error: {e}")
        return True
    response = self.reply(line)
    self.write(BOT + (response if response.strip() else "(empty response)"))
    return True


def build_parser():
  parser = sample_lib.OneLineParser(prog="python -m vedgan.chat", allow_abbrev=False,
                                    description="Chat with a trained vedgan dialogue model.")
  sample_lib.add_decode_flags(parser)
  return parser


def open_chat(args, write: Callable[[str], None] = print) -> Chat:
  """Loads ``args.workdir`` and returns a ready :class:`Chat` (one-line errors)."""
  sample_lib.check_decode_args(args)
  chosen = {} if args.checkpoint == "latest" else {"checkpoint": args.checkpoint}
  gen = sample_lib.open_generator(args.workdir, **chosen)
  try:
    if gen.kind != "dialogue":
      raise ConfigError(f"objective {gen.objective_name!r} is unconditional (it has no "
                        "dialogue context to answer); print samples with python -m vedgan.sample "
                        f"--workdir {gen.workdir} --num_samples 10")
    settings = sample_lib.settings_from_args(gen, args)
    label = None
    if gen.needs_label:
      label = gen.label_id(args.emoji if args.emoji is not None else "0")
    else:
      gen.label_id(args.emoji)  # --emoji on another model: the one-line error
  except BaseException:
    gen.close()
    raise
  return Chat(gen, settings, seed=args.seed, label=label, write=write)


def banner(chat: Chat) -> str:
  g = chat.gen
  how = (f"the last {g.context_turns} turns, each encoded on its own" if g.hierarchical else
         f"the last {g.context_turns} turn{'s' if g.context_turns > 1 else ''} joined with "
         f"' {g.eou} '")
  lines = [f"vedgan chat: {g.objective_name} (step {g.step}) from {g.workdir}",
           f"decoding: {chat.settings.describe()}; context: {how}"]
  if chat.label is not None:
    lines.append(f"emoji: {g.label_names[chat.label]} (change with /emoji)")
  lines.append("/help lists the commands; Ctrl-D or /quit leaves.")
  return "\n".join(lines)


def loop(chat: Chat, read: Callable[[str], str] = input) -> None:
  """Reads lines until EOF, Ctrl-C or /quit; always ends with the goodbye line."""
  try:
    while True:
      try:
        line = read(PROMPT)
        line.encode("utf-8")  # undecodable terminal bytes arrive as lone surrogates
      except EOFError:
        chat.write("")
        break
      except UnicodeError:
        chat.write("error: that line is not valid UTF-8 text; type it again")
        continue
      if not chat.handle(line):
        break
  except KeyboardInterrupt:
    chat.write("")
  chat.write(GOODBYE)


def _write(text: str) -> None:
  print(text, flush=True)


def main(argv: Sequence[str] | None = None, read: Callable[[str], str] | None = None,
         write: Callable[[str], None] | None = None) -> int:
  """``python -m vedgan.chat``; returns the exit status (0, or 2 for a user error)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  write = write or _write
  if read is None and sys.stdin.isatty():
    try:
      import readline  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      pass
  try:
    args = build_parser().parse_args(argv)
    sample_lib.quiet_logs()
    write(f"loading {args.workdir} ...")
    chat = open_chat(args, write)
  except KeyboardInterrupt:
    write(GOODBYE)
    return 0
  except (VedganError, FileNotFoundError, PermissionError) as e:
    if "--debug_errors" in argv:
      raise
    return sample_lib.report_error(e)
  try:
    write(banner(chat))
    loop(chat, read or input)
  finally:
    chat.gen.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
