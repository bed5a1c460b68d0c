"""Posterior-collapse diagnostics for diagonal-Gaussian latent models.

* :func:`gaussian_kl_per_dim` -- ``KL(N(mu, var) || N(mu_p, var_p))`` per
  latent dimension (standard-normal prior by default, or a learned prior as
  in a CVAE); :func:`kl_per_dim_stats` / :func:`finalize_kl_per_dim` average
  it over a dataset from sums.
* :func:`active_units` -- Burda et al. (2016): dimension u is active when
  ``Cov_x(E_{q(z|x)}[z_u]) = Var_x(mu_u(x)) > threshold`` (0.01); the
  variance uses the unbiased (n - 1) estimator over the evaluation set, as in
  He et al. (2019).  :class:`MomentAccumulator` collects it batch by batch.
* :func:`mutual_information` -- the estimator of Hoffman & Johnson (2016) as
  used by He et al. (2019, "Lagging inference networks"):
  ``I(x; z) = E_x[KL(q(z|x) || p(z))] - KL(q(z) || p(z))
  = E_x E_{q(z|x)}[log q(z|x)] - E_{q(z)}[log q(z)]``
  (the prior cancels), where ``q(z) = 1/B sum_j q(z | x_j)`` is the
  aggregate posterior of the batch and each x contributes one sample
  ``z ~ q(z|x)``.  Its value is at most ``log B``; average it over batches
  (weighted by batch size) for a dataset, as He et al. do.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl_per_dim(mu: jax.Array, logvar: jax.Array,
                        prior_mu: jax.Array | None = None,
                        prior_logvar: jax.Array | None = None) -> jax.Array:
  """KL divergence between diagonal Gaussians, per dimension.

  ``KL = 0.5 * (logvar_p - logvar + (exp(logvar) + (mu - mu_p)^2) /
  exp(logvar_p) - 1)``.

  Args:
    mu, logvar: float [..., D] posterior mean and log-variance.
    prior_mu, prior_logvar: float [..., D] (broadcastable) prior parameters;
      None means the standard normal.
  Returns:
    float [..., D], non-negative.
  """
  if prior_mu is None:
    prior_mu = jnp.zeros_like(mu)
  if prior_logvar is None:
    prior_logvar = jnp.zeros_like(logvar)
  return 0.5 * (prior_logvar - logvar
                + (jnp.exp(logvar) + jnp.square(mu - prior_mu))
                * jnp.exp(-prior_logvar) - 1.0)


def kl_per_dim_stats(kl_per_dim: jax.Array,
                     mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Summed per-dimension KL of a batch.

  Args:
    kl_per_dim: float [B, D].
    mask: optional [B], 1 for real examples.
  Returns:
    dict ``kl_sum`` float [D] and ``count`` scalar.
  """
  if mask is None:
    mask = jnp.ones(kl_per_dim.shape[:1], jnp.float32)
  mask = mask.astype(jnp.float32)
  return {"kl_sum": jnp.sum(kl_per_dim * mask[:, None], axis=0),
          "count": jnp.sum(mask)}


def finalize_kl_per_dim(stats: Mapping[str, Any]) -> np.ndarray:
  """Mean KL per latent dimension, float64 [D]."""
  return (np.asarray(jax.device_get(stats["kl_sum"]), np.float64)
          / float(np.asarray(jax.device_get(stats["count"]))))


class MomentAccumulator:
  """Streaming mean / variance of [B, D] batches (float64, Chan et al.).

  >>> acc = MomentAccumulator()
  >>> acc.add(np.array([[0.0], [2.0]])); acc.add(np.array([[4.0]]))
  >>> float(acc.variance()[0])
  4.0
  """

  def __init__(self):
    self.count = 0.0
    self.mean = None
    self.m2 = None

  def add(self, x: Any, mask: Any | None = None) -> None:
    """Adds the rows of ``x`` [B, D] (rows with mask 0 are ignored)."""
    x = np.asarray(jax.device_get(x), np.float64)
    x = x.reshape(x.shape[0], -1)
    if mask is not None:
      x = x[np.asarray(jax.device_get(mask)).astype(bool).reshape(-1)]
    n = float(x.shape[0])
    if n == 0:
      return
    mean = x.mean(axis=0)
    m2 = np.sum(np.square(x - mean), axis=0)
    self.merge_moments(n, mean, m2)

  def merge_moments(self, n: float, mean: np.ndarray, m2: np.ndarray) -> None:
    """Merges (count, mean, sum of squared deviations) of another part."""
    if self.mean is None:
      self.count, self.mean, self.m2 = n, mean.copy(), m2.copy()
      return
    total = self.count + n
    delta = mean - self.mean
    self.mean = self.mean + delta * (n / total)
    self.m2 = self.m2 + m2 + np.square(delta) * (self.count * n / total)
    self.count = total

  def merge(self, other: "MomentAccumulator") -> None:
    """Adds another accumulator's data (e.g. another host's)."""
    if other.mean is not None:
      self.merge_moments(other.count, other.mean, other.m2)

  def variance(self, ddof: int = 1) -> np.ndarray:
    """Per-dimension variance, float64 [D]; ValueError with <= ddof rows."""
    if self.mean is None or self.count <= ddof:
      raise ValueError(f"need more than {ddof} rows, have {self.count}")
    return self.m2 / (self.count - ddof)


