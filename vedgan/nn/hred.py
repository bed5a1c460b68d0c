"""Hierarchical encoder-decoder (HRED) and the latent networks of VHRED / collaborative VED.

Two modules whose parameters live in separate subtrees of ``TrainState.params``
so that a training phase can update one and leave the other bit-identical
(collaborative VED, Shen et al. 2018, Eq. 8 / Eq. 9):

* :class:`HRED` (``params["seq"]``): word embeddings, the utterance encoder GRU
  (512 in the paper), the context encoder GRU over utterance encodings (1024),
  the response decoder GRU (512), the projection ``f_theta`` that turns the
  response encoding into the autoencoder code ``z~ = tanh(W h_x)``, and the
  bag-of-words head (KLA+BOW).
* :class:`LatentNets` (``params["latent"]``): 2-layer feed-forward prior and
  posterior estimators (VHRED: ``p(z|c)``, ``q(z|x, c)``; collaborative VED:
  ``p(eps|c)``, ``q(eps|z~, c)``) and, for collaborative VED, the generator
  ``g(eps) = tanh(W eps)`` that maps the noise to the latent code.

Shapes: ``B`` batch, ``T`` turns, ``L`` tokens, ``V`` vocabulary, ``D`` latent.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense
from vedgan.nn.rnn import GRU

Array = jax.Array


class HRED(nn.Module):
  """Utterance encoder -> context encoder -> decoder conditioned on ``[c; z]``.

  Attributes:
    vocab_size: V.
    embed_dim: word embedding size (300 in the paper).
    utterance_hidden: utterance encoder GRU size (512).
    context_hidden: context encoder GRU size (1024).
    decoder_hidden: decoder GRU size (512).
    latent_dim: D, size of ``z`` / ``z~`` (512).
    unroll: scan unroll factor of the GRUs.
    dtype: compute dtype of the matmuls (parameters, carries and logits stay float32).
    remat: ``jax.checkpoint`` the GRU scan bodies.
  """
  vocab_size: int
  embed_dim: int
  utterance_hidden: int
  context_hidden: int
  decoder_hidden: int
  latent_dim: int
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    dt = self.dtype
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
    self.utterance = GRU(self.utterance_hidden, self.unroll, dt, self.remat, name="utterance")
    self.context = GRU(self.context_hidden, self.unroll, dt, self.remat, name="context")
    self.code = Dense(self.latent_dim, dtype=dt, name="code")          # f_theta head
    self.bridge = Dense(self.decoder_hidden, dtype=dt, name="bridge")  # [c; z] -> h0
    self.decoder = GRU(self.decoder_hidden, self.unroll, dt, self.remat, name="decoder")
    self.out = Dense(self.vocab_size, dtype=dt, name="out")
    self.bow = Dense(self.vocab_size, dtype=dt, name="bow")

  # -- encoders -----------------------------------------------------------------
  def encode_utterances(self, tokens: Array) -> Array:
    """``tokens[..., L]`` (0 = pad) -> final utterance-GRU states ``[..., Hu]``."""
    lead = tokens.shape[:-1]
    flat = tokens.reshape((-1, tokens.shape[-1]))
    _, final = self.utterance(self.embed(flat), mask=flat != 0)
    return final.reshape(lead + (self.utterance_hidden,))

  def encode_context(self, turns: Array, num_turns: Array) -> Array:
    """``turns[B, T, L]`` (oldest first), ``num_turns[B]`` -> context vector ``c[B, Hc]``."""
    utt = self.encode_utterances(turns)
    mask = jnp.arange(turns.shape[1])[None, :] < num_turns[:, None]
    _, c = self.context(utt, mask=mask)
    return c

  def encode_response(self, response_out: Array) -> Array:
    """``response_out[B, L]`` (``[y, eos]``) -> the response encoding ``h_x[B, Hu]``."""
    return self.encode_utterances(response_out)

  def code_of(self, h_x: Array) -> Array:
    """``z~ = f_theta(x) = tanh(W h_x)``, ``[B, D]``: the autoencoder's code of the response."""
    return jnp.tanh(self.code(h_x)).astype(jnp.float32)

  # -- decoder --------------------------------------------------------------------
  def initial_state(self, c: Array, z: Array) -> Array:
    return jnp.tanh(self.bridge(jnp.concatenate([c, z], axis=-1))).astype(jnp.float32)

  def decode(self, c: Array, z: Array, response_in: Array) -> Array:
    """Teacher-forced logits ``[B, L, V]`` of ``response_in[B, L]`` given ``c`` and ``z``."""
    x = self.embed(response_in)
    zs = jnp.broadcast_to(z[:, None, :], x.shape[:2] + z.shape[-1:])
    ys, _ = self.decoder(jnp.concatenate([x, zs.astype(x.dtype)], axis=-1),
                         initial=self.initial_state(c, z))
    return self.out(ys).astype(jnp.float32)

  def decode_step(self, h: Array, tokens: Array, z: Array) -> tuple[Array, Array]:
    """One free-running step: ``h[N, H]``, ``tokens[N]``, ``z[N, D]`` -> ``(h', logits[N, V])``."""
    x = jnp.concatenate([self.embed(tokens), z.astype(jnp.float32)], axis=-1)
    h = self.decoder.step(h, x)
    return h, self.out(h).astype(jnp.float32)

  def bow_logits(self, c: Array, z: Array) -> Array:
    """Bag-of-words logits ``[B, V]`` from ``[z; c]`` (Zhao et al. 2017)."""
    return self.bow(jnp.concatenate([z, c], axis=-1)).astype(jnp.float32)

  def __call__(self, turns, num_turns, response_in, response_out):
    """Touches every submodule (for ``init``); returns the logits with ``z = z~``."""
    c = self.encode_context(turns, num_turns)
    z = self.code_of(self.encode_response(response_out))
    self.bow_logits(c, z)
    return self.decode(c, z, response_in)


