"""What a decoder may emit next, given what it emitted so far: the repetition penalty, the
no-repeat n-gram rule and the nucleus (top-p) of sampling.

Every function is pure and shape-static (``[N, V]`` logits, ``[N, L]`` histories, a traced
step ``t``), so the decoders of :mod:`vedgan.decode` apply them inside their ``lax.scan`` /
``lax.while_loop`` without recompiling per step.

* Repetition penalty (Keskar et al. 2019, CTRL, Sec. 4.1): the logit ``o_v`` of a token
  already in the sequence becomes ``o_v / theta`` if positive, ``o_v * theta`` if not
  (``theta > 1`` discourages repeats; ``theta = 1`` is off).
* No-repeat n-gram (as in Paulus et al. 2018 and common toolkits): a token that would
  complete an n-gram already present in the sequence is forbidden (``n = 0`` is off; ``n =
  1`` forbids every token already emitted).
* Nucleus sampling (Holtzman et al. 2020, Eq. 2-3): sample from the smallest set of most
  probable tokens whose probability reaches ``p``, renormalised (``p = 1`` is off).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def seen_mask(history: jax.Array, t: jax.Array, vocab: int) -> jax.Array:
  """``[N, V]`` bool: token ``v`` occurs in ``history[n, :t]`` (``history`` ``[N, L]``)."""
  n, length = history.shape
  before = jnp.arange(length)[None, :] < t
  ids = jnp.where(before, history, vocab)                      # vocab = out of range: dropped
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], ids.shape)
  return jnp.zeros((n, vocab), bool).at[rows, ids].set(True, mode="drop")


def repetition_penalty(logits: jax.Array, seen: jax.Array, theta: float) -> jax.Array:
  """CTRL's penalty on ``[N, V]`` ``logits`` of the ``seen`` tokens."""
  penalised = jnp.where(logits > 0, logits / theta, logits * theta)
  return jnp.where(seen, penalised, logits)


def repeated_ngram_ban(history: jax.Array, t: jax.Array, n: int, vocab: int) -> jax.Array:
  """``[N, V]`` bool: the tokens that would complete, at position ``t``, an n-gram that
  already occurs in ``history[:, :t]``. ``n >= 1`` is static."""
  rows, length = history.shape
  if n == 1:
    return seen_mask(history, t, vocab)
  if length < n:
    return jnp.zeros((rows, vocab), bool)
  # the n - 1 tokens before t (positions t-n+1 .. t-1), clamped at the start
  starts = jnp.maximum(t - (n - 1), 0)
  prefix = lax.dynamic_slice_in_dim(history, starts, n - 1, axis=1)        # [N, n-1]
  windows = jnp.stack([history[:, k:length - n + 1 + k] for k in range(n)], axis=-1)
  # windows[:, s] = history[:, s:s+n]; it counts when all of it lies before t
  complete = jnp.arange(length - n + 1)[None, :] + n - 1 < t                # [1, S]
  # (before t = n - 1 no window is complete, so the clamped prefix never matches)
  match = jnp.all(windows[..., :n - 1] == prefix[:, None, :], axis=-1) & complete
  ids = jnp.where(match, windows[..., n - 1], vocab)
  index = jnp.broadcast_to(jnp.arange(rows)[:, None], ids.shape)
  return jnp.zeros((rows, vocab), bool).at[index, ids].set(True, mode="drop")


def constrain(logits: jax.Array, history: jax.Array, t: jax.Array, penalty: float,
              no_repeat_ngram: int) -> jax.Array:
  """``[N, V]`` float32 logits after the repetition penalty and the n-gram ban (static
  settings; off at ``penalty == 1`` and ``no_repeat_ngram == 0``)."""
  vocab = logits.shape[-1]
  if penalty != 1.0:
    logits = repetition_penalty(logits, seen_mask(history, t, vocab), penalty)
  if no_repeat_ngram > 0:
    logits = jnp.where(repeated_ngram_ban(history, t, no_repeat_ngram, vocab), -jnp.inf, logits)
  return logits


def active(penalty: float, no_repeat_ngram: int) -> bool:
  """Whether :func:`constrain` changes anything (the decoders skip the history otherwise)."""
  return penalty != 1.0 or no_repeat_ngram > 0


def nucleus(logits: jax.Array, top_p: float) -> jax.Array:
  """``[N, V]`` logits with the tokens outside the top-``p`` nucleus at ``-inf``: the
  smallest most-probable set whose probability is ``>= top_p`` (the most probable token is
  always kept; ties at the boundary are kept)."""
  probs = jax.nn.softmax(logits, axis=-1)
  order = jnp.sort(probs, axis=-1)[..., ::-1]                               # descending
  before = jnp.cumsum(order, axis=-1) - order                               # mass above it
  # the smallest kept probability: the last sorted token whose mass above it is < top_p
  keep_sorted = before < top_p
  threshold = jnp.min(jnp.where(keep_sorted, order, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(probs >= threshold, logits, -jnp.inf)
