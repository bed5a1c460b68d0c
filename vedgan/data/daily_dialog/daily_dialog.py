"""TFDS builder for DailyDialog (Li et al., IJCNLP 2017), with emotion and act labels.

Released file: ``ijcnlp_dailydialog.zip`` (http://yanran.li/dailydialog),
holding a folder ``ijcnlp_dailydialog/`` with the whole corpus
(``dialogues_text.txt``, ``dialogues_act.txt``, ``dialogues_emotion.txt``,
``dialogues_topic.txt``) and the official split as nested archives
``train.zip``, ``validation.zip``, ``test.zip``. Each of those holds
``<split>/dialogues_<split>.txt``, ``<split>/dialogues_act_<split>.txt`` and
``<split>/dialogues_emotion_<split>.txt``, line-aligned:

* text: one dialogue per line, every turn followed by ``__eou__``
  (``Hi , Tom . __eou__ Hello ! __eou__``; words and punctuation are already
  space-separated);
* act / emotion: one space-separated integer per turn (act 1..4 = inform,
  question, directive, commissive; emotion 0..6 = no emotion, anger, disgust,
  fear, happiness, sadness, surprise).

One example per (dialogue, turn >= 1): ``response`` is the turn, ``history``
the earlier turns, ``emotion``/``act`` the response's labels and
``history_emotion``/``history_act`` those of the history. Dialogues whose label
counts differ from their turn count, with an empty turn, an unknown label or
undecodable bytes are skipped and counted (``info.metadata["skipped"]``).

    python -c "from vedgan.data import sources; \\
      sources.prepare_builder({'name': 'daily_dialog'}, verbose=True)"
"""
from __future__ import annotations

import itertools

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines

EMOTIONS = ("no_emotion", "anger", "disgust", "fear", "happiness", "sadness",
            "surprise")
ACTS = ("inform", "question", "directive", "commissive")
EOU = "__eou__"
SPLITS = ("train", "validation", "test")

_CITATION = """\
@inproceedings{li2017dailydialog,
  author = {Li, Yanran and Su, Hui and Shen, Xiaoyu and Li, Wenjie and Cao,
            Ziqiang and Niu, Shuzi},
  title = {DailyDialog: A Manually Labelled Multi-turn Dialogue Dataset},
  booktitle = {IJCNLP},
  year = {2017},
}
"""

_MISSING = object()


def parse_dialogue(text: str, acts: str, emotions: str):
  """One line of each file -> ``(turns, act ids, emotion ids)`` or a reason.

  Returns:
    ``(turns, acts, emotions)`` with 0-based label ids, or a ``str`` naming
    why the dialogue is unusable (``"label_count_mismatch"``,
    ``"empty_turn"``, ``"bad_label"``).
  """
  pieces = text.split(EOU)
  while pieces and not pieces[-1].strip():  # text after the last __eou__
    pieces.pop()
  turns = [clean(p) for p in pieces]
  act_ids, emotion_ids = acts.split(), emotions.split()
  if not turns or not (len(turns) == len(act_ids) == len(emotion_ids)):
    return "label_count_mismatch"
  if not all(turns):
    return "empty_turn"
  try:
    act_ids = [int(a) - 1 for a in act_ids]
    emotion_ids = [int(e) for e in emotion_ids]
  except ValueError:
    return "bad_label"
  if not all(0 <= a < len(ACTS) for a in act_ids) or not all(
      0 <= e < len(EMOTIONS) for e in emotion_ids):
    return "bad_label"
  return turns, act_ids, emotion_ids


class DailyDialog(VedganBuilder):
  """DatasetBuilder for DailyDialog (multi-turn, emotion and act labels)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One example per turn >= 1 with full history."}
  RESOURCES = {"data": Resource("http://yanran.li/files/ijcnlp_dailydialog.zip",
                                "ijcnlp_dailydialog.zip")}
  HOMEPAGE = "http://yanran.li/dailydialog"
  MANUAL_HELP = ("ijcnlp_dailydialog.zip (or its extracted "
                 "ijcnlp_dailydialog/ folder)")

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    emotion = tfds.features.ClassLabel(names=EMOTIONS)
    act = tfds.features.ClassLabel(names=ACTS)
    return self.make_info(
        description=("DailyDialog: 13k human-written daily-life dialogues "
                     "with per-turn emotion and dialogue-act labels; one "
                     "example per turn >= 1."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
            "emotion": emotion,
            "act": act,
            "history_emotion": tfds.features.Sequence(emotion),
            "history_act": tfds.features.Sequence(act),
        },
        citation=_CITATION,
        license="CC BY-NC-SA 4.0",
    )

  def _find(self, paths, dl_manager):
    root = first_existing(paths["data"], "ijcnlp_dailydialog", "")
    if root is None:
      return None
    files = {}
    for split in SPLITS:
      folder = first_existing(root, split)
      if folder is None or not (folder / f"dialogues_{split}.txt").exists():
        archive = root / f"{split}.zip"
        if not archive.exists():
          return None
        folder = first_existing(self.extract(archive, dl_manager),
                                split, "")
      files[split] = {
          "text": folder / f"dialogues_{split}.txt",
          "act": folder / f"dialogues_act_{split}.txt",
          "emotion": folder / f"dialogues_emotion_{split}.txt",
      }
      if not all(p.exists() for p in files[split].values()):
        return None
    return files

  def _generate_examples(self, split, files):
    skipped = self.skip_counter(split)
    lines = itertools.zip_longest(
        read_lines(files["text"], skipped),
        read_lines(files["act"], skipped),
        read_lines(files["emotion"], skipped), fillvalue=_MISSING)
    for k, (text, acts, emotions) in enumerate(lines):
      if _MISSING in (text, acts, emotions):
        skipped["label_count_mismatch"] += 1
        continue
      if text is None or acts is None or emotions is None:
        continue  # undecodable: counted by read_lines
      if not text.strip():
        continue  # blank line (e.g. at the end of a file)
      parsed = parse_dialogue(text, acts, emotions)
      if isinstance(parsed, str):
        skipped[parsed] += 1
        continue
      turns, act_ids, emotion_ids = parsed
      dialogue_id = f"{split}/{k:05d}"
      for t in range(1, len(turns)):
        yield f"{dialogue_id}/{t:03d}", {
            "dialogue_id": dialogue_id,
            "turn": t,
            "history": turns[:t],
            "response": turns[t],
            "emotion": emotion_ids[t],
            "act": act_ids[t],
            "history_emotion": emotion_ids[:t],
            "history_act": act_ids[:t],
        }
