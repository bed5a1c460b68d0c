"""NLL / perplexity / KL / ELBO bound from summed statistics."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import metrics


def test_token_nll_hand_computed():
  logits = jnp.array([[[0.0, math.log(3.0)], [2.0, 2.0]]])
  nll = metrics.token_nll(logits, jnp.array([[1, 0]]))
  np.testing.assert_allclose(nll, [[-math.log(0.75), math.log(2.0)]], rtol=1e-6)


def test_finalize_hand_computed():
  token_nll = jnp.array([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # last row is padding
  kl = jnp.array([0.5, 1.5, 100.0])
  stats = metrics.likelihood_stats(token_nll, mask, kl)
  assert float(stats["num_sequences"]) == 2.0
  out = metrics.finalize_likelihood(stats)
  assert out["nll_per_token"] == pytest.approx(6.0 / 3)
  assert out["perplexity"] == pytest.approx(math.exp(2.0))
  assert out["nll_per_sequence"] == pytest.approx(3.0)
  assert out["kl"] == pytest.approx(1.0)
  assert out["elbo_nll"] == pytest.approx((6.0 + 2.0) / 2)
  assert out["elbo_nll_per_token"] == pytest.approx(8.0 / 3)
  assert out["elbo_perplexity"] == pytest.approx(math.exp(8.0 / 3))
  assert out["elbo_perplexity"] >= out["perplexity"]
  no_kl = metrics.finalize_likelihood(metrics.likelihood_stats(token_nll, mask))
  assert no_kl["kl"] == 0.0 and no_kl["elbo_nll"] == no_kl["nll_per_sequence"]
  empty = metrics.finalize_likelihood(
      metrics.likelihood_stats(token_nll, jnp.zeros_like(mask)))
  assert math.isnan(empty["perplexity"])


def _random_batch(seed, b=12, t=7, v=11):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(b, t, v)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, size=(b, t)))
  lengths = rng.integers(1, t + 1, size=b)
  mask = jnp.asarray(np.arange(t)[None, :] < lengths[:, None], jnp.float32)
  kl = jnp.asarray(rng.uniform(0, 3, size=b), jnp.float32)
  return logits, targets, mask, kl


def test_exact_under_data_parallel_split():
  logits, targets, mask, kl = _random_batch(0)

  @jax.jit
  def stats_fn(logits, targets, mask, kl):
    return metrics.likelihood_stats(metrics.token_nll(logits, targets), mask, kl)

  whole = metrics.finalize_likelihood(
      metrics.accumulate(None, stats_fn(logits, targets, mask, kl)))
  # Uneven host-side batches.
  total = None
  for lo, hi in [(0, 5), (5, 6), (6, 12)]:
    total = metrics.accumulate(
        total, stats_fn(logits[lo:hi], targets[lo:hi], mask[lo:hi], kl[lo:hi]))
  split = metrics.finalize_likelihood(total)
  for key in whole:
    assert split[key] == pytest.approx(whole[key], rel=1e-6)

  # Device-style: 4 shards reduced with psum over a named axis (vmap stands
  # in for shard_map here: same collective semantics on one CPU).
  def per_device(lg, tg, mk, k):
    return jax.lax.psum(stats_fn(lg, tg, mk, k), "data")

  shard = lambda x: x.reshape(4, -1, *x.shape[1:])
  reduced = jax.vmap(per_device, axis_name="data")(
      shard(logits), shard(targets), shard(mask), shard(kl))
  dp = metrics.finalize_likelihood(jax.tree.map(lambda x: x[0], reduced))
  for key in whole:
    assert dp[key] == pytest.approx(whole[key], rel=1e-6)
  # Averaging per-shard means instead would be wrong with ragged masks.
  arrays = (logits, targets, mask, kl)
  per_shard = [metrics.finalize_likelihood(
      stats_fn(*(shard(a)[j] for a in arrays))) for j in range(4)]
  naive = np.mean([p["nll_per_token"] for p in per_shard])
  assert abs(naive - whole["nll_per_token"]) > 1e-4


def test_accumulate_rejects_mismatched_keys():
  with pytest.raises(ValueError):
    metrics.accumulate({"a": 1.0}, {"b": 2.0})
