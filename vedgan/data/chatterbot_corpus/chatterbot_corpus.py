"""TFDS builder for the English part of the embedded ``chatterbot-corpus``.

The corpus ships inside the ``chatterbot-corpus`` PyPI package (BSD licence)
as YAML files ``chatterbot_corpus/data/english/<category>.yml`` of the form::

    categories: [greetings]
    conversations:
    - - Hello
      - Hi
      - How are you?

Nothing is downloaded: the builder reads the installed package. It writes
``array_record`` files, so preparing and reading need no TensorFlow::

    builder = ChatterbotCorpus(data_dir=...)
    builder.download_and_prepare(file_format="array_record")
    train = builder.as_data_source("train")   # random-access Sequence[dict]
    train[0]
    # {'category': b'ai', 'dialogue_id': b'ai/0000', 'turn': 1,
    #  'history': array([b'What is AI?'], dtype=object), 'response': b'...'}

One example per (conversation, turn index >= 1): the turn's text is the
``response`` and all earlier turns (oldest first) are the ``history``.
The package repeats many conversations across its files, and many conversations
share their opening turn. Exact duplicate conversations are kept once, and
conversations go whole to ``train`` or ``validation`` (about 10%) by a stable
hash of their normalised *first turn*, so conversations that open the same way
share a split and validation perplexity measures generalisation rather than
recall of repeated text.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import without_bucket_lookup

# The package providing the YAML files (the PyPI ``chatterbot-corpus``); this
# module's own folder is also called ``chatterbot_corpus``, but absolute imports
# resolve to the top-level installed package.
_CORPUS_PACKAGE = "chatterbot_corpus"
_LANGUAGE = "english"

#: Percentage of conversations (by hash of their id) that go to validation.
VALIDATION_PERCENT = 10

_DESCRIPTION = """\
The English conversations of the chatterbot-corpus package
(https://github.com/gunthercox/chatterbot-corpus), read from the installed
Python package without any download. Each example is one turn (index >= 1) of
a multi-turn conversation: `history` holds all earlier turns, oldest first, and
`response` the turn itself. `category` is the YAML file stem (ai, greetings,
...). Duplicate conversations are kept once; conversations are split ~90/10 into
train/validation by a stable hash of their normalised first turn, so
conversations opening the same way share a split.
"""

_CITATION = """\
@misc{chatterbot_corpus,
  author = {Gunther Cox},
  title = {ChatterBot Language Training Corpus},
  howpublished = {\\url{https://github.com/gunthercox/chatterbot-corpus}},
  note = {BSD-3-Clause licence},
}
"""


def corpus_dir() -> str:
  """Returns the installed ``chatterbot_corpus/data/english`` directory.

  Raises:
    FileNotFoundError: one line, if the package or its data is not installed.
  """
  try:
    root = importlib.resources.files(_CORPUS_PACKAGE)
  except ModuleNotFoundError as e:
    raise FileNotFoundError(
        "the embedded corpus needs the `chatterbot-corpus` package: "
        "pip install chatterbot-corpus") from e
  path = os.fspath(root / "data" / _LANGUAGE)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"chatterbot-corpus is installed but has no {path} directory")
  return path


def split_key(turns: list[str]) -> str:
  """What decides a conversation's split: its first turn, lower-cased, spaces folded."""
  return " ".join(turns[0].lower().split())


def is_validation(key: str) -> bool:
  """Stable (process- and platform-independent) split assignment of a :func:`split_key`.

  Python's ``hash`` is salted per process, so a sha256 of the key is used.
  """
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % 100 < VALIDATION_PERCENT


def _clean_turns(conversation) -> list[str]:
  """Coerces turns to stripped strings and drops empty/None turns."""
  if not isinstance(conversation, (list, tuple)):
    conversation = [conversation]
  turns = []
  for turn in conversation:
    if turn is None:
      continue
    text = str(turn).strip()
    if text:
      turns.append(text)
  return turns


def read_conversations(directory: str | None = None
                       ) -> Iterator[tuple[str, str, list[str]]]:
  """Yields ``(dialogue_id, category, turns)`` for every YAML conversation.

  Files are visited in sorted order; ``dialogue_id`` is
  ``f"{category}/{index:04d}"`` with ``index`` the conversation's position in
  its file (before empty conversations are dropped, so ids are stable). The
  YAML is read with ``yaml.BaseLoader``: every scalar stays the exact string
  written in the file (``yes`` is not turned into ``True``, ``1.10`` not into
  ``1.1``).
  """
  import yaml  # pylint: disable=g-import-not-at-top

  directory = directory or corpus_dir()
  names = sorted(n for n in os.listdir(directory) if n.endswith(".yml"))
  for name in names:
    category = name[:-len(".yml")]
    with open(os.path.join(directory, name), encoding="utf-8") as f:
      content = yaml.load(f, Loader=yaml.BaseLoader) or {}
    conversations = content.get("conversations") or []
    for index, conversation in enumerate(conversations):
      turns = _clean_turns(conversation)
      if len(turns) >= 2:
        yield f"{category}/{index:04d}", category, turns


class ChatterbotCorpus(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the embedded English chatterbot corpus."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.1.0": ("Exact duplicate conversations kept once; split by a hash of the "
                "normalised first turn (no repeated text across splits)."),
      "1.0.0": ("Initial release: English chatterbot-corpus, one example per "
                "turn >= 1 with full history; train/validation split by a "
                "sha256 hash of the dialogue id (~10% validation)."),
  }

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file (where TFDS looks for an optional ``checksums.tsv``).

    Overridden because TFDS 4.9.x's default implementation, for a builder that
    lives inside a package, touches the ``importlib_resources`` back-port,
    which is not a dependency of vedgan (nor of TFDS).
    """
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return without_bucket_lookup(self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(tfds.features.Text()),
            "response": text,
            "category": text,
        }),
        supervised_keys=None,
        homepage="https://github.com/gunthercox/chatterbot-corpus",
        citation=_CITATION,
        license="BSD-3-Clause",
    ))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the corpus is an installed package.
    directory = corpus_dir()
    return {
        "train": self._generate_examples(directory, validation=False),
        "validation": self._generate_examples(directory, validation=True),
    }

  def _generate_examples(self, directory: str, validation: bool):
    seen = set()
    for dialogue_id, category, turns in read_conversations(directory):
      if tuple(turns) in seen or is_validation(split_key(turns)) != validation:
        continue
      seen.add(tuple(turns))
      for turn in range(1, len(turns)):
        yield f"{dialogue_id}/{turn:03d}", {
            "dialogue_id": dialogue_id,
            "turn": turn,
            "history": turns[:turn],
            "response": turns[turn],
            "category": category,
        }
