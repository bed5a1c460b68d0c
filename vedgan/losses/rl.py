"""REINFORCE: the policy-gradient surrogate, learned baselines, mixed losses, ranks and rank
weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vedgan.losses._common import _compute_dtype, _check_same_shape, _masked_sum, _per_step

__all__ = ["reinforce_loss", "baseline_loss", "mixed_loss", "discounted_returns", "label_rank",
           "rank_weight"]


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
