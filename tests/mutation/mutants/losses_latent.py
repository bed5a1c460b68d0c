"""Mutants of the latent-variable loss terms (vedgan/losses/latent.py)."""
from mutation.mutant import Mutant

LAT = "vedgan/losses/latent.py"
L = "tests/test_losses.py::"
N = "tests/test_losses_latent.py::"
KL = (L + "test_gaussian_kl_hand_values", L + "test_gaussian_kl_defaults_positivity_and_shapes",
      L + "test_gaussian_kl_matches_monte_carlo", N + "test_gaussian_kl_closed_form_reference")

MUTANTS = [
    Mutant("losses_latent/kl_variance_ratio_inverted", LAT,
           "jnp.exp(logvar_q - logvar_p)", "jnp.exp(logvar_p - logvar_q)",
           "Gaussian KL(q||p): the trace term is sigma_q^2 / sigma_p^2", KL),
    Mutant("losses_latent/kl_mean_term_not_scaled_by_prior_variance", LAT,
           "jnp.square(mean_q - mean_p) * jnp.exp(-logvar_p)", "jnp.square(mean_q - mean_p)",
           "Gaussian KL(q||p): the mean term is (mu_q - mu_p)^2 / sigma_p^2", KL),
    Mutant("losses_latent/kl_log_ratio_sign", LAT,
           "0.5 * (logvar_p - logvar_q +", "0.5 * (logvar_q - logvar_p +",
           "Gaussian KL(q||p): the log term is log sigma_p^2 - log sigma_q^2", KL),
    Mutant("losses_latent/kl_no_half", LAT,
           "return 0.5 * (logvar_p - logvar_q", "return (logvar_p - logvar_q",
           "Gaussian KL is 1/2 (...) per dimension (Eq. 2's KL in nats)", KL),
    Mutant("losses_latent/kl_drops_minus_one", LAT,
           "* jnp.exp(-logvar_p) - 1.0)", "* jnp.exp(-logvar_p))",
           "Gaussian KL(q||p) is 0 at q = p: the -1 of the closed form", KL),
    Mutant("losses_latent/sample_std_is_variance", LAT,
           "mean + jnp.exp(0.5 * logvar) * eps", "mean + jnp.exp(logvar) * eps",
           "Reparameterisation: z = mu + sigma * eps with sigma = exp(logvar / 2)",
           (N + "test_gaussian_sample_scale_is_the_standard_deviation",)),
    Mutant("losses_latent/free_bits_per_dim_minimum", LAT,
           "jnp.sum(jnp.maximum(kl_per_dim, threshold), axis=-1)",
           "jnp.sum(jnp.minimum(kl_per_dim, threshold), axis=-1)",
           "FB baseline: sum_d max(lambda, KL_d) (Kingma et al. 2016)",
           (L + "test_free_bits_values_and_gradients",)),
    Mutant("losses_latent/free_bits_total_floors_each_dim", LAT,
           "jnp.maximum(jnp.sum(kl_per_dim, axis=-1), threshold)",
           "jnp.sum(jnp.maximum(kl_per_dim, threshold), axis=-1)",
           "FB-all baseline: max(lambda, sum_d KL_d), one floor for the whole latent",
           (L + "test_free_bits_values_and_gradients",)),
    Mutant("losses_latent/kl_threshold_minimum", LAT,
           "return jnp.maximum(alpha, jnp.asarray(kl))", "return jnp.minimum(alpha, jnp.asarray(kl))",
           "Eq. 9: max(alpha, KL); min would cap the KL and reward collapse",
           (L + "test_kl_threshold_values_and_gradients", N + "test_kl_threshold_and_reconstruction_hand_values")),
    Mutant("losses_latent/recon_no_half", LAT,
           "return 0.5 * jnp.sum(jnp.square(diff), axis=-1)",
           "return jnp.sum(jnp.square(diff), axis=-1)",
           "Eq. 8: 1/2 ||g(eps) - z~||^2, the NLL of z~ under N(g(eps), I)",
           (L + "test_reconstruction_losses", N + "test_kl_threshold_and_reconstruction_hand_values")),
    Mutant("losses_latent/recon_mean_not_sum", LAT,
           "return 0.5 * jnp.sum(jnp.square(diff), axis=-1)",
           "return 0.5 * jnp.mean(jnp.square(diff), axis=-1)",
           "Eq. 8: the squared norm sums over the D dimensions",
           (L + "test_reconstruction_losses", N + "test_kl_threshold_and_reconstruction_hand_values")),
]
