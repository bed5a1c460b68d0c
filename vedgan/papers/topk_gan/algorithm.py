r"""Top-k softmax dialogue GAN (López Zorrilla et al., ``../shared/papers/
topk_softmax_dialogue_gan.txt``): Algorithm 1 as four step specs.

    Pretrain W on C                                  model.word_vectors (networks.py)
    Pretrain G minimising L_MLE (Eq. 4)              stage mle_pretrain: "gmle"
    Initialise C_D with G's responses y to inputs x  stage fill:         "refill"
    Pretrain D minimising L_D (Eq. 5)                stage d_pretrain:   "dstep"
    for the global iterations, lr decaying:          stage adversarial, one cycle each:
        update G minimising L_G on inputs x (Eq. 6)      "gadv"  (lr x gadv_lr_scale = 0.1)
        add (x, y) pairs to C_D using G                  "refill"
        update D minimising L_D                          "dstep"
        update G minimising L_MLE on C                   "gmle"
        add (x, y) pairs to C_D using G                  "refill"
        update D minimising L_D                          "dstep"

Networks (:mod:`vedgan.nn.topk_gan`): the word vectors ``W`` (``params["words"]``)
are shared, so the network ``generator`` is the groups ``(words, generator)`` and
``discriminator`` is ``(words, discriminator)``, each with its own Adam state.

Who trains ``W`` is ``model.word_table_trained_by`` (:data:`WORD_TABLE_TRAINERS`):
``"generator"`` (default), ``"discriminator"`` or ``"both"``. A step of a network that
does not train ``W`` reads it under ``stop_gradient`` (its loss has no gradient in ``W``)
and that network's optimizer zeroes its update of ``W`` (:meth:`TopKGANObjective.optimizer`:
no move from weight decay or Adam moments carried over from another setting). The
default follows the paper: ``W`` is the word matrix of the seq2seq model (Sec. 2, Fig. 1),
"pretrained [...] These are then optimized again throughout the training process" (Sec.
4) by the generator's updates, which run every global iteration; Sec. 3 updates "the
discriminator's parameters" to minimise ``L_D``, and Table 1 reads the change from B
(after an MLE block) to C as "the short-term effect of each of generator's minimizing the
output of the discriminator", although a D block runs between them: that holds only if D
steps leave the generator, ``W`` included, unchanged. With ``"both"`` (this code's former
default) every ``dstep`` moves ``W`` and so changes the generator's greedy responses.

* ``gmle`` (Eq. 4, teacher forcing): ``L_MLE = 1/|C| sum_(x,s) 1/|s| sum_t -log p_t[s_t]``,
  each response's per-token mean averaged over the batch; trains ``generator``.
* ``refill`` (gradient-free): greedy responses (Eq. 3) to the batch's inputs, gathered from
  all devices and written into the replay corpus ``C_D`` (:mod:`vedgan.replay`, in
  ``state.extra``), stamped with the generator's version (its number of updates so far).
* ``dstep`` (Eq. 5): ``L_D`` on a balanced batch: the first half of the local batch gives
  the human pairs (``l = 0``), as many generated pairs (``l = 1``) are drawn from ``C_D``
  with recency weights (``gan.replay_half_life``), never with an input equal to a human
  one ("they did not share the input", Sec. 4); trains ``discriminator`` (``W`` only if
  ``model.word_table_trained_by`` says so, see below).
* ``gadv`` (Eq. 6): ``L_G = 1/|B_G| sum_x a``: one ``lax.scan`` feeds back ``y_t = argmax
  f_t`` (Eq. 3) and emits ``ũ_t = sum_i softmax(top-k(f_t))_i W[k_t[i]]`` (Eq. 8-9,
  :func:`vedgan.relax.topk_softmax_embedding`), which the discriminator reads in place of
  ``W[y_t]``; ``L_G`` is differentiable in the generator's parameters; trains
  ``generator``.

Learning rates: the stage's schedule (``lr_decay`` per ``lr_decay_every`` = one global
iteration) times ``stage.<step>_lr_scale``. Logged: ``loss`` (Eq. 4), ``nll_per_token``,
``grad_norm``, ``learning_rate`` (gmle); ``replay_size``, ``refill_length`` (refill);
``d_loss`` (Eq. 5), ``d_human``/``d_generated`` (mean ``a``), ``d_accuracy``,
``input_overlap`` (0), ``replay_eligible``, ``d_grad_norm``, ``d_learning_rate`` (dstep);
``g_adv_loss`` (Eq. 6), ``g_adv_length``, ``g_adv_grad_norm``, ``g_adv_learning_rate``
(gadv). Section 5 (Fig. 3, Table 1) is :mod:`vedgan.papers.topk_gan.report`.

Batches: dialogue pairs ``context [B, S]``, ``response_in [B, T] = [bos, s..]``,
``response_out [B, T] = [s.., eos]`` (pad 0), ``weight [B]``, on stream ``train``.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vedgan import configlib, decode, losses, parallel, relax, replay
from vedgan.errors import ConfigError
from vedgan.nn.topk_gan import TopKDialogueGAN
from vedgan.objective import Generation, Objective, register
from vedgan.papers.topk_gan import networks
from vedgan.plan import Plan
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

#: the step functions whose learning rate is scaled by ``stage.<name>_lr_scale``.
SCALED_STEPS = ("gmle", "dstep", "gadv")
#: ``model.word_table_trained_by`` -> the networks whose steps train the shared ``W``.
WORD_TABLE_TRAINERS = {"generator": ("generator",), "discriminator": ("discriminator",),
                       "both": ("generator", "discriminator")}


def check_config(config, plan: Plan) -> None:
  """One-line :class:`ConfigError` unless the replay corpus is filled before any
  ``dstep`` and every stage declares the ``<step>_lr_scale`` of its trained steps."""
  if not plan.is_ordered("refill", "dstep"):
    stage = plan.span_at(plan.first_step("dstep")).name
    raise ConfigError(f"config.stages.{stage} runs 'dstep' before any 'refill' has filled the "
                      "replay corpus; put a stage with 'refill' first")
  for span in plan.spans:
    for name in span.step_names:
      if name in SCALED_STEPS and f"{name}_lr_scale" not in span.config:
        raise ConfigError(f"config.stages.{span.name} runs {name!r} but declares no "
                          f"{name}_lr_scale; add it (1.0 = the stage's learning rate)")


def _scaled_learning_rate(name: str):
  """``Step.learning_rate`` of step ``name``: the stage's rate times ``<name>_lr_scale``."""

  def learning_rate(ctx, network):
    del network
    return ctx.learning_rate * float(ctx.stage[f"{name}_lr_scale"])

  return learning_rate


