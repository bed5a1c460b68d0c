"""Tests for vedgan.relax: exact values, gradients, transforms and statistics.

Inputs come from numpy (no PRNG kernels to compile) and reuse a few shapes, so
jax's per-shape compilation caches keep the file fast. Statistical tests use
fixed seeds, so they are deterministic; each states its tolerance and why it
catches a wrong implementation.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from jax_variants import OpByOpTestCase
from scipy import stats

from vedgan import relax

RNG = np.random.RandomState(0)
LOGITS = (RNG.randn(4, 6) * 2).astype(np.float32)  # the standard [B, V] input
W = RNG.randn(6, 3).astype(np.float32)               # [V, D] word vectors
KEY = jax.random.key(0)
N_DRAWS = 20_000                                     # rows of statistical tests

# Test-only jits (not the library's) skip LLVM optimisations: these programs
# run once on tiny inputs, and compilation dominates the test time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _assert_transforms_agree(fn, *batched_args, rtol=1e-6, atol=1e-6):
  """No-jit, jit and vmap (over axis 0 of every argument) agree.

  The library functions are jit-wrapped, so the direct call is the jit path
  and "no-jit" runs them op by op under ``jax.disable_jit()``. vmap runs
  ``fn`` on one example at a time, so agreement also shows that outputs are
  per-example. Same tree, shapes and dtypes on every path (``strict``).
  """
  jitted = fn(*batched_args)
  with jax.disable_jit():
    chex.assert_trees_all_close(fn(*batched_args), jitted, rtol=rtol, atol=atol,
                                strict=True)
  chex.assert_trees_all_close(jax.jit(jax.vmap(fn), compiler_options=FAST_COMPILE)(
      *batched_args), jitted, rtol=rtol, atol=atol, strict=True)


# --------------------------------------------------------------------------
# first_argmax


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_first_argmax_equals_jnp_argmax_ties_nans_and_infinities(axis):
  # Ties (small integers), NaNs (the first NaN wins, as in jnp.argmax), rows of -inf
  # and +inf, on every axis of a [3, 5, 7] array; also for an integer dtype.
  x = RNG.randint(0, 3, size=(3, 5, 7)).astype(np.float32)
  x[0, 1, 2] = x[2, 3, 0] = x[2, 3, 4] = np.nan
  x[1, 2, :] = -np.inf
  x[1, :, 3] = -np.inf
  x[1, 4, 5] = x[1, 4, 6] = np.inf
  for values in (x, RNG.randint(-2, 2, size=(3, 5, 7)).astype(np.int32)):
    got = relax.first_argmax(values, axis=axis)
    np.testing.assert_array_equal(got, jnp.argmax(values, axis=axis))
    chex.assert_type(got, jnp.int32)


def test_first_argmax_hand_values():
  x = jnp.array([[0.1, 0.9, 0.9], [np.nan, 2.0, np.nan], [-np.inf, -np.inf, -np.inf]])
  np.testing.assert_array_equal(relax.first_argmax(x), [1, 0, 0])
  np.testing.assert_array_equal(relax.first_argmax(x, axis=0), [1, 1, 1])


# --------------------------------------------------------------------------
# straight_through


def test_straight_through_forward_is_exactly_one_hot():
  # Exact zeros and ones, for probabilities and for arbitrary scores (where
  # the literal `(onehot - s) + s` would round, e.g. (1 - 3.7) + 3.7 != 1).
  scores = (RNG.randn(200, 6) * 3).astype(np.float32)
  for s in (jax.nn.softmax(scores), scores):
    hard = relax.straight_through(s)
    expected = np.eye(6, dtype=np.float32)[np.argmax(s, -1)]
    np.testing.assert_array_equal(np.asarray(hard), expected)
    chex.assert_type(hard, s.dtype)


def test_straight_through_hand_values_ties_and_axis():
  s = jnp.array([[0.2, 0.7, 0.1], [0.4, 0.4, 0.2]])
  np.testing.assert_array_equal(relax.straight_through(s),
                                [[0, 1, 0], [1, 0, 0]])  # tie -> lowest index
  np.testing.assert_array_equal(relax.straight_through(s.T, axis=0),
                                [[0, 1], [1, 0], [0, 0]])


def test_straight_through_gradient_is_identity_and_transforms():
  s = jax.nn.softmax(LOGITS)
  cot = RNG.randn(4, 6).astype(np.float32)
  _, vjp = jax.vjp(relax.straight_through, s)
  np.testing.assert_array_equal(vjp(cot)[0], cot)
  _assert_transforms_agree(relax.straight_through, s)


# --------------------------------------------------------------------------
# gumbel_softmax: exact properties


def test_gumbel_softmax_is_a_distribution_and_keeps_dtype():
  x = relax.gumbel_softmax(KEY, LOGITS, temperature=0.7)
  chex.assert_shape(x, LOGITS.shape)
  chex.assert_type(x, jnp.float32)
  assert bool((x >= 0).all())
  np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-6)
  xb = relax.gumbel_softmax(KEY, LOGITS.astype(jnp.bfloat16), temperature=0.7)
  chex.assert_type(xb, jnp.bfloat16)
  # bf16 logits are upcast: same noise, same sample up to bf16 rounding of
  # the logits (~0.4% relative) and of the output.
  np.testing.assert_allclose(np.asarray(xb, np.float32), x, atol=3e-2)


def test_gumbel_softmax_matches_eq2_two_temperatures():
  """Kojima et al. Eq. 2: softmax((log softmax(o / tau2) + g) / tau1)."""
  tau1, tau2 = 0.3, 0.6
  got = relax.gumbel_softmax(KEY, LOGITS, temperature=tau1,
                             word_temperature=tau2)
  # The documented noise draw: g = relax.gumbel_noise(key, logits.shape).
  g = relax.gumbel_noise(KEY, LOGITS.shape)
  want = jax.nn.softmax((jax.nn.log_softmax(LOGITS / tau2) + g) / tau1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Implementation-independent forms of the same equation: tau2 only rescales
  # the logits, and adding a constant to the logits changes nothing.
  np.testing.assert_allclose(
      got, relax.gumbel_softmax(KEY, LOGITS / tau2, temperature=tau1),
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      got, relax.gumbel_softmax(KEY, LOGITS + 17.0, temperature=tau1,
                                word_temperature=tau2), rtol=1e-4, atol=1e-6)


def test_straight_through_gradient_equals_soft_sample_gradient():
  """hard=True: forward one-hot, backward the soft sample's gradient.

  For any downstream f, grad (f o hard) = J_soft^T f'(hard): the soft
  sample's vector-Jacobian product applied to f' at the hard forward value.
  """
  w = RNG.randn(4, 6).astype(np.float32)
  hard, vjp_hard = jax.vjp(
      lambda l: relax.gumbel_softmax(KEY, l, 0.5, hard=True), LOGITS)
  soft, vjp_soft = jax.vjp(lambda l: relax.gumbel_softmax(KEY, l, 0.5), LOGITS)
  np.testing.assert_array_equal(hard, np.eye(6)[np.argmax(soft, -1)])
  # Linear f(y) = <w, y>: identical gradients, and not trivially zero.
  np.testing.assert_allclose(vjp_hard(w)[0], vjp_soft(w)[0], rtol=1e-6,
                             atol=1e-7)
  assert float(jnp.abs(vjp_soft(w)[0]).max()) > 1e-3
  # Nonlinear f(y) = <w, sin(3 y)>, differentiated end to end with jax.grad.
  f = lambda y: jnp.sum(jnp.sin(3.0 * y) * w)
  g = jax.grad(lambda l: f(relax.gumbel_softmax(KEY, l, 0.5, hard=True)))(
      LOGITS)
  np.testing.assert_allclose(g, vjp_soft(jax.grad(f)(hard))[0], rtol=1e-5,
                             atol=1e-6)


class GumbelSoftmaxVariantsTest(OpByOpTestCase):
  """The library's jitted draws, op by op with Python-float temperatures (``without_jit``),
  or jitted with the temperatures traced and the hard draw vmapped over keys
  (``with_jit``, one program; ``hard`` static): chex variants."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_draws_op_by_op_or_jitted_and_vmapped_over_keys(self):
    vmapped = self.variant.type == chex.ChexVariantType.WITH_JIT
    keys = jax.random.split(KEY, 2)

    def draws(tau1, tau2):
      soft = relax.gumbel_softmax(KEY, LOGITS, tau1, word_temperature=tau2)
      if not vmapped:
        return {"soft": soft}
      # vmap over keys (temperatures traced as arrays)
      hard = jax.vmap(lambda k, t: relax.gumbel_softmax(k, LOGITS, t, hard=True))(
          keys, jnp.full((2,), tau1))
      return {"soft": soft, "hard": hard}

    for tau1, tau2 in ((0.5, 0.5), (0.3, 0.6)):
      got = self.run_variant(draws, tau1, tau2)
      np.testing.assert_allclose(
          got["soft"], relax.gumbel_softmax(KEY, LOGITS, tau1, word_temperature=tau2),
          rtol=1e-6, atol=1e-7)
      for k, row in zip(keys, got.get("hard", ())):  # == a Python loop
        np.testing.assert_array_equal(row, relax.gumbel_softmax(k, LOGITS, tau1, hard=True))