def active_units(posterior_means: Any, threshold: float = 0.01,
                 mask: Any | None = None) -> dict[str, Any]:
  """Active units of a latent space.

  Args:
    posterior_means: [N, D] ``E_{q(z|x)}[z] = mu(x)`` over an evaluation set,
      or a :class:`MomentAccumulator` that collected them.
    threshold: a unit is active when its variance is strictly greater.
    mask: optional [N] row mask (ignored for an accumulator).
  Returns:
    dict ``num_active`` (int), ``active`` (bool [D]), ``variance`` (float64
    [D], unbiased), ``threshold``.
  """
  if isinstance(posterior_means, MomentAccumulator):
    acc = posterior_means
  else:
    acc = MomentAccumulator()
    acc.add(posterior_means, mask)
  var = acc.variance(ddof=1)
  active = var > threshold
  return {"num_active": int(active.sum()), "active": active, "variance": var,
          "threshold": float(threshold)}


def _gaussian_log_density_rows(z: jax.Array, mu: jax.Array,
                               logvar: jax.Array) -> jax.Array:
  """log N(z_i; mu_j, diag exp(logvar_j)) for all i, j: [Bz, Bx]."""
  d = mu.shape[-1]
  inv_var = jnp.exp(-logvar)  # [Bx, D]
  log_norm = -0.5 * (d * _LOG_2PI + jnp.sum(logvar, axis=-1))  # [Bx]

  def one(zi):  # zi [D] -> [Bx]
    return log_norm - 0.5 * jnp.sum(jnp.square(zi - mu) * inv_var, axis=-1)

  return jax.lax.map(one, z, batch_size=64)


def mutual_information(key: jax.Array, mu: jax.Array, logvar: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
  """Batch estimate of I(x; z) under q (Hoffman & Johnson; He et al. 2019).

  ``MI = mean_i E_{q(z|x_i)}[log q(z|x_i)] - mean_i log q_agg(z_i)`` with
  ``z_i ~ q(z|x_i)`` (one sample each), ``E_q[log q(z|x)] = -D/2 log(2 pi) -
  1/2 sum_d (1 + logvar_d)`` in closed form and
  ``log q_agg(z) = logsumexp_j log q(z|x_j) - log B``.

  Args:
    key: PRNG key for the samples.
    mu, logvar: float [B, D] posterior parameters of B examples.
    mask: optional [B], 1 for real examples (padding rows are excluded from
      both the outer mean and the aggregate posterior).
  Returns:
    float32 scalar, in nats.  jit-safe (memory O(B^2 + 64 B D)).
  """
  mu = mu.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  b, d = mu.shape
  if mask is None:
    mask = jnp.ones((b,), jnp.float32)
  mask = mask.astype(jnp.float32)
  n = jnp.sum(mask)
  neg_entropy = -0.5 * d * _LOG_2PI - 0.5 * jnp.sum(1.0 + logvar, axis=-1)
  eps = jax.random.normal(key, mu.shape, jnp.float32)
  z = mu + jnp.exp(0.5 * logvar) * eps
  log_q = _gaussian_log_density_rows(z, mu, logvar)  # [Bz, Bx]
  log_q = jnp.where(mask[None, :] > 0, log_q, -jnp.inf)
  log_q_agg = jax.nn.logsumexp(log_q, axis=1) - jnp.log(n)
  log_q_agg = jnp.where(mask > 0, log_q_agg, 0.0)
  return (jnp.sum(neg_entropy * mask) - jnp.sum(log_q_agg)) / n
