"""Mutants of MojiTalk's Reinforced CVAE (vedgan/papers/mojitalk)."""
from mutation.mutant import Mutant

ALGO = "vedgan/papers/mojitalk/algorithm.py"
NETS = "vedgan/papers/mojitalk/networks.py"
T = "tests/test_mojitalk.py::"
W = "tests/test_mojitalk_wiring.py::"
EQ2 = (T + "test_cvae_terms_implement_eq2_kl_bow_and_reparameterisation",
       T + "test_bow_head_and_kl_weight_enter_the_gradient_as_eq2_says")
POLICY = (T + "test_rank_weight_alpha_eq3",
          T + "test_policy_term_is_j_prime_with_stopped_rewards_and_hybrid_loss")
OWN_Z = (W + "test_best_of_draws_its_own_prior_z_for_every_candidate",)
BEST = (T + "test_generation_keeps_the_candidate_the_classifier_prefers",
        W + "test_best_of_keeps_the_candidate_the_classifier_prefers")
CVAE_STEP = (W + "test_cvae_step_is_eq2_with_the_annealed_kl_weight_and_the_bow_loss",)
RL_STEP = (W + "test_rl_step_is_algorithm1_hybrid_loss_with_lambda",
           W + "test_rl_step_gradient_is_the_references_and_skips_the_classifier")
SPECS = (T + "test_base_model_is_the_cvae_with_zero_latent_and_leaves_the_latent_heads_alone",)

