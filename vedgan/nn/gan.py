"""Networks of the latent-space language GAN (Kojima et al.) and its MLE baseline.

* :class:`Generator`: an LSTM whose initial ``(C_0, H_0)`` are two separate
  linear maps of the latent code ``z`` (Appendix A); it reads the previous word
  and 8 sinusoidal position features and emits word logits ``o_t``. With
  ``latent_dim = 0`` the initial state is zero and the same network is the
  MLE LSTM language model of the quality-diversity literature.
* :func:`rollout`: the free-running generation of Algorithm 1 (lines 3-11) as
  ONE ``lax.scan``: Gumbel-softmax soft one-hots (Eq. 2), straight-through
  hard one-hots (Fig. 2), the blank rule (lines 4-5), the stop-gradient hard
  word fed back as the next input (line 10).
* :class:`Discriminator`: an LSTM over (dropped-out) word embeddings of soft or
  exact one-hots plus position features, one real/fake logit per prefix (Eq. 1).
* :class:`Reconstructor`: an LSTM over the hard one-hots' embeddings whose last
  state is mapped to ``z^`` (Eq. 3).

Shapes: ``B`` batch, ``T`` sentence length (fixed), ``V`` vocabulary, ``E``
embedding size, ``H`` hidden size, ``N_z`` latent size, ``P`` position features.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vedgan import relax
from vedgan.nn.rnn import LSTM

# The GAN's dense layers stay flax's own (not vedgan.nn.dense.Dense): flattening measured no
# gain here (disc 0.99x, gen 1.00x, docs/benchmarks.md), and with it the four-steps-per-call
# GAN cycle no longer matched single steps at float32 round-off after Adam
# (tests/test_steps_per_call.py).

Array = jax.Array
#: added to the logits of words the generator may never emit (pad, bos, eos, eou):
#: finite, so gradients through the softmax stay finite.
FORBIDDEN_LOGIT = -1e9


def sinusoidal_positions(length: int, features: int, min_timescale: float = 1.0,
                         max_timescale: float = 1.0e4) -> np.ndarray:
  """Fixed sinusoidal position features ``[length, features]`` (float32).

  The 1-d timing signal ScratchGAN concatenates to its embeddings (Kojima et
  al., Appendix A: "positional information of 8 dimensions"): ``features / 2``
  geometrically spaced timescales from ``min_timescale`` to ``max_timescale``,
  ``[sin(t / s_i) ..., cos(t / s_i) ...]`` for position ``t = 0 .. length - 1``.
  """
  if features <= 0:
    return np.zeros((length, 0), np.float32)
  if features % 2:
    raise ValueError(f"position features must be even, got {features}")
  half = features // 2
  increment = math.log(max_timescale / min_timescale) / max(half - 1, 1)
  inv = min_timescale * np.exp(-increment * np.arange(half, dtype=np.float64))
  angles = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _with_positions(x: Array, features: int) -> Array:
  """Concatenates ``[T, P]`` position features to ``x[B, T, E]``."""
  if features <= 0:
    return x
  pos = jnp.asarray(sinusoidal_positions(x.shape[1], features), x.dtype)
  return jnp.concatenate([x, jnp.broadcast_to(pos, x.shape[:2] + pos.shape[1:])], axis=-1)


def prefix_mask(tokens: Array, blank_id: int) -> Array:
  """1.0 up to and including the first ``blank_id`` of each row, 0.0 after.

  The blank doubles as padding (ScratchGAN): the prefix that ends the sentence
  is scored, the all-blank tail is not. ``tokens[B, T]`` int -> ``[B, T]``.
  """
  is_blank = (tokens == blank_id).astype(jnp.int32)
  blanks_before = jnp.cumsum(is_blank, axis=-1) - is_blank
  return (blanks_before == 0).astype(jnp.float32)


def forbidden_bias(vocab_size: int, forbid_ids: Sequence[int]) -> np.ndarray:
  """``[V]`` float32: :data:`FORBIDDEN_LOGIT` at ``forbid_ids``, 0 elsewhere."""
  bias = np.zeros((vocab_size,), np.float32)
  bias[list(forbid_ids)] = FORBIDDEN_LOGIT
  return bias


class Generator(nn.Module):
  """LSTM word generator conditioned on ``z`` through its initial state.

  Step ``t`` reads ``[E x_{t-1}; pos(t)]`` (``x_0`` = the ``start_id`` word),
  updates the LSTM and emits ``o_t = W h_t + b`` plus a ``-1e9`` bias on
  ``forbid_ids``. ``(C_0, H_0) = (W_c z + b_c, W_h z + b_h)`` (Appendix A: two
  different fully connected layers), or zeros when ``latent_dim == 0``.

  Attributes:
    vocab_size: V.
    embed_dim: E (input word embeddings).
    hidden: H (128 in Appendix B).
    latent_dim: N_z (8 in Appendix B); 0 = unconditional language model.
    position_features: P (8, Appendix A).
    start_id: the word read at the first step (the tokenizer's bos).
    forbid_ids: words never emitted (pad, bos, eos, eou: the blank ends sentences).
    forget_bias, unroll, dtype, remat: of the :class:`~vedgan.nn.rnn.LSTM`.
  """
  vocab_size: int
  embed_dim: int
  hidden: int
  latent_dim: int
  position_features: int = 8
  start_id: int = 2
  forbid_ids: tuple[int, ...] = ()
  forget_bias: float = 1.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    self.embedding = self.param("embedding", nn.initializers.normal(stddev=0.1),
                                (self.vocab_size, self.embed_dim))
    if self.latent_dim > 0:
      self.init_c = nn.Dense(self.hidden, name="init_c")
      self.init_h = nn.Dense(self.hidden, name="init_h")
    self.lstm = LSTM(self.hidden, forget_bias=self.forget_bias, unroll=self.unroll,
                     dtype=self.dtype, remat=self.remat, name="lstm")
    self.out = nn.Dense(self.vocab_size, dtype=self.dtype, name="out")

  def initial_state(self, z: Array) -> tuple[Array, Array]:
    """``z[B, N_z]`` -> ``(C_0, H_0)``, each ``[B, H]`` float32."""
    if self.latent_dim == 0:
      return self.lstm.initial_state(z.shape[0])
    return (self.init_c(z).astype(jnp.float32), self.init_h(z).astype(jnp.float32))

  def logits(self, h: Array) -> Array:
    """``h[..., H]`` -> float32 word logits ``o[..., V]`` (forbidden words at -1e9)."""
    bias = jnp.asarray(forbidden_bias(self.vocab_size, self.forbid_ids))
    return self.out(h).astype(jnp.float32) + bias

  def step(self, carry: tuple[Array, Array], prev: Array, t: Array):
    """One free-running step.

    Args:
      carry: ``(c, h)``.
      prev: ``[B]`` int32 previous words.
      t: scalar int32 position of the word being generated (0-based).

    Returns:
      ``(carry', o_t[B, V])``.
    """
    x = jnp.take(self.embedding, prev, axis=0)
    if self.position_features:
      table = jnp.asarray(sinusoidal_positions(_MAX_POSITIONS, self.position_features))
      pos = jnp.broadcast_to(jnp.take(table, t, axis=0), (x.shape[0], self.position_features))
      x = jnp.concatenate([x, pos.astype(x.dtype)], axis=-1)
    carry = self.lstm.step(carry, x)
    return carry, self.logits(carry[1])

  def __call__(self, z: Array, tokens_in: Array) -> Array:
    """Teacher-forced logits: ``z[B, N_z]``, ``tokens_in[B, T]`` (``[start, y...]``) -> ``[B, T, V]``."""
    x = _with_positions(jnp.take(self.embedding, tokens_in, axis=0), self.position_features)
    ys, _ = self.lstm(x, initial=self.initial_state(z))
    return self.logits(ys)


#: rows of the position table a free-running generator can index (longer T would
#: index past it; no sentence configuration comes close).
_MAX_POSITIONS = 1024


class Rollout(NamedTuple):
  """What :func:`rollout` returns (each ``[B, T, ...]``).

  Attributes:
    soft: ``[B, T, V]`` soft one-hots ``x~_t`` (Eq. 2; forced blank after the first blank).
    hard: ``[B, T, V]`` straight-through hard one-hots (forward exactly one-hot,
      backward the soft sample's gradient; Fig. 2).
    tokens: ``[B, T]`` int32 words ``argmax x~_t``.
    logits: ``[B, T, V]`` generator outputs ``o_t``.
  """
  soft: Array
  hard: Array
  tokens: Array
  logits: Array


def rollout(generator: Generator, params, z: Array, key: Array, length: int, blank_id: int,
            gumbel_temperature: float | Array, word_temperature: float | Array) -> Rollout:
  """Free-running generation of Algorithm 1 (lines 3-11) as one ``lax.scan``.

  At step ``t``, with ``o_t`` the generator's output::

      p_theta = softmax(o_t / tau_2)
      x~_t    = softmax((log p_theta + g_t) / tau_1),  g_t ~ Gumbel(0, 1)     (Eq. 2)
      x~_t    = onehot(blank)  if argmax x~_{t-1} = blank                  (lines 4-5)
      x._t    = onehot(argmax x~_t) - SG(x~_t) + x~_t                       (line 9, VQ)
      input_{t+1} = SG(x._t)                                                (line 10)

  ``tau_1 = gumbel_temperature``, ``tau_2 = word_temperature`` (both may be
  traced). Differentiable with respect to ``params`` through ``soft``/``hard``
  (the fed-back input is the stop-gradient hard word, as in Algorithm 1).

  Args:
    generator: the module (static structure).
    params: its parameters.
    z: ``[B, N_z]`` latent codes (``[B, 0]`` for a language model).
    key: typed PRNG key; step ``t`` uses ``fold_in(key, t)``.
    length: T (static).
    blank_id: the blank word that ends a sentence.
    gumbel_temperature: tau_1 > 0.
    word_temperature: tau_2 > 0.

  Returns:
    :class:`Rollout`.
  """
  variables = {"params": params}
  batch = z.shape[0]
  vocab = generator.vocab_size
  carry0 = generator.apply(variables, z, method=Generator.initial_state)
  prev0 = jnp.full((batch,), generator.start_id, jnp.int32)
  done0 = jnp.zeros((batch,), bool)
  blank = jax.nn.one_hot(blank_id, vocab, dtype=jnp.float32)

  def body(state, t):
    carry, prev, done = state
    carry, o = generator.apply(variables, carry, prev, t, method=Generator.step)
    noise = jax.random.fold_in(key, t)
    soft = relax.gumbel_softmax(noise, o, temperature=gumbel_temperature,
                                word_temperature=word_temperature)
    soft = jnp.where(done[:, None], blank, soft)
    hard = relax.straight_through(soft)
    token = relax.first_argmax(soft)
    done = done | (token == blank_id)
    return (carry, token, done), (soft, hard, token, o)

  _, (soft, hard, tokens, logits) = jax.lax.scan(body, (carry0, prev0, done0),
                                                 jnp.arange(length, dtype=jnp.int32))
  swap = lambda x: jnp.swapaxes(x, 0, 1)
  return Rollout(swap(soft), swap(hard), swap(tokens), swap(logits))


def sample_tokens(generator: Generator, params, z: Array, key: Array, length: int,
                  blank_id: int, temperature: float | Array) -> Array:
  """Words only, at word temperature ``tau_2 = temperature`` (0 = greedy), one ``lax.scan``.

  ``argmax(log softmax(o / tau_2) + g) = argmax(o / tau_2 + g)`` is an exact
  sample from ``softmax(o / tau_2)`` for every ``tau_1`` (so ``tau_1`` plays no
  part, as in Kojima et al. Sec. 4.2); ``tau_2 = 0`` drops the noise and takes
  ``argmax(o)``. The blank rule applies. ``temperature`` may be traced, so a
  sweep compiles once. Returns ``[B, T]`` int32.
  """
  variables = {"params": params}
  batch = z.shape[0]
  temperature = jnp.asarray(temperature, jnp.float32)
  greedy = temperature <= 0.0
  scale = jnp.where(greedy, 1.0, temperature)
  carry0 = generator.apply(variables, z, method=Generator.initial_state)
  prev0 = jnp.full((batch,), generator.start_id, jnp.int32)
  done0 = jnp.zeros((batch,), bool)

  def body(state, t):
    carry, prev, done = state
    carry, o = generator.apply(variables, carry, prev, t, method=Generator.step)
    g = relax.gumbel_noise(jax.random.fold_in(key, t), o.shape, jnp.float32)
    token = relax.first_argmax(o / scale + jnp.where(greedy, 0.0, g))
    token = jnp.where(done, blank_id, token)
    done = done | (token == blank_id)
    return (carry, token, done), token

  _, tokens = jax.lax.scan(body, (carry0, prev0, done0), jnp.arange(length, dtype=jnp.int32))
  return jnp.swapaxes(tokens, 0, 1)


class Discriminator(nn.Module):
  """Per-prefix recurrent discriminator (ScratchGAN; Kojima et al. Eq. 1).

  ``e_t = dropout(x_t E)`` (``x_t`` a soft or exact one-hot, so generated and
  real text share one path, :func:`vedgan.relax.soft_embedding`), the LSTM reads
  ``[e_t; pos(t)]`` and ``logit_t = w h_t + b`` scores the prefix ``x_{<=t}``.
  Unidirectional, so ``logit_t`` depends on ``x_1 .. x_t`` only.

  Attributes:
    vocab_size, embed_dim: the embedding table ``[V, E]``.
    hidden: 64 in Appendix B.
    position_features: 8.
    dropout: on the word embeddings (0.1, Appendix B).
  """
  vocab_size: int
  embed_dim: int
  hidden: int
  position_features: int = 8
  dropout: float = 0.1
  forget_bias: float = 1.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """``x[B, T, V]`` one-hots (soft or exact) -> logits ``[B, T]`` float32."""
    table = self.param("embedding", nn.initializers.normal(stddev=0.1),
                       (self.vocab_size, self.embed_dim))
    e = relax.soft_embedding(x.astype(jnp.float32), table)
    e = nn.Dropout(self.dropout)(e, deterministic=not train)
    ys, _ = LSTM(self.hidden, forget_bias=self.forget_bias, unroll=self.unroll,
                 dtype=self.dtype, remat=self.remat,
                 name="lstm")(_with_positions(e, self.position_features))
    return nn.Dense(1, name="out")(ys)[..., 0].astype(jnp.float32)


class Reconstructor(nn.Module):
  """Recovers ``z`` from generated text: ``z^ = W h_T + b`` after an LSTM over
  ``[x._t E; pos(t)]`` (the hard one-hots' embeddings; Kojima et al. Eq. 3).

  Attributes:
    vocab_size, embed_dim: the embedding table.
    hidden: 128 in Appendix B.
    latent_dim: N_z.
    position_features: 8.
  """
  vocab_size: int
  embed_dim: int
  hidden: int
  latent_dim: int
  position_features: int = 8
  forget_bias: float = 1.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``x[B, T, V]`` (hard) one-hots -> ``z^[B, N_z]`` float32."""
    table = self.param("embedding", nn.initializers.normal(stddev=0.1),
                       (self.vocab_size, self.embed_dim))
    e = relax.soft_embedding(x.astype(jnp.float32), table)
    _, (_, h) = LSTM(self.hidden, forget_bias=self.forget_bias, unroll=self.unroll,
                     dtype=self.dtype, remat=self.remat,
                     name="lstm")(_with_positions(e, self.position_features))
    return nn.Dense(self.latent_dim, name="out")(h).astype(jnp.float32)
