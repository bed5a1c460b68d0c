"""TFDS builder for SST-2 (Socher et al., 2013), the GLUE TSV release.

Released file: ``SST-2.zip`` (GLUE, https://gluebenchmark.com/tasks), holding
``SST-2/train.tsv``, ``SST-2/dev.tsv`` (header ``sentence<TAB>label``, label 0
negative / 1 positive) and ``SST-2/test.tsv`` (header ``index<TAB>sentence``,
no labels). Sentences are lower-cased and tokenised (``it 's a charming
... journey . ``, often with a trailing space).

Splits ``train``, ``validation`` (dev.tsv) and ``test``; features ``idx``
(row number, or the test file's ``index``), ``text`` and ``label`` (int32: 0,
1, or -1 for the unlabelled test split). Rows with a wrong field count, an
empty sentence, a label other than 0/1, or undecodable bytes are skipped and
counted (``info.metadata["skipped"]``).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines, split_files

SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
LABELS = ("negative", "positive")

_CITATION = """\
@inproceedings{socher2013recursive,
  title = {Recursive Deep Models for Semantic Compositionality Over a
           Sentiment Treebank},
  author = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang,
            Jason and Manning, Christopher D. and Ng, Andrew and Potts,
            Christopher},
  booktitle = {EMNLP},
  year = {2013},
}
"""


def read_tsv(path, skipped):
  """Yields ``(idx, text, label)`` from a GLUE SST-2 TSV (label -1 if absent)."""
  columns = None
  for number, line in enumerate(read_lines(path, skipped)):
    if line is None:
      continue
    fields = line.split("\t")
    if columns is None:
      columns = [f.strip() for f in fields]
      if "sentence" not in columns:
        raise ValueError(f"{path}: header {columns} has no 'sentence' column")
      continue
    if not line.strip():
      continue
    if len(fields) != len(columns):
      skipped["malformed_rows"] += 1
      continue
    row = dict(zip(columns, fields))
    text = clean(row["sentence"])
    if not text:
      skipped["empty_sentences"] += 1
      continue
    label = -1
    if "label" in row:
      if row["label"].strip() not in ("0", "1"):
        skipped["bad_labels"] += 1
        continue
      label = int(row["label"])
    idx = number - 1
    if "index" in row:
      try:
        idx = int(row["index"])
      except ValueError:
        skipped["malformed_rows"] += 1
        continue
    yield idx, text, label


class Sst2(VedganBuilder):
  """DatasetBuilder for SST-2 sentences with binary sentiment labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "GLUE SST-2 TSV; test labels are -1."}
  RESOURCES = {"data": Resource("https://dl.fbaipublicfiles.com/glue/data/"
                                "SST-2.zip", "SST-2.zip")}
  HOMEPAGE = "https://gluebenchmark.com/tasks"
  MANUAL_HELP = ("SST-2.zip (or its extracted SST-2/ folder with train.tsv, "
                 "dev.tsv, test.tsv)")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(
        description=("SST-2 (GLUE): movie-review sentences with binary "
                     "sentiment, label 0 negative / 1 positive / -1 "
                     "unlabelled (test)."),
        features={"idx": np.int32, "text": tfds.features.Text(),
                  "label": np.int32},
        citation=_CITATION,
        license="Unknown (research use; see the GLUE site)",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    return split_files(first_existing(paths["data"], "SST-2", ""), SPLITS)

  def _generate_examples(self, split, path):
    skipped = self.skip_counter(split)
    for idx, text, label in read_tsv(path, skipped):
      yield f"{split}/{idx:06d}", {"idx": idx, "text": text, "label": label}
