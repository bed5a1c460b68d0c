"""Tests for vedgan.losses: hand-computed values, masks, gradients, transforms.

Inputs come from numpy and reuse a few shapes (B=3, T=5, V=6, D=4) so jax's
per-shape compilation caches keep the file fast. Gradient checks run in
float64 (``jax.enable_x64`` as a context manager, so nothing global changes).
Statistical tests use fixed seeds and state their tolerances.
"""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from jax_variants import OpByOpTestCase

from vedgan import losses

B, T, V, D = 3, 5, 6, 4
RNG = np.random.RandomState(0)
LOGITS = (RNG.randn(B, T, V) * 2).astype(np.float32)
TARGETS = RNG.randint(0, V, (B, T)).astype(np.int32)
LENGTHS = np.array([5, 3, 1])
MASK = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float32)  # prefix
KEY = jax.random.key(0)

# Test-only jits (not the library's) skip LLVM optimisations: these programs
# run once on tiny inputs, and compilation dominates the test time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _assert_transforms_agree(fn, *batched_args, rtol=1e-6, atol=1e-6):
  """No-jit, jit and vmap (over axis 0 of every argument) agree.

  The library functions are jit-wrapped, so the direct call is the jit path
  and "no-jit" runs them op by op under ``jax.disable_jit()``. vmap runs
  ``fn`` on one example at a time, so agreement also shows that outputs are
  per-example (no mixing across the batch). Same tree, shapes and dtypes on
  every path (``strict``).
  """
  jitted = fn(*batched_args)
  with jax.disable_jit():
    chex.assert_trees_all_close(fn(*batched_args), jitted, rtol=rtol, atol=atol,
                                strict=True)
  chex.assert_trees_all_close(jax.jit(jax.vmap(fn), compiler_options=FAST_COMPILE)(
      *batched_args), jitted, rtol=rtol, atol=atol, strict=True)


def _log_softmax_np(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# --------------------------------------------------------------------------
# gradients of every differentiable function


def _grad_cases():
  """name -> (function of float arrays, its arguments) for check_grads.

  Points are kept away from the kinks of max() (free bits, KL threshold).
  word_dropout, label_rank and rank_weight are piecewise constant in their
  float inputs (or take integers) and have no gradient to check.
  """
  rng = np.random.RandomState(123)
  logits = rng.randn(B, T, V) * 2
  lp = -np.abs(rng.randn(B, T))
  kl = np.abs(rng.randn(B, D)) + 0.2
  key = jax.random.key(5)
  labels = np.array([0.0, 1.0, 1.0])
  rewards, baseline = rng.randn(B), rng.randn(B, T)
  return {
      "sequence_cross_entropy": (
          lambda l: losses.sequence_cross_entropy(l, TARGETS, MASK)[0],
          (logits,)),
      "sequence_cross_entropy(label_smoothing)": (
          lambda l: losses.sequence_cross_entropy(
              l, TARGETS, MASK, label_smoothing=0.1)[0], (logits,)),
      "chunked_softmax_cross_entropy": (
          lambda h, w, b: losses.chunked_softmax_cross_entropy(
              h, w, b, TARGETS.reshape(-1), MASK.reshape(-1), chunk_size=4),
          (rng.randn(B * T, D) * 0.5, rng.randn(D, V) * 0.5, rng.randn(V) * 0.5)),
      "chunked_sequence_cross_entropy": (
          lambda h, w: losses.chunked_sequence_cross_entropy(h, w, None, TARGETS, MASK, 2)[0],
          (rng.randn(B, T, D) * 0.5, rng.randn(D, V) * 0.5)),
      "token_log_probs": (lambda l: losses.token_log_probs(l, TARGETS, 0.7),
                          (logits,)),
      "bow_loss": (lambda f: losses.bow_loss(f, TARGETS, MASK),
                   (logits[:, 0],)),
      "gaussian_kl": (losses.gaussian_kl, tuple(rng.randn(4, B, D))),
      "gaussian_kl(standard prior)": (losses.gaussian_kl,
                                      tuple(rng.randn(2, B, D))),
      "gaussian_sample": (lambda m, v: losses.gaussian_sample(key, m, v),
                          tuple(rng.randn(2, B, D))),
      "free_bits(per_dim)": (lambda k: losses.free_bits(k, 0.1), (kl,)),
      "free_bits(total)": (lambda k: losses.free_bits(k, 0.1, mode="total"),
                           (kl,)),
      "kl_threshold": (lambda k: losses.kl_threshold(k, 0.1), (kl,)),
      "gaussian_reconstruction_loss": (losses.gaussian_reconstruction_loss,
                                       tuple(rng.randn(2, B, D))),
      "latent_reconstruction_loss": (losses.latent_reconstruction_loss,
                                     tuple(rng.randn(2, B, D))),
      "reinforce_loss": (
          lambda l: losses.reinforce_loss(l, rewards, baseline, MASK), (lp,)),
      "baseline_loss": (lambda p: losses.baseline_loss(p, rewards, MASK),
                        (rng.randn(B, T),)),
      "mixed_loss": (lambda a, b: losses.mixed_loss(a, b, 0.25),
                     tuple(rng.randn(2, B))),
      "discounted_returns": (
          lambda r, g: losses.discounted_returns(r, g, MASK),
          (rng.randn(B, T), 0.9)),
      "prefix_discriminator_loss": (
          lambda a, b: losses.prefix_discriminator_loss(a, MASK, b, MASK),
          tuple(rng.randn(2, B, T))),
      "prefix_generator_loss": (
          lambda f: losses.prefix_generator_loss(f, MASK),
          (rng.randn(B, T),)),
      "prefix_generator_loss(non_saturating)": (
          lambda f: losses.prefix_generator_loss(f, MASK, non_saturating=True),
          (rng.randn(B, T),)),
      "dialogue_discriminator_loss": (
          lambda l: losses.dialogue_discriminator_loss(l, labels),
          (rng.randn(B),)),
      "dialogue_generator_loss": (losses.dialogue_generator_loss,
                                  (rng.randn(B),)),
  }


def test_check_grads_of_every_differentiable_loss():
  """jax.test_util.check_grads (reverse mode, float64) on all of them at once.

  Reverse mode compares vector-Jacobian products (what ``jax.grad`` uses)
  with finite differences. One jitted function returns every case's output,
  so the check compiles once; on failure each case is re-checked alone to
  name it.
  """
  cases = _grad_cases()
  with jax.enable_x64(True):
    args = {name: tuple(np.asarray(a, np.float64) for a in case[1])
            for name, case in cases.items()}
    combined = jax.jit(lambda a: {name: cases[name][0](*a[name])
                                  for name in cases})
    try:
      check_grads(combined, (args,), order=1, modes=("rev",))
    except AssertionError:
      failing = []
      for name, (fn, _) in cases.items():
        try:
          check_grads(fn, args[name], order=1, modes=("rev",))
        except AssertionError:
          failing.append(name)
      pytest.fail(f"check_grads failed for {failing or 'the combination'}")


def test_gradient_cases_cover_every_differentiable_function():
  covered = {name.split("(")[0] for name in _grad_cases()}
  not_differentiable = {"word_dropout", "label_rank", "rank_weight"}
  assert covered | not_differentiable == set(losses.__all__)


# --------------------------------------------------------------------------
# sequence_cross_entropy


def test_sequence_cross_entropy_hand_values():
  logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1],
                             [1 / 3, 1 / 3, 1 / 3]]], np.float32))
  nll, n = losses.sequence_cross_entropy(logits, np.array([[0, 1, 2]]),
                                         np.array([[1, 1, 0]]))
  np.testing.assert_allclose(nll, [-math.log(0.5) - math.log(0.8)], rtol=1e-6)
  np.testing.assert_array_equal(n, [2.0])
  chex.assert_type([nll, n], jnp.float32)
  # Against a numpy loop on random inputs.
  lp = _log_softmax_np(LOGITS)
  want = [-sum(lp[b, t, TARGETS[b, t]] for t in range(LENGTHS[b]))
          for b in range(B)]
  nll, n = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK)
  np.testing.assert_allclose(nll, want, rtol=1e-5)
  np.testing.assert_array_equal(n, LENGTHS)


