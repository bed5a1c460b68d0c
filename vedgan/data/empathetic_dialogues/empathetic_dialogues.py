"""TFDS builder for EmpatheticDialogues (Rashkin et al., ACL 2019).

Released file: ``empatheticdialogues.tar.gz``
(https://github.com/facebookresearch/EmpatheticDialogues), holding
``empatheticdialogues/{train,valid,test}.csv``. Each CSV starts with the header
``conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags``
and has one row per utterance, conversations in order:

* ``conv_id`` (``hit:12_conv:24``), ``utterance_idx`` (1, 2, ...);
* ``context``: the conversation's emotion, one of 32 words (``sentimental``);
* ``prompt``: the situation the speaker wrote; ``speaker_idx``: worker id;
* ``utterance``; ``selfeval`` and ``tags``: rarely filled.

The files are not quoted CSV: commas inside text were replaced by the token
``_comma_`` (turned back into ``,`` here), so a row is split on ``,``. A few
rows have more than 8 fields; like the authors' reader, the first six are
used (and the row counted under ``rows_with_extra_fields``). Rows with fewer
than 6 fields, a non-integer index or an unknown emotion, and undecodable
rows, are skipped and counted (``info.metadata["skipped"]``).

One example per utterance with index >= 2: ``response`` is the utterance,
``history`` the earlier utterances of its conversation, ``emotion`` the
conversation's label and ``prompt`` its situation.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines, split_files

EMOTIONS = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive",
    "ashamed", "caring", "confident", "content", "devastated", "disappointed",
    "disgusted", "embarrassed", "excited", "faithful", "furious", "grateful",
    "guilty", "hopeful", "impressed", "jealous", "joyful", "lonely",
    "nostalgic", "prepared", "proud", "sad", "sentimental", "surprised",
    "terrified", "trusting")
COMMA = "_comma_"
SPLITS = {"train": "train.csv", "validation": "valid.csv", "test": "test.csv"}
HEADER = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx",
          "utterance", "selfeval", "tags")

_CITATION = """\
@inproceedings{rashkin2019towards,
  title = {Towards Empathetic Open-domain Conversation Models: a New Benchmark
           and Dataset},
  author = {Hannah Rashkin and Eric Michael Smith and Margaret Li and
            Y-Lan Boureau},
  booktitle = {ACL},
  year = {2019},
}
"""


def unescape(text: str) -> str:
  """``_comma_`` -> ``,`` and whitespace folded."""
  return clean(text.replace(COMMA, ","))


def read_conversations(path, skipped):
  """Yields ``(conv_id, emotion, prompt, [(speaker_idx, utterance), ...])``.

  Rows of one conversation are consecutive in the released files; they are
  ordered by ``utterance_idx`` here.
  """
  current, rows = None, []

  def finish():
    if current is None or not rows:
      return None
    rows.sort(key=lambda r: r[0])
    emotion, prompt = rows[0][1], rows[0][2]
    if emotion not in EMOTIONS:
      skipped["unknown_emotion"] += len(rows)
      return None
    return current, emotion, prompt, [(r[3], r[4]) for r in rows]

  for number, line in enumerate(read_lines(path, skipped)):
    if line is None:
      continue
    if number == 0 and tuple(line.split(",")[:6]) == HEADER[:6]:
      continue
    if not line.strip():
      continue
    fields = line.split(",")
    if len(fields) < 6:
      skipped["malformed_rows"] += 1
      continue
    if len(fields) > len(HEADER):
      skipped["rows_with_extra_fields"] += 1
    conv_id, index, emotion, prompt, speaker, utterance = fields[:6]
    try:
      index, speaker = int(index), int(speaker)
    except ValueError:
      skipped["malformed_rows"] += 1
      continue
    utterance = unescape(utterance)
    if not utterance:
      skipped["empty_utterances"] += 1
      continue
    if conv_id != current:
      done = finish()
      if done:
        yield done
      current, rows = conv_id, []
    rows.append((index, emotion.strip(), unescape(prompt), speaker,
                 utterance))
  done = finish()
  if done:
    yield done


class EmpatheticDialogues(VedganBuilder):
  """DatasetBuilder for EmpatheticDialogues (emotion label + situation)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One example per utterance >= 2 with history."}
  RESOURCES = {"data": Resource(
      "https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/"
      "empatheticdialogues.tar.gz", "empatheticdialogues.tar.gz")}
  HOMEPAGE = "https://github.com/facebookresearch/EmpatheticDialogues"
  MANUAL_HELP = ("empatheticdialogues.tar.gz (or its extracted "
                 "empatheticdialogues/ folder with train.csv, valid.csv, "
                 "test.csv)")

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.make_info(
        description=("EmpatheticDialogues: 25k conversations grounded in "
                     "emotional situations (32 emotion labels); one example "
                     "per utterance >= 2 with its history, the "
                     "conversation's emotion and situation prompt."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
            "emotion": tfds.features.ClassLabel(names=EMOTIONS),
            "prompt": text,
            "speaker_idx": np.int32,
        },
        citation=_CITATION,
        license="CC BY-NC 4.0",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    return split_files(first_existing(paths["data"], "empatheticdialogues", ""), SPLITS)

  def _generate_examples(self, split, path):
    skipped = self.skip_counter(split)
    for conv_id, emotion, prompt, utterances in read_conversations(
        path, skipped):
      texts = [u for _, u in utterances]
      for t in range(1, len(utterances)):
        yield f"{conv_id}/{t:03d}", {
            "dialogue_id": conv_id,
            "turn": t,
            "history": texts[:t],
            "response": texts[t],
            "emotion": emotion,
            "prompt": prompt,
            "speaker_idx": utterances[t][0],
        }
