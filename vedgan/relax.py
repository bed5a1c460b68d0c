"""Continuous relaxations of discrete word choices.

Pure functions on arrays (jax and numpy only): they work under ``jax.jit``,
``jax.vmap`` and ``jax.grad`` and make no assumption about the model that
produced the logits.

* :func:`gumbel_softmax` -- relaxed one-hot samples (Jang et al., 2017), with
  the two temperatures of the latent-space GAN (Kojima et al., Eq. 2) and an
  optional straight-through hard sample.
* :func:`first_argmax` -- ``jnp.argmax`` as two single-operand reductions,
  which XLA:CPU vectorises (its variadic value-and-index reduction it does not).
* :func:`gumbel_noise` and :func:`gumbel_max` -- standard Gumbel draws and the
  categorical samples of the Gumbel-max trick, with half the hashing of JAX's
  default threefry scheme (the noise of every rollout and sampled response).
* :func:`straight_through` -- the vector-quantisation trick of the latent-space
  GAN (Kojima et al., Fig. 2): a forward one-hot with the gradient of the soft
  vector.
* :func:`topk_softmax_embedding` -- the top-k softmax word-vector approximation
  of the dialogue GAN (Lopez Zorrilla et al., Eq. 8-9).
* :func:`soft_embedding` -- the probability-weighted average of all word
  vectors (what a discriminator sees when fed a soft one-hot).

Shapes use ``V`` for the vocabulary (or number of classes), ``D`` for the word
vector size and ``...`` for any leading batch/time axes.

The functions are wrapped in ``jax.jit`` (configuration flags such as ``hard``,
``axis`` and ``k`` are static), so a call outside ``jit`` compiles once per
input shape instead of dispatching op by op; inside your own ``jit``, ``vmap``
or ``grad`` they trace like any other jax function.
"""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "first_argmax",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_softmax",
    "straight_through",
    "topk_softmax_embedding",
    "TopKEmbedding",
    "soft_embedding",
]


def _compute_dtype(dtype):
  """At least float32 (bf16/fp16 are upcast, float64 is kept)."""
  return jnp.promote_types(dtype, jnp.float32)