# --------------------------------------------------------------------------
# gumbel_softmax: statistics


def test_gumbel_softmax_hard_samples_follow_softmax_chi_square():
  """Chi-square goodness of fit of 20k hard samples against softmax(o / tau2).

  Fixed seeds; each fit must pass at significance 1e-3 (a correct sampler
  fails that for 1 seed in 1000). The test's power is checked too: for
  tau2 = 0.5 the same counts must be rejected (p < 1e-6) against
  softmax(o), the distribution one gets by ignoring the word temperature.
  """
  o = np.log(np.array([0.05, 0.15, 0.3, 0.5], np.float32))
  rows = np.broadcast_to(o, (N_DRAWS, 4))
  for seed, tau2 in ((100, 1.0), (101, 0.5)):
    hard = relax.gumbel_softmax(jax.random.key(seed), rows, temperature=0.5,
                                hard=True, word_temperature=tau2)
    counts = np.asarray(hard.sum(0), np.float64)
    assert counts.sum() == N_DRAWS
    p = np.asarray(jax.nn.softmax(o / tau2), np.float64)
    assert stats.chisquare(counts, N_DRAWS * p).pvalue > 1e-3
    if tau2 != 1.0:
      wrong = np.asarray(jax.nn.softmax(o), np.float64)
      assert stats.chisquare(counts, N_DRAWS * wrong).pvalue < 1e-6