class Estimator(nn.Module):
  """2-layer feed-forward Gaussian estimator: ``x -> (mean[D], logvar[D])``.

  ``softplus_variance=True`` is the authors' parametrisation for collaborative
  VED (REFERENCE_NOTES): ``var = softplus(a) * 0.1``; otherwise ``a`` is the
  log-variance (VHRED).
  """
  hidden: int
  features: int
  softplus_variance: bool = False
  variance_scale: float = 0.1

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    h = jnp.tanh(Dense(self.hidden, name="hidden_0")(x))
    h = jnp.tanh(Dense(self.hidden, name="hidden_1")(h))
    mean = Dense(self.features, name="mean")(h)
    raw = Dense(self.features, name="var")(h)
    if self.softplus_variance:
      logvar = jnp.log(jax.nn.softplus(raw) * self.variance_scale + 1e-8)
    else:
      logvar = raw
    return mean, logvar


class LatentNets(nn.Module):
  """Prior ``p(.|c)``, posterior ``q(.|x_code, c)`` and the generator ``g``.

  VHRED: the posterior reads ``[h_x; c]`` and ``z`` is the Gaussian sample.
  Collaborative VED: the posterior reads ``[z~; c]``, the Gaussian variable is
  the noise ``eps`` and ``z = g(eps) = tanh(W eps)`` (Eq. 8).
  """
  latent_dim: int
  hidden: int
  softplus_variance: bool = False

  def setup(self):
    self.prior_net = Estimator(self.hidden, self.latent_dim, self.softplus_variance, name="prior")
    self.posterior_net = Estimator(self.hidden, self.latent_dim, self.softplus_variance,
                                   name="posterior")
    self.gen = Dense(self.latent_dim, name="generator")

  def prior(self, c: Array) -> tuple[Array, Array]:
    return self.prior_net(c)

  def posterior(self, x_code: Array, c: Array) -> tuple[Array, Array]:
    return self.posterior_net(jnp.concatenate([x_code, c], axis=-1))

  def generate(self, eps: Array) -> Array:
    """``g(eps) = tanh(W eps)``: the CVAE's latent code (collaborative VED)."""
    return jnp.tanh(self.gen(eps))

  def __call__(self, x_code: Array, c: Array):
    self.prior(c)
    mean, _ = self.posterior(x_code, c)
    return self.generate(mean)
