"""Mutants of the latent-space language GAN (vedgan/papers/latent_gan).

Kojima, Iwasawa, Matsuo: Eq. 1 (D's loss), Eq. 2 (Gumbel-softmax with tau_1, tau_2),
Eq. 3 (G and R's loss), Fig. 2 (straight-through hard one-hots for R), Algorithm 1.
"""
from mutation.mutant import Mutant

ALGO = "vedgan/papers/latent_gan/algorithm.py"
CONFIG = "configs/latent_gan.py"
SAMPLING = "vedgan/papers/latent_gan/sampling.py"
LM = "vedgan/papers/latent_gan/lstm_lm.py"
NN = "vedgan/nn/gan.py"
TESTS = ("tests/test_latent_gan.py::"
         "test_generator_gets_gradients_from_both_discriminator_and_reconstructor",)
W = "tests/test_latent_gan_wiring.py::"
DISC = (W + "test_disc_loss_is_eq1_plus_l2_value_and_gradient",)
GEN = (W + "test_gen_loss_is_eq3_value_and_gradient",)
DIRECTION = (W + "test_one_step_of_each_player_moves_d_the_right_way",)
EVAL = (W + "test_eval_step_matches_reference",)
SAMPLE = (W + "test_sampling_draws_from_softmax_of_logits_over_tau2",)
MLE = (W + "test_lstm_lm_loss_is_token_mean_nll_up_to_first_blank",)
AW = "tests/test_latent_gan_adversarial_weight.py::"
REDUCTION = (AW + "test_gen_loss_matches_the_composed_reference_value_and_gradient",
             AW + "test_sum_is_t_times_mean_on_a_full_length_batch")
REDUCTION_DEFAULT = (AW + "test_option_is_declared_defaults_to_mean_and_rejects_other_values",)

