"""MojiTalk's emoji classifier: the DeepMoji skip-connected BiGRU (Felbo et al., 2017).

MojiTalk supplement Sec. 0.2: "a skip connected model of Bidirectional GRU-RNN
layers [with] the same structure as the classifier in (Felbo et al., 2017)",
128-d embeddings and layers, dropout 0.2, dense layers Glorot-uniform,
embeddings ``U[-4e-3, 4e-3]``::

    x_t   = tanh(Emb(w_t))                          (DeepMoji's embedding activation)
    h1_t  = BiGRU_1(x)_t,  h2_t = BiGRU_2(h1)_t     ([B, T, 2H] each)
    s_t   = [x_t; h1_t; h2_t]                       (skip connections, [B, T, E + 4H])
    a_t   = softmax_t(s_t . w_a)  over real tokens  (attention, numerically stable)
    logits = W_o dropout(sum_t a_t s_t) + b_o       ([B, C])

Shapes: ``B`` batch, ``T`` tokens (pad = 0), ``E`` embedding size, ``H`` units
per direction, ``C`` emoji labels.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense
from vedgan.nn.rnn import GRU

Array = jax.Array


def symmetric_uniform(scale: float):
  """Initializer drawing from ``U[-scale, scale]`` (Flax's ``uniform`` is ``[0, scale)``)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def attention_weights(scores: Array, mask: Array) -> Array:
  """Masked softmax over the last axis; rows without a real token get all-zero weights.

  ``scores[B, T]``, ``mask[B, T]`` (1 = real) -> ``[B, T]``. The maximum over the
  real positions is subtracted before ``exp`` (DeepMoji's Keras layer exponentiates
  the raw scores, which overflows for large activations).
  """
  mask = mask > 0
  safe = jnp.where(mask, scores, -jnp.inf)
  top = jnp.max(safe, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  e = jnp.where(mask, jnp.exp(jnp.where(mask, scores - top, 0.0)), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(total > 0, total, 1.0)


class AttentionPool(nn.Module):
  """DeepMoji's attention layer: ``sum_t softmax_t(s_t . w) s_t`` over real tokens."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, states: Array, mask: Array) -> tuple[Array, Array]:
    """``states[B, T, D]``, ``mask[B, T]`` -> ``(pooled[B, D], weights[B, T])``."""
    w = self.param("kernel", nn.initializers.glorot_uniform(), (states.shape[-1], 1))
    scores = jnp.einsum("btd,dk->btk", states.astype(self.dtype), w.astype(self.dtype))[..., 0]
    weights = attention_weights(scores.astype(jnp.float32), mask)
    pooled = jnp.einsum("bt,btd->bd", weights, states.astype(jnp.float32))
    return pooled, weights


class DeepMoji(nn.Module):
  """Skip-connected two-layer BiGRU with attention over ``[emb; layer 1; layer 2]``.

  Attributes:
    vocab_size: V.
    num_labels: C (64 emoji in MojiTalk).
    embed_dim: E (128).
    hidden: H units per direction (128).
    num_layers: BiGRU layers (2).
    dropout: rate on the embeddings and on the pooled vector (0.2).
    embed_scale: embeddings start in ``U[-embed_scale, embed_scale]`` (4e-3).
  """
  vocab_size: int
  num_labels: int
  embed_dim: int = 128
  hidden: int = 128
  num_layers: int = 2
  dropout: float = 0.2
  embed_scale: float = 4e-3
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: Array, train: bool = False,
               return_attention: bool = False) -> Array | tuple[Array, Array]:
    """``tokens[B, T]`` (pad = 0) -> ``logits[B, C]`` float32 (and the attention weights)."""
    mask = (tokens != 0).astype(jnp.float32)
    emb = nn.Embed(self.vocab_size, self.embed_dim,
                   embedding_init=symmetric_uniform(self.embed_scale), name="embed")(tokens)
    x = nn.Dropout(self.dropout)(jnp.tanh(emb), deterministic=not train)
    features, h = [x], x
    for layer in range(self.num_layers):
      fwd, _ = GRU(self.hidden, self.unroll, self.dtype, self.remat, name=f"fwd_{layer}")(
          h, mask)
      bwd, _ = GRU(self.hidden, self.unroll, self.dtype, self.remat, name=f"bwd_{layer}")(
          h, mask, reverse=True)
      h = jnp.concatenate([fwd, bwd], axis=-1)
      features.append(h)
    states = jnp.concatenate(features, axis=-1)
    pooled, weights = AttentionPool(self.dtype, name="attention")(states, mask)
    pooled = nn.Dropout(self.dropout)(pooled, deterministic=not train)
    logits = Dense(self.num_labels, kernel_init=nn.initializers.glorot_uniform(),
                      dtype=self.dtype, name="out")(pooled).astype(jnp.float32)
    return (logits, weights) if return_attention else logits
