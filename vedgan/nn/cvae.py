"""Latent heads of an emoji-conditioned CVAE (MojiTalk, Zhou & Wang 2018).

The CVAE reuses a :class:`vedgan.nn.seq2seq.Seq2Seq` (encoder, attention
decoder, word embeddings) and adds the networks defined here:

* :class:`EmojiVector` -- the emoji condition ``e = tanh(W_e emb(emoji) + b_e)``
  (``emb`` a 128-d table, ``e`` 12-d; paper Sec. "Hyper-parameters").
* :class:`GaussianMLP` -- a 3-layer tanh MLP producing a diagonal Gaussian
  ``(mean, log-variance)``; the recognition network ``q(z | x, c)`` and the
  prior network ``p(z | c)`` are two of them.
* :class:`CVAEHeads` -- the response encoder of ``q``, the recognition and
  prior networks and the bag-of-words head ``f(z, c) -> R^V`` (supplement
  Eq. 1: ``p(x_bow | z, c) = prod_t softmax(f(z, c))[x_t]``).

Shapes: ``B`` batch, ``T`` response length, ``H`` encoder units per direction,
``L`` latent size, ``V`` vocabulary, ``C`` the condition ``[h_ctx; e]``
(``2H + emoji_dim``).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense
from vedgan.nn.rnn import BiGRU

Array = jax.Array


class EmojiVector(nn.Module):
  """``e = tanh(W_e emb(label) + b_e)``: the emoji condition vector ``[B, features]``.

  Attributes:
    num_labels: number of emoji classes (64 in MojiTalk).
    embed_dim: width of the emoji embedding table (the word-embedding size, 128).
    features: size of ``e`` (12 in the paper).
  """
  num_labels: int
  embed_dim: int = 128
  features: int = 12
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, labels: Array) -> Array:
    """``labels[B]`` int -> ``e[B, features]`` float32."""
    emb = nn.Embed(self.num_labels, self.embed_dim, name="embed")(labels)
    return jnp.tanh(Dense(self.features, dtype=self.dtype, name="dense")(emb)).astype(
        jnp.float32)


class GaussianMLP(nn.Module):
  """A tanh MLP giving a diagonal Gaussian: ``(mean[B, L], logvar[B, L])``.

  ``len(hidden) + 1`` dense layers (3 for two hidden sizes, the paper's
  "3 layered with tanh non-linearity")::

      h_1 = tanh(W_1 x + b_1), h_2 = tanh(W_2 h_1 + b_2), [mu; s] = W_3 h_2 + b_3
      mean = tanh(mu), logvar = tanh(s)        (bounded=True, as the authors' code)
      mean = mu,       logvar = s              (bounded=False)

  Attributes:
    latent_dim: L.
    hidden: hidden layer sizes.
    bounded: squash the outputs through tanh (log-variance in [-1, 1]).
  """
  latent_dim: int
  hidden: Sequence[int] = (268, 268)
  bounded: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    for i, width in enumerate(self.hidden):
      x = jnp.tanh(Dense(int(width), dtype=self.dtype, name=f"hidden_{i}")(x))
    out = Dense(2 * self.latent_dim, dtype=self.dtype, name="out")(x).astype(jnp.float32)
    mean, logvar = jnp.split(out, 2, axis=-1)
    if self.bounded:
      mean, logvar = jnp.tanh(mean), jnp.tanh(logvar)
    return mean, logvar


def prior_hidden_sizes(latent_dim: int) -> tuple[int, int]:
  """The authors' prior-network widths ``(int(0.62 L), int(0.77 L))`` (166, 206 for L = 268)."""
  return int(0.62 * latent_dim), int(0.77 * latent_dim)


class CVAEHeads(nn.Module):
  """The networks a CVAE adds to a seq2seq model.

  Attributes:
    latent_dim: L (268 in the paper).
    vocab_size: V (the BoW head's output size).
    hidden: H of the response encoder (the seq2seq encoder's size).
    recognition_hidden: hidden sizes of ``q(z | x, c)``.
    prior_hidden: hidden sizes of ``p(z | c)``.
    bounded: tanh on the Gaussian parameters (see :class:`GaussianMLP`).
    dropout: dropout inside the response encoder between layers (unused with 1 layer).
  """
  latent_dim: int
  vocab_size: int
  hidden: int = 128
  recognition_hidden: Sequence[int] = (268, 268)
  prior_hidden: Sequence[int] = (166, 206)
  bounded: bool = True
  encoder_layers: int = 1
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    self.response_encoder = BiGRU(self.hidden, self.encoder_layers, self.dropout, self.unroll,
                                  self.dtype, self.remat, name="response_encoder")
    self.recognition = GaussianMLP(self.latent_dim, tuple(self.recognition_hidden),
                                   self.bounded, self.dtype, name="recognition")
    self.prior = GaussianMLP(self.latent_dim, tuple(self.prior_hidden), self.bounded,
                             self.dtype, name="prior")
    # f(z, c): one bias-free linear layer on [z; h_ctx; e] (REFERENCE_NOTES).
    self.bow = Dense(self.vocab_size, use_bias=False, dtype=self.dtype, name="bow")

  def encode_response(self, response_emb: Array, mask: Array, train: bool = False) -> Array:
    """``response_emb[B, T, E]`` (the shared word embeddings), ``mask[B, T]`` -> ``[B, 2H]``."""
    _, final = self.response_encoder(response_emb, mask, train=train)
    return final

  def posterior(self, response_state: Array, condition: Array) -> tuple[Array, Array]:
    """``q(z | x, c)``: ``[h_x; c]`` -> ``(mean, logvar)``, each ``[B, L]``."""
    return self.recognition(jnp.concatenate([response_state, condition], axis=-1))

  def prior_params(self, condition: Array) -> tuple[Array, Array]:
    """``p(z | c)``: ``c`` -> ``(mean, logvar)``, each ``[B, L]``."""
    return self.prior(condition)

  def bow_logits(self, z: Array, condition: Array) -> Array:
    """``f(z, c) = W_b [z; c]`` -> ``[B, V]`` float32 (no bias)."""
    return self.bow(jnp.concatenate([z, condition], axis=-1)).astype(jnp.float32)

  def __call__(self, response_emb: Array, mask: Array, condition: Array,
               train: bool = False) -> dict[str, Array]:
    """All heads once (used by ``init``): posterior, prior and BoW logits at the posterior mean."""
    h_x = self.encode_response(response_emb, mask, train)
    mean_q, logvar_q = self.posterior(h_x, condition)
    mean_p, logvar_p = self.prior_params(condition)
    return {"mean_q": mean_q, "logvar_q": logvar_q, "mean_p": mean_p, "logvar_p": logvar_p,
            "bow_logits": self.bow_logits(mean_q, condition)}