# --------------------------------------------------------------------------
# gumbel_noise, gumbel_max


def test_gumbel_noise_rows_are_jax_gumbel_of_their_own_key_by_the_original_scheme():
  """Row i is jax.random.gumbel(fold_in(key, i), [V]) with the original counter scheme,
  under either global setting and inside a caller's jit (the setting is read while
  tracing); the two schemes draw different numbers for one key (checked), so the equality
  shows which one ran. Rows do not depend on how many are drawn."""
  shape = (4, 6)
  with jax.threefry_partitionable(False):
    original = np.stack([jax.random.gumbel(jax.random.fold_in(KEY, i), shape[-1:])
                         for i in range(shape[0])])
  with jax.threefry_partitionable(True):
    partitionable = np.asarray(jax.random.gumbel(jax.random.fold_in(KEY, 0), shape[-1:]))
  assert not np.allclose(original[0], partitionable)
  for setting in (True, False):
    with jax.threefry_partitionable(setting):
      np.testing.assert_array_equal(relax.gumbel_noise(KEY, shape), original)
      np.testing.assert_array_equal(
          jax.jit(lambda k: relax.gumbel_noise(k, shape))(KEY), original)
  np.testing.assert_array_equal(relax.gumbel_noise(KEY, (2, 6)), original[:2])
  np.testing.assert_array_equal(relax.gumbel_noise(KEY, (2, 2, 6)), original.reshape(2, 2, 6))


