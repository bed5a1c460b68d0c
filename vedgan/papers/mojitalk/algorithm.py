r"""MojiTalk (Zhou & Wang, ACL 2018): emoji-conditioned CVAE, emoji classifier, Reinforced CVAE.

Equations of the supplement (``../shared/papers/mojitalk_supplement.txt``); four step
functions that ``config.stages`` strings together (``configs/mojitalk.py``), all reading
stream ``train`` of (context c, response x, emoji e) examples (:mod:`.data`)::

  base        L_base = -log p(x | c, e, z = 0)                        trains generator
  cvae        L' = -log p(x|z,c) + w_kl KL(q(z|x,c) || p(z|c))        trains generator
                   - w_bow log p(x_bow|z,c),   z ~ q(z|x,c)    Eq. 2 (BoW: Eq. 1)
  classifier  CE(DeepMoji(x), e)                                      trains classifier
  rl          Algorithm 1, per batch B with target responses T:       trains generator
                G  = a generation of the CVAE (z ~ p(z|c))                   line 6
                P  = its word probabilities, recomputed differentiably       line 7
                L' on T                                                      line 8
                R, alpha = classifier(G)[e], rank weight of Eq. 3            line 9
                r  = classifier(T)[e]                                        line 10
                J' = alpha (R - r) sum_t log P(G_t)    (alpha, R - r fixed)  line 11
                L'' = L' - lambda J'   (lambda J' after ``policy_start_epochs``) line 12

Every loss is a per-example sum over tokens averaged over the global batch (the authors'
``reduce_sum / batch_size``). The networks ("generator" = parameter groups ``model``,
``emoji``, ``cvae``; "classifier") are in :mod:`.networks`; each network has its own Adam
state, afresh where a stage sets ``reset_optimizer`` (the CVAE starts a new optimiser over
the converged base weights).

Generation (supplement "Generation"): 5 prior samples ``z ~ p(z|c)`` decoded, the one the
classifier rates most probable for the designated emoji returned
(:meth:`MojiTalkNetworks.best_of`); the base model returns its single ``z = 0`` response.

Likelihoods (:meth:`MojiTalkObjective.summarize`, :meth:`MojiTalkObjective.iw_step`): the
CVAE's ``perplexity`` with ``z ~ q(z|x,c)`` is reconstruction-only (no KL, no bound);
``elbo_perplexity`` and the importance-weighted ``iw_perplexity`` (Burda et al. 2016, K
posterior draws, conditional prior ``p(z|c)``) are upper bounds on the perplexity of
``p(x | c)``.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vedgan import losses, parallel, schedules
from vedgan.decode import DecodeOptions
from vedgan.errors import ConfigError
from vedgan.metrics import likelihood
from vedgan.objective import Generation, Objective, register
from vedgan.papers.mojitalk import data
from vedgan.papers.mojitalk.networks import MojiTalkNetworks, mle_terms, response_tokens
from vedgan.plan import Plan
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

GENERATOR = ("model", "emoji", "cvae")   # the parameter groups L' and L'' train
LATENT_STEPS = ("cvae", "rl")             # after their first step the generator samples z

# Salts of a step's keys (``ctx.salted_key``): the pre-refactor
# streams, so that a run draws the same numbers (the demo figures of docs/mojitalk.md).
_DROPOUT, _Z, _GEN_Z, _GEN = 1, 2, 3, 4
_IW = 5   # the importance-weighted bound's key: fold_in(key(seed), _IW), per device


def _rows(x, w) -> Weighted:
  """The batch mean of a per-example ``x [B]`` (padding rows ``w = 0``)."""
  return Weighted(jnp.sum(x * w), jnp.sum(w))


# =============================================================================
# The reward and the hybrid objective (Algorithm 1, lines 9-12; Eq. 3)
# =============================================================================


def rewards(gen_logits, gold_logits, label, weights=(0.0, 0.5, 1.0)) -> dict:
  """``R``, ``r``, the label's rank on the generation and ``alpha`` (Eq. 3), each ``[B]``.

  ``gen_logits``/``gold_logits`` ``[B, C]`` are the classifier's on ``G`` / on ``T``;
  ``R = softmax(gen_logits)[label]``, ``r = softmax(gold_logits)[label]``,
  ``alpha = rank_weight(rank(R))``: 0 for rank 1, 0.5 for ranks 2-5, else 1.
  """
  probs_gen = jax.nn.softmax(gen_logits, axis=-1)
  probs_gold = jax.nn.softmax(gold_logits, axis=-1)
  take = lambda p: jnp.take_along_axis(p, label[:, None], axis=-1)[:, 0]
  rank = losses.label_rank(gen_logits, label)
  return {"R": take(probs_gen), "r": take(probs_gold), "rank": rank,
          "alpha": losses.rank_weight(rank, *weights)}


def policy_loss(log_probs, mask, rw) -> jax.Array:
  """``-J' = -alpha (R - r) sum_t log P(G_t)`` per example ``[B]`` (Algorithm 1, line 11).

  ``alpha``, ``R`` and ``r`` (from :func:`rewards`) get no gradient; only
  ``log_probs [B, L]`` (masked by ``mask [B, L]``) carries the policy gradient.
  """
  return losses.reinforce_loss(log_probs, rw["alpha"] * rw["R"], rw["alpha"] * rw["r"], mask)


def hybrid_loss(cvae_loss, neg_policy, policy_weight):
  """``L'' = L' - lambda J' = L' + lambda (-J')`` per example (Algorithm 1, line 12)."""
  return cvae_loss + policy_weight * neg_policy


# =============================================================================
# The objective
# =============================================================================


#: ``stages.<name>.kl_schedule`` values (:meth:`MojiTalk.kl_weight_fn`).
KL_SCHEDULES = ("linear", "tanh", "tanh_smooth", "constant")
#: ``stages.rl.rl_decode``: how the RL stage generates; ``rl_latent``: where its z comes from.
RL_DECODES = ("greedy", "sample")
RL_LATENTS = ("prior", "posterior")


@register("mojitalk")
class MojiTalkObjective(Objective):
  """Base seq2seq -> CVAE -> emoji classifier -> Reinforced CVAE (see the module docstring)."""

  STEPS = ("base", "cvae", "classifier", "rl")
  NETWORKS = {"generator": GENERATOR, "classifier": ("classifier",)}
  #: training-curve figures (vedgan.plots): the CVAE's KL with its annealing weight, and
  #: the Reinforced CVAE's classifier reward R on generations against the gold response's
  #: r, which is the REINFORCE baseline of Algorithm 1 (advantage R - r, scaled by alpha).
  PLOT_GROUPS = {
      "latent_kl": (
          Panel("KL(q || p) and its annealing weight", ("kl",), ("KL weight = kl_weight",),
                "KL [nats / response]", "weight"),
          # two scales (KL ~1 nat, BoW ~60 nats per response): BoW on the twin axis
          Panel("validation KL and bag-of-words loss", ("validation/kl",), ("validation/bow",),
                "KL [nats / response]", "BoW loss [nats / response]")),
      "rl_reward": (
          Panel("classifier reward (Reinforced CVAE)",
                ("reward R (generated) = reward_gen", "baseline r (gold) = reward_gold",
                 "advantage R - r = reward_gen - reward_gold"), ylabel="P(emoji | response)"),
          Panel("rank weight alpha and top-1 rate", ("alpha", "gen_top1")),
          Panel("hybrid loss terms", ("cvae_loss", "policy"))),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.net = MojiTalkNetworks(config, tokenizer)
    if "likelihood" in config:  # checked now; a run saved before it existed lacks it
      likelihood.iw_settings(config)
    plan = Plan.from_config(config)
    firsts = [s for s in (plan.first_step(n) for n in LATENT_STEPS) if s is not None]
    #: the global step of the first CVAE/RL step (None: the run never leaves the base).
    self.latent_start = min(firsts) if firsts else None
    self._gen_cache: dict = {}
    for name, stage in config.stages.items():   # refused before anything is written
      for field, choices in (("kl_schedule", KL_SCHEDULES), ("rl_decode", RL_DECODES),
                             ("rl_latent", RL_LATENTS)):
        if field in stage and stage[field] not in choices:
          raise ConfigError(f"config.stages.{name}.{field}={stage[field]!r} must be one of "
                            f"{choices}")

  @classmethod
  def make_inputs(cls, config, workdir: str):
    """Labelled (context, response, emoji) examples on stream ``train`` (:mod:`.data`)."""
    return data.make_inputs(config, workdir)

  def init(self, rng, batch):
    return self.new_state(rng, self.net.init(rng, batch))

  def is_latent(self, step):
    """Whether the generator at global ``step`` (int or traced) went through a CVAE/RL step."""
    if self.latent_start is None:
      return jnp.asarray(False) if isinstance(step, jax.Array) else False
    return step > self.latent_start

  # -- the algorithm -------------------------------------------------------------
  def steps(self):
    return {"base": Step(trains=("generator",), loss=self.base_loss),
            "cvae": Step(trains=("generator",), loss=self.cvae_loss),
            "classifier": Step(trains=("classifier",), loss=self.classifier_loss),
            "rl": Step(trains=("generator",), loss=self.rl_loss)}

  def base_loss(self, params, batch, ctx):
    """The base seq2seq: ``-log p(x | c, e, z = 0)`` per example (dropout on)."""
    w = batch["weight"]
    nll, count = self.net.base_terms(params, batch, True, ctx.salted_key(_DROPOUT))
    return _rows(nll, w), {"nll": Weighted(jnp.sum(nll * w), jnp.sum(count * w))}

  def kl_weight_fn(self, stage):
    """The stage's KL weight as a function of the step *within* the stage.

    ``kl_schedule``: ``"linear"`` (the paper: 0 -> ``kl_ceiling`` at the end of epoch
    ``kl_anneal_epochs``), ``"tanh"`` (the authors' code,
    :func:`vedgan.schedules.mojitalk_kl_anneal`, ramp ending at the same point),
    ``"tanh_smooth"`` (its halved monotone form) or ``"constant"``.
    """
    kind, ceiling = stage.kl_schedule, float(stage.kl_ceiling)
    if kind == "constant":
      return lambda s: jnp.float32(ceiling)
    steps = self.epochs_to_steps(float(stage.kl_anneal_epochs), "kl_anneal_epochs")
    if steps <= 0:
      return lambda s: jnp.float32(ceiling)
    if kind == "linear":
      return schedules.linear_kl_anneal(steps, ceiling)
    if kind in ("tanh", "tanh_smooth"):
      ratio = float(stage.kl_tanh_ratio)
      return schedules.mojitalk_kl_anneal(steps / ratio, ceiling, ratio,
                                          smooth=kind == "tanh_smooth")
    raise AssertionError(kind)  # refused in __init__

  def cvae_loss(self, params, batch, ctx):
    """``L'`` (Eq. 2) with the annealed KL weight and the BoW loss (Eq. 1)."""
    w = batch["weight"]
    kl_w = self.kl_weight_fn(ctx.stage)(ctx.stage_step)
    t = self.net.cvae_terms(params, batch, ctx.salted_key(_Z), True, ctx.salted_key(_DROPOUT), kl_w,
                            float(ctx.stage.bow_weight))
    return _rows(t["loss"], w), {
        "rec": _rows(t["rec"], w), "kl": _rows(t["kl"], w), "bow": _rows(t["bow"], w),
        "nll": Weighted(jnp.sum(t["rec"] * w), jnp.sum(t["tokens"] * w)), "kl_weight": kl_w}

  def classifier_loss(self, params, batch, ctx):
    """DeepMoji (supplement 0.2): softmax cross-entropy of the response's emoji."""
    w = batch["weight"]
    logits = self.net.classify(params, response_tokens(batch, self.tokenizer.eos_id), True,
                               ctx.salted_key(_DROPOUT))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    hit = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return _rows(ce, w), {"accuracy": _rows(hit, w)}

  def rl_loss(self, params, batch, ctx):
    """The Reinforced CVAE: ``L'' = L' - lambda J'`` (Algorithm 1); classifier frozen."""
    stage, net = ctx.stage, self.net
    mode, source = stage.rl_decode, stage.rl_latent   # checked in __init__
    w, context, label = batch["weight"], batch["context"], batch["label"]
    z_key = ctx.salted_key(_Z)
    frozen = jax.lax.stop_gradient(params)
    # Line 6: the generation G of the current CVAE (no gradient), z from the prior.
    memory, cond, e = net.condition(frozen, context, label)
    if source == "prior":
      mean, logvar = net.prior(frozen, cond)
    else:
      t = net.cvae_terms(frozen, batch, z_key)
      mean, logvar = t["mean_q"], t["logvar_q"]
    eps = jax.random.normal(ctx.salted_key(_GEN_Z), mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps
    greedy = DecodeOptions(mode=mode, temperature=1.0, top_k=0, beam_width=1,
                           length_penalty=0.0, forbid_unk=True)
    out = net.decode(frozen, memory, net.initial_state(frozen, memory, e, z), ctx.salted_key(_GEN),
                     greedy, int(stage.rl_max_len) or batch["response_out"].shape[1])
    g_mask = jnp.arange(out.tokens.shape[1])[None, :] < out.lengths[:, None]
    # Lines 9-10: R, alpha on G and r on the targets T, one pass of the frozen classifier.
    gold = response_tokens(batch, self.tokenizer.eos_id)
    width = max(out.tokens.shape[1], gold.shape[1])
    pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])))
    both = net.classify(frozen, jnp.concatenate([pad(out.tokens), pad(gold)], 0))
    rw = rewards(both[:gold.shape[0]], both[gold.shape[0]:], label,
                 tuple(float(a) for a in stage.rank_weights))
    # Line 8: L' on T; line 7: log P(G_t) recomputed with gradient; line 11: -J'.
    kl_w = self.kl_weight_fn(stage)(ctx.stage_step)
    t = net.cvae_terms(params, batch, z_key, True, ctx.salted_key(_DROPOUT), kl_w,
                       float(stage.bow_weight))
    logp = net.sequence_log_probs(params, context, label, eps, out.tokens, source, batch)
    neg_j = policy_loss(logp, g_mask, rw)
    # Line 12: the policy term joins after policy_start_epochs of the stage.
    start = self.epochs_to_steps(float(stage.policy_start_epochs), "policy_start_epochs")
    on = (ctx.stage_step >= start).astype(jnp.float32)
    total = hybrid_loss(t["loss"], neg_j, float(stage.policy_weight) * on)
    return _rows(total, w), {
        "cvae_loss": _rows(t["loss"], w), "policy": _rows(neg_j, w), "kl": _rows(t["kl"], w),
        "rec": _rows(t["rec"], w), "reward_gen": _rows(rw["R"], w),
        "reward_gold": _rows(rw["r"], w), "alpha": _rows(rw["alpha"], w),
        "gen_top1": _rows((rw["rank"] == 1).astype(jnp.float32), w),
        "gen_length": _rows(out.lengths.astype(jnp.float32), w),
        "nll": Weighted(jnp.sum(t["rec"] * w), jnp.sum(t["tokens"] * w)),
        "policy_on": on, "kl_weight": kl_w}

  # -- evaluation -----------------------------------------------------------------
  def eval_step(self, state, batch):
    """Per-device sums: likelihoods (base, CVAE posterior/prior), KL, BoW, the classifier
    on the gold responses, and the emoji accuracy of generated responses."""
    p, net, w = state.params, self.net, batch["weight"]
    key = parallel.device_rng(jax.random.key(int(self.config.seed)))
    k_q, k_p, k_gen = jax.random.split(key, 3)
    nll_base, count = net.base_terms(p, batch)
    t = net.cvae_terms(p, batch, k_q)
    # NLL of the reference with z drawn from the prior (what generation uses).
    memory, cond, e = net.condition(p, batch["context"], batch["label"])
    mean_p, logvar_p = net.prior(p, cond)
    z_p = losses.gaussian_sample(k_p, mean_p, logvar_p)
    prior_nll, _ = mle_terms(net.decode_logits(p, memory, net.initial_state(p, memory, e, z_p),
                                               batch["response_in"]), batch)
    gold = net.classify(p, response_tokens(batch, self.tokenizer.eos_id))
    ce = optax.softmax_cross_entropy_with_integer_labels(gold, batch["label"])
    gold_rank = losses.label_rank(gold, batch["label"])
    latent = self.is_latent(state.step)
    out, info = net.best_of(p, batch["context"], batch["label"], k_gen, latent,
                            self.decode_options(), int(self.config.data.max_response_len),
                            int(self.config.decode.latent_samples))
    f = lambda x: jnp.sum(x.astype(jnp.float32) * w)
    return {"nll_base": f(nll_base), "rec": f(t["rec"]), "kl": f(t["kl"]), "bow": f(t["bow"]),
            "prior_nll": f(prior_nll), "tokens": f(count), "examples": jnp.sum(w),
            "latent": jnp.asarray(latent, jnp.float32),
            "classifier_loss": f(ce), "classifier_top1": f(gold_rank <= 1),
            "classifier_top5": f(gold_rank <= 5),
            "emoji_prob": f(info["label_prob"]), "emoji_top1": f(info["rank"] <= 1),
            "emoji_top5": f(info["rank"] <= 5), "emoji_prob_single": f(info["label_prob_first"]),
            "emoji_top1_single": f(info["rank_first"] <= 1),
            "response_length": f(out.lengths)}

  def summarize(self, sums):
    """Validation scalars. ``perplexity`` is the current generator's: the base model's
    (``z = 0``) before any CVAE step, then the CVAE's reconstruction perplexity with
    ``z ~ q(z|x,c)`` (how the paper reports CVAE perplexity). ``prior_perplexity``
    (``z ~ p(z|c)``) and ``elbo_perplexity`` (``exp((rec + KL) / tokens)``, an upper
    bound; ``elbo_nll_per_token`` its log) are the stricter comparisons;
    :meth:`iw_step` adds the importance-weighted bound."""
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    tokens, ex = max(s["tokens"], 1.0), max(s["examples"], 1.0)
    latent = s["latent"] > 0
    ppl = lambda nll: float(math.exp(min(nll, 700.0)))
    nll = (s["rec"] if latent else s["nll_base"]) / tokens
    out = {"nll": nll, "perplexity": ppl(nll), "base_perplexity": ppl(s["nll_base"] / tokens),
           "rec_perplexity": ppl(s["rec"] / tokens),
           "prior_perplexity": ppl(s["prior_nll"] / tokens),
           "elbo_perplexity": ppl((s["rec"] + s["kl"]) / tokens),
           "elbo_nll_per_token": (s["rec"] + s["kl"]) / tokens,
           "kl": s["kl"] / ex, "bow": s["bow"] / ex}
    for k in ("classifier_loss", "classifier_top1", "classifier_top5", "emoji_prob",
              "emoji_top1", "emoji_top5", "emoji_prob_single", "emoji_top1_single",
              "response_length"):
      out[k] = s[k] / ex
    out["examples"] = s["examples"]
    return out

  def iw_step(self, state, batch):
    """Per-device sums of the bounds on ``log p(x | c)`` of the current generator (padding
    rows weigh 0): ``iw`` (``K = likelihood.iw_samples`` draws,
    :meth:`MojiTalkNetworks.iw_terms`), ``elbo`` (the same draws' ELBO), ``tokens``,
    ``examples``. Before any CVAE step (:meth:`is_latent`) the generator is the base model
    (``z = 0``) and both are its exact ``log p(x | c)``."""
    k, chunk = likelihood.iw_settings(self.config)
    p, net, w = state.params, self.net, batch["weight"]
    key = parallel.device_rng(jax.random.fold_in(jax.random.key(int(self.config.seed)), _IW))

    def base():
      exact = -net.base_terms(p, batch)[0]
      return {"iw": exact, "elbo": exact}

    t = jax.lax.cond(jnp.asarray(self.is_latent(state.step)),
                     lambda: net.iw_terms(p, batch, key, k, chunk), base)
    count = (batch["response_out"] != 0).sum(-1)   # the tokens mle_terms scores
    f = lambda x: jnp.sum(x.astype(jnp.float32) * w)
    return {"iw": f(t["iw"]), "elbo": f(t["elbo"]), "tokens": f(count), "examples": jnp.sum(w)}

  def summarize_iw(self, sums):
    """``iw_nll`` (per response), ``iw_nll_per_token``, ``iw_perplexity``, the same for
    ``mc_elbo`` (the ELBO of the same draws), and ``iw_samples`` (K)."""
    return likelihood.summarize_iw(sums, likelihood.iw_settings(self.config)[0])

  # -- generation -------------------------------------------------------------------
  def label_names(self):
    """The emoji (or, in the demo, the stand-in classes) a response can be asked for."""
    return data.label_names(self.config)

  def prompt_batch(self, inputs, prompts, label=None):
    """``{"context" [B, S], "label" [B]}``; ``label``: one index for every prompt, or one
    per prompt."""
    if label is None:
      raise ConfigError("the mojitalk objective generates for a designated emoji: pass "
                        "label= (an index of label_names(), or one per prompt); "
                        "vedgan.evaluate scores its responses with --suite mojitalk_table2")
    labels = np.broadcast_to(np.asarray(label, np.int32), (len(prompts),)).copy()
    return {"context": inputs.encode_contexts(self.config, prompts), "label": labels}

  def generate(self, state, batch, rng, options):
    """Responses for ``batch["context"] [B, S]`` expressing the emoji ``batch["label"] [B]``.

    Once the generator went through a CVAE stage (:meth:`is_latent` of the state's
    step), ``options.num_samples`` (0: ``config.decode.latent_samples``, 5 in the paper)
    prior samples are decoded by ``options.mode`` and the one the classifier rates highest
    for the label is kept; before, the base model's single ``z = 0`` response. ``info``
    holds ``label_prob``/``rank`` of the kept responses and ``label_prob_first``/
    ``rank_first`` of the first candidates (``[B]``), and ``num_candidates``.
    """
    if batch is None or "label" not in batch:
      raise ConfigError("the mojitalk objective generates for a designated emoji: the batch "
                        "needs 'label' [B] ints (prompt_batch(..., label=...))")
    latent = bool(self.is_latent(int(jax.device_get(state.step))))
    n = (int(options.num_samples) or int(self.config.decode.latent_samples)) if latent else 1
    max_len = int(options.max_len or self.config.data.max_response_len)
    static, temperature = options.split_temperature()  # a traced temperature: one compile
    key = (latent, static, max_len, n)
    if key not in self._gen_cache:
      self._gen_cache[key] = jax.jit(lambda p, c, l, r, t: self.net.best_of(
          p, c, l, r, latent, static.with_temperature(t), max_len, n))
    out, info = self._gen_cache[key](state.params, jnp.asarray(batch["context"], jnp.int32),
                                     jnp.asarray(batch["label"], jnp.int32), rng, temperature)
    return Generation(out.tokens, out.lengths, out.scores, dict(info, num_candidates=n))

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """Responses to the logged validation contexts for their gold emoji (``[emoji] context``)."""
    contexts = [c for c, _ in inputs.sample_pairs]
    if not contexts:
      return []
    labels = data.sample_labels(inputs)
    out = self.generate(state, self.prompt_batch(inputs, contexts, label=labels),
                        jax.random.key(step), self.decode_options())
    names = self.label_names()
    return [(f"[{names[int(l)]}] {c}", text)
            for c, l, text in zip(contexts, labels, self.texts(out))]

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """After the classifier stage: ``classifier_per_label.png``, the classifier's top-1 /
    top-5 accuracy per emoji on the gold validation responses (the paper's Fig. 1). The
    classifier is frozen afterwards, so it is drawn once."""
    if stage != "classifier":
      return []
    from vedgan.papers.mojitalk import report  # pylint: disable=import-outside-toplevel
    path = os.path.join(out_dir, "classifier_per_label.png")
    report.classifier_report(self, state, inputs, path)
    return [path]
