"""The GAN losses of vedgan/losses/gan.py against the papers' equations written out in numpy,
and the direction in which each one moves the discriminator's output (no models)."""
import jax
import jax.numpy as jnp
import numpy as np

from vedgan import losses

LOGITS = np.float32([-2.0, -0.5, 0.0, 0.7, 3.0])


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_dialogue_discriminator_loss_is_eq5_with_l_1_for_the_bot():
  """Eq. 5, ``-[l log a + (1 - l) log(1 - a)]`` with ``a = P(bot)``: a generated response
  (``l = 1``) costs ``-log a``, a human one (``l = 0``) ``-log(1 - a)``; descending it moves
  ``a`` up on the bot's responses and down on human ones."""
  a = _sigmoid(LOGITS)
  bot = losses.dialogue_discriminator_loss(LOGITS, np.ones_like(LOGITS))
  human = losses.dialogue_discriminator_loss(LOGITS, np.zeros_like(LOGITS))
  np.testing.assert_allclose(bot, -np.log(a), rtol=1e-5)
  np.testing.assert_allclose(human, -np.log(1 - a), rtol=1e-5)
  assert (np.asarray(bot) > 0).all() and (np.asarray(human) > 0).all()
  labels = np.float32([1, 0, 1, 0, 1])
  g = jax.grad(lambda l: losses.dialogue_discriminator_loss(l, labels).sum())(LOGITS)
  np.testing.assert_allclose(g, a - labels, rtol=1e-5, atol=1e-7)  # d/dlogit of the BCE
  assert (np.asarray(g)[labels == 1] < 0).all() and (np.asarray(g)[labels == 0] > 0).all()


def test_dialogue_generator_loss_is_eq6_and_pushes_a_down():
  """Eq. 6: the generator's per-example loss is ``a`` itself; its gradient in the logit is
  ``a (1 - a) > 0``, so descending it makes D less sure the response is a bot's."""
  a = _sigmoid(LOGITS)
  np.testing.assert_allclose(losses.dialogue_generator_loss(LOGITS), a, rtol=1e-6)
  g = jax.grad(lambda l: losses.dialogue_generator_loss(l).sum())(LOGITS)
  np.testing.assert_allclose(g, a * (1 - a), rtol=1e-5)
  # Minimising L_G = mean(a) is maximising D's loss on the same responses labelled l = 1.
  d = jax.grad(lambda l: losses.dialogue_discriminator_loss(l, jnp.ones_like(l)).sum())(LOGITS)
  assert (np.sign(np.asarray(g)) == -np.sign(np.asarray(d))).all()


def test_prefix_losses_are_eq1_and_eq3_per_prefix():
  """Latent GAN Eq. 1 per prefix: ``-sum_t m_t log D_t`` (real), ``-sum_t m_t log(1 - D_t)``
  (generated); Eq. 3: ``sum_t m_t log(1 - D_t)`` (minimax), ``-sum_t m_t log D_t``
  (non-saturating); each generator form lowers as D's logit on the fakes rises."""
  real = np.float32([[1.0, -1.0, 2.0], [0.5, 0.0, -3.0]])
  fake = np.float32([[-1.5, 0.2, 4.0], [2.0, -0.3, 1.0]])
  real_mask = np.float32([[1, 1, 0], [1, 1, 1]])
  fake_mask = np.float32([[1, 0, 0], [1, 1, 0]])
  dr, df = _sigmoid(real), _sigmoid(fake)
  got_real, got_fake = losses.prefix_discriminator_loss(real, real_mask, fake, fake_mask)
  np.testing.assert_allclose(got_real, -(real_mask * np.log(dr)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(got_fake, -(fake_mask * np.log(1 - df)).sum(-1), rtol=1e-5)
  minimax = losses.prefix_generator_loss(fake, fake_mask)
  nonsat = losses.prefix_generator_loss(fake, fake_mask, non_saturating=True)
  np.testing.assert_allclose(minimax, (fake_mask * np.log(1 - df)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(nonsat, -(fake_mask * np.log(df)).sum(-1), rtol=1e-5)
  for ns in (False, True):
    g = jax.grad(lambda f: losses.prefix_generator_loss(f, fake_mask, ns).sum())(fake)
    assert (np.asarray(g)[fake_mask > 0] < 0).all()
    np.testing.assert_array_equal(np.asarray(g)[fake_mask == 0], 0.0)


def test_latent_reconstruction_loss_is_the_mean_over_latent_dims():
  """Latent GAN Eq. 3's second term: ``(1 / N_z) ||R(x) - z||^2`` per example."""
  r = np.float32([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
  z = np.float32([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  np.testing.assert_allclose(losses.latent_reconstruction_loss(r, z),
                             [(4 + 9 + 16) / 4, 1.0], rtol=1e-6)