def test_sequence_cross_entropy_means_are_exact_across_shards():
  """psum(nll_sum) / psum(count) over shards == the mean over all real tokens."""
  nll, n = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK)
  shards = [losses.sequence_cross_entropy(LOGITS[s], TARGETS[s], MASK[s])
            for s in (slice(0, 1), slice(1, 3))]
  pooled = sum(float(s[0].sum()) for s in shards) / sum(
      float(s[1].sum()) for s in shards)
  lp = _log_softmax_np(LOGITS)
  token_mean = np.mean([-lp[b, t, TARGETS[b, t]] for b in range(B)
                        for t in range(LENGTHS[b])])
  np.testing.assert_allclose(pooled, token_mean, rtol=1e-5)
  np.testing.assert_allclose(float(nll.sum() / n.sum()), token_mean, rtol=1e-5)


def test_sequence_cross_entropy_masks_exclude_padding_exactly():
  # Garbage at padded positions: huge or NaN logits, out-of-range target ids.
  logits = LOGITS.copy()
  targets = TARGETS.copy()
  pad = MASK == 0
  logits[pad] = 1e4
  targets[pad] = -7
  ref, ref_n = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK)
  got, got_n = losses.sequence_cross_entropy(logits, targets, MASK)
  np.testing.assert_array_equal(got, ref)
  np.testing.assert_array_equal(got_n, ref_n)
  g = jax.grad(lambda l: losses.sequence_cross_entropy(l, targets, MASK)[0]
               .sum())(logits)
  np.testing.assert_array_equal(np.asarray(g)[pad], 0.0)
  assert np.abs(np.asarray(g)[~pad]).sum() > 0
  logits[pad] = np.nan  # the value stays exact even with NaN padding
  got, _ = losses.sequence_cross_entropy(logits, targets, MASK.astype(bool))
  np.testing.assert_array_equal(got, ref)


def test_sequence_cross_entropy_label_smoothing():
  eps = 0.3
  nll, _ = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK,
                                         label_smoothing=eps)
  lp = _log_softmax_np(LOGITS)
  per_tok = -(1 - eps) * np.take_along_axis(lp, TARGETS[..., None], -1)[..., 0]
  per_tok -= eps * lp.mean(-1)
  np.testing.assert_allclose(nll, (per_tok * MASK).sum(-1), rtol=1e-5)
  # An array smoothing (e.g. from a schedule, traced) gives the same result.
  traced, _ = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK,
                                            label_smoothing=jnp.float32(eps))
  np.testing.assert_allclose(traced, nll, rtol=1e-6)
  # eps = 0 is the plain loss, also as an array.
  plain, _ = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK)
  zero, _ = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK,
                                          label_smoothing=jnp.float32(0.0))
  np.testing.assert_allclose(zero, plain, rtol=1e-6)


def test_sequence_cross_entropy_bfloat16_logits_use_float32():
  bf = LOGITS.astype(jnp.bfloat16)
  got, n = losses.sequence_cross_entropy(bf, TARGETS, MASK)
  chex.assert_type([got, n], jnp.float32)
  want, _ = losses.sequence_cross_entropy(np.asarray(bf, np.float32), TARGETS,
                                          MASK)
  np.testing.assert_array_equal(got, want)


