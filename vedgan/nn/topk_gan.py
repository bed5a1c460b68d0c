"""Networks of the top-k softmax dialogue GAN (López Zorrilla et al.): generator and discriminator.

Shapes: ``B`` batch, ``S`` input length, ``T`` response length, ``V``
vocabulary, ``D`` word-vector size.

:class:`TopKDialogueGAN` holds the three parameter groups of the paper::

    params = {"words": W [V, D],          # shared by encoder, decoder and discriminator
              "generator": {...},         # LSTMSeq2Seq (Section 2, Fig. 1)
              "discriminator": {...}}     # DialogueDiscriminator (Section 3)

Which steps train ``W`` is the objective's business (``model.word_table_trained_by``,
:mod:`vedgan.papers.topk_gan.algorithm`; by default only the generator's).

Generator (Section 2 and 4). ``v_j = W[x_j]``; ``h = encoder(v)`` is a deep
bidirectional LSTM (``encoder_layers`` per direction, ``h_j`` the
concatenated top-layer outputs). At step ``t`` the decoder, a deep LSTM, reads
``W[y_{t-1}]`` and outputs ``o_t`` (its top layer). The attention score is an
MLP over ``[h_j; o_t]`` (a ``tanh`` layer of ``attention_hidden`` units, then a
linear scalar), ``a_.t = softmax_j(score)`` (Eq. 2), ``c_t = sum_j a_jt h_j``
(Eq. 1); ``õ_t = leaky_relu(W_õ [o_t; c_t] + b)`` (``output_hidden`` units) and
``f_t = W_f õ_t + b_f`` (``V`` logits). Decoding feeds back
``y_t = argmax f_t`` (Eq. 3). The decoder's input is the word vector only (no
input feeding), so teacher forcing runs the LSTM stack over the whole response
and attends all steps at once. The paper does not say how the decoder starts;
here every decoder layer ``l`` starts from ``h = tanh(B_l [h_fwd; h_bwd])``
(the encoder's final top-layer states) and ``c = 0``.

Discriminator (Section 3 and 4). Two deep bidirectional LSTMs (``disc_layers``
of ``disc_hidden`` per direction), one for the input utterance and one for the
response, each summarised by its final forward and backward top-layer states;
their concatenation goes through a leaky-ReLU layer of ``disc_mlp_hidden``
units and one sigmoid unit. The module returns the logit; ``a = sigmoid(logit)``
is the confidence that the response is a chatbot's. The response enters as
word vectors with a mask, so the same network reads ``W[r_t]`` (human or
replayed responses) and the top-k softmax approximations ``ũ_t`` (Eq. 9).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense
from vedgan.nn.rnn import LSTM

Array = jax.Array


@flax.struct.dataclass
class EncodedInput:
  """The encoded input utterance.

  Attributes:
    values: ``[B, S, 2H_enc]`` encoder outputs ``h_j`` (averaged by Eq. 1).
    keys: ``[B, S, A]`` the ``h_j`` half of the attention MLP's first layer.
    mask: ``[B, S]`` 1 for real tokens.
    final: ``[B, 2H_enc]`` final forward and backward top-layer states.
  """
  values: Array
  keys: Array
  mask: Array
  final: Array


class DeepBiLSTM(nn.Module):
  """Stacked bidirectional LSTM: layer ``l > 0`` reads ``[fwd; bwd]`` of layer ``l - 1``.

  Returns ``(outputs [B, T, 2H], final [B, 2H])``: the top layer's outputs and
  its final forward/backward hidden states (with right-padding and the mask,
  the forward state after the last real token and the backward state after
  the first).
  """
  features: int
  num_layers: int = 1
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False) -> tuple[Array, Array]:
    outputs, final = x, None
    for layer in range(self.num_layers):
      if layer > 0 and self.dropout > 0:
        outputs = nn.Dropout(self.dropout)(outputs, deterministic=not train)
      fwd, (_, fwd_h) = LSTM(self.features, unroll=self.unroll, dtype=self.dtype,
                             remat=self.remat, name=f"fwd_{layer}")(outputs, mask)
      bwd, (_, bwd_h) = LSTM(self.features, unroll=self.unroll, dtype=self.dtype,
                             remat=self.remat, name=f"bwd_{layer}")(outputs, mask, reverse=True)
      outputs = jnp.concatenate([fwd, bwd], axis=-1)
      final = jnp.concatenate([fwd_h, bwd_h], axis=-1)
    return outputs, final


class MLPAttention(nn.Module):
  """Attention whose score is a 2-layer MLP over ``[h_j; o_t]`` (Section 4).

  ``score_jt = v · tanh(U_h h_j + U_o o_t + b)``; the ``U_h h_j`` half is
  computed once per input by :meth:`prepare`.
  """
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.key_proj = Dense(self.features, dtype=self.dtype, name="key")
    self.query_proj = Dense(self.features, use_bias=False, dtype=self.dtype, name="query")
    self.score = Dense(1, dtype=self.dtype, name="score")

  def prepare(self, values: Array) -> Array:
    """``values[B, S, E]`` -> ``keys[B, S, A]``."""
    return self.key_proj(values)

  def __call__(self, queries: Array, keys: Array, values: Array,
               mask: Array) -> tuple[Array, Array]:
    """``queries[B, T, H]`` (or ``[B, H]``) -> ``(context [B, (T,) E], weights [B, (T,) S])``."""
    single = queries.ndim == 2
    q = queries[:, None, :] if single else queries
    hidden = jnp.tanh(keys[:, None, :, :] + self.query_proj(q)[:, :, None, :])  # [B, T, S, A]
    scores = self.score(hidden)[..., 0].astype(jnp.float32)                      # [B, T, S]
    scores = jnp.where(mask[:, None, :] > 0, scores, -1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bts,bse->bte", weights.astype(values.dtype), values).astype(jnp.float32)
    if single:
      return context[:, 0], weights[:, 0]
    return context, weights


class LSTMSeq2Seq(nn.Module):
  """The generator: deep BiLSTM encoder, deep LSTM decoder, MLP attention, MLP output.

  Reads word vectors (the caller owns ``W``). See the module docstring.
  """
  vocab_size: int
  encoder_hidden: int = 512
  encoder_layers: int = 4
  decoder_hidden: int = 1028
  decoder_layers: int = 4
  attention_hidden: int = 250
  output_hidden: int = 500
  leaky_relu_slope: float = 0.01
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    self.encoder = DeepBiLSTM(self.encoder_hidden, self.encoder_layers, self.dropout,
                              self.unroll, self.dtype, self.remat, name="encoder")
    self.bridges = [Dense(self.decoder_hidden, dtype=self.dtype, name=f"bridge_{l}")
                    for l in range(self.decoder_layers)]
    self.decoder = [LSTM(self.decoder_hidden, unroll=self.unroll, dtype=self.dtype,
                         remat=self.remat, name=f"decoder_{l}") for l in range(self.decoder_layers)]
    self.attention = MLPAttention(self.attention_hidden, self.dtype, name="attention")
    self.hidden_out = Dense(self.output_hidden, dtype=self.dtype, name="hidden_out")
    self.out = Dense(self.vocab_size, dtype=self.dtype, name="out")
    self.drop = nn.Dropout(self.dropout)

  def encode(self, vectors: Array, mask: Array, train: bool = False) -> EncodedInput:
    """``vectors[B, S, D]`` (``W[x]``), ``mask[B, S]`` -> :class:`EncodedInput`."""
    outputs, final = self.encoder(self.drop(vectors, deterministic=not train), mask, train=train)
    return EncodedInput(values=outputs, keys=self.attention.prepare(outputs), mask=mask,
                        final=final)

  def initial_state(self, memory: EncodedInput) -> tuple[tuple[Array, Array], ...]:
    """Per decoder layer ``(c = 0, h = tanh(B_l final))``."""
    out = []
    for bridge in self.bridges:
      h = jnp.tanh(bridge(memory.final)).astype(jnp.float32)
      out.append((jnp.zeros_like(h), h))
    return tuple(out)

  def logits(self, o: Array, context: Array, train: bool = False) -> Array:
    """``f = W_f leaky_relu(W_õ [o; c])`` -> float32 ``[..., V]``."""
    hidden = nn.leaky_relu(self.hidden_out(jnp.concatenate([o, context], axis=-1)),
                           self.leaky_relu_slope)
    return self.out(self.drop(hidden, deterministic=not train)).astype(jnp.float32)

  def decode(self, memory: EncodedInput, carry, vectors: Array, train: bool = False) -> Array:
    """Teacher forcing: ``vectors[B, T, D]`` (``W[bos, s_1, ...]``) -> logits ``[B, T, V]``."""
    x = vectors
    for layer, cell in enumerate(self.decoder):
      if layer > 0:
        x = self.drop(x, deterministic=not train)
      x, _ = cell(x, None, initial=carry[layer])
    context, _ = self.attention(x, memory.keys, memory.values, memory.mask)
    return self.logits(x, context, train)

  def decode_step(self, memory: EncodedInput, carry, vector: Array):
    """One free-running step (no dropout): ``vector[N, D]`` -> ``(carry, logits [N, V])``."""
    x, new = vector, []
    for layer, cell in enumerate(self.decoder):
      c, h = cell.step(carry[layer], x)
      new.append((c, h))
      x = h
    context, _ = self.attention(x, memory.keys, memory.values, memory.mask)
    return tuple(new), self.logits(x, context)


class DialogueDiscriminator(nn.Module):
  """Two deep BiLSTMs (input, response), a leaky-ReLU layer and one logit."""
  hidden: int = 128
  num_layers: int = 2
  mlp_hidden: int = 100
  leaky_relu_slope: float = 0.01
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, input_vectors: Array, input_mask: Array, response_vectors: Array,
               response_mask: Array) -> Array:
    """Word vectors and masks of the input and the response -> logits ``[B]``."""
    _, x = DeepBiLSTM(self.hidden, self.num_layers, 0.0, self.unroll, self.dtype, self.remat,
                      name="input_encoder")(input_vectors, input_mask)
    _, r = DeepBiLSTM(self.hidden, self.num_layers, 0.0, self.unroll, self.dtype, self.remat,
                      name="response_encoder")(response_vectors, response_mask)
    hidden = nn.leaky_relu(Dense(self.mlp_hidden, dtype=self.dtype, name="hidden")(
        jnp.concatenate([x, r], axis=-1)), self.leaky_relu_slope)
    return Dense(1, dtype=self.dtype, name="logit")(hidden)[..., 0].astype(jnp.float32)


def _mask(tokens: Array) -> Array:
  return (tokens != 0).astype(jnp.float32)


class TopKDialogueGAN(nn.Module):
  """The shared word vectors ``W``, the generator and the discriminator.

  Attributes:
    vocab_size, word_dim: ``V`` and ``D`` of ``W``.
    generator_kwargs: ``((name, value), ...)`` of :class:`LSTMSeq2Seq` (besides
      ``vocab_size``); a tuple so that the module stays hashable.
    discriminator_kwargs: the same for :class:`DialogueDiscriminator`.
    word_init: initializer of ``W`` (``N(0, 1/D)`` entries by default).
  """
  vocab_size: int
  word_dim: int = 300
  generator_kwargs: tuple = ()
  discriminator_kwargs: tuple = ()
  word_init: Any = None

  def setup(self):
    init = self.word_init or nn.initializers.normal(stddev=self.word_dim ** -0.5)
    self.words = self.param("words", init, (self.vocab_size, self.word_dim))
    self.gen = LSTMSeq2Seq(self.vocab_size, name="generator", **dict(self.generator_kwargs))
    self.disc = DialogueDiscriminator(name="discriminator", **dict(self.discriminator_kwargs))

  def embed(self, tokens: Array) -> Array:
    """``W[tokens]``."""
    return jnp.take(self.words, tokens, axis=0)

  # -- generator ------------------------------------------------------------------
  def encode(self, context: Array, train: bool = False) -> EncodedInput:
    """``context[B, S]`` (pad 0) -> :class:`EncodedInput`."""
    return self.gen.encode(self.embed(context), _mask(context), train)

  def start(self, memory: EncodedInput):
    """The decoder's initial carry."""
    return self.gen.initial_state(memory)

  def step(self, memory: EncodedInput, carry, tokens: Array):
    """Feeds ``W[tokens]`` (the previous tokens ``[N]``): ``(carry, logits f_t [N, V])``."""
    return self.gen.decode_step(memory, carry, self.embed(tokens))

  def mle_logits(self, context: Array, response_in: Array, train: bool = False) -> Array:
    """Teacher-forced logits ``[B, T, V]`` for ``response_in = [bos, s_1, ...]``."""
    memory = self.encode(context, train)
    return self.gen.decode(memory, self.start(memory), self.embed(response_in), train)

  # -- discriminator --------------------------------------------------------------
  def discriminate(self, context: Array, response_vectors: Array, response_mask: Array) -> Array:
    """Logits ``[B]`` for input tokens and response *vectors* ``[B, T, D]`` (e.g. ``ũ_t``)."""
    return self.disc(self.embed(context), _mask(context), response_vectors, response_mask)

  def discriminate_tokens(self, context: Array, response: Array) -> Array:
    """Logits ``[B]`` for input and response tokens (pad 0)."""
    return self.discriminate(context, self.embed(response), _mask(response))

  def __call__(self, context: Array, response_in: Array, response_out: Array):
    """Creates every parameter: ``(MLE logits [B, T, V], D logits [B])``."""
    return (self.mle_logits(context, response_in),
            self.discriminate_tokens(context, response_out))
