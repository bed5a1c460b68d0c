"""GAN losses: per-prefix and dialogue discriminator / generator losses, latent reconstruction."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vedgan.losses._common import _upcast, _check_same_shape, _masked_sum

__all__ = ["prefix_discriminator_loss", "prefix_generator_loss", "dialogue_discriminator_loss",
           "dialogue_generator_loss", "latent_reconstruction_loss"]


@jax.jit
def prefix_discriminator_loss(
    real_logits: jax.Array,
    real_mask: jax.Array,
    fake_logits: jax.Array,
    fake_mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Per-prefix discriminator loss on real and generated sequences.

  Implements latent-space GAN Eq. 1 (as a loss to minimise) and Algorithm 1,
  lines 12-13, the ScratchGAN-style recurrent discriminator that scores every
  prefix ``x_{<=t}``: with ``D_t = sigmoid(logit_t)`` the probability that
  the prefix is real::

      real[b] = -sum_t mask_t * log D(x_t | x_{<t})           (real data)
      fake[b] = -sum_t mask_t * log(1 - D(x~_t | x~_{<t}))    (generator)

  computed stably with ``log_sigmoid``. Real and generated batches may differ
  in size. The paper's ``L = D_real + D_fake`` divides each by ``T``; ScratchGAN
  weights them 0.5/0.5.

  Args:
    real_logits: ``[B_r, T]`` discriminator logits on real prefixes.
    real_mask: ``[B_r, T]`` 1 for prefixes to score.
    fake_logits: ``[B_f, T]`` logits on generated prefixes.
    fake_mask: ``[B_f, T]``.

  Returns:
    ``(real_loss [B_r], fake_loss [B_f])``.

  >>> import jax.numpy as jnp
  >>> real, fake = prefix_discriminator_loss(
  ...     jnp.array([[0.0, 0.0]]), jnp.array([[1, 1]]),
  ...     jnp.array([[0.0, 9.0]]), jnp.array([[1, 0]]))
  >>> print(jnp.round(real, 4), jnp.round(fake, 4))  # 2 log 2, log 2
  [1.3863] [0.6931]
  """
  real_logits = _upcast(real_logits)
  fake_logits = _upcast(fake_logits)
  _check_same_shape("real_mask", jnp.asarray(real_mask), "real_logits",
                    real_logits)
  _check_same_shape("fake_mask", jnp.asarray(fake_mask), "fake_logits",
                    fake_logits)
  real = -_masked_sum(jax.nn.log_sigmoid(real_logits), real_mask)
  fake = -_masked_sum(jax.nn.log_sigmoid(-fake_logits), fake_mask)
  return real, fake


@functools.partial(jax.jit, static_argnames=("non_saturating",))
def prefix_generator_loss(fake_logits: jax.Array, mask: jax.Array,
                          non_saturating: bool = False) -> jax.Array:
  """Generator loss against a per-prefix discriminator.

  Implements the adversarial term of latent-space GAN Eq. 3 (Algorithm 1,
  line 27), minimised by the generator::

      minimax (default):  loss[b] =  sum_t mask_t * log(1 - D(x~_t | x~_{<t}))
      non_saturating:     loss[b] = -sum_t mask_t * log D(x~_t | x~_{<t})

  The non-saturating form (Goodfellow et al., 2014) has the same fixed point
  and stronger gradients while the discriminator wins. ``D = sigmoid(logit)``;
  the generator's gradient reaches the logits through the relaxed inputs
  (Gumbel-softmax soft one-hots) fed to the discriminator. Add
  ``lambda * latent_reconstruction_loss(...)`` for the full Eq. 3.

  Args:
    fake_logits: ``[B, T]`` discriminator logits on generated prefixes.
    mask: ``[B, T]``.
    non_saturating: use ``-log D`` instead of ``log(1 - D)``.

  Returns:
    ``[B]`` per-sequence loss (the minimax form is <= 0).

  >>> import jax.numpy as jnp
  >>> l = jnp.array([[0.0, 0.0]]); m = jnp.array([[1, 0]])
  >>> print(jnp.round(prefix_generator_loss(l, m), 4),
  ...       jnp.round(prefix_generator_loss(l, m, non_saturating=True), 4))
  [-0.6931] [0.6931]
  """
  fake_logits = _upcast(fake_logits)
  _check_same_shape("mask", jnp.asarray(mask), "fake_logits", fake_logits)
  if non_saturating:
    return -_masked_sum(jax.nn.log_sigmoid(fake_logits), mask)
  return _masked_sum(jax.nn.log_sigmoid(-fake_logits), mask)


@jax.jit
def dialogue_discriminator_loss(logits: jax.Array,
                                labels: jax.Array) -> jax.Array:
  """Binary cross-entropy of the dialogue GAN's discriminator, per example.

  Implements dialogue GAN Eq. 5 (without the ``1/|B_D|``)::

      loss = -[l * log a + (1 - l) * log(1 - a)],   a = sigmoid(logit)

  Mind the paper's convention: ``a`` is the confidence that the response was
  **produced by the chatbot**, so ``l = 1`` marks generated responses and
  ``l = 0`` human ones. Computed stably from logits.

  Args:
    logits: ``[B]`` (any shape) discriminator logits for (input, response).
    labels: same shape, 1 for generated, 0 for human (floats allowed).

  Returns:
    Per-example loss, same shape as ``logits``.

  >>> import jax.numpy as jnp
  >>> print(jnp.round(dialogue_discriminator_loss(jnp.array([0.0, 2.0]),
  ...                                             jnp.array([1, 0])), 4))
  [0.6931 2.1269]
  """
  logits = _upcast(logits)
  labels = jnp.asarray(labels).astype(logits.dtype)
  _check_same_shape("labels", labels, "logits", logits)
  return -(labels * jax.nn.log_sigmoid(logits)
           + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


@jax.jit
def dialogue_generator_loss(logits: jax.Array) -> jax.Array:
  """The dialogue GAN's generator loss: the discriminator's output itself.

  Implements dialogue GAN Eq. 6 (without the ``1/|B_G|``): ``loss = a``, the
  discriminator's probability that the generated response is a bot's,
  ``a = sigmoid(logit)``. The generator's gradient reaches the logits through
  :func:`vedgan.relax.topk_softmax_embedding` inputs.

  Args:
    logits: ``[B]`` discriminator logits on (input, generated response).

  Returns:
    ``[B]`` values in (0, 1).

  >>> import jax.numpy as jnp
  >>> print(dialogue_generator_loss(jnp.array([0.0])))
  [0.5]
  """
  return jax.nn.sigmoid(_upcast(logits))


@jax.jit
def latent_reconstruction_loss(reconstructed: jax.Array,
                               z: jax.Array) -> jax.Array:
  """``(1 / N_z) * ||R(x) - z||^2``: the latent-space GAN reconstruction loss.

  Implements the second term of latent-space GAN Eq. 3 (Algorithm 1,
  line 28, weighted by ``lambda`` = 1.0 in the paper): the reconstructor
  ``R`` reads the straight-through hard one-hots of the generated text and
  regresses the latent code ``z`` it was generated from.

  Args:
    reconstructed: ``[..., N_z]`` output of the reconstructor.
    z: ``[..., N_z]`` sampled latent code.

  Returns:
    ``[...]`` mean squared error over the latent dimensions.

  >>> import jax.numpy as jnp
  >>> print(latent_reconstruction_loss(jnp.array([1.0, 3.0]),
  ...                                  jnp.array([0.0, 1.0])))
  2.5
  """
  diff = jnp.asarray(reconstructed) - jnp.asarray(z)
  return jnp.mean(jnp.square(diff), axis=-1)
