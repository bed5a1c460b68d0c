"""Single sentences at a fixed length: the one stream ``train`` of ``latent_gan`` and ``lstm_lm``.

Sentences of ``config.data.name`` (every turn of a dialogue corpus,
:func:`vedgan.data.sources.sentences`), tokenised by the run's tokenizer, at a
FIXED length ``T = config.data.max_len`` (static shapes): a sentence keeps at
most ``T - 1`` tokens (``data.too_long``: truncate or skip). Batches are the
pipeline's ``tokens_in [B, T] = [bos, y.., pad..]``, ``tokens_out [B, T] =
[y.., eos, pad..]`` and ``weight [B]``.

**Blank mapping** (Kojima et al. Sec. 4.1, "the end of the text was padded with
blank tokens"): the models end a sentence with ``<blank>``
(``Tokenizer.blank_id``), which also pads it, so :func:`blank_tokens` turns
``tokens_out`` into ``[y_1 .. y_n, blank, .., blank]`` with ``n <= T - 1``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.errors import ConfigError, DataError


def load_sentences(data_config, split: str) -> list[str]:
  """Distinct sentences of ``split`` (every turn of a dialogue corpus)."""
  texts = sources.sentences(sources.load_split(data_config, split))
  if not texts:
    raise DataError(f"dataset {data_config.name!r} split {split!r} has no sentences; check "
                    "config.data.name and the prepared files")
  return texts


def encode(config, texts: list[str], tokenizer) -> pipeline.EncodedSentences:
  """``texts`` as the models read them (``data.max_len``, ``data.too_long``); the kept
  source rows are ``.index``."""
  return pipeline.encode_sentences(texts, tokenizer, int(config.data.max_len),
                                   too_long=str(config.data.too_long))


def make_inputs(config, workdir: str) -> tuple[inputs_lib.Inputs, bool]:
  """Tokenizer + the sentence stream ``train``; returns ``(inputs, tokenizer_is_new)``.

  ``inputs.streams["train"]``: repeating, shuffled batches of
  ``train.batch_size`` rows, width ``data.max_len``; ``inputs.validation["train"]``:
  the encoded sentences of ``data.validation_split``. No sample pairs (the
  objectives log their own samples).
  """
  max_len = int(config.data.max_len)
  if max_len < 2:
    raise ConfigError(f"config.data.max_len={max_len} must be >= 2 (it counts the final blank)")
  split = config.data.validation_split
  train_texts = load_sentences(config.data, "train")
  val_texts = load_sentences(config.data, split)
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, [(t,) for t in train_texts])
  train_enc = encode(config, train_texts, tok)
  val_enc = encode(config, val_texts, tok)
  if len(train_enc) < int(config.train.batch_size):
    raise DataError(f"{len(train_enc)} training sentences (after data.too_long="
                    f"{config.data.too_long!r} at data.max_len={max_len}) are fewer than "
                    f"train.batch_size={config.train.batch_size}")
  if not len(val_enc):
    raise DataError(f"no {split} sentence fits data.max_len={max_len}")
  stream = inputs_lib.batch_iterator(config, train_enc, buckets=(max_len,))
  inputs_lib.log_counts("train sentences", train_enc.counts)
  inputs_lib.log_counts(f"{split} sentences", val_enc.counts)
  counts = {"train": train_enc.counts, "validation": val_enc.counts}
  return inputs_lib.Inputs(tok, {"train": stream}, {"train": val_enc}, [], counts), is_new


def blank_tokens(tokens_out: jax.Array, tokenizer) -> jax.Array:
  """``tokens_out [B, T] = [y.., eos, pad..]`` -> int32 ``[y.., blank, blank..]``."""
  end = (tokens_out == tokenizer.eos_id) | (tokens_out == tokenizer.pad_id)
  return jnp.where(end, tokenizer.blank_id, tokens_out).astype(jnp.int32)
