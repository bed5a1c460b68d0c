"""Losses of the five papers as pure, per-example functions.

Every function here is a pure function of arrays (jax and numpy only), safe
under ``jax.jit``, ``jax.vmap`` and ``jax.grad``, in the style of ``optax``
losses and ``rlax`` policy gradients:

* outputs are **per example** (per sequence, per latent vector, ...); the call
  site reduces them (mean over the batch, ``lax.pmean`` across devices, ...);
* masks are **explicit** arguments: ``mask[..., t]`` is 1 (or True) for a real
  token and 0 (or False) for padding. Masked positions are excluded with
  ``jnp.where``, so whatever sits there (padding ids, ``-inf`` log-probs, NaN)
  cannot leak into the value. Non-binary masks act as per-token weights;
* sums, not means, over time: :func:`sequence_cross_entropy` also returns token
  counts so that a mean over tokens stays exact under data parallelism
  (``psum(nll_sum) / psum(count)``).

Shapes: ``B`` batch, ``T`` time, ``V`` vocabulary, ``D`` latent size; ``...``
stands for any leading axes.

The functions are wrapped in ``jax.jit`` (flags such as ``mode`` and
``non_saturating`` are static), so a call outside ``jit`` compiles once per
input shape instead of dispatching op by op; inside your own ``jit``,
``vmap`` or ``grad`` they trace like any other jax function. Softmaxes and
sigmoids run in at least float32.

Paper names used in docstrings: *MojiTalk* (Zhou & Wang 2018, supplement),
*HappyBot* (Shin et al. 2019), *collaborative VED* (Shen et al.),
*latent-space GAN* (Kojima et al.), *dialogue GAN* (Lopez Zorrilla et al.,
top-k softmax).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = [
    # likelihood
    "sequence_cross_entropy",
    "chunked_softmax_cross_entropy",
    "chunked_sequence_cross_entropy",
    "token_log_probs",
    "bow_loss",
    "word_dropout",
    # latent variables
    "gaussian_kl",
    "gaussian_sample",
    "free_bits",
    "kl_threshold",
    "gaussian_reconstruction_loss",
    # REINFORCE
    "reinforce_loss",
    "baseline_loss",
    "mixed_loss",
    "discounted_returns",
    "label_rank",
    "rank_weight",
    # GANs
    "prefix_discriminator_loss",
    "prefix_generator_loss",
    "dialogue_discriminator_loss",
    "dialogue_generator_loss",
    "latent_reconstruction_loss",
]


# --------------------------------------------------------------------------
# helpers


def _compute_dtype(dtype):
  """At least float32 (bf16/fp16 are upcast, float64 is kept)."""
  return jnp.promote_types(dtype, jnp.float32)


def _upcast(x):
  x = jnp.asarray(x)
  return x.astype(_compute_dtype(x.dtype))


def _check_same_shape(name_a, a, name_b, b):
  if a.shape != b.shape:
    raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must have "
                     "the same shape")


def _check_shape(name, a, shape):
  if a.shape != tuple(shape):
    raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")


def _masked_sum(values, mask, axis=-1):
  """Sum of ``values * mask`` over ``axis``; masked entries contribute exactly 0."""
  mask = jnp.asarray(mask)
  weighted = values * mask.astype(values.dtype)
  return jnp.sum(jnp.where(mask != 0, weighted, jnp.zeros_like(weighted)),
                 axis=axis)


def _gather_last(log_probs, targets):
  """``log_probs[..., targets]``; out-of-range ids (padding) are clipped."""
  safe = jnp.clip(targets, 0, log_probs.shape[-1] - 1)
  return jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]


def _per_step(x, like, name):
  """Broadcasts a per-sequence ``[...]`` array to per-step ``[..., T]``."""
  x = jnp.asarray(x)
  if x.ndim == like.ndim - 1:
    x = x[..., None]
  try:
    return jnp.broadcast_to(x, like.shape)
  except ValueError as e:
    raise ValueError(f"{name} of shape {x.shape} does not broadcast to "
                     f"{like.shape}") from e


# --------------------------------------------------------------------------
# likelihood terms


def sequence_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    label_smoothing: float | jax.Array = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Per-sequence summed negative log-likelihood and token count.

  The MLE / reconstruction term of every paper: HappyBot Eq. 6 and dialogue
  GAN Eq. 4 (``-sum_t log p_t[y_t]``, divided by the length at the call
  site), the ``-E_q[log p(x|z,c)]`` term of collaborative VED Eq. 2 and of
  MojiTalk's CVAE objective::

      nll_sum[b] = sum_t mask[b,t] * -log softmax(logits[b,t])[targets[b,t]]
      count[b]   = sum_t mask[b,t]

  Returning sums and counts (not a mean) keeps the per-token mean exact under
  data parallelism: ``loss = psum(nll_sum.sum()) / psum(count.sum())``.

  The log-softmax is computed in float32 even when ``logits`` are bfloat16.
  With ``label_smoothing = eps`` the target distribution is
  ``(1 - eps) * onehot(y) + eps / V`` (Szegedy et al., 2016).

  Args:
    logits: ``[B, T, V]`` (or ``[..., T, V]``) unnormalised scores.
    targets: ``[B, T]`` integer ids. Ids at masked positions may be anything
      (they are clipped before the gather and then masked out).
    mask: ``[B, T]`` 1/True for real tokens, 0/False for padding.
    label_smoothing: ``eps`` in ``[0, 1)``.

  Returns:
    ``(nll_sum [B], token_count [B])``, both float32 (float64 for float64
    logits).

  >>> import jax.numpy as jnp
  >>> logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1],
  ...                               [1/3, 1/3, 1/3]]]))
  >>> nll, n = sequence_cross_entropy(logits, jnp.array([[0, 1, 2]]),
  ...                                 jnp.array([[1, 1, 0]]))
  >>> print(jnp.round(nll, 4), n)  # -log 0.5 - log 0.8; the padding is ignored
  [0.9163] [2.]
  """
  # A literal 0 takes the exact path (no smoothing term, so -inf logits of
  # banned words stay harmless); anything else, traced values included, is
  # applied.
  smooth = not (isinstance(label_smoothing, (int, float))
                and label_smoothing == 0)
  return _sequence_cross_entropy(logits, targets, mask, label_smoothing,
                                 smooth=smooth)


