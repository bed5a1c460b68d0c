"""Assembles a run's inputs from the config: dataset -> tokenizer -> batch iterators.

The tokenizer is trained on the training split the first time a workdir is used
and stored in ``WORKDIR/tokenizer``; later starts load it from there.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from vedgan.data import pipeline, sources
from vedgan.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece
from vedgan.errors import ConfigError, DataError


@dataclasses.dataclass
class Inputs:
  """What the driver needs from the data side.

  Attributes:
    tokenizer: the run's tokenizer.
    train: repeating, shuffled iterator of local training batches.
    validation: encoded validation pairs (for fresh one-pass iterators).
    sample_pairs: a few raw (context, response) validation pairs for samples.
    counts: filtering / truncation counts per split.
  """
  tokenizer: Tokenizer
  train: pipeline.BatchIterator
  validation: object
  sample_pairs: list[tuple[str, str]]
  counts: dict

  def validation_batches(self, config, max_batches: int = 0):
    """A fresh single pass over the validation split (padding rows have weight 0)."""
    it = pipeline.BatchIterator(self.validation, config.train.eval_batch_size,
                                tuple(config.data.buckets), seed=config.seed, shuffle=False,
                                process_index=jax.process_index(),
                                process_count=jax.process_count(), drop_remainder=False,
                                repeat=False)
    for i, batch in enumerate(it):
      if max_batches and i >= max_batches:
        break
      yield batch

  def encode_contexts(self, config, contexts: list[str]) -> np.ndarray:
    """``contexts`` -> ``[len, max bucket]`` int32, left-truncated, right-padded."""
    max_len = int(config.data.max_context_len)
    out = np.zeros((len(contexts), max_len), np.int32)
    for i, text in enumerate(contexts):
      ids = self.tokenizer.encode(text)[-max_len:]
      out[i, :len(ids)] = ids
    return out


def tokenizer_dir(workdir: str) -> str:
  return os.path.join(workdir, "tokenizer")


def load_pairs(data_config, split: str) -> list[tuple[str, str]]:
  records = sources.load_split(data_config, split)
  pairs = sources.dialogue_pairs(records, int(data_config.context_turns), data_config.eou)
  if not pairs:
    raise DataError(f"dataset {data_config.name!r} split {split!r} has no (context, response) "
                    "pairs; check config.data.name and the prepared files")
  return pairs


def get_tokenizer(config, workdir: str, train_pairs) -> tuple[Tokenizer, bool]:
  """Loads the run's tokenizer, or trains one (not yet saved). Returns (tokenizer, is_new)."""
  if os.path.exists(os.path.join(tokenizer_dir(workdir), "tokenizer.model")):
    return load_tokenizer(tokenizer_dir(workdir)), False
  kind = config.tokenizer.kind
  if kind != "sentencepiece":
    raise ConfigError(f"tokenizer.kind={kind!r} is not supported; use 'sentencepiece'")
  texts = [t for pair in train_pairs for t in pair]
  tok = train_sentencepiece(texts, int(config.tokenizer.vocab_size),
                            model_type=config.tokenizer.model_type)
  return tok, True


def make_inputs(config, workdir: str) -> tuple[Inputs, bool]:
  """Builds the inputs of a run; returns ``(inputs, tokenizer_is_new)``."""
  train_pairs = load_pairs(config.data, "train")
  val_pairs = load_pairs(config.data, "validation")
  tok, is_new = get_tokenizer(config, workdir, train_pairs)
  max_c, max_r = int(config.data.max_context_len), int(config.data.max_response_len)
  train_enc = pipeline.encode_pairs(train_pairs, tok, max_c, max_r)
  val_enc = pipeline.encode_pairs(val_pairs, tok, max_c, max_r)
  train_it = pipeline.BatchIterator(train_enc, config.train.batch_size, tuple(config.data.buckets),
                                    seed=config.seed, shuffle=True,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  counts = {"train": getattr(train_enc, "counts", {}), "validation": getattr(val_enc, "counts", {})}
  n = max(int(config.train.num_samples), 0)
  return Inputs(tok, train_it, val_enc, val_pairs[:n], counts), is_new