def test_gumbel_noise_is_standard_gumbel_and_independent():
  """200k draws (fixed seed, 4 rows): a Kolmogorov-Smirnov fit to Gumbel(0, 1) at
  significance 1e-3, rejected (p < 1e-6) for Gumbel(0.02, 1), a 0.02 shift; no correlation
  between neighbours, between two rows, nor between the two halves of a row, which the
  original scheme fills from the two words of the same hashes (|r| < 5 / sqrt(n): a
  correct draw exceeds it with probability 6e-7)."""
  rows, width = 4, 50_000
  g = np.asarray(relax.gumbel_noise(jax.random.key(7), (rows, width)), np.float64)
  assert stats.kstest(g.ravel(), stats.gumbel_r.cdf).pvalue > 1e-3
  assert stats.kstest(g.ravel(), stats.gumbel_r(loc=0.02).cdf).pvalue < 1e-6
  bound = 5 / np.sqrt(width // 2)
  assert abs(np.corrcoef(g[0, :-1:2], g[0, 1::2])[0, 1]) < bound
  assert abs(np.corrcoef(g[0], g[1])[0, 1]) < bound
  for row in g:
    assert abs(np.corrcoef(row[: width // 2], row[width // 2:])[0, 1]) < bound
  assert relax.gumbel_noise(KEY, (3,), jnp.bfloat16).dtype == jnp.bfloat16
  assert relax.gumbel_noise(KEY, ()).shape == ()


def test_gumbel_max_samples_follow_softmax_chi_square():
  """20k samples (fixed seed) fit softmax(logits) at significance 1e-3 on the last axis
  and on axis 0; the same counts are rejected (p < 1e-6) against softmax(-logits) and
  the uniform distribution; a -inf class is never drawn; the samples are exactly
  first_argmax(logits + gumbel_noise(key, logits.shape))."""
  o = np.log(np.array([0.05, 0.15, 0.3, 0.5], np.float32))
  rows = np.broadcast_to(o, (N_DRAWS, 4))
  p = np.exp(o.astype(np.float64))
  for axis, logits in ((-1, rows), (0, rows.T)):
    s = np.asarray(relax.gumbel_max(jax.random.key(11), logits, axis=axis))
    assert s.shape == (N_DRAWS,) and s.dtype == np.int32
    counts = np.bincount(s, minlength=4).astype(np.float64)
    assert stats.chisquare(counts, N_DRAWS * p).pvalue > 1e-3
    assert stats.chisquare(counts, N_DRAWS * p[::-1]).pvalue < 1e-6
    assert stats.chisquare(counts, np.full(4, N_DRAWS / 4)).pvalue < 1e-6
  masked = np.array([[0.0, -np.inf, 0.0]] * 2000, np.float32)
  assert (np.asarray(relax.gumbel_max(KEY, masked)) != 1).all()
  np.testing.assert_array_equal(
      relax.gumbel_max(KEY, LOGITS),
      relax.first_argmax(LOGITS + relax.gumbel_noise(KEY, LOGITS.shape)))


def test_gumbel_softmax_approaches_one_hot_as_temperature_goes_to_zero():
  """The mean L1 gap to the nearest one-hot shrinks with tau1, ~0 at 0.01.

  20k samples, fixed seed. Tolerances: at tau1 = 0.01 the gap must be < 0.02
  and the largest coordinate > 0.99 on average; a relaxation that ignored
  tau1 would stay near the word probabilities (largest ~0.5 here, gap ~1).
  """
  rows = np.broadcast_to(np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32)),
                         (N_DRAWS, 4))
  gaps = []
  for tau1 in (2.0, 1.0, 0.3, 0.1, 0.01):
    x = relax.gumbel_softmax(KEY, rows, temperature=tau1)
    hard = jax.nn.one_hot(jnp.argmax(x, -1), 4)
    gaps.append(float(jnp.abs(x - hard).sum(-1).mean()))
    if tau1 == 0.01:
      assert float(x.max(-1).mean()) > 0.99
  assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
  assert gaps[0] > 0.5 and gaps[-1] < 0.02, gaps


# --------------------------------------------------------------------------
# topk_softmax_embedding


def test_topk_hand_values():
  Wh = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  f = jnp.log(jnp.array([0.3, 0.6, 0.1]))
  vec, idx, w = relax.topk_softmax_embedding(f, Wh, k=2)
  np.testing.assert_array_equal(idx, [1, 0])
  np.testing.assert_allclose(w, [2 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(vec, [1 / 3, 2 / 3], rtol=1e-6)
  chex.assert_type(idx, jnp.int32)


def test_topk_with_k_equal_vocab_is_the_full_softmax_average():
  out = relax.topk_softmax_embedding(LOGITS, W, k=6)
  full = relax.soft_embedding(jax.nn.softmax(LOGITS), W)
  np.testing.assert_allclose(out.vector, full, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.sort(out.weights, -1),
                             jnp.sort(jax.nn.softmax(LOGITS), -1), rtol=1e-5)


def test_topk_with_k1_is_the_argmax_word_vector():
  out = relax.topk_softmax_embedding(LOGITS, W, k=1)
  np.testing.assert_allclose(out.vector, W[np.argmax(LOGITS, -1)], rtol=1e-6)
  np.testing.assert_array_equal(out.weights, 1.0)


def test_topk_indices_weights_and_gradient_support():
  logits = (RNG.permutation(6).astype(np.float32) / 3.0)
  k = 3
  out = relax.topk_softmax_embedding(logits, W, k)
  top = np.argsort(-logits)[:k]
  np.testing.assert_array_equal(out.indices, top)
  np.testing.assert_allclose(out.weights, jax.nn.softmax(logits[top]),
                             rtol=1e-6)
  np.testing.assert_allclose(out.weights.sum(), 1.0, rtol=1e-6)
  g_logits, g_W = jax.grad(
      lambda l, w: jnp.sum(relax.topk_softmax_embedding(l, w, k).vector ** 2),
      argnums=(0, 1))(logits, W)
  outside = np.setdiff1d(np.arange(6), top)
  np.testing.assert_array_equal(np.asarray(g_logits)[outside], 0.0)
  np.testing.assert_array_equal(np.asarray(g_W)[outside], 0.0)
  assert np.abs(np.asarray(g_logits)[top]).min() > 0
  assert np.abs(np.asarray(g_W)[top]).min() > 0


def test_topk_transforms_batched_shapes_and_errors():
  logits = RNG.randn(4, 2, 6).astype(np.float32)  # [B, T, V]
  fn = lambda l: relax.topk_softmax_embedding(l, W, 2)
  out = fn(logits)
  chex.assert_shape(out, [(4, 2, 3), (4, 2, 2), (4, 2, 2)])  # vector, indices, weights
  _assert_transforms_agree(fn, logits)
  with pytest.raises(ValueError):
    relax.topk_softmax_embedding(LOGITS, W, 0)
  with pytest.raises(ValueError):
    relax.topk_softmax_embedding(LOGITS, W, 7)
  with pytest.raises(ValueError):
    relax.topk_softmax_embedding(LOGITS, W[:5], 2)


# --------------------------------------------------------------------------
# soft_embedding


def test_soft_embedding_values_and_transforms():
  Wh = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  np.testing.assert_allclose(
      relax.soft_embedding(jnp.array([0.5, 0.5, 0.0]), Wh), [0.5, 0.5])
  np.testing.assert_allclose(  # a one-hot picks the row
      relax.soft_embedding(np.eye(3, dtype=np.float32)[[2, 0]], Wh),
      [[5.0, 5.0], [1.0, 0.0]])
  probs = jax.nn.softmax(LOGITS)
  _assert_transforms_agree(lambda p: relax.soft_embedding(p, W), probs)
  with pytest.raises(ValueError):
    relax.soft_embedding(probs, W[:2])


def test_straight_through_into_soft_embedding_gives_the_word_vector():
  """The latent-GAN reconstructor input: forward = the sampled word's vector."""
  hard = relax.gumbel_softmax(KEY, LOGITS, 0.1, hard=True)
  np.testing.assert_array_equal(relax.soft_embedding(hard, W),
                                W[np.argmax(hard, -1)])


# --------------------------------------------------------------------------
# gradients


def test_check_grads_of_every_differentiable_function():
  """jax.test_util.check_grads (reverse mode, float64), all cases in one jit.

  straight_through is checked by its exact identity VJP above (its forward
  pass is piecewise constant, so finite differences do not apply), and the
  hard Gumbel-softmax by the straight-through gradient tests.
  """
  rng = np.random.RandomState(3)
  # Well-separated logits so finite-difference steps do not reorder the top-k.
  sep = rng.permutation(12).astype(np.float64).reshape(2, 6) * 0.7
  cases = {
      "gumbel_softmax": (lambda l, t1, t2: relax.gumbel_softmax(
          KEY, l, temperature=t1, word_temperature=t2),
                         (rng.randn(4, 6), 0.8, 1.3)),
      "topk_softmax_embedding": (
          lambda l, w: relax.topk_softmax_embedding(l, w, 2).vector,
          (sep, rng.randn(6, 3))),
      "soft_embedding": (relax.soft_embedding,
                         (rng.rand(4, 6), rng.randn(6, 3))),
  }
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