@functools.partial(jax.jit, static_argnames=("smooth",))
def _sequence_cross_entropy(logits, targets, mask, label_smoothing, smooth):
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets)
  mask = jnp.asarray(mask)
  _check_shape("targets", targets, logits.shape[:-1])
  _check_shape("mask", mask, targets.shape)
  dtype = _compute_dtype(logits.dtype)
  log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  nll = -_gather_last(log_probs, targets)
  if smooth:
    eps = jnp.asarray(label_smoothing, dtype)
    nll = (1.0 - eps) * nll - eps * jnp.mean(log_probs, axis=-1)
  count = jnp.sum(mask.astype(dtype), axis=-1)
  return _masked_sum(nll, mask), count


def chunked_softmax_cross_entropy(
    hidden: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None,
    targets: jax.Array,
    mask: jax.Array,
    chunk_size: int = 1024,
) -> jax.Array:
  """Per-row softmax cross-entropy of ``logits = hidden @ weight + bias``, chunk by chunk.

  The same value as ``-log softmax(hidden @ weight + bias)[targets]`` (the
  per-token term of :func:`sequence_cross_entropy`: the MLE loss of HappyBot
  Eq. 6 and of the dialogue GAN's Eq. 4), but the ``[N, V]`` logits
  are never materialised: a ``lax.scan`` walks over ``chunk_size`` rows at a
  time, and its body is wrapped in ``jax.checkpoint`` so the backward pass
  recomputes each chunk's logits instead of storing them. Peak temporary memory
  is about ``chunk_size * V`` floats (forward and backward) instead of
  ``N * V``; the cost is one extra ``[chunk, H] x [H, V]`` matmul per chunk in
  the backward pass. Worth it when ``N * V * 4`` bytes (``N = B * T`` target
  tokens) is a large share of accelerator memory, e.g. a 30k vocabulary with
  thousands of tokens per device; for small vocabularies the plain path is
  faster.

  The matmul runs in ``hidden.dtype`` (bfloat16 under mixed precision) with
  float32 accumulation; the log-sum-exp and the result are float32.

  Args:
    hidden: ``[N, H]`` final features (e.g. decoder outputs of all ``B * T``
      teacher-forced positions, flattened).
    weight: ``[H, V]`` output projection (a tied embedding table is ``E.T``).
    bias: ``[V]`` or None.
    targets: ``[N]`` integer ids (clipped to ``[0, V)``; masked rows may hold anything).
    mask: ``[N]`` 1 for real tokens, 0 for padding (non-binary values weigh rows).
    chunk_size: rows per chunk (static); ``N`` is padded up to a multiple.

  Returns:
    ``nll[N]`` float32 (float64 for float64 inputs),
    ``mask * (logsumexp(logits) - logits[target])``, 0 where masked.

  >>> import jax.numpy as jnp
  >>> h = jnp.eye(2)
  >>> w = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
  >>> nll = chunked_softmax_cross_entropy(h, w, None, jnp.array([0, 1]),
  ...                                     jnp.array([1, 1]), chunk_size=1)
  >>> print([round(float(x), 4) for x in nll])  # -log 0.5, -log 0.8
  [0.6931, 0.2231]
  """
  hidden, weight, targets, mask = map(jnp.asarray, (hidden, weight, targets, mask))
  if hidden.ndim != 2 or weight.ndim != 2 or weight.shape[0] != hidden.shape[1]:
    raise ValueError(f"hidden {hidden.shape} and weight {weight.shape} must be [N, H] and "
                     "[H, V]")
  _check_shape("targets", targets, hidden.shape[:1])
  _check_shape("mask", mask, hidden.shape[:1])
  if bias is not None:
    bias = jnp.asarray(bias)
    _check_shape("bias", bias, weight.shape[1:])
  if int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  return _chunked_ce(hidden, weight, bias, targets, mask, chunk_size=int(chunk_size))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _chunked_ce(hidden, weight, bias, targets, mask, chunk_size):
  n, features = hidden.shape
  vocab = weight.shape[1]
  chunk = min(chunk_size, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  acc = jnp.promote_types(hidden.dtype, jnp.float32)  # float32, or float64 under x64
  mask = mask.astype(acc)
  if pad:
    hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
    targets = jnp.pad(targets, (0, pad))
    mask = jnp.pad(mask, (0, pad))
  xs = (hidden.reshape(num_chunks, chunk, features), targets.reshape(num_chunks, chunk),
        mask.reshape(num_chunks, chunk))

  @jax.checkpoint
  def chunk_nll(w, b, h, t, m):
    logits = jnp.dot(h, w.astype(h.dtype), preferred_element_type=acc).astype(acc)
    if b is not None:
      logits = logits + b.astype(acc)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.clip(t, 0, vocab - 1)[:, None], axis=-1)[:, 0]
    return jnp.where(m != 0, (lse - picked) * m, 0.0)

  def body(carry, x):
    return carry, chunk_nll(weight, bias, *x)

  _, nll = jax.lax.scan(body, None, xs)
  return nll.reshape(-1)[:n]


