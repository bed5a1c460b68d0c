"""Latent-variable loss terms against independent closed forms (float64 NumPy)."""
import jax
import jax.numpy as jnp
import numpy as np

from vedgan import losses


def _kl_reference(mq, lq, mp, lp):
  """``KL(N(mq, e^lq) || N(mp, e^lp))`` per dimension: ``log(s_p / s_q) +
  (s_q^2 + (mq - mp)^2) / (2 s_p^2) - 1/2``."""
  sq, sp = np.exp(0.5 * lq), np.exp(0.5 * lp)
  return np.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5


def test_gaussian_kl_closed_form_reference():
  """Eq. 2 / 8 / 9's KL(q || p): value per dimension, its direction, and its gradient."""
  rng = np.random.default_rng(0)
  mq, lq, mp, lp = (rng.normal(size=(3, 5)) for _ in range(4))
  got = np.asarray(losses.gaussian_kl(*(jnp.float32(a) for a in (mq, lq, mp, lp))))
  np.testing.assert_allclose(got, _kl_reference(mq, lq, mp, lp), rtol=1e-5, atol=1e-6)
  # Not symmetric: KL(p || q) is a different number.
  assert np.abs(_kl_reference(mp, lp, mq, lq) - got).max() > 1e-2
  # Standard normal prior by default.
  np.testing.assert_allclose(np.asarray(losses.gaussian_kl(jnp.float32(mq), jnp.float32(lq))),
                             _kl_reference(mq, lq, 0.0, 0.0), rtol=1e-5, atol=1e-6)
  # d KL / d mu_q = (mu_q - mu_p) / s_p^2, d KL / d logvar_q = (s_q^2 / s_p^2 - 1) / 2.
  g_m, g_l = jax.grad(lambda m, l: losses.gaussian_kl(m, l, jnp.float32(mp),
                                                       jnp.float32(lp)).sum(), (0, 1))(
                                                           jnp.float32(mq), jnp.float32(lq))
  np.testing.assert_allclose(np.asarray(g_m), (mq - mp) / np.exp(lp), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_l), 0.5 * (np.exp(lq - lp) - 1), rtol=1e-5, atol=1e-6)


def test_gaussian_sample_scale_is_the_standard_deviation():
  """Reparameterisation ``z = mu + exp(logvar / 2) eps``: sample moments and the pathwise
  gradients ``dz/dmu = 1``, ``dz/dlogvar = (z - mu) / 2``."""
  mean = jnp.array([1.0, -2.0])
  logvar = jnp.log(jnp.array([4.0, 0.25]))
  z = np.asarray(losses.gaussian_sample(jax.random.key(5), jnp.tile(mean, (20000, 1)),
                                        jnp.tile(logvar, (20000, 1))))
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.05)
  np.testing.assert_allclose(z.std(0), [2.0, 0.5], rtol=0.03)
  m, lv = jnp.array([0.3, -0.7, 1.1]), jnp.array([0.5, -1.0, 0.2])
  sample = lambda m, lv: losses.gaussian_sample(jax.random.key(6), m, lv)
  zs = sample(m, lv)
  g_m, g_lv = jax.jacfwd(sample, (0, 1))(m, lv)
  np.testing.assert_allclose(np.asarray(g_m), np.eye(3), atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_lv), np.diag(0.5 * np.asarray(zs - m)), rtol=1e-5,
                             atol=1e-7)


def test_kl_threshold_and_reconstruction_hand_values():
  """Eq. 9's ``max(alpha, KL)`` (no gradient below alpha) and Eq. 8's ``1/2 ||g - z~||^2``
  (summed over dimensions)."""
  kl = jnp.array([1.0, 4.0, 9.0])
  np.testing.assert_allclose(np.asarray(losses.kl_threshold(kl, 5.0)), [5.0, 5.0, 9.0])
  g = jax.grad(lambda k: losses.kl_threshold(k, 5.0).sum())(kl)
  np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0, 1.0])
  pred, target = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), jnp.array([[0.0, 0.0, 2.0],
                                                                            [1.0, 1.0, 1.0]])
  np.testing.assert_allclose(np.asarray(losses.gaussian_reconstruction_loss(pred, target)),
                             [4.5, 1.5])
