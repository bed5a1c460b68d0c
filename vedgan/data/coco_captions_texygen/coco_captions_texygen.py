"""TFDS builder for the COCO-captions split of the Texygen benchmark (Zhu et al., 2018).

Released files (https://github.com/geek-ai/Texygen): ``data/image_coco.txt``
(training, ~10k captions) and ``data/testdata/test_coco.txt`` (test, ~10k
captions), one lower-cased, tokenised caption per line
(``a man riding a skateboard down a street .``). Downloaded from GitHub, or
read from ``manual_dir`` holding ``image_coco.txt`` and ``test_coco.txt``
(flat, or in Texygen's ``data/`` layout).

Splits ``train`` and ``test`` (there is no validation split in the release;
select ``config.data.validation_split = "test"`` or hold out a slice such as
``"train[:5%]"``). Feature: ``text``. Empty and undecodable lines are skipped
and counted (``info.metadata["skipped"]``).
"""
from __future__ import annotations

import tensorflow_datasets as tfds

from vedgan.data.builder_base import Resource, VedganBuilder, clean, \
    first_existing, read_lines

_RAW = "https://raw.githubusercontent.com/geek-ai/Texygen/master/data/"

_CITATION = """\
@inproceedings{zhu2018texygen,
  title = {Texygen: A Benchmarking Platform for Text Generation Models},
  author = {Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and
            Zhang, Weinan and Wang, Jun and Yu, Yong},
  booktitle = {SIGIR},
  year = {2018},
}
"""


class CocoCaptionsTexygen(VedganBuilder):
  """DatasetBuilder for Texygen's COCO captions (unconditional generation)."""

  VERSION = tfds.core.Version("1.0.0")
  SPLIT_NAMES = ("train", "test")
  RELEASE_NOTES = {"1.0.0": "Texygen image_coco.txt / test_coco.txt."}
  RESOURCES = {
      "train": Resource(_RAW + "image_coco.txt", "image_coco.txt"),
      "test": Resource(_RAW + "testdata/test_coco.txt", "test_coco.txt"),
  }
  HOMEPAGE = "https://github.com/geek-ai/Texygen"
  MANUAL_HELP = "image_coco.txt and test_coco.txt"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(
        description=("MS-COCO image captions as used by Texygen for "
                     "unconditional text generation: ~10k training and ~10k "
                     "test captions."),
        features={"text": tfds.features.Text()},
        citation=_CITATION,
        license="CC BY 4.0 (COCO annotations); Texygen code MIT",
    )

  def _find(self, paths, dl_manager):
    del dl_manager
    train = first_existing(paths["train"], "image_coco.txt",
                           "data/image_coco.txt", "")
    test = first_existing(paths["test"], "test_coco.txt",
                          "testdata/test_coco.txt",
                          "data/testdata/test_coco.txt", "")
    if train is None or train.is_dir() or test is None or test.is_dir():
      return None
    return {"train": train, "test": test}

  def _generate_examples(self, split, path):
    skipped = self.skip_counter(split)
    for number, line in enumerate(read_lines(path, skipped)):
      if line is None:
        continue
      text = clean(line)
      if not text:
        skipped["empty_lines"] += 1
        continue
      yield f"{split}/{number:06d}", {"text": text}