def chunked_sequence_cross_entropy(
    hidden: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None,
    targets: jax.Array,
    mask: jax.Array,
    chunk_size: int = 1024,
) -> tuple[jax.Array, jax.Array]:
  """:func:`sequence_cross_entropy` of ``hidden @ weight + bias`` without ``[B, T, V]`` logits.

  The teacher-forced MLE loss (HappyBot Eq. 6, dialogue GAN Eq. 4) for large
  vocabularies. Flattens ``[B, T]`` to ``N = B * T`` rows and calls
  :func:`chunked_softmax_cross_entropy` (see there for memory and cost).

  Args:
    hidden: ``[B, T, H]``; weight ``[H, V]``; bias ``[V]`` or None.
    targets, mask: ``[B, T]``.
    chunk_size: rows (tokens) per chunk.

  Returns:
    ``(nll_sum [B], token_count [B])`` float32, as :func:`sequence_cross_entropy`.

  >>> import jax.numpy as jnp
  >>> h = jnp.zeros((1, 3, 4))                      # uniform logits over V = 5
  >>> s, n = chunked_sequence_cross_entropy(h, jnp.ones((4, 5)), None, jnp.zeros((1, 3), int),
  ...                                       jnp.array([[1, 1, 0]]), chunk_size=2)
  >>> print(round(float(s[0]), 4), float(n[0]))     # 2 * log 5
  3.2189 2.0
  """
  hidden, targets, mask = map(jnp.asarray, (hidden, targets, mask))
  _check_shape("targets", targets, hidden.shape[:-1])
  _check_shape("mask", mask, targets.shape)
  lead = targets.shape
  nll = chunked_softmax_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, bias,
                                      targets.reshape(-1), mask.reshape(-1), chunk_size)
  return nll.reshape(lead).sum(axis=-1), mask.astype(jnp.float32).sum(axis=-1)


