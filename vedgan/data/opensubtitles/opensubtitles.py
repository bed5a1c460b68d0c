"""TFDS builder for OpenSubtitles (Lison & Tiedemann, 2016) as (line, next line) pairs.

Released file: the monolingual OPUS text ``<lang>.txt.gz`` of OpenSubtitles
v2018 (https://opus.nlpl.eu/OpenSubtitles/corpus/version/OpenSubtitles,
``https://object.pouta.csc.fi/OPUS-OpenSubtitles/v2018/mono/en.txt.gz``): one
subtitle sentence per line, the subtitles of all films concatenated (there
are no film or speaker boundaries in this file). The ``.gz`` file is read
as is (not extracted); in ``manual_dir`` either ``en.txt.gz`` or an extracted
``en.txt`` works.

Consecutive lines become examples: ``history = [line i]``, ``response =
line i + 1`` (pairs with an empty or undecodable side are skipped and
counted). Lines are grouped in blocks of :data:`BLOCK_LINES`; a stable hash of
the block number sends ~1% of blocks to ``validation`` and ~1% to ``test``,
so neighbouring pairs (which share a line) almost always share a split.

Configs (``data.name="opensubtitles/en_10m"``): ``en_1m`` (default: the first
1M lines), ``en_10m`` (first 10M lines) and ``en`` (all ~440M lines; needs
hours and tens of GB).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines

#: Lines per block; blocks (not pairs) are assigned to splits.
BLOCK_LINES = 1000
#: Per-mille of blocks in validation and in test.
VALIDATION_PER_MILLE = 10
TEST_PER_MILLE = 10
SPLITS = ("train", "validation", "test")

_URL = "https://object.pouta.csc.fi/OPUS-OpenSubtitles/v2018/mono/{}.txt.gz"

_CITATION = """\
@inproceedings{lison2016opensubtitles,
  title = {OpenSubtitles2016: Extracting Large Parallel Corpora from Movie
           and TV Subtitles},
  author = {Lison, Pierre and Tiedemann, J{\\"o}rg},
  booktitle = {LREC},
  year = {2016},
}
"""


def split_of_block(block: int) -> str:
  """The split of line block ``block`` (stable across processes/platforms)."""
  digest = hashlib.sha256(f"opensubtitles-block-{block}".encode()).digest()
  bucket = int.from_bytes(digest[:8], "big") % 1000
  if bucket < VALIDATION_PER_MILLE:
    return "validation"
  if bucket < VALIDATION_PER_MILLE + TEST_PER_MILLE:
    return "test"
  return "train"


@dataclasses.dataclass
class OpensubtitlesConfig(tfds.core.BuilderConfig):
  """Language of the OPUS file and how many of its lines to read."""
  language: str = "en"
  max_lines: Optional[int] = None


class Opensubtitles(VedganBuilder):
  """DatasetBuilder for (line, next line) pairs of OPUS OpenSubtitles."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Consecutive-line pairs, block-hashed splits."}
  BUILDER_CONFIGS = [
      OpensubtitlesConfig(name="en_1m", language="en", max_lines=1_000_000,
                          description="first 1M lines of en.txt.gz"),
      OpensubtitlesConfig(name="en_10m", language="en", max_lines=10_000_000,
                          description="first 10M lines of en.txt.gz"),
      OpensubtitlesConfig(name="en", language="en", max_lines=None,
                          description="all lines of en.txt.gz"),
  ]
  HOMEPAGE = "https://opus.nlpl.eu/OpenSubtitles/corpus/version/OpenSubtitles"
  MANUAL_HELP = "en.txt.gz (or the extracted en.txt)"
  EXTRACT = False  # stream the (multi-GB) .gz file

  @property
  def RESOURCES(self):  # pylint: disable=invalid-name
    lang = self.builder_config.language
    return {"text": Resource(_URL.format(lang), f"{lang}.txt.gz")}

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.make_info(
        description=("OpenSubtitles v2018 (OPUS monolingual text): each "
                     "example is a subtitle line and the line after it."),
        features={
            "dialogue_id": text,
            "turn": np.int32,
            "history": tfds.features.Sequence(text),
            "response": text,
        },
        citation=_CITATION,
        license="See https://www.opensubtitles.org (research use)",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    lang = self.builder_config.language
    path = first_existing(paths["text"], f"{lang}.txt", f"{lang}.txt.gz", "")
    if path is None or path.is_dir():
      return None
    return {"text": path}

  def _split_generators(self, dl_manager):
    path = self.locate(dl_manager)["text"]
    return {split: self.checked(split, self._generate_examples(split, path))
            for split in SPLITS}

  def _generate_examples(self, split, path):
    skipped = self.skip_counter(split)
    limit = self.builder_config.max_lines
    previous = None
    for number, line in enumerate(read_lines(path)):
      if limit is not None and number >= limit:
        break
      current = None if line is None else clean(line)
      if number > 0 and split_of_block((number - 1) // BLOCK_LINES) == split:
        if previous is None or current is None:
          skipped["undecodable_pairs"] += 1
        elif not previous or not current:
          skipped["empty_pairs"] += 1
        else:
          key = f"{number - 1:09d}"
          yield key, {"dialogue_id": key, "turn": 1, "history": [previous],
                      "response": current}
      previous = current
