"""TFDS builder for the Chit-Chat Challenge corpus (``chitchat``), read from an installed package.

The corpus (BYU PCC lab, MIT licence) ships inside the PyPI package
``chitchat-dataset`` as ``chitchat_dataset/dataset.json``: one JSON object
``{conversation_id: conversation}`` with ::

    {"messages": [turn, ...],                      # turns alternate between two people
     "ratings": {"witty": 5, "upbeat": 10, "interesting": 5},   # 1..10; absent if unrated
     "start": "2018-05-02T19:38:15Z",
     "prompt": "What's one thing ...?"}            # the suggested topic; null or absent

and every turn a list of one speaker's consecutive chat messages
``[{"text": ..., "timestamp": ..., "sender": ...}, ...]``. Nothing is downloaded:
the file is found with ``importlib.util.find_spec`` (the package is not
imported); ``config.data.manual_dir`` holding a ``dataset.json`` of the same
format replaces it (the tests use this).

**Turns.** A turn's text is its messages, each stripped with runs of whitespace
folded to one space, joined by one space (:data:`TURN_JOIN`), empty messages left
out. A turn left empty is dropped; when that brings two turns of the same
``sender`` together they are joined the same way, so speakers still alternate.

**Records.** One example per (conversation, turn index >= 1), like every
vedgan dialogue builder: ``dialogue_id`` (the conversation id), ``turn``,
``history`` (all earlier turns, oldest first), ``response``, plus the
conversation's ``prompt``, ``start`` and ratings ``witty``/``upbeat``/
``interesting`` (1..10, -1 when the conversation is unrated).

**Splits.** Whole conversations go to ``train``/``validation``/``test`` (90/5/5 %)
by :func:`split_of`, a sha256 of the conversation id, so the split does not
depend on the file's order, the Python process or the platform.

Skipped and counted per split (``info.metadata["skipped"]``):
``empty_messages``, ``empty_turns``, ``merged_turns`` (same-speaker neighbours
of a dropped turn), ``single_turn_conversations`` (no response to learn) and
``malformed_conversations`` (a conversation that is not in the format above). A
file that is missing, not JSON or not a JSON object is a one-line
:class:`vedgan.errors.DataError` before anything is written.

    python -m vedgan.data.prepare chitchat
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from typing import Any, Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import VedganBuilder, clean, first_existing
from vedgan.errors import DataError

#: The installed package holding the corpus, and its file.
PACKAGE = "chitchat_dataset"
FILENAME = "dataset.json"
#: The conversation-level ratings kept as record fields (-1: not rated).
RATINGS = ("witty", "upbeat", "interesting")
#: What separates the messages of one turn (and the halves of a merged turn).
TURN_JOIN = " "
#: ``(split, upper bound of its hash buckets out of 100)``, in order: 90/5/5 %.
SPLIT_BUCKETS = (("train", 90), ("validation", 95), ("test", 100))

_CITATION = """\
@misc{chitchat_dataset,
  author = {{BYU Perception, Control and Cognition Laboratory}},
  title = {Chit-Chat Challenge dataset},
  howpublished = {\\url{https://github.com/BYU-PCCL/chitchat-dataset}},
  note = {MIT licence},
}
"""


@dataclasses.dataclass(frozen=True)
class Conversation:
  """A parsed conversation: its turn texts (>= 2) and conversation-level fields."""
  turns: list
  prompt: str
  start: str
  ratings: dict


def package_json() -> epath.Path:
  """``dataset.json`` inside the installed ``chitchat_dataset`` package (not imported).

  Raises:
    DataError: one line, if the package or its file is missing.
  """
  spec = importlib.util.find_spec(PACKAGE)
  folders = list(spec.submodule_search_locations or []) if spec is not None else []
  for folder in folders:
    path = os.path.join(folder, FILENAME)
    if os.path.isfile(path):
      return epath.Path(path)
  if not folders:
    raise DataError("chitchat needs the `chitchat-dataset` package (pip install "
                    "chitchat-dataset), or its dataset.json in config.data.manual_dir")
  raise DataError(f"chitchat-dataset is installed but has no {FILENAME} in {folders[0]}; "
                  "reinstall it (pip install --force-reinstall chitchat-dataset)")


def split_of(conversation_id: str) -> str:
  """The split of a conversation: bucket ``sha256(id) mod 100`` against :data:`SPLIT_BUCKETS`.

  >>> [split_of(c) for c in ("6513270e-269e-4d37-b2a7-4de452e6b438",
  ...                         "c7a2ea20-b2f1-4c94-ae05-319acb5c7427",
  ...                         "6b4cb242-4a23-4596-a217-beaddbc496cb")]
  ['train', 'validation', 'test']
  """
  digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
  bucket = int.from_bytes(digest[:8], "big") % 100
  return next(split for split, upper in SPLIT_BUCKETS if bucket < upper)


def read_corpus(path) -> dict:
  """The whole JSON object of ``path``.

  Raises:
    DataError: one line, if the file cannot be read, is not UTF-8 JSON or not an object.
  """
  try:
    text = epath.Path(path).read_bytes().decode("utf-8")
    data = json.loads(text)
  except OSError as e:
    raise DataError(f"chitchat: cannot read {path} ({e.strerror or type(e).__name__})") from None
  except UnicodeDecodeError as e:
    raise DataError(f"chitchat: {path} is not UTF-8 (byte {e.start}); reinstall "
                    "chitchat-dataset or fix the file") from None
  except json.JSONDecodeError as e:
    raise DataError(f"chitchat: {path} is not valid JSON ({e.msg} at line {e.lineno} column "
                    f"{e.colno}); reinstall chitchat-dataset or fix the file") from None
  if not isinstance(data, dict):
    raise DataError(f"chitchat: {path} holds a JSON {type(data).__name__}, not an object "
                    "{conversation_id: conversation}")
  return data


def _is_turn(turn: Any) -> bool:
  return isinstance(turn, list) and all(
      isinstance(m, dict) and isinstance(m.get("text"), str) for m in turn)


def join_turns(messages: list, skipped) -> list[str]:
  """The turns of a well-formed ``messages`` list -> their texts (module docstring, "Turns").

  >>> import collections
  >>> c = collections.Counter()
  >>> join_turns([[{"text": " hi ", "sender": "a"}, {"text": "", "sender": "a"},
  ...              {"text": "how  are you?", "sender": "a"}],
  ...             [{"text": " ", "sender": "b"}], [{"text": "well?", "sender": "a"}],
  ...             [{"text": "fine", "sender": "b"}]], c)
  ['hi how are you? well?', 'fine']
  >>> sorted(c.items())
  [('empty_messages', 2), ('empty_turns', 1), ('merged_turns', 1)]
  """
  turns = []  # [sender, text]
  for turn in messages:
    texts = [clean(m["text"]) for m in turn]
    empty = sum(1 for t in texts if not t)
    if empty:
      skipped["empty_messages"] += empty
    text = TURN_JOIN.join(t for t in texts if t)
    if not text:
      skipped["empty_turns"] += 1
      continue
    sender = turn[0].get("sender")
    if turns and sender is not None and turns[-1][0] == sender:
      turns[-1][1] += TURN_JOIN + text
      skipped["merged_turns"] += 1
      continue
    turns.append([sender, text])
  return [text for _, text in turns]


def _rating(value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    return -1
  return value if 1 <= value <= 10 else -1


def parse_conversation(conversation: Any, skipped) -> Optional[Conversation]:
  """One value of the JSON object -> a :class:`Conversation`, or None (counted in ``skipped``)."""
  messages = conversation.get("messages") if isinstance(conversation, dict) else None
  if not isinstance(messages, list) or not all(_is_turn(t) for t in messages):
    skipped["malformed_conversations"] += 1
    return None
  turns = join_turns(messages, skipped)
  if len(turns) < 2:
    skipped["single_turn_conversations"] += 1
    return None
  ratings = conversation.get("ratings")
  ratings = ratings if isinstance(ratings, dict) else {}
  prompt, start = conversation.get("prompt"), conversation.get("start")
  return Conversation(turns=turns,
                      prompt=clean(prompt) if isinstance(prompt, str) else "",
                      start=start.strip() if isinstance(start, str) else "",
                      ratings={k: _rating(ratings.get(k)) for k in RATINGS})


class Chitchat(VedganBuilder):
  """DatasetBuilder for the Chit-Chat Challenge corpus (installed ``chitchat-dataset``)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": ("One example per turn >= 1 with full history; 90/5/5 split by a "
                             "sha256 of the conversation id.")}
  HOMEPAGE = "https://github.com/BYU-PCCL/chitchat-dataset"
  MANUAL_HELP = "the package's dataset.json (pip install chitchat-dataset ships it)"

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.make_info(
        description=("Chit-Chat Challenge (BYU PCC): open-domain chats between two people; "
                     "a turn is one person's consecutive messages joined by a space; one "
                     "example per turn >= 1, with the conversation's prompt and ratings."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
            "prompt": text,
            "start": text,
            **{k: np.int32 for k in RATINGS},
        },
        citation=_CITATION,
        license="MIT",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    return first_existing(paths["data"], FILENAME, os.path.join(PACKAGE, FILENAME))

  def locate(self, dl_manager) -> epath.Path:
    """``dataset.json`` in the manual directory if there is one, else the package's.

    A manual directory other than TFDS's default (``<data_dir>/downloads/manual``,
    shared by every builder) without the file is a DataError, not a silent fallback (one
    that is missing or empty is refused earlier, by ``sources.prepare_builder``).
    """
    manual = self.usable_manual_dir(dl_manager)
    if manual is not None:
      found = self._find({"data": manual}, dl_manager)
      if found is not None:
        return found
      default = os.path.join(os.fspath(dl_manager.download_dir), "manual")
      if os.path.abspath(os.fspath(manual)) != os.path.abspath(default):
        raise DataError(self.empty_manual_dir_message(manual))
    return package_json()

  @classmethod
  def empty_manual_dir_message(cls, manual_dir) -> str:
    """The error for a configured manual directory without ``dataset.json`` (also raised
    by ``sources.prepare_builder`` for an empty one)."""
    return (f"chitchat: the manual directory {manual_dir} has no {FILENAME}; leave "
            "config.data.manual_dir empty to read the installed chitchat-dataset "
            "package, or put its dataset.json there")

  def _split_generators(self, dl_manager):
    corpus = read_corpus(self.locate(dl_manager))
    by_split = {split: [] for split in self.SPLIT_NAMES}
    for conversation_id, conversation in corpus.items():
      split = split_of(conversation_id)
      parsed = parse_conversation(conversation, self.skip_counter(split))
      if parsed is not None:
        by_split[split].append((conversation_id, parsed))
    return {split: self.checked(split, self._generate_examples(split, by_split[split]))
            for split in self.SPLIT_NAMES}

  def _generate_examples(self, split, conversations):
    del split
    for conversation_id, c in conversations:
      for t in range(1, len(c.turns)):
        yield f"{conversation_id}/{t:04d}", {
            "dialogue_id": conversation_id,
            "turn": t,
            "history": c.turns[:t],
            "response": c.turns[t],
            "prompt": c.prompt,
            "start": c.start,
            **c.ratings,
        }
