"""Latent-variable terms: Gaussian KL, reparameterised samples, free bits, KL thresholds."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


__all__ = ["gaussian_kl", "gaussian_sample", "free_bits", "kl_threshold",
           "gaussian_reconstruction_loss"]


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


#: the ``mode`` values of :func:`free_bits` (``config.ved.free_bits_mode``).
FREE_BITS_MODES = ("per_dim", "total")


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
  raise ValueError(f"mode must be one of {FREE_BITS_MODES}, got {mode!r}")


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