@jax.jit
def token_log_probs(
    logits: jax.Array,
    tokens: jax.Array,
    temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """Log-probability of each chosen token under ``softmax(logits / tau)``.

  ``log P(w_t)`` of HappyBot Eq. 5 and 9 (the policy is
  ``softmax((V m_t + b) / tau)``) and ``log P`` of MojiTalk Algorithm 1,
  line 11: the ``log_probs`` input of :func:`reinforce_loss`. Always a
  log-*softmax* (computed in float32), never the log of raw logits.

  Args:
    logits: ``[..., T, V]`` unnormalised scores.
    tokens: ``[..., T]`` integer ids of the sampled tokens.
    temperature: softmax temperature ``tau > 0`` (HappyBot uses 0.4).

  Returns:
    ``[..., T]`` log-probabilities (float32 for float32/bf16 logits).

  >>> import jax.numpy as jnp
  >>> logits = jnp.log(jnp.array([[0.25, 0.75], [0.5, 0.5]]))
  >>> print(jnp.round(jnp.exp(token_log_probs(logits, jnp.array([1, 0]))), 4))
  [0.75 0.5 ]
  """
  logits = jnp.asarray(logits)
  tokens = jnp.asarray(tokens)
  _check_shape("tokens", tokens, logits.shape[:-1])
  dtype = _compute_dtype(logits.dtype)
  scaled = logits.astype(dtype) / jnp.asarray(temperature, dtype)
  return _gather_last(jax.nn.log_softmax(scaled, axis=-1), tokens)


@jax.jit
def bow_loss(bow_logits: jax.Array, targets: jax.Array,
             mask: jax.Array) -> jax.Array:
  """Bag-of-words loss: order-free NLL of the response from one distribution.

  Implements MojiTalk supplement Eq. 1-2 (Zhao et al., 2017)::

      log p(x_bow | z, c) = sum_t log softmax(f(z, c))[x_t]        # Eq. 1
      bow_loss            = -log p(x_bow | z, c)                    # Eq. 2 term

  ``bow_logits`` is one vector per example (the BoW head's output, e.g. a
  bias-free linear layer on ``[z; c]``) scored against every target token.
  Add it to the negative ELBO (MojiTalk uses weight 1).

  Args:
    bow_logits: ``[B, V]`` (or ``[..., V]``) logits ``f(z, c)``.
    targets: ``[B, T]`` (or ``[..., T]``) integer token ids of the response.
    mask: ``[B, T]`` 1/True for real tokens.

  Returns:
    ``[B]`` per-example summed negative log-likelihood (float32).

  >>> import jax.numpy as jnp
  >>> f = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  >>> print(jnp.round(bow_loss(f, jnp.array([[0, 0, 1]]),
  ...                          jnp.array([[1, 1, 0]])), 4))  # -2 log 0.5
  [1.3863]
  """
  bow_logits = jnp.asarray(bow_logits)
  targets = jnp.asarray(targets)
  mask = jnp.asarray(mask)
  _check_same_shape("mask", mask, "targets", targets)
  if bow_logits.shape[:-1] != targets.shape[:-1]:
    raise ValueError(f"bow_logits {bow_logits.shape} and targets "
                     f"{targets.shape} must share leading axes")
  log_probs = jax.nn.log_softmax(
      bow_logits.astype(_compute_dtype(bow_logits.dtype)), axis=-1)
  safe = jnp.clip(targets, 0, log_probs.shape[-1] - 1)
  token_lp = jnp.take_along_axis(log_probs, safe, axis=-1)  # [..., T]
  return -_masked_sum(token_lp, mask)


@jax.jit
def word_dropout(
    key: jax.Array,
    tokens: jax.Array,
    rate: float | jax.Array,
    unk_id: int,
    mask: jax.Array,
) -> jax.Array:
  """Replaces decoder-input tokens by ``<unk>`` with probability ``rate``.

  Word drop-out of Bowman et al. (2016), used as "DO" in collaborative VED
  (Sec. "Current approaches"; rate 25%, training only) to weaken the decoder
  so that it relies on the latent variable. Each position with a nonzero
  ``mask`` is replaced independently; positions with ``mask == 0`` are never
  touched (pass a mask that is 0 on padding and on the start token you want to
  keep).

  Args:
    key: a PRNG key.
    tokens: ``[B, T]`` (any shape) integer token ids.
    rate: drop probability in ``[0, 1]`` (may be a traced scalar).
    unk_id: id written at dropped positions.
    mask: same shape as ``tokens``; 0/False marks positions never dropped.

  Returns:
    Array like ``tokens``.

  >>> import jax, jax.numpy as jnp
  >>> toks = jnp.array([[1, 5, 6, 7, 0]])
  >>> mask = jnp.array([[0, 1, 1, 1, 0]])   # keep <s>, never touch padding
  >>> print(word_dropout(jax.random.key(0), toks, 1.0, 3, mask))
  [[1 3 3 3 0]]
  """
  tokens = jnp.asarray(tokens)
  mask = jnp.asarray(mask)
  _check_same_shape("mask", mask, "tokens", tokens)
  drop = jax.random.bernoulli(key, rate, tokens.shape) & (mask != 0)
  return jnp.where(drop, jnp.asarray(unk_id, tokens.dtype), tokens)


# --------------------------------------------------------------------------
# latent variables


@jax.jit
def gaussian_kl(
    mean_q: jax.Array,
    logvar_q: jax.Array,
    mean_p: jax.Array | None = None,
    logvar_p: jax.Array | None = None,
) -> jax.Array:
  """KL(q || p) between diagonal Gaussians, per dimension.

  The KL term of the (conditional) VAE bound: collaborative VED Eq. 1-2 and
  the KL terms of Eq. 6, 8, 9; MojiTalk's ``KL(q(z|x,c) || p(z|c))``::

      KL_d = 0.5 * (logvar_p - logvar_q
                    + (exp(logvar_q) + (mean_q - mean_p)^2) / exp(logvar_p) - 1)

  With ``mean_p`` / ``logvar_p`` left as None the prior is N(0, I) (each may
  be given alone). Sum over the last axis for the KL of a latent vector (or
  use :func:`free_bits`).

  Args:
    mean_q: ``[..., D]`` posterior mean.
    logvar_q: ``[..., D]`` posterior log-variance.
    mean_p: ``[..., D]`` prior mean, or None for 0.
    logvar_p: ``[..., D]`` prior log-variance, or None for 0.

  Returns:
    ``[..., D]`` non-negative KL per dimension (nats).

  >>> import jax.numpy as jnp
  >>> print(gaussian_kl(jnp.array([0.0, 1.0]), jnp.array([0.0, 0.0])))
  [0.  0.5]
  >>> print(gaussian_kl(jnp.array([1.0]), jnp.array([0.0]),
  ...                   jnp.array([1.0]), jnp.array([0.0])))
  [0.]
  """
  mean_q = jnp.asarray(mean_q)
  logvar_q = jnp.asarray(logvar_q)
  mean_p = jnp.zeros((), mean_q.dtype) if mean_p is None else jnp.asarray(mean_p)
  logvar_p = (jnp.zeros((), logvar_q.dtype) if logvar_p is None
              else jnp.asarray(logvar_p))
  return 0.5 * (logvar_p - logvar_q + jnp.exp(logvar_q - logvar_p)
                + jnp.square(mean_q - mean_p) * jnp.exp(-logvar_p) - 1.0)


@jax.jit
def gaussian_sample(key: jax.Array, mean: jax.Array,
                    logvar: jax.Array) -> jax.Array:
  """Reparameterised sample ``z = mean + exp(logvar / 2) * eps``, eps ~ N(0, I).

  The reparameterisation trick (Kingma & Welling, 2014) behind the
  expectations over ``q`` in collaborative VED Eq. 1, 8 and 9 and MojiTalk's
  ``E_q`` in supplement Eq. 2 (its recognition and prior networks output a
  mean and log-variance); gradients flow to ``mean`` and ``logvar``.

  Args:
    key: a PRNG key.
    mean: ``[..., D]``.
    logvar: ``[..., D]`` (broadcastable with ``mean``).

  Returns:
    ``[..., D]`` sample with the broadcast shape and dtype of the inputs.

  >>> import jax, jax.numpy as jnp
  >>> z = gaussian_sample(jax.random.key(0), jnp.zeros((1000, 2)),
  ...                     jnp.log(jnp.full((1000, 2), 4.0)))
  >>> z.shape, bool(jnp.abs(z.std() - 2.0) < 0.2)
  ((1000, 2), True)
  """
  mean = jnp.asarray(mean)
  logvar = jnp.asarray(logvar)
  shape = jnp.broadcast_shapes(mean.shape, logvar.shape)
  dtype = jnp.result_type(mean.dtype, logvar.dtype)
  eps = jax.random.normal(key, shape, dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


@functools.partial(jax.jit, static_argnames=("mode",))
def free_bits(kl_per_dim: jax.Array, threshold: float | jax.Array,
              mode: str = "per_dim") -> jax.Array:
  """KL term with a free-bits floor (Kingma et al., 2016).

  The "FB" and "FB-all" baselines of collaborative VED (Sec. "Current
  approaches" and Experiments: 0.01 per dimension, or 5 for the whole
  latent)::

      mode="per_dim":  sum_d max(threshold, KL_d)
      mode="total":    max(threshold, sum_d KL_d)

  Below the floor the KL gets no gradient, so the encoder is free to use that
  much information. ``threshold`` is in the units of ``kl_per_dim`` (nats for
  :func:`gaussian_kl`; multiply bits by ``log 2``). The function reduces only
  the last axis: pass per-example KLs for a per-example floor, or
  ``kl.mean(0)`` for Kingma et al.'s floor on the minibatch average.

  Args:
    kl_per_dim: ``[..., D]`` KL per latent dimension.
    threshold: the floor ``lambda``.
    mode: ``"per_dim"`` or ``"total"``.

  Returns:
    ``[...]`` KL term to add to the loss.

  >>> import jax.numpy as jnp
  >>> kl = jnp.array([0.001, 0.5, 2.0])
  >>> print(free_bits(kl, 0.01), free_bits(kl, 5.0, mode="total"))
  2.51 5.0
  """
  kl_per_dim = jnp.asarray(kl_per_dim)
  if mode == "per_dim":
    return jnp.sum(jnp.maximum(kl_per_dim, threshold), axis=-1)
  if mode == "total":
    return jnp.maximum(jnp.sum(kl_per_dim, axis=-1), threshold)
  raise ValueError(f"mode must be 'per_dim' or 'total', got {mode!r}")


@jax.jit
def kl_threshold(kl: jax.Array, alpha: float | jax.Array) -> jax.Array:
  """``max(alpha, KL)``: the KL constraint of the collaborative VED AE phase.

  Implements the first term of collaborative VED Eq. 9: the KL of the CVAE
  posterior only pushes back (has a gradient) once it exceeds ``alpha``
  (the paper uses ``alpha = 5`` nats per utterance). Elementwise.

  Args:
    kl: ``[...]`` KL values (e.g. ``gaussian_kl(...).sum(-1)``).
    alpha: the threshold.

  Returns:
    ``[...]``.

  >>> import jax.numpy as jnp
  >>> print(kl_threshold(jnp.array([3.0, 7.0]), 5.0))
  [5. 7.]
  """
  return jnp.maximum(alpha, jnp.asarray(kl))


@jax.jit
def gaussian_reconstruction_loss(prediction: jax.Array,
                                 target: jax.Array) -> jax.Array:
  """``0.5 * ||prediction - target||^2``: NLL of ``target`` under N(prediction, I).

  The reconstruction term of the collaborative VED CVAE phase, Eq. 8
  (``1/2 ||g(eps) - z~||^2`` with ``p(z|eps, c) = N(z~, I)``), up to the
  constant ``D/2 log 2 pi``. Gradients reach both arguments; stop the target's
  gradient at the call site if the encoder that produced ``z~`` is frozen.

  Args:
    prediction: ``[..., D]``.
    target: ``[..., D]``.

  Returns:
    ``[...]``.

  >>> import jax.numpy as jnp
  >>> print(gaussian_reconstruction_loss(jnp.array([1.0, 2.0]),
  ...                                    jnp.array([0.0, 0.0])))
  2.5
  """
  diff = jnp.asarray(prediction) - jnp.asarray(target)
  return 0.5 * jnp.sum(jnp.square(diff), axis=-1)


# --------------------------------------------------------------------------
# REINFORCE


@jax.jit
def reinforce_loss(
    log_probs: jax.Array,
    rewards: jax.Array,
    baseline: jax.Array | None,
    mask: jax.Array,
) -> jax.Array:
  """REINFORCE surrogate loss with a stop-gradient advantage, per sequence.

  Implements HappyBot Eq. 9 (without its ``1/T``) and the policy term of
  MojiTalk Algorithm 1, line 11 (Williams, 1992)::

      adv_t   = stop_gradient(R_t - b_t)
      loss[b] = -sum_t mask_t * adv_t * log P(w_t)

  Its gradient is an unbiased estimate of ``-grad E[R]`` for any baseline
  that does not depend on the sampled token ``w_t``; the stop-gradient keeps
  the policy gradient from flowing into the reward or baseline networks
  (train the baseline with :func:`baseline_loss`). Divide by the length (or
  token count) at the call site for HappyBot's ``1/T``.

  For MojiTalk's ``J' = alpha (R - r) sum_t log P`` pass
  ``rewards=alpha * R`` and ``baseline=alpha * r`` (both ``[B]``, see
  :func:`rank_weight`); its hybrid objective ``L'' = L' - lambda J'`` is then
  ``L' + lambda * reinforce_loss(...)``.

  Args:
    log_probs: ``[B, T]`` log-probabilities of the sampled tokens
      (:func:`token_log_probs`).
    rewards: ``[B]`` sequence reward (copied to every step) or ``[B, T]``
      per-step returns (:func:`discounted_returns`).
    baseline: None, ``[B]`` or ``[B, T]`` (e.g. HappyBot's per-step
      ``R^_t = W_r m_t + b_r``, Eq. 7).
    mask: ``[B, T]`` 1/True for generated tokens.

  Returns:
    ``[B]`` per-sequence loss.

  >>> import jax, jax.numpy as jnp
  >>> lp = jnp.log(jnp.array([[0.5, 0.25, 0.9]]))
  >>> loss = reinforce_loss(lp, jnp.array([2.0]), jnp.array([[1.0, 1.5, 0.0]]),
  ...                       jnp.array([[1, 1, 0]]))
  >>> print(jnp.round(loss, 4))  # -(1 * log .5 + 0.5 * log .25)
  [1.3863]
  >>> print(jax.grad(lambda lp: reinforce_loss(lp, jnp.array([2.0]), None,
  ...                jnp.array([[1, 1, 0]])).sum())(lp))
  [[-2. -2.  0.]]
  """
  log_probs = jnp.asarray(log_probs)
  mask = jnp.asarray(mask)
  _check_same_shape("mask", mask, "log_probs", log_probs)
  target = _per_step(rewards, log_probs, "rewards")
  if baseline is not None:
    target = target - _per_step(baseline, log_probs, "baseline")
  advantage = jax.lax.stop_gradient(target).astype(log_probs.dtype)
  return -_masked_sum(advantage * log_probs, mask)


@jax.jit
def baseline_loss(predicted: jax.Array, rewards: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """Squared error of a learned per-step reward baseline, per sequence.

  Implements HappyBot Eq. 8 (without its ``1/T``)::

      loss[b] = sum_t mask_t * (R_t - R^_t)^2

  The reward is stop-gradient'ed so that only the baseline is trained. Feed
  the baseline a *detached* decoder state so this loss does not move the
  policy either (HappyBot's reference code does; see REFERENCE_NOTES).

  Args:
    predicted: ``[B, T]`` baseline predictions ``R^_t``.
    rewards: ``[B]`` (copied to every step) or ``[B, T]`` targets.
    mask: ``[B, T]`` 1/True for generated tokens.

  Returns:
    ``[B]`` per-sequence summed squared error.

  >>> import jax.numpy as jnp
  >>> print(baseline_loss(jnp.array([[0.5, 1.0, 9.0]]), jnp.array([1.0]),
  ...                     jnp.array([[1, 1, 0]])))
  [0.25]
  """
  predicted = jnp.asarray(predicted)
  mask = jnp.asarray(mask)
  _check_same_shape("mask", mask, "predicted", predicted)
  target = jax.lax.stop_gradient(_per_step(rewards, predicted, "rewards"))
  return _masked_sum(jnp.square(predicted - target.astype(predicted.dtype)),
                     mask)


@jax.jit
def mixed_loss(rl: jax.Array, mle: jax.Array,
               weight: float | jax.Array) -> jax.Array:
  """``weight * rl + (1 - weight) * mle``: HappyBot's mixed objective.

  Implements HappyBot Eq. 10, ``L_mixed = lambda L_RL + (1 - lambda) L_MLE``
  with ``lambda`` the weight of the RL term (the paper uses 0.25).
  Elementwise, so it accepts per-example or already-reduced losses.
  (MojiTalk's hybrid ``L'' = L' - lambda J'`` is not a convex combination:
  write it as ``cvae_loss + lam * reinforce_loss(...)``.)

  Args:
    rl: RL loss (e.g. :func:`reinforce_loss` divided by the length).
    mle: MLE loss (e.g. mean token NLL).
    weight: ``lambda`` in ``[0, 1]``.

  Returns:
    The broadcast of the inputs.

  >>> print(mixed_loss(2.0, 1.0, 0.25))
  1.25
  """
  return weight * rl + (1.0 - weight) * mle


@jax.jit
def discounted_returns(rewards: jax.Array, discount: float | jax.Array,
                       mask: jax.Array) -> jax.Array:
  """Discounted reward-to-go ``G_t = r_t + gamma * G_{t+1}``, in O(T).

  One reverse ``lax.scan`` over time::

      G_t = mask_t * (r_t + gamma_t * G_{t+1}),   G_T = 0

  ``mask`` is the prefix mask of valid steps (``1 ... 1 0 ... 0``): padded
  steps get ``G = 0`` and their rewards are ignored exactly (a 0 inside a
  sequence ends the episode there). With a single terminal reward at the last
  valid step and ``gamma = 1`` every step's return is the sequence reward, as
  in HappyBot and MojiTalk; per-step rewards (e.g. a per-prefix
  discriminator, Kojima et al. Eq. 1) give a per-step return for
  :func:`reinforce_loss`.

  Args:
    rewards: ``[..., T]`` per-step rewards.
    discount: ``gamma``, a scalar or an array broadcastable to ``rewards``.
    mask: ``[..., T]``.

  Returns:
    ``[..., T]`` returns.

  >>> import jax.numpy as jnp
  >>> print(discounted_returns(jnp.array([[1.0, 0.0, 2.0, 5.0]]), 0.5,
  ...                          jnp.array([[1, 1, 1, 0]])))
  [[1.5 1.  2.  0. ]]
  """
  rewards = jnp.asarray(rewards)
  mask = jnp.asarray(mask)
  _check_same_shape("mask", mask, "rewards", rewards)
  dtype = _compute_dtype(rewards.dtype)
  gamma = jnp.broadcast_to(jnp.asarray(discount, dtype), rewards.shape)
  xs = (jnp.moveaxis(rewards.astype(dtype), -1, 0),
        jnp.moveaxis(gamma, -1, 0),
        jnp.moveaxis(mask != 0, -1, 0))

  def step(next_return, x):
    r_t, g_t, m_t = x
    ret = jnp.where(m_t, r_t + g_t * next_return, jnp.zeros_like(r_t))
    return ret, ret

  init = jnp.zeros(rewards.shape[:-1], dtype)
  _, returns = jax.lax.scan(step, init, xs, reverse=True)
  return jnp.moveaxis(returns, 0, -1)


@jax.jit
def label_rank(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """1-based rank of each label among a classifier's scores.

  ``rank = 1 + #{classes with a strictly higher score}``; the input of
  :func:`rank_weight` (MojiTalk supplement Eq. 3: "R ranks 1 in all labels").
  Ties are resolved in the label's favour. Monotone transforms of the scores
  (logits, log-probs, probs) give the same rank.

  Args:
    scores: ``[..., C]`` classifier logits or probabilities.
    labels: ``[...]`` integer labels.

  Returns:
    ``[...]`` int32 ranks in ``[1, C]``.

  >>> import jax.numpy as jnp
  >>> print(label_rank(jnp.array([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]),
  ...                  jnp.array([1, 0])))
  [1 3]
  """
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels)
  if scores.shape[:-1] != labels.shape:
    raise ValueError(f"scores {scores.shape} must be labels {labels.shape} "
                     "plus a class axis")
  own = jnp.take_along_axis(scores, labels[..., None], axis=-1)
  return 1 + jnp.sum(scores > own, axis=-1, dtype=jnp.int32)


@jax.jit
def rank_weight(rank: jax.Array, top1: float = 0.0, top5: float = 0.5,
                other: float = 1.0) -> jax.Array:
  """MojiTalk's policy-gradient weight alpha from the label's rank.

  Implements MojiTalk supplement Eq. 3::

      alpha = 0    if R ranks 1 in all labels
              0.5  if R ranks 2 to 5
              1    otherwise

  i.e. generations the emoji classifier already labels correctly are not
  reinforced, near misses are half-weighted. Use it as
  ``reinforce_loss(lp, alpha * R, alpha * r, mask)`` for
  ``J' = alpha (R - r) sum log P`` (Algorithm 1, line 11).

  Args:
    rank: ``[...]`` 1-based ranks (:func:`label_rank`).
    top1, top5, other: the three weights (defaults from the paper).

  Returns:
    ``[...]`` float32 weights.

  >>> import jax.numpy as jnp
  >>> print(rank_weight(jnp.array([1, 2, 5, 6, 64])))
  [0.  0.5 0.5 1.  1. ]
  """
  rank = jnp.asarray(rank)
  top1, top5, other = (jnp.asarray(w, jnp.float32)
                       for w in (top1, top5, other))
  return jnp.where(rank <= 1, top1, jnp.where(rank <= 5, top5, other))


# --------------------------------------------------------------------------
# GANs


@jax.jit
def prefix_discriminator_loss(
    real_logits: jax.Array,
    real_mask: jax.Array,
    fake_logits: jax.Array,
    fake_mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Per-prefix discriminator loss on real and generated sequences.

  Implements latent-space GAN Eq. 1 (as a loss to minimise) and Algorithm 1,
  lines 12-13, the ScratchGAN-style recurrent discriminator that scores every
  prefix ``x_{<=t}``: with ``D_t = sigmoid(logit_t)`` the probability that
  the prefix is real::

      real[b] = -sum_t mask_t * log D(x_t | x_{<t})           (real data)
      fake[b] = -sum_t mask_t * log(1 - D(x~_t | x~_{<t}))    (generator)

  computed stably with ``log_sigmoid``. Real and generated batches may differ
  in size. The paper's ``L = D_real + D_fake`` divides each by ``T``; ScratchGAN
  weights them 0.5/0.5.

  Args:
    real_logits: ``[B_r, T]`` discriminator logits on real prefixes.
    real_mask: ``[B_r, T]`` 1 for prefixes to score.
    fake_logits: ``[B_f, T]`` logits on generated prefixes.
    fake_mask: ``[B_f, T]``.

  Returns:
    ``(real_loss [B_r], fake_loss [B_f])``.

  >>> import jax.numpy as jnp
  >>> real, fake = prefix_discriminator_loss(
  ...     jnp.array([[0.0, 0.0]]), jnp.array([[1, 1]]),
  ...     jnp.array([[0.0, 9.0]]), jnp.array([[1, 0]]))
  >>> print(jnp.round(real, 4), jnp.round(fake, 4))  # 2 log 2, log 2
  [1.3863] [0.6931]
  """
  real_logits = _upcast(real_logits)
  fake_logits = _upcast(fake_logits)
  _check_same_shape("real_mask", jnp.asarray(real_mask), "real_logits",
                    real_logits)
  _check_same_shape("fake_mask", jnp.asarray(fake_mask), "fake_logits",
                    fake_logits)
  real = -_masked_sum(jax.nn.log_sigmoid(real_logits), real_mask)
  fake = -_masked_sum(jax.nn.log_sigmoid(-fake_logits), fake_mask)
  return real, fake


@functools.partial(jax.jit, static_argnames=("non_saturating",))
def prefix_generator_loss(fake_logits: jax.Array, mask: jax.Array,
                          non_saturating: bool = False) -> jax.Array:
  """Generator loss against a per-prefix discriminator.

  Implements the adversarial term of latent-space GAN Eq. 3 (Algorithm 1,
  line 27), minimised by the generator::

      minimax (default):  loss[b] =  sum_t mask_t * log(1 - D(x~_t | x~_{<t}))
      non_saturating:     loss[b] = -sum_t mask_t * log D(x~_t | x~_{<t})

  The non-saturating form (Goodfellow et al., 2014) has the same fixed point
  and stronger gradients while the discriminator wins. ``D = sigmoid(logit)``;
  the generator's gradient reaches the logits through the relaxed inputs
  (Gumbel-softmax soft one-hots) fed to the discriminator. Add
  ``lambda * latent_reconstruction_loss(...)`` for the full Eq. 3.

  Args:
    fake_logits: ``[B, T]`` discriminator logits on generated prefixes.
    mask: ``[B, T]``.
    non_saturating: use ``-log D`` instead of ``log(1 - D)``.

  Returns:
    ``[B]`` per-sequence loss (the minimax form is <= 0).

  >>> import jax.numpy as jnp
  >>> l = jnp.array([[0.0, 0.0]]); m = jnp.array([[1, 0]])
  >>> print(jnp.round(prefix_generator_loss(l, m), 4),
  ...       jnp.round(prefix_generator_loss(l, m, non_saturating=True), 4))
  [-0.6931] [0.6931]
  """
  fake_logits = _upcast(fake_logits)
  _check_same_shape("mask", jnp.asarray(mask), "fake_logits", fake_logits)
  if non_saturating:
    return -_masked_sum(jax.nn.log_sigmoid(fake_logits), mask)
  return _masked_sum(jax.nn.log_sigmoid(-fake_logits), mask)


@jax.jit
def dialogue_discriminator_loss(logits: jax.Array,
                                labels: jax.Array) -> jax.Array:
  """Binary cross-entropy of the dialogue GAN's discriminator, per example.

  Implements dialogue GAN Eq. 5 (without the ``1/|B_D|``)::

      loss = -[l * log a + (1 - l) * log(1 - a)],   a = sigmoid(logit)

  Mind the paper's convention: ``a`` is the confidence that the response was
  **produced by the chatbot**, so ``l = 1`` marks generated responses and
  ``l = 0`` human ones. Computed stably from logits.

  Args:
    logits: ``[B]`` (any shape) discriminator logits for (input, response).
    labels: same shape, 1 for generated, 0 for human (floats allowed).

  Returns:
    Per-example loss, same shape as ``logits``.

  >>> import jax.numpy as jnp
  >>> print(jnp.round(dialogue_discriminator_loss(jnp.array([0.0, 2.0]),
  ...                                             jnp.array([1, 0])), 4))
  [0.6931 2.1269]
  """
  logits = _upcast(logits)
  labels = jnp.asarray(labels).astype(logits.dtype)
  _check_same_shape("labels", labels, "logits", logits)
  return -(labels * jax.nn.log_sigmoid(logits)
           + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


@jax.jit
def dialogue_generator_loss(logits: jax.Array) -> jax.Array:
  """The dialogue GAN's generator loss: the discriminator's output itself.

  Implements dialogue GAN Eq. 6 (without the ``1/|B_G|``): ``loss = a``, the
  discriminator's probability that the generated response is a bot's,
  ``a = sigmoid(logit)``. The generator's gradient reaches the logits through
  :func:`vedgan.relax.topk_softmax_embedding` inputs.

  Args:
    logits: ``[B]`` discriminator logits on (input, generated response).

  Returns:
    ``[B]`` values in (0, 1).

  >>> import jax.numpy as jnp
  >>> print(dialogue_generator_loss(jnp.array([0.0])))
  [0.5]
  """
  return jax.nn.sigmoid(_upcast(logits))


@jax.jit
def latent_reconstruction_loss(reconstructed: jax.Array,
                               z: jax.Array) -> jax.Array:
  """``(1 / N_z) * ||R(x) - z||^2``: the latent-space GAN reconstruction loss.

  Implements the second term of latent-space GAN Eq. 3 (Algorithm 1,
  line 28, weighted by ``lambda`` = 1.0 in the paper): the reconstructor
  ``R`` reads the straight-through hard one-hots of the generated text and
  regresses the latent code ``z`` it was generated from.

  Args:
    reconstructed: ``[..., N_z]`` output of the reconstructor.
    z: ``[..., N_z]`` sampled latent code.

  Returns:
    ``[...]`` mean squared error over the latent dimensions.

  >>> import jax.numpy as jnp
  >>> print(latent_reconstruction_loss(jnp.array([1.0, 3.0]),
  ...                                  jnp.array([0.0, 1.0])))
  2.5
  """
  diff = jnp.asarray(reconstructed) - jnp.asarray(z)
  return jnp.mean(jnp.square(diff), axis=-1)