def test_sequence_cross_entropy_grads_transforms_and_errors():
  # no-jit / jit / vmap, label smoothing 0 and 0.3: TransformsTest at the end of the file.
  with pytest.raises(ValueError):
    losses.sequence_cross_entropy(LOGITS, TARGETS[:, :4], MASK)
  with pytest.raises(ValueError):
    losses.sequence_cross_entropy(LOGITS, TARGETS, MASK[:, :4])


# --------------------------------------------------------------------------
# token_log_probs


def test_token_log_probs_values_temperature_and_grads():
  tau = 0.4
  got = losses.token_log_probs(LOGITS, TARGETS, temperature=tau)
  want = np.take_along_axis(_log_softmax_np(LOGITS / tau), TARGETS[..., None],
                            -1)[..., 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(  # never log(raw logits): probabilities sum to 1
      np.exp(_log_softmax_np(LOGITS)).sum(-1), 1.0)
  # no-jit / jit / vmap, temperature 0.4: TransformsTest at the end of the file.


# --------------------------------------------------------------------------
# bow_loss


def test_bow_loss_hand_values_and_masks():
  f = np.log(np.array([[0.5, 0.25, 0.25]], np.float32))
  np.testing.assert_allclose(
      losses.bow_loss(f, np.array([[0, 0, 1]]), np.array([[1, 1, 0]])),
      [-2 * math.log(0.5)], rtol=1e-6)
  np.testing.assert_allclose(
      losses.bow_loss(f, np.array([[0, 1, 2]]), np.array([[1, 1, 1]])),
      [-math.log(0.5) - 2 * math.log(0.25)], rtol=1e-6)
  # Padded targets (any id) do not count.
  bow_logits = LOGITS[:, 0]
  targets = np.where(MASK > 0, TARGETS, 99)
  np.testing.assert_array_equal(losses.bow_loss(bow_logits, targets, MASK),
                                losses.bow_loss(bow_logits, TARGETS, MASK))


def test_bow_loss_equals_cross_entropy_with_logits_tiled_over_time():
  """MojiTalk Eq. 1: one distribution scores every token of the response."""
  bow_logits = LOGITS[:, 0]  # [B, V]
  tiled = np.repeat(bow_logits[:, None], T, axis=1)
  nll, _ = losses.sequence_cross_entropy(tiled, TARGETS, MASK)
  np.testing.assert_allclose(losses.bow_loss(bow_logits, TARGETS, MASK), nll,
                             rtol=1e-6)


def test_bow_loss_grads_transforms_and_errors():
  _assert_transforms_agree(losses.bow_loss, LOGITS[:, 0], TARGETS, MASK)
  with pytest.raises(ValueError):
    losses.bow_loss(LOGITS[:2, 0], TARGETS, MASK)


# --------------------------------------------------------------------------
# word_dropout


def test_word_dropout_edge_rates_and_padding():
  tokens = np.array([[1, 5, 6, 7, 0]], np.int32)
  mask = np.array([[0, 1, 1, 1, 0]], np.int32)
  np.testing.assert_array_equal(
      losses.word_dropout(KEY, tokens, 0.0, 3, mask), tokens)
  np.testing.assert_array_equal(
      losses.word_dropout(KEY, tokens, 1.0, 3, mask), [[1, 3, 3, 3, 0]])
  out = losses.word_dropout(KEY, tokens, 1.0, 3, mask)
  chex.assert_type(out, tokens.dtype)


def test_word_dropout_rate_statistics():
  """Drop fraction on 64x64 tokens with a random mask.

  Fixed seed; tolerance 0.03 on the fraction (about 3 binomial standard
  deviations for ~2000 eligible tokens at rate 0.25). Masked positions must
  never change. (Op by op, jitted and vmapped over keys: TransformsTest.)
  """
  rng = np.random.RandomState(1)
  tokens = rng.randint(4, 100, (64, 64)).astype(np.int32)
  mask = rng.rand(64, 64) < 0.5
  out = np.asarray(losses.word_dropout(jax.random.key(7), tokens, 0.25, 3,
                                       mask))
  np.testing.assert_array_equal(out[~mask], tokens[~mask])
  assert set(np.unique(out[mask] [out[mask] != tokens[mask]])) == {3}
  frac = np.mean(out[mask] == 3)
  assert abs(frac - 0.25) < 0.03, frac


# --------------------------------------------------------------------------
# gaussian_kl / gaussian_sample


def test_gaussian_kl_hand_values():
  # q = N(1, e), p = N(0, 1): 0.5 * (e + 1 - 1 - 1) = (e - 1) / 2.
  np.testing.assert_allclose(losses.gaussian_kl(np.float32([1.0]),
                                                np.float32([1.0])),
                             [(math.e - 1) / 2], rtol=1e-6)
  # q = N(1, 1), p = N(0, 4): log 2 + (1 + 1) / 8 - 1/2.
  np.testing.assert_allclose(
      losses.gaussian_kl(np.float32([1.0]), np.float32([0.0]),
                         np.float32([0.0]), np.float32([math.log(4.0)])),
      [math.log(2) + 0.25 - 0.5], rtol=1e-6)
  # Identical distributions: exactly 0.
  mq, lq = RNG.randn(2, B, D).astype(np.float32)
  np.testing.assert_allclose(losses.gaussian_kl(mq, lq, mq, lq), 0.0,
                             atol=1e-6)


def test_gaussian_kl_defaults_positivity_and_shapes():
  mq, lq, mp, lp = RNG.randn(4, B, D).astype(np.float32)
  zeros = np.zeros((B, D), np.float32)
  kl = losses.gaussian_kl(mq, lq)
  chex.assert_shape(kl, (B, D))
  np.testing.assert_allclose(kl, losses.gaussian_kl(mq, lq, zeros, zeros),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.gaussian_kl(mq, lq, mp),
                             losses.gaussian_kl(mq, lq, mp, zeros), rtol=1e-6)
  np.testing.assert_allclose(losses.gaussian_kl(mq, lq, None, lp),
                             losses.gaussian_kl(mq, lq, zeros, lp), rtol=1e-6)
  assert bool((losses.gaussian_kl(mq, lq, mp, lp) > 0).all())


def test_gaussian_kl_matches_monte_carlo():
  """E_q[log q(z) - log p(z)] from 100k samples, fixed seed.

  Tolerance: 5 standard errors of the Monte Carlo mean (per dimension).
  """
  mq, lq, mp, lp = (np.float32([0.3, -1.0, 2.0]), np.float32([0.5, -1.0, 0.0]),
                    np.float32([0.0, 0.5, 1.0]), np.float32([0.0, 0.3, -0.5]))
  z = np.asarray(losses.gaussian_sample(jax.random.key(3),
                                        np.broadcast_to(mq, (100_000, 3)),
                                        np.broadcast_to(lq, (100_000, 3))),
                 np.float64)
  logn = lambda x, m, lv: -0.5 * (np.log(2 * np.pi) + lv + (x - m) ** 2
                                  / np.exp(lv))
  diff = logn(z, mq, lq) - logn(z, mp, lp)
  se = diff.std(0) / np.sqrt(len(diff))
  exact = np.asarray(losses.gaussian_kl(mq, lq, mp, lp), np.float64)
  assert (np.abs(diff.mean(0) - exact) < 5 * se).all(), (diff.mean(0), exact)


def test_gaussian_kl_grads_and_transforms():
  args = RNG.randn(4, B, D).astype(np.float32)
  _assert_transforms_agree(losses.gaussian_kl, *args)


def test_gaussian_sample_statistics_and_reparameterisation():
  """Moments of 100k samples, fixed seed; tolerance 0.02 on mean and std
  (about 4 standard errors for unit-scale draws)."""
  mean = np.float32([1.0, -2.0, 0.0])
  logvar = np.log(np.float32([0.25, 1.0, 4.0]))
  z = np.asarray(losses.gaussian_sample(jax.random.key(4),
                                        np.broadcast_to(mean, (100_000, 3)),
                                        logvar))  # logvar broadcasts
  chex.assert_shape(z, (100_000, 3))
  np.testing.assert_allclose(z.mean(0), mean, atol=0.02 * 2)
  np.testing.assert_allclose(z.std(0), [0.5, 1.0, 2.0], rtol=0.02)
  # Reparameterisation: dz/dmean = 1, dz/dlogvar = (z - mean) / 2.
  m, lv = RNG.randn(2, B, D).astype(np.float32)
  zs = losses.gaussian_sample(KEY, m, lv)
  gm, glv = jax.grad(lambda m, lv: losses.gaussian_sample(KEY, m, lv).sum(),
                     argnums=(0, 1))(m, lv)
  np.testing.assert_allclose(gm, 1.0)
  np.testing.assert_allclose(glv, (zs - m) / 2, rtol=1e-5, atol=1e-6)
  # No-jit (op by op, shape [4, 6] as the other random checks) and vmap over
  # keys reproduce the jitted draws.
  m6, lv6 = RNG.randn(2, 4, 6).astype(np.float32)
  z6 = losses.gaussian_sample(KEY, m6, lv6)
  with jax.disable_jit():
    # float32 rounding differs between fused and op-by-op code: 1e-6 relative, and
    # 1e-6 absolute for draws near zero (the module RNG's draws depend on test order).
    np.testing.assert_allclose(losses.gaussian_sample(KEY, m6, lv6), z6,
                               rtol=1e-6, atol=1e-6)
  keys = jax.random.split(KEY, 2)
  vm = jax.vmap(lambda k: losses.gaussian_sample(k, m, lv))(keys)
  for k, row in zip(keys, vm):
    np.testing.assert_allclose(row, losses.gaussian_sample(k, m, lv),
                               rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------
# free_bits / kl_threshold / reconstruction losses


def test_free_bits_values_and_gradients():
  kl = np.float32([[0.001, 0.5, 2.0], [0.0, 0.0, 0.0]])
  np.testing.assert_allclose(losses.free_bits(kl, 0.01), [2.51, 0.03],
                             rtol=1e-6)
  np.testing.assert_allclose(losses.free_bits(kl, 5.0, mode="total"),
                             [5.0, 5.0], rtol=1e-6)
  np.testing.assert_allclose(losses.free_bits(kl, 1.0, mode="total"),
                             [2.501, 1.0], rtol=1e-6)
  # No gradient below the floor, full gradient above it.
  g = jax.grad(lambda k: losses.free_bits(k, 0.01).sum())(kl)
  np.testing.assert_array_equal(g, [[0, 1, 1], [0, 0, 0]])
  g = jax.grad(lambda k: losses.free_bits(k, 1.0, mode="total").sum())(kl)
  np.testing.assert_array_equal(g, [[1, 1, 1], [0, 0, 0]])
  # no-jit / jit / vmap, both modes: TransformsTest at the end of the file.
  with pytest.raises(ValueError):
    losses.free_bits(kl, 0.1, mode="per_example")


def test_kl_threshold_values_and_gradients():
  kl = np.float32([3.0, 7.0])
  np.testing.assert_array_equal(losses.kl_threshold(kl, 5.0), [5.0, 7.0])
  g = jax.grad(lambda k: losses.kl_threshold(k, 5.0).sum())(kl)
  np.testing.assert_array_equal(g, [0.0, 1.0])
  # no-jit / jit / vmap, a float or traced alpha: TransformsTest at the end of the file.


def test_reconstruction_losses():
  r, z = np.float32([1.0, 3.0]), np.float32([0.0, 1.0])
  np.testing.assert_allclose(losses.latent_reconstruction_loss(r, z), 2.5)
  np.testing.assert_allclose(losses.gaussian_reconstruction_loss(r, z), 2.5)
  a, b = RNG.randn(2, B, D).astype(np.float32)
  np.testing.assert_allclose(  # (1/N_z)||.||^2 == (2/N_z) * 0.5||.||^2
      losses.latent_reconstruction_loss(a, b),
      2.0 / D * losses.gaussian_reconstruction_loss(a, b), rtol=1e-6)
  _assert_transforms_agree(losses.latent_reconstruction_loss, a, b)
  _assert_transforms_agree(losses.gaussian_reconstruction_loss, a, b)


# --------------------------------------------------------------------------
# REINFORCE: exact behaviour


def test_reinforce_loss_hand_values_and_broadcasting():
  lp = np.log(np.float32([[0.5, 0.25, 0.9]]))
  mask = np.float32([[1, 1, 0]])
  got = losses.reinforce_loss(lp, np.float32([2.0]),
                              np.float32([[1.0, 1.5, 0.0]]), mask)
  np.testing.assert_allclose(got, [-(1 * math.log(0.5) + 0.5 * math.log(0.25))],
                             rtol=1e-6)
  log_probs = -np.abs(RNG.randn(B, T)).astype(np.float32)
  R = RNG.randn(B).astype(np.float32)
  b_t = RNG.randn(B, T).astype(np.float32)
  want = -((R[:, None] - b_t) * log_probs * MASK).sum(-1)
  np.testing.assert_allclose(losses.reinforce_loss(log_probs, R, b_t, MASK),
                             want, rtol=1e-5)
  # [B] rewards == the same reward copied over [B, T]; [B] baseline likewise.
  R_t = np.repeat(R[:, None], T, 1)
  np.testing.assert_allclose(losses.reinforce_loss(log_probs, R_t, b_t, MASK),
                             want, rtol=1e-5)
  b = RNG.randn(B).astype(np.float32)
  np.testing.assert_allclose(
      losses.reinforce_loss(log_probs, R, b, MASK),
      losses.reinforce_loss(log_probs, R, np.repeat(b[:, None], T, 1), MASK),
      rtol=1e-6)
  np.testing.assert_allclose(
      losses.reinforce_loss(log_probs, R, None, MASK),
      losses.reinforce_loss(log_probs, R, np.zeros((B, T), np.float32), MASK))
  with pytest.raises(ValueError):
    losses.reinforce_loss(log_probs, R[:2], None, MASK)


def test_reinforce_loss_stop_gradient_and_masks():
  log_probs = -np.abs(RNG.randn(B, T)).astype(np.float32)
  R = RNG.randn(B).astype(np.float32)
  b_t = RNG.randn(B, T).astype(np.float32)
  g_lp, g_R, g_b = jax.grad(
      lambda lp, r, b: losses.reinforce_loss(lp, r, b, MASK).sum(),
      argnums=(0, 1, 2))(log_probs, R, b_t)
  np.testing.assert_allclose(g_lp, -(R[:, None] - b_t) * MASK, rtol=1e-6)
  np.testing.assert_array_equal(g_R, 0.0)   # advantage is stop_gradient'ed
  np.testing.assert_array_equal(g_b, 0.0)
  # -inf log-probs and NaN baselines at padding do not leak.
  pad = MASK == 0
  lp_bad, b_bad = log_probs.copy(), b_t.copy()
  lp_bad[pad], b_bad[pad] = -np.inf, np.nan
  np.testing.assert_array_equal(
      losses.reinforce_loss(lp_bad, R, b_bad, MASK),
      losses.reinforce_loss(log_probs, R, b_t, MASK))
  _assert_transforms_agree(losses.reinforce_loss, log_probs, R, b_t, MASK)


def test_baseline_loss_values_gradients_and_masks():
  np.testing.assert_allclose(
      losses.baseline_loss(np.float32([[0.5, 1.0, 9.0]]), np.float32([1.0]),
                           np.float32([[1, 1, 0]])), [0.25])
  pred = RNG.randn(B, T).astype(np.float32)
  R = RNG.randn(B).astype(np.float32)
  want = (((pred - R[:, None]) ** 2) * MASK).sum(-1)
  np.testing.assert_allclose(losses.baseline_loss(pred, R, MASK), want,
                             rtol=1e-5)
  np.testing.assert_allclose(
      losses.baseline_loss(pred, np.repeat(R[:, None], T, 1), MASK), want,
      rtol=1e-5)
  g_pred, g_R = jax.grad(lambda p, r: losses.baseline_loss(p, r, MASK).sum(),
                         argnums=(0, 1))(pred, R)
  np.testing.assert_allclose(g_pred, 2 * (pred - R[:, None]) * MASK, rtol=1e-5)
  np.testing.assert_array_equal(g_R, 0.0)  # the reward is a fixed target
  pred_bad = pred.copy()
  pred_bad[MASK == 0] = np.nan
  np.testing.assert_array_equal(losses.baseline_loss(pred_bad, R, MASK),
                                losses.baseline_loss(pred, R, MASK))
  _assert_transforms_agree(losses.baseline_loss, pred, R, MASK)


def test_mixed_loss():
  assert float(losses.mixed_loss(2.0, 1.0, 0.25)) == 1.25
  g = jax.grad(lambda rl, mle: losses.mixed_loss(rl, mle, 0.25),
               argnums=(0, 1))(2.0, 1.0)
  np.testing.assert_allclose(g, (0.25, 0.75))
  rl, mle = RNG.randn(2, B).astype(np.float32)
  np.testing.assert_allclose(losses.mixed_loss(rl, mle, 0.0), mle)
  np.testing.assert_allclose(losses.mixed_loss(rl, mle, 1.0), rl)
  np.testing.assert_allclose(losses.mixed_loss(rl, mle, 0.25),
                             0.25 * rl + 0.75 * mle, rtol=1e-6)
  # no-jit / jit / vmap, a float or traced weight: TransformsTest at the end of the file.


# --------------------------------------------------------------------------
# REINFORCE: statistics on a small categorical policy


K_ACTIONS = 4
THETA = (RNG.randn(2, K_ACTIONS) * 0.5).astype(np.float32)  # 2 steps, 4 actions
# Rewards with a large common offset, so that the baseline matters.
REWARD_TABLE = (10.0 + RNG.randn(K_ACTIONS, K_ACTIONS)).astype(np.float32)
N_SEQ = 50_000


def _expected_reward(theta):
  p1, p2 = jax.nn.softmax(theta[0]), jax.nn.softmax(theta[1])
  return jnp.einsum("i,j,ij->", p1, p2, REWARD_TABLE)


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def _reinforce_gradients(key):
  """Per-sequence REINFORCE gradient estimates for three baselines."""
  table = jnp.asarray(REWARD_TABLE)
  actions = jax.random.categorical(key, THETA, shape=(N_SEQ, 2))  # [N, 2]
  R = table[actions[:, 0], actions[:, 1]]                          # [N]
  mask = jnp.ones((1, 2))
  p2 = jax.nn.softmax(THETA[1])
  expected = _expected_reward(THETA)
  # b_1 = E[R]; b_2 = E[R | a_1]: both independent of the action they weight.
  b_t = jnp.stack([jnp.full((N_SEQ,), expected),
                   table[actions[:, 0]] @ p2], axis=1)             # [N, 2]

  def one(a, r, b):
    def neg_loss(theta):
      lp = jax.nn.log_softmax(theta)[jnp.arange(2), a][None]       # [1, 2]
      return -losses.reinforce_loss(lp, r[None], b, mask)[0]
    return jax.grad(neg_loss)(THETA)

  none = jax.vmap(lambda a, r: one(a, r, None))(actions, R)
  per_seq = jax.vmap(lambda a, r: one(a, r, jnp.full((1,), expected)))(
      actions, R)
  per_step = jax.vmap(lambda a, r, b: one(a, r, b[None]))(actions, R, b_t)
  # A baseline that depends on the sampled action itself biases the estimate.
  biased = jax.vmap(lambda a, r: one(a, r, 0.5 * r[None]))(actions, R)
  return none, per_seq, per_step, biased


def test_reinforce_estimator_is_unbiased_and_baselines_reduce_variance():
  """Mean of 50k single-sequence REINFORCE gradients vs the exact gradient.

  Policy: two independent categorical steps (2 x 4 logits); reward table
  10 + N(0, 1). Exact gradient: jax.grad of the expected reward.
  Tolerances (fixed seed): every component within 5 standard errors of the
  exact gradient; with a baseline the relative error is also < 5%. A good
  baseline ([B]: E[R]; or [B, T]: E[R | a_<t] per step) must cut the total
  variance at least 10-fold (the reward offset of 10 makes the no-baseline
  variance ~100x larger). An action-dependent "baseline" (0.5 R) must be detected as biased
  (relative error > 30%): the test can fail.
  """
  exact = np.asarray(jax.grad(_expected_reward)(THETA), np.float64)
  grads = _reinforce_gradients(jax.random.key(11))
  chex.assert_shape(grads, (N_SEQ,) + THETA.shape)  # one estimate per sequence
  estimates = [np.asarray(e, np.float64).reshape(N_SEQ, -1) for e in grads]
  none, per_seq, per_step, biased = estimates
  exact = exact.ravel()
  rel = lambda g: np.linalg.norm(g.mean(0) - exact) / np.linalg.norm(exact)
  for g in (none, per_seq, per_step):
    se = g.std(0) / np.sqrt(N_SEQ)
    assert (np.abs(g.mean(0) - exact) < 5 * se + 1e-6).all()
  assert rel(per_seq) < 0.05 and rel(per_step) < 0.05
  var = lambda g: g.var(0).sum()
  assert var(per_seq) < 0.1 * var(none)
  assert var(per_step) < 0.1 * var(none)
  assert rel(biased) > 0.3


# --------------------------------------------------------------------------
# discounted_returns


def _returns_quadratic(r, gamma, lengths):
  """Reference: G_t = sum_{s >= t, s < length} gamma^(s - t) r_s (O(T^2))."""
  out = np.zeros_like(r, dtype=np.float64)
  for b in range(r.shape[0]):
    for t in range(lengths[b]):
      out[b, t] = sum(gamma ** (s - t) * r[b, s] for s in range(t, lengths[b]))
  return out


def test_discounted_returns_hand_values_and_reference():
  np.testing.assert_allclose(
      losses.discounted_returns(np.float32([[1.0, 0.0, 2.0, 5.0]]), 0.5,
                                np.float32([[1, 1, 1, 0]])),
      [[1.5, 1.0, 2.0, 0.0]])
  r = RNG.randn(B, T).astype(np.float32)
  np.testing.assert_allclose(losses.discounted_returns(r, 0.9, MASK),
                             _returns_quadratic(r, 0.9, LENGTHS), rtol=1e-5,
                             atol=1e-6)
  # Terminal reward with gamma = 1: every valid step gets the sequence reward.
  R = RNG.randn(B).astype(np.float32)
  terminal = np.zeros((B, T), np.float32)
  terminal[np.arange(B), LENGTHS - 1] = R
  np.testing.assert_allclose(losses.discounted_returns(terminal, 1.0, MASK),
                             R[:, None] * MASK, rtol=1e-6)
  # A per-step discount array.
  gam = np.full((B, T), 0.5, np.float32)
  np.testing.assert_allclose(losses.discounted_returns(r, gam, MASK),
                             losses.discounted_returns(r, 0.5, MASK))


def test_discounted_returns_masks_grads_transforms_and_linear_time():
  r = RNG.randn(B, T).astype(np.float32)
  r_bad = r.copy()
  r_bad[MASK == 0] = np.nan
  np.testing.assert_array_equal(losses.discounted_returns(r_bad, 0.9, MASK),
                                losses.discounted_returns(r, 0.9, MASK))
  # no-jit / jit / vmap, a float or traced discount: TransformsTest at the end of the file.
  # O(T): one reverse scan over time, and no T x T intermediate anywhere.
  eqns = _all_eqns(jax.make_jaxpr(
      lambda r: losses.discounted_returns(r, 0.9, MASK))(r).jaxpr)
  assert [e.primitive.name for e in eqns].count("scan") == 1
  for eqn in eqns:
    for v in eqn.outvars:
      assert tuple(getattr(v.aval, "shape", ())).count(T) <= 1


def _all_eqns(jaxpr):
  """Equations of a jaxpr and of all its sub-jaxprs (jit, scan bodies, ...)."""
  out = []
  for eqn in jaxpr.eqns:
    out.append(eqn)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out.extend(_all_eqns(inner))
  return out


# --------------------------------------------------------------------------
# MojiTalk rank weight


def test_label_rank_and_rank_weight():
  scores = np.float32([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]])
  np.testing.assert_array_equal(losses.label_rank(scores, np.array([1, 0])),
                                [1, 3])
  probs = jax.nn.softmax(RNG.randn(B, 64).astype(np.float32))
  labels = np.array([0, 17, 63])
  order = np.argsort(-np.asarray(probs), axis=-1)
  want = [int(np.where(order[b] == labels[b])[0][0]) + 1 for b in range(B)]
  np.testing.assert_array_equal(losses.label_rank(probs, labels), want)
  np.testing.assert_array_equal(  # logits or probabilities: same rank
      losses.label_rank(jnp.log(probs), labels), want)
  ranks = np.arange(1, 65)
  alpha = np.asarray(losses.rank_weight(ranks))
  np.testing.assert_array_equal(alpha[:1], 0.0)     # rank 1
  np.testing.assert_array_equal(alpha[1:5], 0.5)    # ranks 2..5
  np.testing.assert_array_equal(alpha[5:], 1.0)     # ranks 6..64
  # rank_weight's no-jit / jit / vmap: TransformsTest at the end of the file.
  _assert_transforms_agree(losses.label_rank, probs, labels)
  with pytest.raises(ValueError):
    losses.label_rank(probs, labels[:2])


def test_rank_weighted_reinforce_is_mojitalk_policy_term():
  """J' = alpha (R - r) sum_t log P  (MojiTalk Algorithm 1, line 11)."""
  log_probs = -np.abs(RNG.randn(B, T)).astype(np.float32)
  R, r = RNG.rand(2, B).astype(np.float32)
  alpha = losses.rank_weight(np.array([1, 3, 9]))
  got = losses.reinforce_loss(log_probs, alpha * R, alpha * r, MASK)
  J = np.asarray(alpha) * (R - r) * (log_probs * MASK).sum(-1)
  np.testing.assert_allclose(got, -J, rtol=1e-5, atol=1e-7)
  assert float(got[0]) == 0.0  # rank 1: not reinforced


# --------------------------------------------------------------------------
# GAN losses


def test_prefix_discriminator_loss_values_masks_and_stability():
  real, fake = losses.prefix_discriminator_loss(
      np.float32([[0.0, 0.0]]), np.float32([[1, 1]]),
      np.float32([[0.0, 9.0], [1.0, -2.0]]), np.float32([[1, 0], [1, 1]]))
  np.testing.assert_allclose(real, [2 * math.log(2)], rtol=1e-6)
  sig = lambda x: 1 / (1 + math.exp(-x))
  np.testing.assert_allclose(
      fake, [math.log(2), -math.log(1 - sig(1.0)) - math.log(1 - sig(-2.0))],
      rtol=1e-6)
  # Extreme logits stay finite: -log D(100) ~ 0, -log D(-100) ~ 100.
  real, fake = losses.prefix_discriminator_loss(
      np.float32([[100.0, -100.0]]), np.float32([[1, 1]]),
      np.float32([[-100.0, 100.0]]), np.float32([[1, 1]]))
  np.testing.assert_allclose(real, [100.0], rtol=1e-5)
  np.testing.assert_allclose(fake, [100.0], rtol=1e-5)
  # Padding (NaN logits) is excluded exactly.
  l = RNG.randn(B, T).astype(np.float32)
  l_bad = l.copy()
  l_bad[MASK == 0] = np.nan
  chex.assert_trees_all_equal(losses.prefix_discriminator_loss(l_bad, MASK, l_bad, MASK),
                              losses.prefix_discriminator_loss(l, MASK, l, MASK))


def test_prefix_losses_grads_and_transforms():
  real = RNG.randn(B, T).astype(np.float32)
  fake = RNG.randn(B, T).astype(np.float32)
  _assert_transforms_agree(losses.prefix_discriminator_loss, real, MASK, fake,
                           MASK)
  _assert_transforms_agree(losses.prefix_generator_loss, fake, MASK)


def test_prefix_generator_loss_forms():
  l, m = np.float32([[0.0, 0.0]]), np.float32([[1, 0]])
  np.testing.assert_allclose(losses.prefix_generator_loss(l, m),
                             [-math.log(2)], rtol=1e-6)
  np.testing.assert_allclose(
      losses.prefix_generator_loss(l, m, non_saturating=True), [math.log(2)],
      rtol=1e-6)
  # Minimax: the generator minimises log(1 - D); it is the negative of the
  # discriminator's fake term.
  f = RNG.randn(B, T).astype(np.float32)
  np.testing.assert_allclose(
      losses.prefix_generator_loss(f, MASK),
      -losses.prefix_discriminator_loss(f, MASK, f, MASK)[1], rtol=1e-6)
  # When the discriminator confidently rejects fakes (D ~ 0), the minimax
  # gradient vanishes while the non-saturating one does not.
  low = np.float32([[-8.0]])
  one = np.float32([[1.0]])
  g_mm = jax.grad(lambda x: losses.prefix_generator_loss(x, one).sum())(low)
  g_ns = jax.grad(lambda x: losses.prefix_generator_loss(
      x, one, non_saturating=True).sum())(low)
  assert abs(float(g_mm[0, 0])) < 1e-3 and abs(float(g_ns[0, 0])) > 0.99
  # Both push D up (loss decreases as the logit grows).
  assert float(g_mm[0, 0]) < 0 and float(g_ns[0, 0]) < 0


def test_dialogue_gan_losses():
  # Eq. 5, label 1 = generated by the bot.
  got = losses.dialogue_discriminator_loss(np.float32([0.0, 2.0, -1.0]),
                                           np.float32([1, 0, 1]))
  sig = lambda x: 1 / (1 + math.exp(-x))
  np.testing.assert_allclose(
      got, [math.log(2), -math.log(1 - sig(2.0)), -math.log(sig(-1.0))],
      rtol=1e-6)
  logits = RNG.randn(B).astype(np.float32)
  labels = np.float32([0, 1, 1])
  np.testing.assert_allclose(  # matches the naive formula
      losses.dialogue_discriminator_loss(logits, labels),
      -(labels * np.log(1 / (1 + np.exp(-logits)))
        + (1 - labels) * np.log(1 - 1 / (1 + np.exp(-logits)))), rtol=1e-5)
  assert np.isfinite(np.asarray(losses.dialogue_discriminator_loss(
      np.float32([80.0, -80.0]), np.float32([0, 1])))).all()
  # Eq. 6: the generator minimises a = sigmoid(logit).
  np.testing.assert_allclose(losses.dialogue_generator_loss(logits),
                             1 / (1 + np.exp(-logits)), rtol=1e-6)
  _assert_transforms_agree(losses.dialogue_discriminator_loss, logits, labels)
  _assert_transforms_agree(losses.dialogue_generator_loss, logits)
  with pytest.raises(ValueError):
    losses.dialogue_discriminator_loss(logits, labels[:2])


# --------------------------------------------------------------------------
# no-jit, jit and vmap with Python-float or traced scalars (chex variants)


def _scalar_cases():
  """name -> (loss, arrays, scalars) for the losses with scalar arguments (smoothing,
  temperature, floors, weight, discount, rank weights), on their value tests' inputs."""
  rng = np.random.RandomState(21)
  kl = np.float32([[0.001, 0.5, 2.0], [0.0, 0.0, 0.0]])
  smoothed = lambda l, t, m, eps: losses.sequence_cross_entropy(l, t, m, label_smoothing=eps)
  return {
      "sequence_cross_entropy": (smoothed, (LOGITS, TARGETS, MASK), (0.0,)),
      "sequence_cross_entropy(label_smoothing)": (smoothed, (LOGITS, TARGETS, MASK), (0.3,)),
      "token_log_probs": (losses.token_log_probs, (LOGITS, TARGETS), (0.4,)),
      "free_bits(per_dim)": (losses.free_bits, (kl,), (0.3,)),
      "free_bits(total)": (lambda k, f: losses.free_bits(k, f, mode="total"), (kl,), (0.3,)),
      "kl_threshold": (losses.kl_threshold, (np.float32([3.0, 7.0]),), (5.0,)),
      "mixed_loss": (losses.mixed_loss, tuple(rng.randn(2, B).astype(np.float32)), (0.25,)),
      "discounted_returns": (lambda r, m, g: losses.discounted_returns(r, g, m),
                             (rng.randn(B, T).astype(np.float32), MASK), (0.9,)),
      "rank_weight": (losses.rank_weight, (np.arange(1, 65),), (0.0, 0.5, 1.0)),
  }


class TransformsTest(OpByOpTestCase):
  """No-jit, jit and vmap agree for the losses with scalar arguments (chex variants).

  ``without_jit`` runs every loss op by op on the whole batch with its scalars as Python
  floats (the library's branches on concrete values, e.g. smoothing 0); ``with_jit`` runs
  them vmapped over axis 0 of every array inside one jitted program, with the scalars
  traced. Both must give the library's own jitted values (same tree, shapes and dtypes);
  vmap shows the outputs are per example. word_dropout, an estimator, is drawn op by op
  with one key (shape [4, 6], as the other op-by-op random checks, so the PRNG's per-op
  compilations are shared) and vmapped over two keys (== a Python loop).
  """

  @chex.variants(with_jit=True, without_jit=True)
  def test_losses_op_by_op_or_jitted_and_vmapped(self):
    vmapped = self.variant.type == chex.ChexVariantType.WITH_JIT
    cases = _scalar_cases()
    rng = np.random.RandomState(1)
    tokens = rng.randint(4, 100, (4, 6)).astype(np.int32)
    keep = rng.rand(4, 6) < 0.5
    keys = jax.random.split(KEY, 2)

    def run(arrays, scalars, rate):
      out = {}
      for name, (loss, _, _) in cases.items():
        call = lambda *a, loss=loss, s=scalars[name]: loss(*a, *s)
        out[name] = jax.vmap(call)(*arrays[name]) if vmapped else call(*arrays[name])
      draw = lambda k: losses.word_dropout(k, tokens, rate, 3, keep)
      out["word_dropout"] = jax.vmap(draw)(keys) if vmapped else draw(KEY)
      return out

    got = self.run_variant(run, {name: c[1] for name, c in cases.items()},
                           {name: c[2] for name, c in cases.items()}, 0.5)
    want = {name: loss(*arrays, *scalars) for name, (loss, arrays, scalars) in cases.items()}
    draw = lambda k: losses.word_dropout(k, tokens, 0.5, 3, keep)
    want["word_dropout"] = np.stack([draw(k) for k in keys]) if vmapped else draw(KEY)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6, strict=True)