MUTANTS = [
    # -- Eq. 3: the generator / reconstructor step ----------------------------------------
    Mutant("latent_gan/gen_adv_sign", ALGO,
           "return Weighted(adv + float(m.recon_weight) * recon",
           "return Weighted(-adv + float(m.recon_weight) * recon",
           "Eq. 3: the generator minimises its adversarial loss; the flipped sign helps D",
           TESTS + GEN + DIRECTION),
    Mutant("latent_gan/gen_disc_reads_hard", ALGO,
           'logits = self.discriminate(params["discriminator"], out.soft, keys["dropout"])',
           'logits = self.discriminate(params["discriminator"], out.hard, keys["dropout"])',
           "Fig. 1 / Eq. 3: D scores the soft Gumbel-softmax one-hots x~ in the G step",
           GEN),
    Mutant("latent_gan/gen_recon_reads_soft", ALGO,
           'z_hat = self.reconstructor.apply({"params": params["reconstructor"]}, out.hard)\n'
           '    recon = losses.latent_reconstruction_loss(z_hat, z).mean()',
           'z_hat = self.reconstructor.apply({"params": params["reconstructor"]}, out.soft)\n'
           '    recon = losses.latent_reconstruction_loss(z_hat, z).mean()',
           "Fig. 2 / Eq. 3: R reads the straight-through hard one-hots x., not the soft x~",
           GEN),
    Mutant("latent_gan/gen_recon_weight_ignored", ALGO,
           "return Weighted(adv + float(m.recon_weight) * recon",
           "return Weighted(adv + recon",
           "Eq. 3: the reconstruction term is weighted by lambda (Fig. 4 sweeps it)",
           GEN),
    Mutant("latent_gan/gen_adv_not_over_T", ALGO,
           "adv = adv.mean() / self.adversarial_divisor",
           "adv = adv.mean()",
           "Alg. 1 l. 27: the adversarial term is (1/T) sum_t; without 1/T lambda weighs it T "
           "times less", GEN + REDUCTION),
    Mutant("latent_gan/adversarial_reduction_swapped", ALGO,
           'self.adversarial_divisor = float(self.length) if m.adversarial_reduction == "mean" else 1.0',
           'self.adversarial_divisor = 1.0 if m.adversarial_reduction == "mean" else float(self.length)',
           "model.adversarial_reduction: 'mean' is Alg. 1 l. 27's (1/T) sum_t, 'sum' Eq. 3's sum_t",
           REDUCTION + REDUCTION_DEFAULT),
    Mutant("latent_gan/gen_adv_mean_over_scored_prefixes", ALGO,
           "adv = adv.mean() / self.adversarial_divisor",
           "adv = adv.mean() / jnp.maximum(self.mask(out.tokens).sum(1).mean(), 1.0)",
           "Alg. 1 l. 27: 1/T divides by the fixed length T, not by the number of scored prefixes",
           REDUCTION),
    Mutant("latent_gan/adversarial_reduction_default_sum", CONFIG,
           'm.adversarial_reduction = "mean"',
           'm.adversarial_reduction = "sum"',
           "the default weight of the adversarial term is Alg. 1 l. 27's (1/T) mean (the "
           "code's behaviour before the option existed)", REDUCTION_DEFAULT),
    Mutant("latent_gan/gen_loss_flag_inverted", ALGO,
           'non_saturating=m.gen_loss == "non_saturating")',
           'non_saturating=m.gen_loss != "non_saturating")',
           "Eq. 3 / Alg. 1 l. 27: gen_loss='minimax' minimises log(1 - D), not -log D",
           GEN),
    Mutant("latent_gan/gen_mask_ignored", ALGO,
           "adv = losses.prefix_generator_loss(logits, self.mask(out.tokens),",
           "adv = losses.prefix_generator_loss(logits, jnp.ones_like(logits),",
           "ScratchGAN masking: prefixes after the first blank are not scored in G's loss",
           GEN),
    # -- Eq. 1: the discriminator step ----------------------------------------------------
    Mutant("latent_gan/disc_labels_swapped", ALGO,
           "real_logits, fake_logits = logits[:n], logits[n:]",
           "real_logits, fake_logits = logits[n:], logits[:n]",
           "Eq. 1: D is trained to call real sentences real and generated ones fake",
           DISC + DIRECTION),
    Mutant("latent_gan/disc_not_over_T", ALGO,
           "d_real, d_fake = d_real.mean() / self.length, d_fake.mean() / self.length",
           "d_real, d_fake = d_real.mean(), d_fake.mean()",
           "Eq. 1: each term is (1/T) sum_t; without 1/T the L2 penalty weighs T times less",
           DISC),
    Mutant("latent_gan/disc_l2_weight", ALGO,
           "l2 = 0.5 * float(self.config.model.disc_weight_decay)",
           "l2 = 1.0 * float(self.config.model.disc_weight_decay)",
           "App. A: the L2 penalty is (wd / 2) ||phi||^2",
           DISC),
    Mutant("latent_gan/disc_fake_mask_from_real", ALGO,
           "real_mask, fake_mask = self.mask(real), self.mask(out.tokens)\n    d_params",
           "real_mask, fake_mask = self.mask(real), self.mask(real)\n    d_params",
           "ScratchGAN masking: a generated sentence is scored up to its own first blank",
           DISC),
    # -- Eq. 2: the rollout's temperatures, z ~ N(0, I) -----------------------------------
    Mutant("latent_gan/train_ignores_tau2", ALGO,
           "m.gumbel_temperature, m.word_temperature)",
           "m.gumbel_temperature, 1.0)",
           "Eq. 2 / App. B: training rollouts draw words from softmax(o / tau_2), tau_2 = 0.1",
           DISC + GEN),
    Mutant("latent_gan/train_temperatures_swapped", ALGO,
           "m.gumbel_temperature, m.word_temperature)",
           "m.word_temperature, m.gumbel_temperature)",
           "Eq. 2: tau_1 is the Gumbel-softmax temperature, tau_2 the word temperature",
           DISC + GEN),
    Mutant("latent_gan/latent_not_gaussian", SAMPLING,
           "return jax.random.normal(key, (n, self.latent_dim), jnp.float32)",
           "return jax.random.uniform(key, (n, self.latent_dim), jnp.float32)",
           "Alg. 1 lines 2, 17: z ~ N(0, I)",
           DISC + GEN),
    # -- sampling at tau_2 (Sec. 4.2) -----------------------------------------------------
    Mutant("latent_gan/sample_ignores_tau2", SAMPLING,
           "jnp.float32(temperature))))",
           "jnp.float32(1.0))))",
           "Sec. 4.2: sentences are sampled at word temperature tau_2 (the swept knob)",
           SAMPLE),
    Mutant("latent_gan/generate_ignores_temperature", SAMPLING,
           'temperature = 0.0 if options.mode == "greedy" else float(options.temperature)',
           'temperature = 0.0 if options.mode == "greedy" else 1.0',
           "Sec. 4.2: generate(mode=sample) samples at tau_2 = options.temperature",
           SAMPLE),
    Mutant("latent_gan/sample_tokens_ignores_tau2", NN,
           "token = relax.first_argmax(o / scale + jnp.where(greedy, 0.0, g))",
           "token = relax.first_argmax(o + jnp.where(greedy, 0.0, g))",
           "Eq. 2 / Sec. 4.2: a sample at tau_2 is argmax(o / tau_2 + g) (Gumbel-max)",
           SAMPLE),
    # -- evaluation -----------------------------------------------------------------------
    Mutant("latent_gan/eval_recon_reads_soft", ALGO,
           'z_hat = self.reconstructor.apply({"params": p["reconstructor"]}, out.hard)',
           'z_hat = self.reconstructor.apply({"params": p["reconstructor"]}, out.soft)',
           "Fig. 2: R reads hard one-hots; validation recon must measure what training trains",
           EVAL),
    Mutant("latent_gan/eval_greedy_not_greedy", ALGO,
           "self.blank_id, 0.0)\n    onehot_g",
           "self.blank_id, 1.0)\n    onehot_g",
           "Sec. 4.2: recon_greedy / greedy_distinct are of greedy (tau_2 = 0) sentences",
           EVAL),
    # -- the MLE baseline -----------------------------------------------------------------
    Mutant("latent_gan/lm_loss_per_sentence", LM,
           "return Weighted(nll.sum(), count.sum())",
           "return Weighted(nll.sum(), jnp.float32(nll.shape[0]))",
           "MLE baseline: L is the token-mean NLL, -sum_t log p / #tokens",
           MLE),
    Mutant("latent_gan/lm_scores_after_blank", LM,
           "return losses.sequence_cross_entropy(logits, target, gan.prefix_mask(target, self.blank_id))",
           "return losses.sequence_cross_entropy(logits, target, jnp.ones(target.shape))",
           "MLE baseline: targets [y.., blank] are scored up to and including the first blank",
           MLE),
]
