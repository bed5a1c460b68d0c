"""Luong attention (Luong et al. 2015, Sec. 3.1) over a fixed memory.

Shapes: ``B`` batch, ``S`` source length, ``T`` query steps, ``H`` decoder size.
The memory (encoder outputs, projected to ``H``) is prepared once per input by
:meth:`LuongAttention.prepare`, so a decoder step only does the score, the
softmax and the weighted sum.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense

Array = jax.Array
SCORES = ("dot", "general", "scaled_dot")


class LuongAttention(nn.Module):
  """Global attention with the ``dot``, ``general`` or ``scaled_dot`` score.

  * dot:        ``score(h_t, m_s) = h_t · m_s``
  * general:    ``score(h_t, m_s) = h_t · (W_a m_s)``
  * scaled_dot: ``h_t · m_s / sqrt(H)`` (MojiTalk's "scaled Luong").

  ``m_s`` is the encoder output projected to ``H`` by a bias-free layer, which
  makes ``dot`` usable with a bidirectional encoder of another width.
  """
  features: int
  score: str = "general"
  dtype: Any = jnp.float32

  def setup(self):
    if self.score not in SCORES:
      raise ValueError(f"model.attention={self.score!r} is not one of {SCORES}")
    self.memory_proj = Dense(self.features, use_bias=False, dtype=self.dtype, name="memory")
    if self.score == "general":
      self.key_proj = Dense(self.features, use_bias=False, dtype=self.dtype, name="general")

  def prepare(self, encoder_outputs: Array) -> tuple[Array, Array]:
    """``encoder_outputs[B, S, E]`` -> ``(keys[B, S, H], values[B, S, H])``."""
    values = self.memory_proj(encoder_outputs)
    keys = self.key_proj(values) if self.score == "general" else values
    if self.score == "scaled_dot":
      keys = keys / jnp.sqrt(jnp.asarray(self.features, keys.dtype))
    return keys, values

  def __call__(self, queries: Array, keys: Array, values: Array, mask: Array) -> tuple[Array, Array]:
    """Attends ``T`` queries at once.

    Args:
      queries: ``[B, T, H]`` (or ``[B, H]`` for a single step).
      keys, values: ``[B, S, H]`` from :meth:`prepare`.
      mask: ``[B, S]``, 1 for real source tokens.

    Returns:
      ``(context[B, T, H], weights[B, T, S])`` (without the ``T`` axis for 2-D queries).
    """
    single = queries.ndim == 2
    q = queries[:, None, :] if single else queries
    scores = jnp.einsum("bth,bsh->bts", q.astype(self.dtype), keys).astype(jnp.float32)
    scores = jnp.where(mask[:, None, :] > 0, scores, -1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bts,bsh->bth", weights.astype(values.dtype), values).astype(jnp.float32)
    if single:
      return context[:, 0], weights[:, 0]
    return context, weights
