"""Sentence classifier: the in-project encoder behind HappyBot's reward models.

HappyBot (Shin et al. 2019, Sec. 2.2 and 3.1) fine-tunes BERT twice: a
*sentiment classifier* (the sentiment of one utterance) and the *look-ahead
sentiment predictor* (the sentiment of the next user turn from the flattened
``[u_i; s_i]``). BERT weights cannot be downloaded here, so both are this
module, trained from scratch inside the project:

    h_1..h_L   = BiGRU(Emb(x))                        (masked, vedgan.nn.rnn)
    pool       = [masked mean_t h_t ; masked max_t h_t ; final states]
    logits     = W_2 relu(W_1 dropout(pool)) + b_2    ([B, num_outputs])

Mean + max pooling over a bidirectional GRU is a strong small text classifier
(cf. InferSent's max-pooled BiLSTM); the final states add the ends of the
sequence. With ``num_outputs = 1`` the logit is the log-odds of "positive" and
``sigmoid(logit)`` is the reward. Any other scorer (a pretrained BERT on a
connected machine) plugs in through :mod:`vedgan.rewards` instead.

Shapes: ``B`` batch, ``L`` tokens (pad = 0), ``H`` hidden units per direction.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense
from vedgan.nn.rnn import BiGRU

Array = jax.Array


class SentenceClassifier(nn.Module):
  """BiGRU encoder with mean/max pooling and a one-hidden-layer head.

  Attributes:
    vocab_size: V.
    embed_dim: E.
    hidden: H (per direction).
    num_outputs: logits per example (1: binary log-odds).
    layers: stacked BiGRU layers.
    dropout: rate on embeddings and on the pooled features.
    dtype: compute dtype.
    unroll, remat: of the BiGRU scans (:mod:`vedgan.nn.rnn`).
  """
  vocab_size: int
  embed_dim: int = 64
  hidden: int = 64
  num_outputs: int = 1
  layers: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  unroll: int = 1
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: Array, train: bool = False) -> Array:
    """``tokens[B, L]`` int (pad = 0) -> ``logits[B, num_outputs]`` float32.

    A row of only padding gives the logits of an all-zero pooled vector (no NaN).
    """
    mask = (tokens != 0).astype(jnp.float32)
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    outputs, final = BiGRU(self.hidden, self.layers, self.dropout, self.unroll, self.dtype,
                           self.remat, name="encoder")(x, mask, train=train)
    m = mask[..., None]
    count = jnp.maximum(m.sum(axis=1), 1.0)
    mean = (outputs * m).sum(axis=1) / count
    neg = jnp.finfo(jnp.float32).min
    mx = jnp.where(m > 0, outputs, neg).max(axis=1)
    mx = jnp.where(mask.sum(axis=1, keepdims=True) > 0, mx, 0.0)
    pooled = jnp.concatenate([mean, mx, final], axis=-1)
    pooled = nn.Dropout(self.dropout)(pooled, deterministic=not train)
    h = nn.relu(Dense(self.hidden, dtype=self.dtype, name="hidden")(pooled))
    return Dense(self.num_outputs, dtype=self.dtype, name="out")(h).astype(jnp.float32)
