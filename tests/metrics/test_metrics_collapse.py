"""KL per dimension, active units and mutual information on synthetic models
whose answers are known in closed form."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import metrics


def test_gaussian_kl_per_dim_closed_form():
  rng = np.random.default_rng(0)
  mu, lv = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  pmu, plv = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  want = 0.5 * (plv - lv + (np.exp(lv) + (mu - pmu) ** 2) / np.exp(plv) - 1)
  got = metrics.gaussian_kl_per_dim(jnp.asarray(mu), jnp.asarray(lv),
                                    jnp.asarray(pmu), jnp.asarray(plv))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  std = metrics.gaussian_kl_per_dim(jnp.asarray(mu), jnp.asarray(lv))
  np.testing.assert_allclose(std, 0.5 * (np.exp(lv) + mu ** 2 - 1 - lv),
                             rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(metrics.gaussian_kl_per_dim(
      jnp.zeros((2, 3)), jnp.zeros((2, 3)))))) == 0.0


def test_kl_per_dim_stats_with_mask():
  kl = jnp.array([[1.0, 0.0], [3.0, 0.5], [100.0, 100.0]])
  stats = metrics.kl_per_dim_stats(kl, mask=jnp.array([1, 1, 0]))
  np.testing.assert_allclose(metrics.finalize_kl_per_dim(stats), [2.0, 0.25])


def _synthetic_posterior(n=3000, seed=0):
  """x ~ N(0, I_4); mu(x) has 3 informative units (variance 0.25, 1, 4), 2
  nearly constant units (variance 1e-4) and one constant unit."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4))
  mu = np.stack([0.5 * x[:, 0], x[:, 1], 2.0 * x[:, 2],
                 0.01 * x[:, 3] + 3.0, -0.01 * x[:, 0], np.full(n, 0.7)], 1)
  return mu


def test_active_units_known_answer():
  mu = _synthetic_posterior()
  au = metrics.active_units(mu)
  assert au["num_active"] == 3
  assert au["active"].tolist() == [True, True, True, False, False, False]
  np.testing.assert_allclose(au["variance"], np.var(mu, axis=0, ddof=1),
                             rtol=1e-10, atol=1e-15)
  assert metrics.active_units(mu, threshold=1e-5)["num_active"] == 5


def test_moment_accumulator_matches_whole_array():
  mu = _synthetic_posterior(1000, seed=1) + 1e4  # large offset: stability
  acc = metrics.MomentAccumulator()
  for lo, hi in [(0, 1), (1, 400), (400, 401), (401, 1000)]:
    acc.add(mu[lo:hi])
  np.testing.assert_allclose(acc.variance(), np.var(mu, axis=0, ddof=1),
                             rtol=1e-8, atol=1e-12)
  # Masked rows are ignored; merging two accumulators equals one.
  a, b = metrics.MomentAccumulator(), metrics.MomentAccumulator()
  padded = np.concatenate([mu[:500], np.full((3, 6), 1e9)])
  a.add(padded, mask=np.r_[np.ones(500), np.zeros(3)])
  b.add(mu[500:])
  a.merge(b)
  np.testing.assert_allclose(a.variance(), acc.variance(), rtol=1e-8,
                             atol=1e-12)
  assert metrics.active_units(a)["num_active"] == 3
  with pytest.raises(ValueError):
    metrics.MomentAccumulator().variance()


def test_mutual_information_linear_gaussian():
  # x ~ N(0, I_2), q(z|x) = N(a x, s^2 I): q(z) = N(0, (a^2 + s^2) I) and
  # I(x; z) = sum_d 1/2 log(1 + a_d^2 / s^2).
  b, s = 2048, 0.5
  a = np.array([1.0, 0.5])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(b, 2))
  mu = jnp.asarray(x * a, jnp.float32)
  logvar = jnp.full((b, 2), 2 * math.log(s), jnp.float32)
  want = float(np.sum(0.5 * np.log1p(a ** 2 / s ** 2)))  # 1.151
  mi_fn = jax.jit(metrics.mutual_information)
  mi = mi_fn(jax.random.key(0), mu, logvar)
  assert float(mi) == pytest.approx(want, abs=0.06)
  # Less informative encoder -> smaller MI.
  mi_lo = mi_fn(jax.random.key(0), mu * 0.2, logvar)
  assert float(mi_lo) < float(mi) - 0.5


def test_mutual_information_collapsed_posterior_is_zero():
  # The estimate is -D/2 + 1/2 mean_i |z_i|^2 exactly, sampling noise
  # 1/2 sqrt(2 D / B) = 0.02 here.
  b = 2048
  mu = jnp.zeros((b, 2))
  logvar = jnp.zeros((b, 2))
  mi = metrics.mutual_information(jax.random.key(1), mu, logvar)
  assert abs(float(mi)) < 0.08
  # Collapse means zero KL and no active unit, too.
  kl = metrics.gaussian_kl_per_dim(mu, logvar)
  assert float(jnp.max(kl)) == 0.0
  assert metrics.active_units(mu)["num_active"] == 0


def test_mutual_information_mask_ignores_padding_rows():
  rng = np.random.default_rng(2)
  mu = rng.normal(size=(64, 3)).astype(np.float32)
  lv = rng.normal(size=(64, 3)).astype(np.float32) * 0.1
  mask = np.r_[np.ones(50), np.zeros(14)].astype(np.float32)
  key = jax.random.key(3)
  a = metrics.mutual_information(key, mu, lv, mask)
  mu2, lv2 = mu.copy(), lv.copy()
  mu2[50:], lv2[50:] = 1e3, -5.0  # garbage in the padding rows
  b = metrics.mutual_information(key, mu2, lv2, mask)
  assert float(a) == pytest.approx(float(b), abs=1e-6)
  assert 0.0 < float(a) <= math.log(50) + 1e-5
