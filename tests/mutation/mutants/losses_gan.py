"""Mutants of the GAN losses (vedgan/losses/gan.py): dialogue GAN Eq. 5-6, latent GAN Eq. 1, 3."""
from mutation.mutant import Mutant

GAN = "vedgan/losses/gan.py"
L = "tests/test_losses.py::"
G = "tests/test_losses_gan.py::"

DIALOGUE = (L + "test_dialogue_gan_losses",
            G + "test_dialogue_discriminator_loss_is_eq5_with_l_1_for_the_bot",
            G + "test_dialogue_generator_loss_is_eq6_and_pushes_a_down")
PREFIX = (L + "test_prefix_discriminator_loss_values_masks_and_stability",
          L + "test_prefix_generator_loss_forms",
          G + "test_prefix_losses_are_eq1_and_eq3_per_prefix")
RECON = (L + "test_reconstruction_losses",
         G + "test_latent_reconstruction_loss_is_the_mean_over_latent_dims")

MUTANTS = [
    Mutant("losses_gan/dialogue_d_labels_swapped", GAN,
           "return -(labels * jax.nn.log_sigmoid(logits)\n"
           "           + (1.0 - labels) * jax.nn.log_sigmoid(-logits))",
           "return -((1.0 - labels) * jax.nn.log_sigmoid(logits)\n"
           "           + labels * jax.nn.log_sigmoid(-logits))",
           "Eq. 5: a = P(bot), so l = 1 (bot) pairs with log a and l = 0 (human) with log(1 - a)",
           DIALOGUE),
    Mutant("losses_gan/dialogue_d_sign", GAN,
           "return -(labels * jax.nn.log_sigmoid(logits)",
           "return (labels * jax.nn.log_sigmoid(logits)",
           "Eq. 5: L_D is the negative log-likelihood (cross-entropy) to minimise", DIALOGUE),
    Mutant("losses_gan/dialogue_g_one_minus_a", GAN,
           "return jax.nn.sigmoid(_upcast(logits))",
           "return jax.nn.sigmoid(-_upcast(logits))",
           "Eq. 6: G minimises a (D's confidence that the response is a bot's), not 1 - a",
           DIALOGUE),
    Mutant("losses_gan/dialogue_g_log_a", GAN,
           "return jax.nn.sigmoid(_upcast(logits))",
           "return jax.nn.log_sigmoid(_upcast(logits))",
           "Eq. 6: L_G averages a itself, not log a", DIALOGUE),
    Mutant("losses_gan/prefix_d_fake_sign", GAN,
           "fake = -_masked_sum(jax.nn.log_sigmoid(-fake_logits), fake_mask)",
           "fake = -_masked_sum(jax.nn.log_sigmoid(fake_logits), fake_mask)",
           "latent GAN Eq. 1: generated prefixes enter as log(1 - D), not log D", PREFIX),
    Mutant("losses_gan/prefix_d_real_mask_ignored", GAN,
           "real = -_masked_sum(jax.nn.log_sigmoid(real_logits), real_mask)",
           "real = -_masked_sum(jax.nn.log_sigmoid(real_logits), jnp.ones_like(real_logits))",
           "latent GAN Eq. 1: only the real prefixes x_{<=t} (mask 1) are scored", PREFIX),
    Mutant("losses_gan/prefix_g_minimax_sign", GAN,
           "return _masked_sum(jax.nn.log_sigmoid(-fake_logits), mask)",
           "return -_masked_sum(jax.nn.log_sigmoid(-fake_logits), mask)",
           "latent GAN Eq. 3: G minimises log(1 - D(x~)); the flipped sign helps D", PREFIX),
    Mutant("losses_gan/prefix_g_nonsaturating_sign", GAN,
           "return -_masked_sum(jax.nn.log_sigmoid(fake_logits), mask)",
           "return _masked_sum(jax.nn.log_sigmoid(fake_logits), mask)",
           "latent GAN Eq. 3 (non-saturating form): G minimises -log D(x~)", PREFIX),
    Mutant("losses_gan/latent_recon_sum", GAN,
           "return jnp.mean(jnp.square(diff), axis=-1)",
           "return jnp.sum(jnp.square(diff), axis=-1)",
           "latent GAN Eq. 3: the reconstruction term is (1/N_z) ||R(x) - z||^2", RECON),
]