@functools.partial(jax.jit, static_argnames=("axis",))
def first_argmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """The index of the largest entry along ``axis``, the lowest one on ties: the same
  int32 value as ``jnp.argmax`` for every input, NaNs included (the first NaN wins).

  Computed as ``min(where(x == max(x) or isnan(x), index, V))``: two reductions of one
  operand each, which XLA:CPU vectorises, instead of ``jnp.argmax``'s reduction of
  (value, index) pairs, which it runs element by element (225 ms of the latent GAN's
  3.3 s generator step at B 256, V 6577; docs/benchmarks.md). It is the argmax of the
  straight-through one-hot (Kojima et al., Fig. 2) and of the top-k GAN's word choice
  (Lopez Zorrilla et al., Eq. 3).

  Args:
    x: ``[..., V, ...]`` real array.
    axis: the axis to reduce.

  Returns:
    ``x``'s shape without ``axis``, int32.

  >>> import jax.numpy as jnp
  >>> print(first_argmax(jnp.array([[0.1, 0.9, 0.9], [3.0, jnp.nan, 1.0]])))
  [1 1]
  """
  x = jnp.asarray(x)
  axis = axis % x.ndim
  size = x.shape[axis]
  top = jnp.max(x, axis=axis, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
  hit = x == top
  if jnp.issubdtype(x.dtype, jnp.inexact):
    hit = hit | jnp.isnan(x)
  return jnp.min(jnp.where(hit, index, size), axis=axis)


def _original_threefry():
  """A context in which threefry keys turn into random words by JAX's original scheme."""
  switch = getattr(jax, "threefry_partitionable", None)
  return switch(False) if switch is not None else contextlib.nullcontext()


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def gumbel_noise(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Independent standard Gumbel draws ``g = -log(-log u)``, ``u ~ U(0, 1)``: the noise of
  the Gumbel-softmax (Kojima et al., Eq. 2; Jang et al., 2017) and of the Gumbel-max
  trick (:func:`gumbel_max`).

  Row ``i`` (the index over all axes but the last, in row-major order) is
  ``jax.random.gumbel(fold_in(key, i), shape[-1:])`` drawn with threefry's original
  counter scheme (``jax.threefry_partitionable(False)``), whatever the global setting.
  So a row's noise depends on the key and its index only, not on how many rows are
  drawn (the first five samples are the same whether five or five hundred are asked
  for), and each draw costs half the hashing of JAX's default (partitionable) scheme,
  which hashes a counter per 32-bit word and keeps one of the two words each hash
  returns: on one CPU core, 20 draws of ``[256, 6577]`` take 256 ms instead of 743 ms
  (docs/benchmarks.md). A key gives the same draws on every platform and device count.

  Args:
    key: a threefry PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``); another
      implementation's key draws as that implementation does.
    shape: the output shape, e.g. ``(B, V)``.
    dtype: a floating dtype.

  Returns:
    ``shape`` array of ``dtype``.

  >>> import jax
  >>> g = gumbel_noise(jax.random.key(0), (4, 25_000))
  >>> print(g.shape, round(float(g.mean()), 1))   # the mean is Euler's constant, 0.577
  (4, 25000) 0.6
  >>> bool((gumbel_noise(jax.random.key(0), (2, 25_000)) == g[:2]).all())
  True
  """
  shape = tuple(int(d) for d in shape)
  if not shape:
    return gumbel_noise(key, (1,), dtype)[0]
  rows = math.prod(shape[:-1])
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(rows, dtype=jnp.uint32))
  with _original_threefry():
    noise = jax.vmap(lambda k: jax.random.gumbel(k, shape[-1:], dtype))(keys)
  return noise.reshape(shape)


@functools.partial(jax.jit, static_argnames=("axis",))
def gumbel_max(key: jax.Array, logits: jax.Array, axis: int = -1) -> jax.Array:
  """Samples of ``Categorical(softmax(logits))`` by the Gumbel-max trick:
  ``argmax(logits + g)`` with ``g`` from :func:`gumbel_noise` (ties to the lowest index,
  :func:`first_argmax`), what ``jax.random.categorical`` computes with JAX's default
  hashing. The decoders' sampling draws its words with it (``decode.sample``: HappyBot's
  RL rollouts, Shin et al., Sec. 2.3, "sampling from P(w)"; MojiTalk's generations when
  ``stages.rl.rl_decode = "sample"``, Zhou & Wang, Algorithm 1).

  Args:
    key: a PRNG key.
    logits: ``[..., V, ...]`` unnormalised log-probabilities (``-inf`` excludes a class).
    axis: the category axis.

  Returns:
    ``logits``'s shape without ``axis``, int32.

  >>> import jax, jax.numpy as jnp
  >>> logits = jnp.log(jnp.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
  >>> s = gumbel_max(jax.random.key(0), jnp.broadcast_to(logits, (1000, 2, 3)))
  >>> print(s.shape, (s[:, 0] == 1).all(), ((s[:, 1] == 0) | (s[:, 1] == 2)).all())
  (1000, 2) True True
  """
  logits = jnp.asarray(logits)
  dtype = _compute_dtype(logits.dtype)
  return first_argmax(logits.astype(dtype) + gumbel_noise(key, logits.shape, dtype),
                      axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def straight_through(soft_one_hot: jax.Array, axis: int = -1) -> jax.Array:
  """Straight-through vector quantisation of a soft one-hot vector.

  Implements the "hard one-hot" of the latent-space GAN (Kojima et al.,
  Fig. 2 and Algorithm 1, VQ)::

      hard = onehot(argmax(s)) - stop_gradient(s) + s

  The forward value is *exactly* ``onehot(argmax(s))`` for any real input:
  the expression is evaluated as ``onehot + (s - stop_gradient(s))``, whose
  second term is an exact floating-point zero. (The literal left-to-right
  form is exact for probabilities in ``[0, 1]`` but not for arbitrary scores:
  in float32 ``(1 - 3.7) + 3.7 != 1``.) The backward pass is the identity:
  the gradient of anything downstream flows into ``s`` as if ``s`` itself had
  been used.

  Ties in the argmax go to the lowest index.

  Args:
    soft_one_hot: ``[..., V]`` float array, e.g. a Gumbel-softmax sample.
    axis: the category axis.

  Returns:
    ``[..., V]`` array of the same dtype, forward exactly one-hot.

  >>> import jax.numpy as jnp
  >>> s = jnp.array([0.2, 0.7, 0.1])
  >>> print(straight_through(s))
  [0. 1. 0.]
  >>> import jax
  >>> w = jnp.array([1.0, 2.0, 3.0])
  >>> print(jax.grad(lambda s: jnp.sum(w * straight_through(s)))(s))  # identity
  [1. 2. 3.]
  """
  s = jnp.asarray(soft_one_hot)
  index = first_argmax(s, axis=axis)
  hard = jax.nn.one_hot(index, s.shape[axis], dtype=s.dtype, axis=axis)
  return hard + (s - jax.lax.stop_gradient(s))


@functools.partial(jax.jit, static_argnames=("hard", "axis"))
def gumbel_softmax(
    key: jax.Array,
    logits: jax.Array,
    temperature: float | jax.Array = 1.0,
    hard: bool = False,
    word_temperature: float | jax.Array = 1.0,
    axis: int = -1,
) -> jax.Array:
  """Draws a relaxed one-hot sample from ``softmax(logits / word_temperature)``.

  Implements the Gumbel-softmax of the latent-space GAN (Kojima et al., Eq. 2;
  Jang et al., 2017) with its two temperatures::

      p     = softmax(o / tau_2)                  # word distribution
      x~    = softmax((log p + g) / tau_1),  g ~ Gumbel(0, 1)

  where ``o`` are the generator's ``logits``, ``tau_2`` is ``word_temperature``
  and ``tau_1`` is ``temperature`` (the Gumbel-softmax temperature). Kojima et
  al. train with ``tau_1 = tau_2 = 0.1`` (their Appendix B) and sweep only
  ``tau_2`` when generating (their Sec. 4.2)::

      x = gumbel_softmax(key, o, temperature=0.1, word_temperature=0.1)

  ``argmax(x)`` is an exact sample from ``p`` for every ``tau_1`` (the
  Gumbel-max trick); as ``tau_1 -> 0`` the soft sample approaches that one-hot.
  With ``hard=True`` the result is :func:`straight_through` of the soft
  sample: forward exactly one-hot, backward the soft sample's gradient
  (Kojima et al., Fig. 2).

  Both temperatures may be traced arrays (e.g. from a
  :mod:`vedgan.schedules` schedule) and must be strictly positive; greedy
  decoding (``tau_2 = 0``) is ``argmax(logits)`` and belongs in the decoder.
  The computation runs in at least float32 and the result has the dtype of
  ``logits``.

  Args:
    key: a PRNG key (``jax.random.key``).
    logits: ``[..., V]`` unnormalised word scores ``o``.
    temperature: Gumbel temperature ``tau_1 > 0``, scalar or broadcastable to
      ``logits.shape[:-1] + (1,)``.
    hard: if True return the straight-through one-hot.
    word_temperature: word-distribution temperature ``tau_2 > 0``.
    axis: the category axis.

  Returns:
    ``[..., V]`` relaxed one-hot sample (rows sum to 1), or the straight-through
    one-hot if ``hard``.

  >>> import jax, jax.numpy as jnp
  >>> key = jax.random.key(0)
  >>> logits = jnp.log(jnp.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]))
  >>> x = gumbel_softmax(key, logits, temperature=0.5)
  >>> x.shape, bool(jnp.allclose(x.sum(-1), 1.0))
  ((2, 3), True)
  >>> h = gumbel_softmax(key, logits, temperature=0.5, hard=True)
  >>> print(h.sum(-1), bool((jnp.argmax(h, -1) == jnp.argmax(x, -1)).all()))
  [1. 1.] True
  """
  logits = jnp.asarray(logits)
  dtype = _compute_dtype(logits.dtype)
  scaled = logits.astype(dtype) / jnp.asarray(word_temperature, dtype)
  log_p = jax.nn.log_softmax(scaled, axis=axis)
  gumbel = gumbel_noise(key, log_p.shape, dtype)
  soft = jax.nn.softmax((log_p + gumbel) / jnp.asarray(temperature, dtype),
                        axis=axis)
  if hard:
    soft = straight_through(soft, axis=axis)
  return soft.astype(logits.dtype)


class TopKEmbedding(NamedTuple):
  """Result of :func:`topk_softmax_embedding`.

  Attributes:
    vector: ``[..., D]`` approximated word vector ``u~_t`` (Eq. 9).
    indices: ``[..., k]`` int32 indices ``k_t`` of the k highest logits, in
      decreasing order of logit.
    weights: ``[..., k]`` top-k softmax probabilities ``p~_t`` (sum to 1).
  """

  vector: jax.Array
  indices: jax.Array
  weights: jax.Array


@functools.partial(jax.jit, static_argnames=("k",))
def topk_softmax_embedding(
    logits: jax.Array, embedding: jax.Array, k: int
) -> TopKEmbedding:
  """Top-k softmax word-vector approximation of the dialogue GAN.

  Implements Lopez Zorrilla et al., Eq. 8-9::

      k_t, f~_t = top-k(f_t)                 # indices and values of the k largest
      p~_t      = softmax(f~_t)              # renormalised over those k only
      u~_t      = sum_i p~_t[i] * W[k_t[i]]  # Eq. 9

  The result is differentiable with respect to ``logits`` (through the k
  selected entries; the others get zero gradient) and ``embedding`` (through
  the k selected rows). ``k = 1`` gives the argmax word's vector (with zero
  gradient to the logits); ``k = V`` gives :func:`soft_embedding` of
  ``softmax(logits)``. The paper uses ``k = 2``.

  Args:
    logits: ``[..., V]`` unnormalised word scores ``f_t``.
    embedding: ``[V, D]`` word-vector matrix ``W``.
    k: number of words kept, an integer with ``1 <= k <= V`` (static under
      ``jit``).

  Returns:
    A :class:`TopKEmbedding` ``(vector [..., D], indices [..., k],
    weights [..., k])``; it unpacks like a tuple.

  >>> import jax.numpy as jnp
  >>> W = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  >>> f = jnp.log(jnp.array([0.3, 0.6, 0.1]))
  >>> vec, idx, w = topk_softmax_embedding(f, W, k=2)
  >>> print(idx, jnp.round(w, 4), jnp.round(vec, 4))
  [1 0] [0.6667 0.3333] [0.3333 0.6667]
  """
  logits = jnp.asarray(logits)
  embedding = jnp.asarray(embedding)
  vocab = logits.shape[-1]
  if embedding.ndim != 2 or embedding.shape[0] != vocab:
    raise ValueError(
        f"embedding must be [V, D] with V = {vocab}, got {embedding.shape}")
  if (not isinstance(k, numbers.Integral) or isinstance(k, bool)
      or not 1 <= k <= vocab):
    raise ValueError(f"k must be an integer in [1, {vocab}], got {k!r}")
  k = int(k)
  values, indices = jax.lax.top_k(logits, k)
  weights = jax.nn.softmax(values.astype(_compute_dtype(values.dtype)), axis=-1)
  vectors = jnp.take(embedding, indices, axis=0)  # [..., k, D]
  out_dtype = jnp.result_type(embedding.dtype, logits.dtype)
  vector = jnp.einsum("...k,...kd->...d", weights.astype(out_dtype),
                      vectors.astype(out_dtype))
  return TopKEmbedding(vector, indices.astype(jnp.int32),
                       weights.astype(logits.dtype))


@jax.jit
def soft_embedding(probs: jax.Array, embedding: jax.Array) -> jax.Array:
  """Probability-weighted average of all word vectors, ``probs @ W``.

  The differentiable input a discriminator receives when it is fed a soft
  one-hot instead of a token (Kojima et al., Fig. 1: the discriminator reads
  the Gumbel-softmax soft one-hots; Lopez Zorrilla et al., Eq. 9 with all
  ``V`` words). Feeding a :func:`straight_through` one-hot gives exactly the
  sampled word's vector in the forward pass.

  Args:
    probs: ``[..., V]`` weights over the vocabulary (usually summing to 1).
    embedding: ``[V, D]`` word-vector matrix.

  Returns:
    ``[..., D]`` array.

  >>> import jax.numpy as jnp
  >>> W = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  >>> print(soft_embedding(jnp.array([0.5, 0.5, 0.0]), W))
  [0.5 0.5]
  """
  probs = jnp.asarray(probs)
  embedding = jnp.asarray(embedding)
  if embedding.ndim != 2 or embedding.shape[0] != probs.shape[-1]:
    raise ValueError(
        f"embedding must be [V, D] with V = {probs.shape[-1]}, got "
        f"{embedding.shape}")
  return jnp.einsum("...v,vd->...d", probs, embedding)
