"""Mutants of HappyBot's sentiment look-ahead RL (vedgan/papers/happybot)."""
from mutation.mutant import Mutant

ALGO = "vedgan/papers/happybot/algorithm.py"
T = "tests/test_happybot.py::"
W = "tests/test_happybot_wiring.py::"
EQS = (T + "test_rl_loss_eq9_and_mixed_loss_eq10_hand_values",
       T + "test_rl_losses_terms_match_the_equations_on_the_model")
GRADS = (T + "test_policy_and_baseline_gradients_do_not_cross",)
STEP = (W + "test_rl_step_rewards_its_rollout_with_the_lookahead_predictor",
        T + "test_rl_step_applies_exactly_one_update_per_network")
SCORE = (T + "test_scoring_pass_gives_the_samplers_log_probs",
         T + "test_rl_losses_terms_match_the_equations_on_the_model")
PRED = (W + "test_predictor_step_learns_the_classifiers_label_of_the_next_user_turn",)

MUTANTS = [
    # -- the look-ahead reward (Sec. 2.2) ------------------------------------------------
    Mutant("happybot/predictor_labels_current_turn", ALGO,
           "self.classifier_labels(params, batch[\"next_turn\"]),",
           "self.classifier_labels(params, batch[\"last_turn\"]),",
           "Sec. 2.2: the predictor learns the sentiment of the *next* user turn u_{i+2}", PRED),
    Mutant("happybot/predictor_label_sign", ALGO,
           "return jax.lax.stop_gradient((logits > 0).astype(jnp.float32))",
           "return jax.lax.stop_gradient((logits < 0).astype(jnp.float32))",
           "Sec. 3.1: label 1 = the classifier's positive sentiment", PRED),
    Mutant("happybot/rl_reward_current_not_lookahead", ALGO,
           "reward = jax.lax.stop_gradient(self.reward(str(stage.reward))(params, batch,",
           "reward = jax.lax.stop_gradient(self.current(params, batch,",
           "Sec. 2.2: RL Look-ahead rewards the predicted sentiment of the next turn", STEP),
    Mutant("happybot/reward_sign", ALGO,
           "reward = jax.lax.stop_gradient(self.reward(str(stage.reward))(params, batch,",
           "reward = jax.lax.stop_gradient(-self.reward(str(stage.reward))(params, batch,",
           "Eq. 9: the policy ascends the positive-sentiment reward R", STEP),
    Mutant("happybot/reward_one_minus", ALGO,
           "reward = jax.lax.stop_gradient(reward)\n",
           "reward = jax.lax.stop_gradient(1.0 - reward)\n",
           "Eq. 9: R = P(positive next turn), not P(negative)", EQS + STEP),
    # -- Eq. 5: the tempered sampler -----------------------------------------------------
    Mutant("happybot/tau_ignored_in_logp", ALGO,
           "logp = losses.token_log_probs(logits, rollout.tokens, temperature)",
           "logp = losses.token_log_probs(logits, rollout.tokens)",
           "Eq. 5: log P(w_t) is the log-softmax of logits / tau", SCORE),
    Mutant("happybot/tau_ignored_in_sampler", ALGO,
           "DecodeOptions(mode=\"sample\",\n"
           "                                                             temperature=temperature)",
           "DecodeOptions(mode=\"sample\",\n"
           "                                                             temperature=1.0)",
           "Eq. 5: y^s ~ softmax(logits / tau)", SCORE),
    # -- Eq. 7-9: the learned baseline ---------------------------------------------------
    Mutant("happybot/baseline_grad_leaks_into_policy", ALGO,
           "jax.lax.stop_gradient(states))[..., 0]", "states)[..., 0]",
           "Eq. 7-8: R^_t = W_r sg(m_t) + b_r; the baseline's loss does not move the policy",
           GRADS),
    Mutant("happybot/baseline_unused_in_rl", ALGO,
           "rl_loss(logp, reward, b_hat if use_baseline else None, rollout.mask)",
           "rl_loss(logp, reward, None, rollout.mask)",
           "Eq. 9: the advantage is R - R^_t", EQS),
    Mutant("happybot/baseline_loss_always_on", ALGO,
           "total = terms[\"mixed\"] + (terms[\"baseline\"] if use_baseline else 0.0)",
           "total = terms[\"mixed\"] + terms[\"baseline\"]",
           "baseline='none': Eq. 8 is not part of the objective", EQS),
    Mutant("happybot/rl_no_length_norm", ALGO,
           "return losses.reinforce_loss(log_probs, rewards_, baseline, mask) / length",
           "return losses.reinforce_loss(log_probs, rewards_, baseline, mask)",
           "Eq. 9: L_RL carries 1/T", EQS),
    Mutant("happybot/baseline_mse_no_length_norm", ALGO,
           "return losses.baseline_loss(predicted, rewards_, mask) / length",
           "return losses.baseline_loss(predicted, rewards_, mask)",
           "Eq. 8: L_b carries 1/T", (T + "test_baseline_loss_eq8_is_masked_mean_square_error",)),
    # -- Eq. 10 ----------------------------------------------------------------------------
    Mutant("happybot/mixed_weight_swapped", ALGO,
           "losses.mixed_loss(terms[\"rl\"], terms[\"mle\"], float(stage.mixed_weight))",
           "losses.mixed_loss(terms[\"mle\"], terms[\"rl\"], float(stage.mixed_weight))",
           "Eq. 10: lambda = 0.25 weighs L_RL, 1 - lambda weighs L_MLE", EQS),
    Mutant("happybot/baseline_lr_for_policy", ALGO,
           "return float(ctx.stage.baseline_learning_rate) if network == \"baseline\" "
           "else ctx.learning_rate",
           "return float(ctx.stage.baseline_learning_rate) if network != \"baseline\" "
           "else ctx.learning_rate",
           "Eq. 8: the baseline has its own learning rate", STEP),
    # -- MultiSeq / evaluation -----------------------------------------------------------
    Mutant("happybot/multiseq_labels_next_turn", ALGO,
           "labels = self.classifier_labels(params, batch[\"last_turn\"])",
           "labels = self.classifier_labels(params, batch[\"next_turn\"])",
           "Sec. 3.2 MultiSeq: the emotion head predicts the sentiment of the user's turn u_{i+1}",
           (W + "test_multiseq_head_predicts_the_sentiment_of_the_users_turn",)),
    Mutant("happybot/eval_lookahead_is_current", ALGO,
           "sums[\"reward_lookahead\"] = (self.lookahead(p, batch, tokens) * w).sum()",
           "sums[\"reward_lookahead\"] = (self.current(p, batch, tokens) * w).sum()",
           "evaluation reports the look-ahead reward of greedy responses (Table 1)",
           (W + "test_eval_scores_greedy_responses_with_the_lookahead_and_current_rewards",)),
]
