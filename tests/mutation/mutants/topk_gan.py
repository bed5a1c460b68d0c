"""Mutants of the top-k softmax dialogue GAN (vedgan/papers/topk_gan, vedgan/replay.py)."""
from mutation.mutant import Mutant

ALGO = "vedgan/papers/topk_gan/algorithm.py"
REPLAY = "vedgan/replay.py"
CONFIG = "configs/topk_gan.py"
CHECK = "vedgan/metrics/topk_check.py"
REPORT = "vedgan/papers/topk_gan/report.py"
T = "tests/test_topk_gan.py::"
W = "tests/test_topk_gan_wiring.py::"
WT = "tests/test_topk_gan_word_table.py::"

ADV = (W + "test_adversarial_loss_is_eq6_on_the_topk_path",
       W + "test_adversarial_loss_reads_each_response_up_to_its_eos",
       W + "test_generator_step_lowers_a_and_discriminator_step_separates")
DISC = (W + "test_discriminator_loss_is_eq5_on_the_balanced_batch",
        W + "test_generator_step_lowers_a_and_discriminator_step_separates",
        T + "test_discriminator_batches_are_balanced_with_disjoint_inputs")
TOPK = (T + "test_topk_vectors_equal_the_hand_computed_weighted_average",
        W + "test_adversarial_loss_is_eq6_on_the_topk_path")
GRAD = (T + "test_generator_loss_gradient_reaches_the_output_layer_through_topk",
        W + "test_words_get_the_adversarial_gradient_through_the_topk_rows",
        W + "test_discriminator_step_leaves_the_shared_word_vectors_to_the_generator")
REFILL = (T + "test_refill_and_discriminator_steps",
          T + "test_replay_ring_buffer_wraps_and_stamps_time")
SAMPLE = (T + "test_recency_weighted_sampling_favours_new_entries_as_specified",
          T + "test_discriminator_batches_are_balanced_with_disjoint_inputs",
          T + "test_replay_docstring_example")
MLE = (W + "test_mle_loss_is_eq4_the_mean_of_per_response_means",)
EVAL = (W + "test_eval_step_matches_a_hand_composed_reference",)
WORDS_GRAD = (WT + "test_losses_have_a_w_gradient_only_for_the_networks_that_train_it",)
WORDS_STEP = (WT + "test_a_discriminator_step_leaves_the_generator_alone_by_default",
              WT + "test_generator_steps_train_w_when_the_option_says")
WORDS_OPT = (WT + "test_optimizer_zeroes_the_w_update_of_a_network_that_does_not_train_it",)
WORDS_DEFAULT = (WT + "test_word_table_option_defaults_to_the_generator_and_rejects_other_values",)
CONTROL = (WT + "test_random_table_is_seeded_with_the_given_shape_and_scale",
           WT + "test_control_is_the_same_check_on_a_random_w_of_the_same_shape",
           WT + "test_control_on_a_small_table_by_hand",
           WT + "test_report_carries_the_model_number_and_its_control")

