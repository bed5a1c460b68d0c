r"""The networks of the top-k softmax dialogue GAN built from ``config.model``, and ``W``
initialised from a word-vector file (Sec. 4: "We pretrained 300 dimensional word vectors
[...] with FastText").

The modules themselves are :mod:`vedgan.nn.topk_gan`: ``params = {"words": W [V, D],
"generator": {...}, "discriminator": {...}}``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vedgan.errors import ConfigError
from vedgan.nn.topk_gan import TopKDialogueGAN

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config, vocab_size: int, word_init=None) -> TopKDialogueGAN:
  """The :class:`TopKDialogueGAN` described by ``config.model`` (``word_init``: the
  initializer of ``W``; None: ``N(0, 1/D)``)."""
  m = config.model
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={m.dtype!r} must be one of {sorted(DTYPES)}")
  dtype = DTYPES[m.dtype]
  gen = (("encoder_hidden", int(m.encoder_hidden)), ("encoder_layers", int(m.encoder_layers)),
         ("decoder_hidden", int(m.decoder_hidden)), ("decoder_layers", int(m.decoder_layers)),
         ("attention_hidden", int(m.attention_hidden)), ("output_hidden", int(m.output_hidden)),
         ("leaky_relu_slope", float(m.leaky_relu_slope)), ("dropout", float(m.dropout)),
         ("unroll", int(m.unroll)), ("dtype", dtype), ("remat", bool(m.remat)))
  disc = (("hidden", int(m.disc_hidden)), ("num_layers", int(m.disc_layers)),
          ("mlp_hidden", int(m.disc_mlp_hidden)),
          ("leaky_relu_slope", float(m.leaky_relu_slope)), ("unroll", int(m.unroll)),
          ("dtype", dtype), ("remat", bool(m.remat)))
  return TopKDialogueGAN(vocab_size=vocab_size, word_dim=int(m.word_dim), generator_kwargs=gen,
                         discriminator_kwargs=disc, word_init=word_init)


def word_vector_table(path: str, tokenizer, dim: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
  """``W`` initialised from a word2vec/fastText file: ``(table [V, dim], found [V] bool)``.

  A word of a word-level vocabulary, or a word-initial sentencepiece piece
  ``"\u2581word"``, takes the file's vector of the word (or of its lower-case
  form); the other rows (special ids, sentencepiece word continuations, words
  missing from the file) are drawn from ``N(0, s^2)`` with ``s`` the standard
  deviation of the file's vectors, so that every row has the same scale.
  """
  from vedgan import metrics  # pylint: disable=import-outside-toplevel

  vocab = int(tokenizer.vocab_size)
  word_level = getattr(tokenizer, "model_type", "") == "word"
  specials = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
  specials |= set(getattr(tokenizer, "user_symbols", {}).values())
  words = {}
  for i in range(vocab):
    if i in specials:
      continue
    piece = tokenizer.id_to_piece(i)
    if piece.startswith("\u2581") and len(piece) > 1:
      words[i] = piece[1:]
    elif word_level and piece:
      words[i] = piece
  wanted = set(words.values()) | {w.lower() for w in words.values()}
  vectors = metrics.load_word_vectors(path, vocabulary=wanted)
  if vectors.dim != dim:
    raise ConfigError(f"model.word_vectors {path} has {vectors.dim}-d vectors but "
                      f"model.word_dim={dim}; set --config.model.word_dim={vectors.dim}")
  scale = float(np.std(vectors.table)) if len(vectors) else 0.0
  table = np.random.default_rng(seed).normal(0.0, scale or dim ** -0.5,
                                             (vocab, dim)).astype(np.float32)
  found = np.zeros((vocab,), bool)
  for i, word in words.items():
    for candidate in (word, word.lower()):
      if candidate in vectors:
        table[i] = vectors[candidate]
        found[i] = True
        break
  return table, found


def table_init(table: np.ndarray):
  """A Flax initializer returning ``table`` (the shape must match)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    if tuple(shape) != table.shape:
      raise ValueError(f"word table {table.shape} != {shape}")
    return jnp.asarray(table, dtype)

  return init
