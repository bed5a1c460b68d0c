"""TFDS builder for the MojiTalk Twitter corpus (Zhou & Wang, ACL 2018).

Released file: ``mojitalk_data.zip`` (a Google-Drive link in the README of
https://github.com/claude-zhou/MojiTalk; not downloadable automatically, so it
must be placed in ``manual_dir``). It holds ``mojitalk_data/`` with
line-aligned pairs ``{train,dev,test}.ori`` (the original tweets) and
``{train,dev,test}.rep`` (the replies), tokenised and space-separated. The
first token of every ``.ori`` line is the emoji label (one of 64 emojis) that
the reply carried; the rest of the line is the original tweet::

    train.ori:  😂 when you finally finish your homework at 3am
    train.rep:  same here lol i need sleep

One example per line pair: ``history = [original tweet]``, ``response`` the
reply, ``emoji`` the label token and ``label`` its id: the position of the
emoji in the sorted list of distinct training-set emojis (stored as
``info.metadata["emojis"]``), -1 for an emoji not seen in training. Pairs with
an empty side, undecodable bytes, or files of different lengths are skipped
and counted (``info.metadata["skipped"]``).
"""
from __future__ import annotations

import collections
import itertools

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines

SPLITS = {"train": "train", "validation": "dev", "test": "test"}

_CITATION = """\
@inproceedings{zhou2018mojitalk,
  title = {MojiTalk: Generating Emotional Responses at Scale},
  author = {Zhou, Xianda and Wang, William Yang},
  booktitle = {ACL},
  year = {2018},
}
"""

_MISSING = object()


def read_pairs(ori_path, rep_path, skipped):
  """Yields ``(line number, emoji, original tweet, reply)``."""
  lines = itertools.zip_longest(read_lines(ori_path, skipped),
                                read_lines(rep_path, skipped),
                                fillvalue=_MISSING)
  for number, (ori, rep) in enumerate(lines):
    if _MISSING in (ori, rep):
      skipped["unpaired_lines"] += 1
      continue
    if ori is None or rep is None:
      continue  # undecodable, counted by read_lines
    tokens = ori.split()
    reply = clean(rep)
    if len(tokens) < 2 or not reply:
      skipped["empty_pairs"] += 1
      continue
    yield number, tokens[0], " ".join(tokens[1:]), reply


class MojitalkTwitter(VedganBuilder):
  """DatasetBuilder for MojiTalk's (tweet, emoji, reply) triples."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Emoji = first token of the .ori line."}
  RESOURCES = {"data": Resource(None, "mojitalk_data.zip")}
  HOMEPAGE = "https://github.com/claude-zhou/MojiTalk (dataset link in README)"
  MANUAL_HELP = ("mojitalk_data.zip (or its extracted mojitalk_data/ folder "
                 "with train/dev/test .ori and .rep files)")

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.make_info(
        description=("MojiTalk: Twitter (tweet, reply) pairs labelled with "
                     "the emoji of the reply (64 classes)."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
            "emoji": text,
            "label": np.int32,
        },
        citation=_CITATION,
        license="Twitter terms of service (research use)",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    root = first_existing(paths["data"], "mojitalk_data", "")
    if root is None:
      return None
    files = {split: (root / f"{name}.ori", root / f"{name}.rep")
             for split, name in SPLITS.items()}
    ok = all(p.exists() for pair in files.values() for p in pair)
    return files if ok else None

  def _split_generators(self, dl_manager):
    files = self.locate(dl_manager)
    emojis = sorted({emoji for _, emoji, _, _ in read_pairs(
        *files["train"], collections.Counter())})
    self.info.metadata["emojis"] = emojis
    ids = {e: i for i, e in enumerate(emojis)}
    return {split: self.checked(
        split, self._generate_examples(split, files[split], ids))
            for split in SPLITS}

  def _generate_examples(self, split, files, ids):
    skipped = self.skip_counter(split)
    for number, emoji, tweet, reply in read_pairs(*files, skipped):
      label = ids.get(emoji, -1)
      dialogue_id = f"{split}/{number:07d}"
      yield dialogue_id, {
          "dialogue_id": dialogue_id,
          "turn": 1,
          "history": [tweet],
          "response": reply,
          "emoji": emoji,
          "label": label,
      }
