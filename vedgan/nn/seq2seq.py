"""Sequence-to-sequence model: bidirectional GRU encoder, GRU decoder, Luong attention.

Shapes: ``B`` batch, ``S`` context length, ``T`` response length, ``E`` embedding
size, ``H`` hidden size, ``V`` vocabulary.

The decoder follows Luong et al. (2015) without input feeding:
``h_t = GRU(h_{t-1}, [emb(y_{t-1}); extra])``, ``c_t = attend(h_t, memory)``,
``o_t = tanh(W_c [c_t; h_t])``, ``logits_t = W_o o_t + b`` (``W_o`` tied to the
embedding table when ``tie_embeddings``). Because the recurrence does not depend
on the attention output, teacher forcing runs the GRU over the whole response in
one scan and attends all steps with one batched matmul; free-running decoding uses
:meth:`Seq2Seq.decode_step`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from vedgan import losses
from vedgan.nn.attention import LuongAttention
from vedgan.nn.dense import Dense
from vedgan.nn.rnn import BiGRU, GRU

Array = jax.Array


@flax.struct.dataclass
class Memory:
  """Encoded context. keys/values ``[B, S, H]``, mask ``[B, S]``, final ``[B, 2H_enc]``."""
  keys: Array
  values: Array
  mask: Array
  final: Array


class Seq2Seq(nn.Module):
  """Attention seq2seq. See the module docstring for the equations.

  Attributes:
    vocab_size: V.
    embed_dim: E.
    hidden: H (encoder per direction and decoder).
    encoder_layers: stacked BiGRU layers.
    attention: Luong score: "dot", "general" or "scaled_dot".
    tie_embeddings: output layer ``W_o = Emb · P`` (P: H -> E projection).
    dropout: rate on embeddings and on ``o_t``.
    dtype: compute dtype (parameters stay float32).
    unroll: scan unroll factor.
    remat: ``jax.checkpoint`` the recurrent scan bodies (long sequences, less memory).
  """
  vocab_size: int
  embed_dim: int = 128
  hidden: int = 128
  encoder_layers: int = 1
  attention: str = "general"
  tie_embeddings: bool = False
  dropout: float = 0.0
  dtype: Any = jnp.float32
  unroll: int = 1
  remat: bool = False

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
    self.encoder = BiGRU(self.hidden, self.encoder_layers, self.dropout, self.unroll, self.dtype,
                         self.remat, name="encoder")
    self.bridge = Dense(self.hidden, dtype=self.dtype, name="bridge")
    self.decoder = GRU(self.hidden, self.unroll, self.dtype, self.remat, name="decoder")
    self.attend = LuongAttention(self.hidden, self.attention, self.dtype, name="attention")
    self.combine = Dense(self.hidden, use_bias=False, dtype=self.dtype, name="combine")
    if self.tie_embeddings:
      self.out_proj = Dense(self.embed_dim, use_bias=False, dtype=self.dtype, name="out_proj")
      self.out_bias = self.param("out_bias", nn.initializers.zeros, (self.vocab_size,))
    else:
      self.out = Dense(self.vocab_size, dtype=self.dtype, name="out")
    self.drop = nn.Dropout(self.dropout)

  # -- pieces -----------------------------------------------------------------
  def embed_tokens(self, tokens: Array, train: bool = False) -> Array:
    """``tokens[...]`` int -> ``[..., E]``."""
    return self.drop(self.embed(tokens), deterministic=not train)

  def encode(self, context: Array, train: bool = False) -> Memory:
    """``context[B, S]`` (pad = 0) -> :class:`Memory`."""
    mask = (context != 0).astype(jnp.float32)
    outputs, final = self.encoder(self.embed_tokens(context, train), mask, train=train)
    keys, values = self.attend.prepare(outputs)
    return Memory(keys=keys, values=values, mask=mask, final=final)

  def initial_state(self, memory: Memory, extra: Array | None = None) -> Array:
    """``h_0 = tanh(W_b [final_fwd; final_bwd; extra])`` -> ``[B, H]``."""
    x = memory.final if extra is None else jnp.concatenate([memory.final, extra], axis=-1)
    return jnp.tanh(self.bridge(x)).astype(jnp.float32)

  def output(self, h: Array, context: Array, train: bool = False) -> Array:
    """Attentional hidden ``o = tanh(W_c [c; h])`` (``[..., H]``), with dropout."""
    o = jnp.tanh(self.combine(jnp.concatenate([context, h], axis=-1)))
    return self.drop(o, deterministic=not train)

  def logits(self, o: Array) -> Array:
    """``o[..., H]`` -> float32 ``logits[..., V]`` (one ``[N, H]`` matmul for all positions;
    see :class:`vedgan.nn.dense.Dense` for why the positions are flattened)."""
    if self.tie_embeddings:
      flat = self.embed.attend(self.out_proj(o.reshape(-1, o.shape[-1]))) + self.out_bias
      return flat.reshape(*o.shape[:-1], self.vocab_size).astype(jnp.float32)
    return self.out(o).astype(jnp.float32)

  def projection(self, o: Array) -> tuple[Array, Array, Array]:
    """The output layer as ``(features[..., K], weight[K, V], bias[V])``.

    ``logits(o) == features @ weight + bias`` (``K = E`` with tied embeddings,
    else ``H``), for losses that never build the logits, e.g.
    :func:`vedgan.losses.chunked_sequence_cross_entropy`.
    """
    if self.tie_embeddings:
      return self.out_proj(o), self.embed.embedding.T, self.out_bias
    if self.is_initializing():
      self.out(o)  # creates the output layer's parameters
    p = self.out.variables["params"]
    return o.astype(self.dtype), p["kernel"], p["bias"]

  def _decoder_inputs(self, tokens: Array, extra_inputs: Array | None, train: bool) -> Array:
    x = self.embed_tokens(tokens, train)
    if extra_inputs is not None:
      shape = x.shape[:-1] + extra_inputs.shape[-1:]
      extra = extra_inputs if x.ndim == 2 else jnp.broadcast_to(extra_inputs[:, None, :], shape)
      x = jnp.concatenate([x, extra.astype(x.dtype)], axis=-1)
    return x

  # -- decoding -----------------------------------------------------------------
  def decode(self, memory: Memory, h0: Array, response_in: Array, train: bool = False,
             extra_inputs: Array | None = None) -> dict[str, Array]:
    """Teacher-forced decoding.

    Args:
      memory: from :meth:`encode`.
      h0: ``[B, H]`` initial decoder state.
      response_in: ``[B, T]`` = ``[bos, y_1, ..., y_{T-1}]``.
      extra_inputs: optional ``[B, F]`` concatenated to every step's input.

    Returns:
      dict with ``logits[B, T, V]``, ``states[B, T, H]`` (``h_t``) and
      ``outputs[B, T, H]`` (``o_t``).
    """
    x = self._decoder_inputs(response_in, extra_inputs, train)
    states, _ = self.decoder(x, None, initial=h0)
    context, _ = self.attend(states, memory.keys, memory.values, memory.mask)
    o = self.output(states, context, train)
    return {"logits": self.logits(o), "states": states, "outputs": o}

  def decode_step(self, memory: Memory, h: Array, tokens: Array,
                  extra_inputs: Array | None = None) -> tuple[Array, Array, Array]:
    """One free-running step (no dropout).

    Args:
      memory: from :meth:`encode` (rows aligned with ``h``).
      h: ``[N, H]``; tokens: ``[N]`` previous tokens.

    Returns:
      ``(h'[N, H], logits[N, V], o[N, H])``.
    """
    x = self._decoder_inputs(tokens, extra_inputs, False)
    h = self.decoder.step(h, x)
    context, _ = self.attend(h, memory.keys, memory.values, memory.mask)
    o = self.output(h, context, False)
    return h, self.logits(o), o

  def sequence_nll(self, context: Array, response_in: Array, response_out: Array,
                   chunk_size: int, train: bool = False) -> tuple[Array, Array]:
    """Teacher-forced ``(nll_sum[B], token_count[B])`` of ``response_out[B, T]`` (pad = 0).

    The output layer runs as :func:`vedgan.losses.chunked_sequence_cross_entropy`
    over ``chunk_size`` tokens at a time, so no ``[B, T, V]`` logits are built
    (the unused logits of :meth:`decode` are dropped by the compiler).
    """
    memory = self.encode(context, train)
    out = self.decode(memory, self.initial_state(memory), response_in, train)
    features, weight, bias = self.projection(out["outputs"])
    mask = (response_out != 0).astype(jnp.float32)
    return losses.chunked_sequence_cross_entropy(features, weight, bias, response_out, mask,
                                                 chunk_size)

  def __call__(self, context: Array, response_in: Array, train: bool = False) -> Array:
    """``context[B, S]``, ``response_in[B, T]`` -> ``logits[B, T, V]``."""
    memory = self.encode(context, train)
    return self.decode(memory, self.initial_state(memory), response_in, train)["logits"]