MUTANTS = [
    # -- generation: pick-best-of-5 ------------------------------------------------------
    Mutant("mojitalk/best_of_same_z", NETS,
           "z = jnp.where(latent, losses.gaussian_sample(jax.random.fold_in(key, 0), mean, logvar), 0.0)",
           "z = jnp.where(latent, jnp.tile(losses.gaussian_sample(jax.random.fold_in(key, 0), "
           "mean[:b], logvar[:b]), (n, 1)), 0.0)",
           "supplement 'Generation': each of the 5 candidates draws its own z ~ p(z|c)", OWN_Z),
    Mutant("mojitalk/best_of_keeps_worst", NETS,
           "best = jnp.argmax(logp, axis=0)", "best = jnp.argmin(logp, axis=0)",
           "supplement 'Generation': keep the candidate the classifier rates most probable", BEST),
    Mutant("mojitalk/best_of_posterior_free_mean", NETS,
           "losses.gaussian_sample(jax.random.fold_in(key, 0), mean, logvar), 0.0)",
           "mean, 0.0)",
           "supplement 'Generation': z is sampled from p(z|c), not its mean", OWN_Z),
    Mutant("mojitalk/best_of_ignores_latent_flag", NETS,
           "z = jnp.where(latent, ", "z = jnp.where(True, ",
           "the base model (before any CVAE step) generates with z = 0", OWN_Z),
    # -- Eq. 2 / CVAE ----------------------------------------------------------------------
    Mutant("mojitalk/kl_weight_ignored_in_terms", NETS,
           "\"loss\": rec + kl_weight * kl + bow_weight * bow",
           "\"loss\": rec + kl + bow_weight * bow",
           "Eq. 2: the KL term is scaled by the annealing weight w_kl", EQ2),
    Mutant("mojitalk/kl_anneal_ignored_in_step", ALGO,
           "kl_w = self.kl_weight_fn(ctx.stage)(ctx.stage_step)",
           "kl_w = jnp.float32(float(ctx.stage.kl_ceiling))",
           "KL annealing: the CVAE step's KL weight follows the schedule (0 -> 0.5 by epoch 6)",
           CVAE_STEP),
    Mutant("mojitalk/bow_dropped_in_terms", NETS,
           "\"loss\": rec + kl_weight * kl + bow_weight * bow",
           "\"loss\": rec + kl_weight * kl",
           "Eq. 2: L' includes the bag-of-words loss of Eq. 1", EQ2),
    Mutant("mojitalk/bow_dropped_in_step", ALGO,
           "float(ctx.stage.bow_weight))", "0.0)",
           "Eq. 2: the CVAE step trains with the BoW loss (weight 1)", CVAE_STEP),
    Mutant("mojitalk/kl_reversed", NETS,
           "losses.gaussian_kl(mean_q, logvar_q, mean_p, logvar_p)",
           "losses.gaussian_kl(mean_p, logvar_p, mean_q, logvar_q)",
           "Eq. 2: KL(q(z|x,c) || p(z|c)), not KL(p || q)", EQ2),
    Mutant("mojitalk/cvae_z_from_prior", NETS,
           "z = losses.gaussian_sample(z_key, mean_q, logvar_q)",
           "z = losses.gaussian_sample(z_key, mean_p, logvar_p)",
           "Eq. 2: the reconstruction and BoW terms read z ~ q(z|x,c)", EQ2),
    # -- Algorithm 1 / Eq. 3 ---------------------------------------------------------------
    Mutant("mojitalk/reward_gen_gold_swapped", ALGO,
           "rw = rewards(both[:gold.shape[0]], both[gold.shape[0]:], label,",
           "rw = rewards(both[gold.shape[0]:], both[:gold.shape[0]], label,",
           "Algorithm 1 l. 9-10: R is the classifier on the generation G, r on the target T",
           RL_STEP),
    Mutant("mojitalk/alpha_ranks_gold", ALGO,
           "rank = losses.label_rank(gen_logits, label)",
           "rank = losses.label_rank(gold_logits, label)",
           "Eq. 3: alpha is the rank weight of R (the generation's label rank)", POLICY),
    Mutant("mojitalk/alpha_ignored", ALGO,
           "rw[\"alpha\"] * rw[\"R\"], rw[\"alpha\"] * rw[\"r\"]",
           "rw[\"R\"], rw[\"r\"]",
           "Algorithm 1 l. 11: J' = alpha (R - r) sum log P", POLICY),
    Mutant("mojitalk/baseline_sign", ALGO,
           "rw[\"alpha\"] * rw[\"R\"], rw[\"alpha\"] * rw[\"r\"]",
           "rw[\"alpha\"] * rw[\"R\"], -rw[\"alpha\"] * rw[\"r\"]",
           "Algorithm 1 l. 11: the advantage is R - r (the gold response's reward is subtracted)",
           POLICY),
    Mutant("mojitalk/hybrid_policy_sign", ALGO,
           "return cvae_loss + policy_weight * neg_policy",
           "return cvae_loss - policy_weight * neg_policy",
           "Algorithm 1 l. 12: L'' = L' - lambda J' (descending L'' ascends J')", POLICY),
    Mutant("mojitalk/hybrid_weight_swapped", ALGO,
           "return cvae_loss + policy_weight * neg_policy",
           "return policy_weight * cvae_loss + neg_policy",
           "Algorithm 1 l. 12: lambda weighs the policy term, not L'", POLICY + RL_STEP),
    Mutant("mojitalk/policy_weight_ignored", ALGO,
           "float(stage.policy_weight) * on", "on",
           "Algorithm 1 l. 12: the policy term is scaled by lambda", RL_STEP),
    Mutant("mojitalk/policy_start_ignored", ALGO,
           "on = (ctx.stage_step >= start).astype(jnp.float32)",
           "on = jnp.float32(1.0)",
           "supplement 0.4: the policy loss joins only after 2 epochs of the RL stage", RL_STEP),
    Mutant("mojitalk/classifier_trained_in_rl", ALGO,
           "\"rl\": Step(trains=(\"generator\",), loss=self.rl_loss)",
           "\"rl\": Step(trains=(\"generator\", \"classifier\"), loss=self.rl_loss)",
           "Algorithm 1: the emoji classifier is frozen during the Reinforced CVAE", SPECS + RL_STEP),
    Mutant("mojitalk/rl_drops_cvae_loss", ALGO,
           "total = hybrid_loss(t[\"loss\"], neg_j,",
           "total = hybrid_loss(0.0 * t[\"loss\"], neg_j,",
           "Algorithm 1 l. 8/12: L'' keeps the CVAE loss L' on the targets", RL_STEP),
    Mutant("mojitalk/logp_ignores_eps", NETS,
           "z = mean + jnp.exp(0.5 * logvar) * eps\n    done",
           "z = mean\n    done",
           "Algorithm 1 l. 7: P is the generation's own distribution, under the z that made it",
           (T + "test_generation_log_probs_are_recomputed_differentiably",)),
    # -- evaluation ------------------------------------------------------------------------
    Mutant("mojitalk/eval_prior_nll_from_posterior", ALGO,
           "z_p = losses.gaussian_sample(k_p, mean_p, logvar_p)",
           "z_p = t[\"z\"]",
           "prior perplexity scores the reference with z ~ p(z|c), what generation uses", (W + "test_eval_prior_nll_scores_the_reference_under_a_prior_sample",)),
]