def _count_generator_update(extra, ctx):
  """``Step.after`` of the generator's steps: the generator's version, which stamps C_D."""
  del ctx
  return dict(extra, generator_updates=extra["generator_updates"] + 1)


def _all_gather(x):
  return jax.lax.all_gather(x, parallel.AXIS, tiled=True)


def _without_word_updates(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` with its update of the ``words`` group (``W [V, D]``) set to zero; the same
  state (so checkpoints restore under either setting)."""

  def update(updates, state, params=None):
    updates, state = tx.update(updates, state, params)
    return dict(updates, words=jnp.zeros_like(updates["words"])), state

  return optax.GradientTransformation(tx.init, update)


@register("topk_gan")
class TopKGANObjective(Objective):
  """Algorithm 1 of López Zorrilla et al.; see the module docstring."""

  STEPS = ("gmle", "refill", "dstep", "gadv")
  NETWORKS = {"generator": ("words", "generator"),
              "discriminator": ("words", "discriminator")}
  #: training-curve figure (vedgan.plots): D and G losses, D's accuracy and its mean output
  #: on human, generated and top-k-softmax responses.
  PLOT_GROUPS = {
      "gan": (
          Panel("discriminator and generator losses",
                ("D loss = d_loss", "G adversarial loss = g_adv_loss"), ("G MLE loss = loss",),
                "", "MLE"),
          Panel("D accuracy", ("d_accuracy", "validation/d_accuracy")),
          Panel("D(response) on human / generated", (
              "human = d_human", "generated = d_generated", "validation/d_human",
              "validation/d_generated", "validation/d_topk"),
                ylabel="a = P(generated) (Eq. 5: human l = 0)")),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    who = config.model.word_table_trained_by
    if who not in WORD_TABLE_TRAINERS:
      raise ConfigError(f"model.word_table_trained_by={who!r} must be one of "
                        f"{sorted(WORD_TABLE_TRAINERS)}")
    #: the networks whose steps train ``W`` (``model.word_table_trained_by``).
    self.word_trainers = WORD_TABLE_TRAINERS[who]
    #: whether any stage runs ``dstep``: without one (the MLE baseline) the validation
    #: ``d_*`` are an untrained D's outputs and are not reported (flat curves, no meaning).
    self.trains_discriminator = any(
        name == "dstep" for stage in config.stage_order
        for name, _ in configlib.parse_cycle(config.stages[stage].step))
    g = config.gan
    self.k = int(g.topk)
    if not 1 <= self.k <= int(tokenizer.vocab_size) - 3:
      raise ConfigError(f"gan.topk={self.k} must be in [1, vocab_size - 3]")
    self.input_len = int(config.data.max_context_len)
    self.response_len = int(config.data.max_response_len)
    self.capacity = int(g.replay_capacity)
    self.half_life = float(g.replay_half_life)
    batch = int(config.train.batch_size)
    if self.capacity < batch:
      raise ConfigError(f"gan.replay_capacity={self.capacity} must hold at least one refill "
                        f"(train.batch_size={batch} rows)")
    local = batch // max(jax.device_count(), 1)
    if local % 2:
      raise ConfigError(f"train.batch_size={batch} gives {local} rows per device; the "
                        "discriminator's balanced batches need an even number per device")
    check_config(config, Plan.from_config(config))
    word_init = None
    self.word_coverage = None
    if config.model.word_vectors:
      table, found = networks.word_vector_table(config.model.word_vectors, tokenizer,
                                                int(config.model.word_dim), int(config.seed))
      word_init = networks.table_init(table)
      self.word_coverage = float(found.mean())
      logging.info("word vectors from %s cover %.1f%% of the vocabulary",
                   config.model.word_vectors, 100 * self.word_coverage)
    self.model = networks.build_model(config, tokenizer.vocab_size, word_init)
    self.forbid = decode.special_ids(tokenizer, bool(config.decode.forbid_unk))["forbid_ids"]
    self.free_run_logits = jax.jit(functools.partial(self.free_run, logits=True))

  def init(self, rng, batch):
    params = self.model.init({"params": rng}, batch["context"], batch["response_in"],
                             batch["response_out"])["params"]
    extra = {"replay": replay.init(self.capacity, self.input_len, self.response_len),
             "generator_updates": jnp.zeros((), jnp.int32)}
    return self.new_state(rng, dict(params), extra)

  def word_embeddings(self, state):
    return state.params["words"]

  def _apply(self, params, *args, method, **kwargs):
    return self.model.apply({"params": params}, *args, method=method, **kwargs)

  def optimizer(self, network):
    """``config.optimizer``; for a network that does not train ``W``
    (``model.word_table_trained_by``), with its update of ``W`` zeroed."""
    tx = super().optimizer(network)
    if network in self.word_trainers:
      return tx
    return _without_word_updates(tx)

  def words_for(self, params, network: str):
    """``params`` as ``network``'s loss reads them: ``W`` under ``stop_gradient`` unless
    ``network`` is in :attr:`word_trainers`."""
    if network in self.word_trainers:
      return params
    return {**params, "words": jax.lax.stop_gradient(params["words"])}

  # -- Algorithm 1 ----------------------------------------------------------------
  def steps(self):
    return {
        "gmle": Step(trains=("generator",), loss=self.mle_loss,
                     learning_rate=_scaled_learning_rate("gmle"), after=_count_generator_update),
        "refill": Step(update=self.refill),
        "dstep": Step(trains=("discriminator",), loss=self.discriminator_loss,
                      learning_rate=_scaled_learning_rate("dstep"), prefix="d_"),
        "gadv": Step(trains=("generator",), loss=self.adversarial_loss,
                     learning_rate=_scaled_learning_rate("gadv"), after=_count_generator_update,
                     prefix="g_adv_"),
    }

  def mle_loss(self, params, batch, ctx):
    """Eq. 4 with teacher forcing (dropout on): the mean over responses of each response's
    per-token NLL; ``Weighted(sum of per-response means, responses)``. ``W`` is trained
    only if the generator trains it (``model.word_table_trained_by``)."""
    params = self.words_for(params, "generator")
    target = batch["response_out"]
    mask = (target != 0).astype(jnp.float32)
    rows = (mask.sum(-1) > 0).astype(jnp.float32)
    logits = self._apply(params, batch["context"], batch["response_in"], train=True,
                         rngs={"dropout": ctx.rng}, method=TopKDialogueGAN.mle_logits)
    nll, count = losses.sequence_cross_entropy(logits, target, mask)
    per_response = nll / jnp.maximum(count, 1.0)
    return (Weighted(jnp.sum(per_response * rows), rows.sum()),
            {"nll_per_token": Weighted(nll.sum(), count.sum())})

  def refill(self, state, batch, ctx):
    """"Add (x, y) pairs to C_D using G": greedy responses (Eq. 3) to the batch's inputs,
    from every device, stamped with ``generator_updates``. Returns ``(extra, metrics)``."""
    del ctx
    context = batch["context"]
    run = self.free_run(state.params, context)
    inputs = _all_gather(replay.fit_width(context, self.input_len))
    corpus = replay.add(state.extra["replay"], inputs, _all_gather(run["tokens"]),
                        state.extra["generator_updates"])
    length = jnp.mean(jnp.sum(run["emitted"], axis=1).astype(jnp.float32))
    return (dict(state.extra, replay=corpus),
            {"replay_size": corpus.count.astype(jnp.float32), "refill_length": length})

  def discriminator_loss(self, params, batch, ctx):
    """Eq. 5, ``L_D = -1/|B| sum [l log a + (1 - l) log(1 - a)]``, on the balanced batch of
    :meth:`discriminator_batch`; ``W`` enters under ``stop_gradient`` unless the
    discriminator trains it (``model.word_table_trained_by``)."""
    db = self.discriminator_batch(ctx.state.extra["replay"], batch["context"],
                                  batch["response_out"], ctx.rng)
    params = self.words_for(params, "discriminator")
    logits = self._apply(params, db["context"], db["response"],
                         method=TopKDialogueGAN.discriminate_tokens)
    labels = db["labels"]
    a = jax.nn.sigmoid(logits)
    h = labels.shape[0] // 2
    metrics = {
        "d_human": jnp.mean(a[:h]), "d_generated": jnp.mean(a[h:]),
        "d_accuracy": jnp.mean(jnp.where(labels > 0, a > 0.5, a < 0.5).astype(jnp.float32)),
        "input_overlap": db["overlap"], "replay_eligible": db["eligible"].astype(jnp.float32)}
    total = losses.dialogue_discriminator_loss(logits, labels).sum()
    return Weighted(total, jnp.asarray(labels.shape[0], jnp.float32)), metrics

  def adversarial_loss(self, params, batch, ctx):
    """Eq. 6, ``L_G = 1/|B_G| sum_x a``, through the top-k path (Eq. 8-9); ``W`` is
    trained only if the generator trains it (``model.word_table_trained_by``)."""
    del ctx
    context = batch["context"]
    a, run = self.generator_adversarial_loss(self.words_for(params, "generator"), context)
    length = jnp.mean(jnp.sum(run["emitted"], 1).astype(jnp.float32))
    return (Weighted(a.sum(), jnp.asarray(context.shape[0], jnp.float32)),
            {"g_adv_length": length})

  # -- building blocks ------------------------------------------------------------
  def mask_forbidden(self, logits: jax.Array) -> jax.Array:
    """``-inf`` at the ids Eq. 3's argmax may not pick (pad, bos, and unk if forbidden)."""
    banned = np.zeros((logits.shape[-1],), bool)
    banned[list(self.forbid)] = True
    return jnp.where(banned, -jnp.inf, logits)

  def free_run(self, params, context: jax.Array, vectors: bool = False,
               logits: bool = False) -> dict[str, jax.Array]:
    """Free-running decoding with argmax feedback (Eq. 3): one ``lax.scan``.

    Args:
      params: every parameter group.
      context: ``[B, S]`` input tokens.
      vectors: also return the top-k approximations ``ũ_t`` (Eq. 9).
      logits: also return the masked logits ``f_t``.

    Returns:
      ``tokens [B, T]`` (EOS included, pad after), ``emitted [B, T]`` (True up to
      and including EOS) and, if asked, ``vectors [B, T, D]``, ``logits [B, T, V]``;
      ``T = data.max_response_len``. Same tokens as greedy :meth:`generate`.
    """
    t = self.tokenizer
    memory = self._apply(params, context, method=TopKDialogueGAN.encode)
    carry = self._apply(params, memory, method=TopKDialogueGAN.start)
    n = context.shape[0]
    words = params["words"]

    def body(state, _):
      carry, prev, done = state
      carry, f = self._apply(params, memory, carry, prev, method=TopKDialogueGAN.step)
      f = self.mask_forbidden(f)
      tok = jnp.where(done, t.pad_id, relax.first_argmax(f)).astype(jnp.int32)
      out = {"tokens": tok, "emitted": ~done}
      if vectors:
        out["vectors"] = relax.topk_softmax_embedding(f, words, k=self.k).vector
      if logits:
        out["logits"] = f
      return (carry, tok, done | (tok == t.eos_id)), out

    init = (carry, jnp.full((n,), t.bos_id, jnp.int32), jnp.zeros((n,), bool))
    _, out = jax.lax.scan(body, init, None, length=self.response_len)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)

  def discriminator_batch(self, corpus: replay.ReplayCorpus, context: jax.Array,
                          response_out: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """A balanced discriminator batch (Section 4) from a local batch and the replay corpus.

    The first ``h = b // 2`` rows of the batch give the human examples (label 0);
    ``h`` generated examples (label 1) are drawn from ``corpus`` with recency
    weights, never with an input equal to one of the human inputs.

    Returns:
      ``context [2h, Lc]``, ``response [2h, Lr]``, ``labels [2h]`` float32,
      ``eligible`` (bool: some corpus row had a disjoint input) and
      ``overlap`` (how many generated inputs equal a human input: 0 unless
      ``eligible`` is False).
    """
    h = context.shape[0] // 2
    human_ctx = replay.fit_width(context[:h], self.input_len)
    human_resp = replay.fit_width(response_out[:h], self.response_len)
    idx, eligible = replay.sample(corpus, key, h, self.half_life, exclude_inputs=human_ctx)
    gen_ctx, gen_resp = replay.gather(corpus, idx)
    same = jnp.all(gen_ctx[:, None, :] == human_ctx[None, :, :], axis=-1)  # [h, h]
    return {"context": jnp.concatenate([human_ctx, gen_ctx]),
            "response": jnp.concatenate([human_resp, gen_resp]),
            "labels": jnp.concatenate([jnp.zeros((h,)), jnp.ones((h,))]).astype(jnp.float32),
            "eligible": eligible,
            "overlap": jnp.sum(jnp.any(same, axis=1)).astype(jnp.float32)}

  def generator_adversarial_loss(self, params, context: jax.Array):
    """Per-example ``a`` (Eq. 6) of the discriminator on the generator's top-k path.

    Returns ``(a [B], run)`` with ``run`` the :meth:`free_run` output.
    """
    run = self.free_run(params, context, vectors=True)
    d_logits = self._apply(params, context, run["vectors"], run["emitted"].astype(jnp.float32),
                           method=TopKDialogueGAN.discriminate)
    return losses.dialogue_generator_loss(d_logits), run

  # -- evaluation -------------------------------------------------------------------
  def eval_step(self, state, batch):
    """Per-device sums on validation pairs (padding rows weigh 0).

    ``nll``/``tokens``: teacher-forced token NLL; ``seq_nll``: Eq. 4's
    per-response means; ``d_human``/``d_generated``/``d_topk``: the
    discriminator's ``a`` on the human response, on the greedy response's
    word vectors and on its top-k approximations; ``nn_hits``/``nn_tokens``:
    generated tokens whose word vector is the nearest (Euclidean, whole
    vocabulary) to ``ũ_t`` (Section 5, k = ``gan.topk``).
    """
    p = state.params
    w = batch["weight"]
    context, target = batch["context"], batch["response_out"]
    mask = (target != 0).astype(jnp.float32)
    logits = self._apply(p, context, batch["response_in"], method=TopKDialogueGAN.mle_logits)
    nll, count = losses.sequence_cross_entropy(logits, target, mask)
    run = self.free_run(p, context, vectors=True)
    emitted = run["emitted"].astype(jnp.float32)
    words = p["words"]
    scores = jnp.sum(words ** 2, -1) - 2.0 * jnp.einsum("btd,vd->btv", run["vectors"], words)
    hits = (jnp.argmin(scores, -1) == run["tokens"]).astype(jnp.float32) * emitted
    # One discriminator pass over [human; W[greedy]; top-k approximations].
    human = replay.fit_width(target, self.response_len)
    vectors = jnp.concatenate([jnp.take(words, human, axis=0),
                               jnp.take(words, run["tokens"], axis=0), run["vectors"]])
    masks = jnp.concatenate([(human != 0).astype(jnp.float32), emitted, emitted])
    a = jax.nn.sigmoid(self._apply(p, jnp.concatenate([context] * 3), vectors, masks,
                                   method=TopKDialogueGAN.discriminate))
    a_h, a_g, a_k = jnp.split(a, 3)
    return {"nll": jnp.sum(nll * w), "tokens": jnp.sum(count * w),
            "seq_nll": jnp.sum(nll / jnp.maximum(count, 1.0) * w), "examples": jnp.sum(w),
            "d_human": jnp.sum(a_h * w), "d_generated": jnp.sum(a_g * w),
            "d_topk": jnp.sum(a_k * w),
            "d_correct": jnp.sum(((a_h < 0.5).astype(jnp.float32)
                                  + (a_g > 0.5).astype(jnp.float32)) * w),
            "nn_hits": jnp.sum(hits.sum(-1) * w), "nn_tokens": jnp.sum(emitted.sum(-1) * w)}

  def summarize(self, sums):
    s = {k: float(v) for k, v in sums.items()}
    n = max(s["examples"], 1.0)
    nll = s["nll"] / max(s["tokens"], 1.0)
    out = {"nll": nll, "perplexity": float(math.exp(min(nll, 50.0))),
           "seq_nll": s["seq_nll"] / n, "topk_nn_accuracy": s["nn_hits"] / max(s["nn_tokens"], 1.0),
           "generated_length": s["nn_tokens"] / n, "examples": s["examples"]}
    if self.trains_discriminator:
      out.update({"d_human": s["d_human"] / n, "d_generated": s["d_generated"] / n,
                  "d_topk": s["d_topk"] / n, "d_accuracy": s["d_correct"] / (2 * n)})
    return out

  def stage_end_plots(self, state, inputs, stage, out_dir):
    """After the generator's stages (mle_pretrain, adversarial): ``topk_nn_check.png``, the
    nearest-neighbour check of Fig. 3 (k in ``gan.nn_check_ks``) on the greedy responses to
    the contexts of one validation batch. The paper's figure on ``gan.report_inputs``
    contexts: ``python -m vedgan.evaluate --suite topk_gan_fig3``."""
    from vedgan import metrics  # pylint: disable=import-outside-toplevel
    from vedgan.papers.topk_gan import report  # pylint: disable=import-outside-toplevel

    if stage not in ("mle_pretrain", "adversarial"):
      return []
    batch = next(iter(inputs.validation_batches(self.config, 1, self.EVAL_STREAM)), None)
    if batch is None:
      return []
    contexts = np.asarray(batch["context"])[np.asarray(batch["weight"]) > 0]
    if not len(contexts):
      return []
    ks = tuple(int(k) for k in self.config.gan.nn_check_ks)
    check = report.topk_check(self, state.params, contexts, ks, len(batch["context"]))
    return [metrics.plot_topk_check(check, os.path.join(out_dir, "topk_nn_check.png"),
                                    title=f"top-k approximation after {stage} "
                                          f"({len(contexts)} contexts)")]

  # -- generation -------------------------------------------------------------------
  def prompt_batch(self, inputs, prompts, label=None):
    del label
    return {"context": inputs.encode_contexts(self.config, prompts)}

  def generate(self, state, batch, rng, options):
    """Responses to ``batch["context"] [B, S]`` (greedy | sample | beam, jitted); greedy is
    the paper's decoding (Eq. 3)."""
    ids = decode.special_ids(self.tokenizer, options.forbid_unk)
    out = decode.jit_module_conditional(
        self.model, (TopKDialogueGAN.encode, TopKDialogueGAN.start, TopKDialogueGAN.step),
        state.params, batch["context"], rng, options=options,
        max_len=int(options.max_len or self.response_len), ids=tuple(sorted(ids.items())))
    return Generation(out.tokens, out.lengths, out.scores)

