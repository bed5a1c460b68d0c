"""Likelihood terms: (chunked) sequence cross-entropy, token log-probabilities, BoW, word
drop-out."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vedgan.losses._common import (_check_same_shape, _check_shape, _compute_dtype,
                                   _gather_last, _masked_sum)

__all__ = ["sequence_cross_entropy", "chunked_softmax_cross_entropy",
           "chunked_sequence_cross_entropy", "token_log_probs", "bow_loss", "word_dropout"]


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


def chunked_sequence_cross_entropy(hidden: jax.Array, weight: jax.Array, bias: jax.Array | None,
                                   targets: jax.Array, mask: jax.Array, chunk_size: int = 1024
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
