"""Shared helpers of the loss modules (dtype promotion, shape checks, masked sums)."""
from __future__ import annotations

import jax.numpy as jnp


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