MUTANTS = [
    # -- Eq. 6: the generator's adversarial loss ---------------------------------------
    Mutant("topk_gan/gen_adv_sign", ALGO,
           "return (Weighted(a.sum(), jnp.asarray(context.shape[0], jnp.float32)),",
           "return (Weighted(-a.sum(), jnp.asarray(context.shape[0], jnp.float32)),",
           "Eq. 6: G minimises a (D's confidence the response is a bot's); -a helps D", ADV),
    Mutant("topk_gan/gen_adv_sum_not_mean", ALGO,
           "return (Weighted(a.sum(), jnp.asarray(context.shape[0], jnp.float32)),",
           "return (Weighted(a.sum(), jnp.asarray(1.0, jnp.float32)),",
           "Eq. 6: L_G = 1/|B_G| sum_x a is a mean over the batch, not a sum", ADV),
    Mutant("topk_gan/gen_adv_one_minus_a", ALGO,
           "return losses.dialogue_generator_loss(d_logits), run",
           "return losses.dialogue_generator_loss(-d_logits), run",
           "Eq. 6 with a = P(bot): G minimising 1 - a would make its responses look more bot-like",
           ADV),
    Mutant("topk_gan/gen_adv_reads_argmax_vectors", ALGO,
           "d_logits = self._apply(params, context, run[\"vectors\"],",
           "d_logits = self._apply(params, context, jnp.take(params[\"words\"], run[\"tokens\"], 0),",
           "Eq. 7 vs 8-9: D must read the top-k approximations ũ_t, not W[argmax] (no gradient)",
           GRAD + ADV),
    Mutant("topk_gan/gen_adv_reads_past_eos", ALGO,
           "run[\"vectors\"], run[\"emitted\"].astype(jnp.float32),",
           "run[\"vectors\"], jnp.ones(run[\"emitted\"].shape, jnp.float32),",
           "Eq. 3: the response stops at EOS (tau); D must not read the vectors after it", ADV),
    # -- Eq. 8-9: the top-k softmax path ---------------------------------------------------
    Mutant("topk_gan/topk_other_k", ALGO,
           "relax.topk_softmax_embedding(f, words, k=self.k).vector",
           "relax.topk_softmax_embedding(f, words, k=self.k + 1).vector",
           "Eq. 8: the softmax is renormalised over the k = gan.topk largest f_t only", TOPK),
    Mutant("topk_gan/topk_full_softmax", ALGO,
           "relax.topk_softmax_embedding(f, words, k=self.k).vector",
           "relax.soft_embedding(jax.nn.softmax(f), words)",
           "Eq. 8-9 (Sec. 3, related approaches): averaging all word vectors is what top-k avoids",
           TOPK),
    Mutant("topk_gan/topk_words_stop_gradient", ALGO,
           "    words = params[\"words\"]\n",
           "    words = jax.lax.stop_gradient(params[\"words\"])\n",
           "Eq. 9: ũ_t = sum p~_t[i] W[k_t[i]] is differentiable in the shared W too", GRAD),
    Mutant("topk_gan/free_run_no_argmax_feedback", ALGO,
           "return (carry, tok, done | (tok == t.eos_id)), out",
           "return (carry, prev, done | (tok == t.eos_id)), out",
           "Eq. 3: the decoder reads W[y_{t-1}] with y_{t-1} = argmax f_{t-1}", TOPK),
    # -- Eq. 5: the discriminator ----------------------------------------------------------
    Mutant("topk_gan/disc_labels_swapped_in_loss", ALGO,
           "total = losses.dialogue_discriminator_loss(logits, labels).sum()",
           "total = losses.dialogue_discriminator_loss(logits, 1.0 - labels).sum()",
           "Eq. 5: l = 1 marks the bot's responses, l = 0 the human ones", DISC),
    Mutant("topk_gan/disc_labels_swapped_in_batch", ALGO,
           "\"labels\": jnp.concatenate([jnp.zeros((h,)), jnp.ones((h,))])",
           "\"labels\": jnp.concatenate([jnp.ones((h,)), jnp.zeros((h,))])",
           "Eq. 5: the human half gets l = 0, the replayed (generated) half l = 1", DISC),
    Mutant("topk_gan/disc_human_reads_response_in", ALGO,
           "db = self.discriminator_batch(ctx.state.extra[\"replay\"], batch[\"context\"],\n"
           "                                  batch[\"response_out\"], ctx.rng)",
           "db = self.discriminator_batch(ctx.state.extra[\"replay\"], batch[\"context\"],\n"
           "                                  batch[\"response_in\"], ctx.rng)",
           "Eq. 5: the human pairs are (x, r) with r the response, not the decoder's bos-shifted input",
           DISC),
    # -- who trains W (model.word_table_trained_by; Sec. 2-4, Table 1's B -> C) ------------
    Mutant("topk_gan/dstep_w_gradient_not_stopped", ALGO,
           '    params = self.words_for(params, "discriminator")\n',
           "",
           "Sec. 3 / Table 1: by default L_D updates D's parameters only; its gradient must not "
           "reach the generator's W", WORDS_GRAD),
    Mutant("topk_gan/gmle_ignores_word_table_option", ALGO,
           '    params = self.words_for(params, "generator")\n    target',
           "    target",
           "model.word_table_trained_by='discriminator': Eq. 4's gradient must not reach W",
           WORDS_GRAD),
    Mutant("topk_gan/gadv_ignores_word_table_option", ALGO,
           'self.generator_adversarial_loss(self.words_for(params, "generator"), context)',
           "self.generator_adversarial_loss(params, context)",
           "model.word_table_trained_by='discriminator': Eq. 6's gradient must not reach W",
           WORDS_GRAD),
    Mutant("topk_gan/word_table_option_inverted", ALGO,
           'WORD_TABLE_TRAINERS = {"generator": ("generator",), "discriminator": ("discriminator",),',
           'WORD_TABLE_TRAINERS = {"generator": ("discriminator",), "discriminator": ("generator",),',
           "model.word_table_trained_by names the network whose steps train W",
           WORDS_GRAD + WORDS_STEP + WORDS_OPT),
    Mutant("topk_gan/optimizer_updates_w_for_every_network", ALGO,
           "    if network in self.word_trainers:\n      return tx\n",
           "    if True:\n      return tx\n",
           "a network that does not train W must not move it (weight decay, carried-over Adam "
           "moments)", WORDS_OPT),
    Mutant("topk_gan/word_table_default_both", CONFIG,
           'm.word_table_trained_by = "generator"',
           'm.word_table_trained_by = "both"',
           "Table 1's B -> C reads as the effect of G's adversarial block only if D steps leave "
           "G (and W) unchanged: the default is 'generator'", WORDS_DEFAULT + WORDS_STEP),
    # -- Eq. 4: MLE ------------------------------------------------------------------------
    Mutant("topk_gan/mle_token_mean", ALGO,
           "return (Weighted(jnp.sum(per_response * rows), rows.sum()),",
           "return (Weighted(nll.sum(), count.sum()),",
           "Eq. 4: 1/|C| sum 1/|s| sum_t: each response's per-token mean, then the batch mean",
           MLE),
    # -- Evaluation ------------------------------------------------------------------------
    Mutant("topk_gan/eval_d_correct_inverted", ALGO,
           "\"d_correct\": jnp.sum(((a_h < 0.5).astype(jnp.float32)",
           "\"d_correct\": jnp.sum(((a_h > 0.5).astype(jnp.float32)",
           "Eq. 5's convention: a human response is classified right when a < 0.5", EVAL),
    Mutant("topk_gan/eval_d_topk_reads_argmax", ALGO,
           "jnp.take(words, run[\"tokens\"], axis=0), run[\"vectors\"]])",
           "jnp.take(words, run[\"tokens\"], axis=0), jnp.take(words, run[\"tokens\"], axis=0)])",
           "Sec. 5: d_topk is D on the top-k approximations ũ_t (Eq. 9), not on W[y_t]", EVAL),
    # -- Sec. 5's nearest-neighbour check: the random-W control ----------------------------
    Mutant("topk_gan/nn_control_reads_model_w", CHECK,
           "    control = jnp.asarray(random_table(table.shape, control_seed))",
           "    control = table",
           "the control is the check with a random W of the same shape (~100% at k = 2), not "
           "the model's W", CONTROL),
    Mutant("topk_gan/nn_control_ignores_seed", CHECK,
           "rng = np.random.default_rng(int(seed))",
           "rng = np.random.default_rng(0)",
           "the control's random W is drawn from the given seed", CONTROL),
    Mutant("topk_gan/report_control_value_is_the_model", REPORT,
           'values[f"{name}/k{k}_random_w"] = float(control["with_repetitions"][i])',
           'values[f"{name}/k{k}_random_w"] = float(check["with_repetitions"][i])',
           "Fig. 3's report carries the model's number and, next to it, the control's",
           CONTROL),
    # -- C_D: refill and replay ------------------------------------------------------------
    Mutant("topk_gan/refill_writes_human_responses", ALGO,
           "_all_gather(run[\"tokens\"])",
           "_all_gather(replay.fit_width(batch[\"response_out\"], self.response_len))",
           "Algorithm 1: C_D holds G's responses y to the inputs x, not the corpus responses",
           REFILL),
    Mutant("topk_gan/refill_unstamped", ALGO,
           "_all_gather(run[\"tokens\"]),\n                        state.extra[\"generator_updates\"])",
           "_all_gather(run[\"tokens\"]),\n                        0)",
           "Sec. 3: recency in C_D is the generator's version (its number of updates)", REFILL),
    Mutant("topk_gan/replay_add_overwrites_first_rows", REPLAY,
           "rows = (corpus.cursor + jnp.arange(n, dtype=jnp.int32)) % corpus.capacity",
           "rows = jnp.arange(n, dtype=jnp.int32) % corpus.capacity",
           "Sec. 3: C_D grows with every refill (ring buffer), older pairs are kept", REFILL),
    Mutant("topk_gan/replay_recency_inverted", REPLAY,
           "w = jnp.where(half_life > 0, jnp.exp2(-age / safe), 1.0)",
           "w = jnp.where(half_life > 0, jnp.exp2(age / safe), 1.0)",
           "Sec. 3: more recent pairs of C_D are taken with a higher probability", SAMPLE),
    Mutant("topk_gan/replay_exclusion_ignored", REPLAY,
           "w = jnp.where(ok, kept, w)",
           "w = jnp.where(ok, w, w)",
           "Sec. 4: human and generated examples of a D batch do not share the input", SAMPLE),
]
