"""TFDS builder for PersonaChat (Zhang et al., ACL 2018), ParlAI text format.

Released file: ``personachat.tgz`` (ParlAI, http://parl.ai/downloads/personachat/),
holding ``personachat/<split>_<persona>_<version>.txt`` for split ``train``,
``valid``, ``test``; persona ``none``, ``self``, ``other``, ``both``; version
``original`` or ``revised`` (the config name picks ``<persona>_<version>``,
``self_original`` by default: ``data.name="persona_chat/both_revised"``).

Each file is in ParlAI's numbered-line dialogue format: a line is
``<n> <content>``, ``n`` restarts at 1 with every episode (dialogue). Content is
either a persona sentence (``your persona: i like to ski.`` or
``partner's persona: ...``) or a turn
``<partner utterance>\\t<response>\\t<reward>\\t<cand 1>|<cand 2>|...``
(the reward field is empty, so the candidates follow ``\\t\\t``; the last
candidate is usually the response). ``__SILENCE__`` stands for an absent
partner utterance.

One example per turn: ``response`` is the model's line, ``history`` all
earlier utterances of both speakers (oldest first, ending with the partner's
utterance), ``persona``/``partner_persona`` the persona sentences (prefixes
removed) and ``candidates`` the ranking candidates. Malformed and undecodable
lines are skipped and counted (``info.metadata["skipped"]``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines, split_files

SPLITS = {"train": "train", "validation": "valid", "test": "test"}
YOUR_PERSONA = "your persona:"
PARTNER_PERSONA = "partner's persona:"
SILENCE = "__SILENCE__"

_CITATION = """\
@inproceedings{zhang2018personalizing,
  title = {Personalizing Dialogue Agents: I have a dog, do you have pets too?},
  author = {Zhang, Saizheng and Dinan, Emily and Urbanek, Jack and Szlam,
            Arthur and Kiela, Douwe and Weston, Jason},
  booktitle = {ACL},
  year = {2018},
}
"""


@dataclasses.dataclass
class PersonaChatConfig(tfds.core.BuilderConfig):
  """Which persona files: ``<persona>_<version>``."""


def read_episodes(path, skipped):
  """Yields ``(persona, partner_persona, turns)`` per episode of a ParlAI file.

  ``turns`` is a list of ``(partner utterance or None, response, candidates)``.
  """
  persona, partner, turns = [], [], []
  started = False
  for line in read_lines(path, skipped):
    if line is None:
      continue
    if not line.strip():
      continue
    number, _, content = line.partition(" ")
    if not number.isdigit():
      skipped["malformed_lines"] += 1
      continue
    if int(number) == 1 and started:
      if turns:
        yield persona, partner, turns
      persona, partner, turns = [], [], []
    started = True
    if content.startswith(YOUR_PERSONA):
      persona.append(clean(content[len(YOUR_PERSONA):]))
      continue
    if content.startswith(PARTNER_PERSONA):
      partner.append(clean(content[len(PARTNER_PERSONA):]))
      continue
    fields = content.split("\t")
    if len(fields) < 2 or not clean(fields[1]):
      skipped["malformed_lines"] += 1
      continue
    text = clean(fields[0])
    candidates = ([clean(c) for c in fields[3].split("|") if clean(c)]
                  if len(fields) > 3 else [])
    turns.append((None if text in ("", SILENCE) else text, clean(fields[1]),
                  candidates))
  if turns:
    yield persona, partner, turns


class PersonaChat(VedganBuilder):
  """DatasetBuilder for PersonaChat (ParlAI format, persona configs)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One example per model turn with full history."}
  BUILDER_CONFIGS = [
      PersonaChatConfig(name=f"{p}_{v}", description=(
          f"personachat/<split>_{p}_{v}.txt"))
      for p in ("self", "both", "other", "none")
      for v in ("original", "revised")
  ]
  RESOURCES = {"data": Resource("http://parl.ai/downloads/personachat/"
                                "personachat.tgz", "personachat.tgz")}
  HOMEPAGE = ("https://github.com/facebookresearch/ParlAI/tree/main/parlai/"
              "tasks/personachat")
  MANUAL_HELP = ("personachat.tgz (or its extracted personachat/ folder with "
                 "train_/valid_/test_<persona>.txt files)")

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.make_info(
        description=("PersonaChat (ParlAI release): chit-chat between two "
                     "crowdworkers playing given personas; one example per "
                     "turn of the model's side."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
            "persona": tfds.features.Sequence(text),
            "partner_persona": tfds.features.Sequence(text),
            "candidates": tfds.features.Sequence(text),
        },
        citation=_CITATION,
        license="MIT",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    names = {split: f"{name}_{self.builder_config.name}.txt" for split, name in SPLITS.items()}
    return split_files(first_existing(paths["data"], "personachat", ""), names)

  def _generate_examples(self, split, path):
    skipped = self.skip_counter(split)
    for e, (persona, partner, turns) in enumerate(read_episodes(path,
                                                                skipped)):
      dialogue_id = f"{split}/{e:05d}"
      history = []
      for t, (text, response, candidates) in enumerate(turns):
        if text is not None:
          history.append(text)
        if history:
          yield f"{dialogue_id}/{t:03d}", {
              "dialogue_id": dialogue_id,
              "turn": t,
              "history": list(history),
              "response": response,
              "persona": persona,
              "partner_persona": partner,
              "candidates": candidates,
          }
        else:
          skipped["turns_without_history"] += 1
        history.append(response)
