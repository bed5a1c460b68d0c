"""HappyBot (Shin et al. 2019, ``../shared/papers/happybot.txt``): sentiment look-ahead
rewards and REINFORCE with a learned per-timestep baseline.

    classifier   stream "sentences"                                        (Sec. 3.1)
        L_C = BCE(C(s), label(s))                  C: sentiment of one utterance
    predictor    stream "lookahead", C frozen                    (Sec. 2.2, 3.1)
        L_P = BCE(P([u_{i+1}; s_{i+1}]), 1[C(u_{i+2}) > 0])   label the next user turn
    mle          stream "dialogue"                                              (Eq. 6)
        L_MLE = -sum_t log p(y_t | y_<t, x) / #tokens
    multiseq     stream "dialogue", C frozen                       (Sec. 3.2, baseline)
        L_MLE + w BCE(E(enc(x)), 1[C(u_{i+1}) > 0])
    rl           stream "dialogue", C and P frozen                       (Eq. 5, 7-10)
        y^s ~ softmax(logits / tau)                                             (Eq. 5)
        R = sigmoid P([u_{i+1}; y^s])     (reward "lookahead"; "current": C(y^s))
        R^_t = W_r sg(m_t) + b_r                                                (Eq. 7)
        L_b = 1/T sum_t (R - R^_t)^2                                            (Eq. 8)
        L_RL = -1/T sum_t sg(R - R^_t) log P(w_t)                               (Eq. 9)
        L_mixed = lambda L_RL + (1 - lambda) L_MLE                              (Eq. 10)
        the policy descends L_mixed, the baseline L_b (its own learning rate)

The policy is the seq2seq package's model (:func:`vedgan.papers.seq2seq.algorithm.
build_seq2seq`): a Bi-GRU encoder over ``x = [s_i; <eou>; u_{i+1}]``, a GRU decoder
with Luong dot attention (Eq. 1-4), embeddings tied with the output layer.

Parameter groups (each a network with its own Adam state): ``policy``,
``baseline`` (Eq. 7), ``classifier`` and ``predictor`` (two
:class:`vedgan.nn.classifier.SentenceClassifier`), ``emotion`` (MultiSeq's head).
Rewards are plug-ins (:mod:`vedgan.rewards`, ``stages.rl.reward``).

The predictor's targets are the frozen classifier's hard labels of ``u_{i+2}``,
computed in the step: exactly what the paper's separate labelling pass would
store, with nothing but parameters to checkpoint. Batches: see
:mod:`vedgan.papers.happybot.data`.
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vedgan import decode, losses, rewards
from vedgan.decode import DecodeOptions
from vedgan.errors import ConfigError
from vedgan.nn.classifier import SentenceClassifier
from vedgan.nn.dense import Dense
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.objective import Objective, register
from vedgan.papers.happybot import data
from vedgan.papers.seq2seq.algorithm import (DECODER_METHODS, DTYPES, build_seq2seq, respond,
                                             sequence_nll, token_mask)
from vedgan.plan import Plan
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

Array = jax.Array

#: The step functions that train the policy (stage-end reward plots follow them).
POLICY_STEPS = ("mle", "multiseq", "rl")


# ============================================================================
# Eq. 8 and 9 per sequence (the call site averages over sequences).


def rl_loss(log_probs: Array, rewards_: Array, baseline: Array | None, mask: Array) -> Array:
  """HappyBot Eq. 9 per sequence: ``-1/T sum_t (R - R^_t) log P(w_t)``, ``[B]``.

  ``T`` is the number of generated tokens (mask sum, EOS included); the
  advantage ``R - R^_t`` is a stop-gradient (:func:`vedgan.losses.reinforce_loss`).

  Args:
    log_probs: ``[B, T]`` ``log P(w_t)`` under the tempered softmax of Eq. 5.
    rewards_: ``[B]`` sequence reward ``R``.
    baseline: ``[B, T]`` ``R^_t`` (Eq. 7) or None (no baseline).
    mask: ``[B, T]`` 1 for generated tokens.
  """
  length = jnp.maximum(jnp.sum(mask, axis=-1).astype(jnp.float32), 1.0)
  return losses.reinforce_loss(log_probs, rewards_, baseline, mask) / length


def baseline_mse(predicted: Array, rewards_: Array, mask: Array) -> Array:
  """HappyBot Eq. 8 per sequence: ``1/T sum_t |R - R^_t|^2`` over generated steps, ``[B]``.

  Padding steps are masked out (the authors' code averaged them in).
  """
  length = jnp.maximum(jnp.sum(mask, axis=-1).astype(jnp.float32), 1.0)
  return losses.baseline_loss(predicted, rewards_, mask) / length



# ============================================================================
# The policy's rollouts (Eq. 5).


def _teacher_forced(module: Seq2Seq, context, response_in, train: bool = False):
  """``(memory, decode outputs)`` of one teacher-forced pass (a ``method=`` for apply)."""
  memory = module.encode(context, train)
  return memory, module.decode(memory, module.initial_state(memory), response_in, train)


def mask_rollout_logits(logits: Array, forbid_ids: Sequence[int], eos_id: int,
                        min_len: int = 1) -> Array:
  """The masks the sampler applies, for teacher-forced ``logits[B, T, V]``.

  ``forbid_ids`` (PAD, BOS, UNK) get ``-inf`` everywhere, EOS gets ``-inf`` at
  ``t < min_len``: the scoring pass then gives the exact log-probabilities the
  sampler drew with.
  """
  vocab = logits.shape[-1]
  banned = np.zeros((vocab,), bool)
  banned[list(forbid_ids)] = True
  logits = jnp.where(banned, -jnp.inf, logits)
  early = (jnp.arange(logits.shape[-2]) < min_len)[:, None] & (jnp.arange(vocab) == eos_id)
  return jnp.where(early, -jnp.inf, logits)


def policy_decode(model: Seq2Seq, ids: dict, options: DecodeOptions, max_len: int,
                  min_len: int, params, context: Array, key: Array) -> decode.DecodeOutput:
  """Free-running responses of the policy to ``context[B, S]`` (the seq2seq decoder through
  :func:`decode.module_conditional`)."""
  return decode.module_conditional(model, DECODER_METHODS, params, context, key, options,
                                   max_len, ids, min_len)


@flax.struct.dataclass
class Rollout:
  """A sampled response. ``tokens``/``inputs``/``mask``/``log_probs`` are ``[B, T]``.

  ``inputs`` = ``[bos, tokens[:-1]]`` (the decoder inputs of the scoring pass),
  ``mask`` = 1 for generated tokens (EOS included), ``log_probs`` the sampler's.
  """
  tokens: Array
  inputs: Array
  mask: Array
  log_probs: Array


# ============================================================================
# The objective.


def _baseline_mode(stage) -> str:
  mode = str(stage.baseline)
  if mode not in ("learned", "none"):
    raise ConfigError(f"config.stages.rl.baseline={mode!r} must be 'learned' or 'none'")
  return mode


def _temperature(stage) -> float:
  tau = float(stage.temperature)
  if not tau > 0:
    raise ConfigError(f"config.stages.rl.temperature={tau} must be > 0")
  return tau


def rl_networks(stage) -> tuple[str, ...]:
  """What the rl step trains: the policy, and the baseline when it is learned."""
  return ("policy", "baseline") if _baseline_mode(stage) == "learned" else ("policy",)


def rl_learning_rate(ctx, network: str):
  """The stage's schedule for the policy; ``stages.rl.baseline_learning_rate`` (constant)
  for the baseline (Eq. 8)."""
  return float(ctx.stage.baseline_learning_rate) if network == "baseline" else ctx.learning_rate


@register("happybot")
class HappyBotObjective(Objective):
  """HappyBot: classifier -> predictor -> MLE -> mixed RL (see the module docstring)."""

  STEPS = ("classifier", "predictor", "mle", "multiseq", "rl")
  EVAL_STREAM = "dialogue"
  #: training-curve figures (vedgan.plots): the sentiment reward, the learned per-step
  #: baseline (its value when logged as ``baseline_value``, and its MSE loss, Eq. 8) and
  #: the mean absolute advantage |R - b_t| of the REINFORCE stage.
  PLOT_GROUPS = {
      "rl_reward": (
          Panel("sentiment reward", ("reward R = reward", "baseline b = baseline_value",
                                     "validation/reward_lookahead",
                                     "validation/reward_current"), ylabel="reward"),
          Panel("baseline and advantage", ("mean |R - b| = advantage_abs",),
                ("baseline MSE = baseline",), "|advantage|", "MSE"),
          Panel("mixed loss (Eq. 10)", ("rl", "mle", "mixed"))),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    m, mc = config.model, config.model.classifier
    self.policy = build_seq2seq(m, tokenizer.vocab_size)
    self.chunk = int(m.loss_chunk)
    self.reward_classifier = SentenceClassifier(
        vocab_size=tokenizer.vocab_size, embed_dim=int(mc.embed_dim), hidden=int(mc.hidden),
        layers=int(mc.layers), dropout=float(mc.dropout), dtype=DTYPES[m.dtype],
        unroll=int(m.unroll), remat=bool(m.remat))
    self.baseline = Dense(1)          # Eq. 7: R^_t = W_r m_t + b_r
    self.emotion_head = Dense(1)      # MultiSeq: sentiment of the context
    self.ids = decode.special_ids(tokenizer, forbid_unk=True)   # UNK, PAD, BOS never drawn
    self._rewards: dict[str, rewards.Reward] = {}
    self.lookahead = self.reward("lookahead")
    self.current = self.reward("current")
    for stage in config.stages.values():   # choices refused before anything is written
      if "reward" in stage:
        self.reward(str(stage.reward))
      if "baseline" in stage:
        _baseline_mode(stage)

  def reward(self, name: str) -> rewards.Reward:
    """The reward ``name`` of :mod:`vedgan.rewards` (built once)."""
    if name not in self._rewards:
      self._rewards[name] = rewards.get(name, self)
    return self._rewards[name]

  def init(self, rng: Array, batch=None):
    """All networks and optimizer states (shapes do not depend on ``batch``)."""
    del batch
    k_policy, k_base, k_cls, k_pred, k_emo = jax.random.split(rng, 5)
    tokens = jnp.full((1, 4), 7, jnp.int32)
    hidden = int(self.config.model.hidden)
    params = {
        "policy": self.policy.init({"params": k_policy}, tokens, tokens)["params"],
        "baseline": self.baseline.init(k_base, jnp.zeros((1, 1, hidden)))["params"],
        "classifier": self.reward_classifier.init(k_cls, tokens)["params"],
        "predictor": self.reward_classifier.init(k_pred, tokens)["params"],
        "emotion": self.emotion_head.init(k_emo, jnp.zeros((1, 2 * hidden)))["params"],
    }
    return self.new_state(k_policy, params)

  # -- the algorithm ------------------------------------------------------------------
  def steps(self):
    return {
        "classifier": Step(trains=("classifier",), loss=self.classifier_loss,
                           stream="sentences"),
        "predictor": Step(trains=("predictor",), loss=self.predictor_loss, stream="lookahead"),
        "mle": Step(trains=("policy",), loss=self.mle_loss, stream="dialogue"),
        "multiseq": Step(trains=("policy", "emotion"), loss=self.multiseq_loss,
                         stream="dialogue"),
        "rl": Step(trains=rl_networks, loss=self.rl_step_loss, stream="dialogue",
                   learning_rate=rl_learning_rate),
    }

  def classifier_labels(self, params, tokens: Array) -> Array:
    """Hard sentiment labels (1 = positive) of ``tokens[B, L]`` by the frozen classifier."""
    logits = self.reward_classifier.apply({"params": params["classifier"]}, tokens)[:, 0]
    return jax.lax.stop_gradient((logits > 0).astype(jnp.float32))

  def _bce(self, network: str, params, tokens, labels, w, ctx):
    """Binary cross-entropy of ``network`` on ``tokens[B, L]`` against ``labels[B]`` (dropout
    on), rows weighted by ``w[B]``; logs accuracy, the rate of positive targets, the rows."""
    logits = self.reward_classifier.apply({"params": params[network]}, tokens, train=True,
                                          rngs={"dropout": ctx.rng})[:, 0]
    ce = optax.sigmoid_binary_cross_entropy(logits, labels)
    correct = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
    n = w.sum()
    return Weighted((ce * w).sum(), n), {"accuracy": Weighted((correct * w).sum(), n),
                                         "positive_rate": Weighted((labels * w).sum(), n),
                                         "examples": ctx.global_sum(n)}

  def classifier_loss(self, params, batch, ctx):
    """Sec. 3.1: the sentiment classifier on labelled sentences (``tokens_out`` + ``label``)."""
    label = batch["label"]
    tokens = rewards.strip_eos(batch["tokens_out"], self.ids["eos_id"])
    return self._bce("classifier", params, tokens, jnp.maximum(label, 0).astype(jnp.float32),
                     batch["weight"] * (label >= 0).astype(jnp.float32), ctx)

  def predictor_loss(self, params, batch, ctx):
    """Sec. 2.2: ``[u_{i+1}; <eou>; s_{i+1}]`` -> the frozen classifier's label of ``u_{i+2}``."""
    return self._bce("predictor", params, self.lookahead.inputs(batch, batch["response_out"]),
                     self.classifier_labels(params, batch["next_turn"]),
                     batch["weight"] * batch["has_next"].astype(jnp.float32), ctx)

  def mle_loss(self, params, batch, ctx):
    """Eq. 6: token-mean NLL of the gold responses (dropout on)."""
    nll, count = sequence_nll(self.policy, params["policy"], batch, self.chunk, ctx.rng)
    return Weighted(nll.sum(), count.sum()), {"tokens": ctx.global_sum(count.sum())}

  def multiseq_loss(self, params, batch, ctx):
    """MultiSeq (Sec. 3.2): Eq. 6 + ``emotion_weight`` x BCE of a sentiment head on the
    encoder's final state, targets = the frozen classifier's label of ``u_{i+1}``.
    The logged ``loss`` is the MLE term (``nll``), comparable with the ``mle`` step's."""
    labels = self.classifier_labels(params, batch["last_turn"])
    w = batch["weight"]
    memory, out = self.policy.apply({"params": params["policy"]}, batch["context"],
                                    batch["response_in"], True, method=_teacher_forced,
                                    rngs={"dropout": ctx.rng})
    nll, _ = losses.sequence_cross_entropy(out["logits"], batch["response_out"],
                                           token_mask(batch["response_out"]))
    logit = self.emotion_head.apply({"params": params["emotion"]}, memory.final)[:, 0]
    ce = optax.sigmoid_binary_cross_entropy(logit, labels)
    mle = ctx.share(nll.sum(), (batch["response_out"] != 0).sum())
    emotion = ctx.share((ce * w).sum(), w.sum())
    correct = ctx.share((((logit > 0) == (labels > 0.5)) * w).sum(), w.sum())
    total = mle + float(ctx.stage.emotion_weight) * emotion
    return Weighted.of_shares(total), {
        "loss": Weighted.of_shares(mle), "nll": Weighted.of_shares(mle),
        "emotion_loss": Weighted.of_shares(emotion),
        "emotion_accuracy": Weighted.of_shares(correct)}

  # -- RL (Eq. 5, 7-10) -----------------------------------------------------------------
  def sample_rollout(self, policy_params, batch, key: Array, temperature: float) -> Rollout:
    """Samples ``y^s ~ softmax(logits / tau)`` (Eq. 5) for ``batch["context"]``.

    UNK, PAD and BOS are never drawn, EOS not at ``t = 0`` (``min_len=1``); the
    length is the reference bucket ``batch["response_out"].shape[1]``.
    """
    out = policy_decode(self.policy, self.ids, DecodeOptions(mode="sample",
                                                             temperature=temperature),
                        batch["response_out"].shape[1], 1, policy_params, batch["context"], key)
    tokens = jax.lax.stop_gradient(out.tokens)
    inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], self.ids["bos_id"]), tokens[:, :-1]],
                             axis=1)
    return Rollout(tokens=tokens, inputs=inputs,
                   mask=(tokens != self.ids["pad_id"]).astype(jnp.float32),
                   log_probs=out.log_probs)

  def score_rollout(self, policy_params, batch, rollout: Rollout, temperature: float,
                    rng: Array | None = None) -> tuple[Array, Array]:
    """Teacher-forced pass over a sample: ``(log P(w_t) [B, T], m_t [B, T, H])``.

    ``log P`` is the log-softmax of the masked logits divided by ``tau`` (Eq. 5,
    :func:`vedgan.losses.token_log_probs`); with ``rng=None`` (no dropout) it
    equals the sampler's log-probabilities. Differentiable in ``policy_params``.
    """
    train = rng is not None
    _, out = self.policy.apply({"params": policy_params}, batch["context"], rollout.inputs,
                               train, method=_teacher_forced,
                               rngs={"dropout": rng} if train else None)
    logits = mask_rollout_logits(out["logits"], self.ids["forbid_ids"], self.ids["eos_id"])
    logp = losses.token_log_probs(logits, rollout.tokens, temperature)
    return jnp.where(rollout.mask > 0, logp, 0.0), out["states"]

  def baseline_values(self, baseline_params, states: Array) -> Array:
    """Eq. 7 on the stop-gradient decoder states: ``R^_t = W_r sg(m_t) + b_r``, ``[B, T]``."""
    return self.baseline.apply({"params": baseline_params},
                               jax.lax.stop_gradient(states))[..., 0]

  def rl_losses(self, params, batch, rollout: Rollout, reward: Array, stage, norms: dict,
                rngs: tuple[Array | None, Array]) -> tuple[Array, dict]:
    """``L_mixed + L_b`` and its terms, as this device's share of the global means.

    * ``rl``: Eq. 9, mean over sequences of ``-1/T sum_t (R - R^_t) log P(w_t)``;
    * ``mle``: Eq. 6 on the gold response, mean over the batch's tokens;
    * ``mixed``: Eq. 10, ``lambda rl + (1 - lambda) mle``, ``lambda`` =
      ``stage.mixed_weight`` (the RL weight, 0.25 in the paper);
    * ``baseline``: Eq. 8, mean over sequences of ``1/T sum_t (R - R^_t)^2``
      (added to the total only when the baseline is learned).

    By the stop-gradients, ``grad_policy`` of the total is ``grad L_mixed`` and
    ``grad_baseline`` is ``grad L_b``.

    Args:
      params: every parameter group (``policy`` and ``baseline`` are read).
      batch: a dialogue batch; ``rollout``/``reward``: the sample and its ``R`` [B].
      stage: the rl stage config.
      norms: ``{"rows": global number of rows, "tokens": global gold tokens}``.
      rngs: ``(dropout key of the scoring pass or None, dropout key of the MLE pass)``.
    """
    tau = _temperature(stage)
    use_baseline = _baseline_mode(stage) == "learned"
    reward = jax.lax.stop_gradient(reward)
    w = batch["weight"]
    logp, states = self.score_rollout(params["policy"], batch, rollout, tau, rngs[0])
    b_hat = self.baseline_values(params["baseline"], states)
    l_rl = (rl_loss(logp, reward, b_hat if use_baseline else None, rollout.mask) * w).sum()
    l_b = (baseline_mse(b_hat, reward, rollout.mask) * w).sum()
    nll, _ = sequence_nll(self.policy, params["policy"], batch, self.chunk, rngs[1])
    terms = {"rl": l_rl / norms["rows"], "mle": nll.sum() / norms["tokens"],
             "baseline": l_b / norms["rows"]}
    terms["mixed"] = losses.mixed_loss(terms["rl"], terms["mle"], float(stage.mixed_weight))
    total = terms["mixed"] + (terms["baseline"] if use_baseline else 0.0)
    advantage = jnp.where(rollout.mask > 0, reward[:, None] - b_hat, 0.0)
    per_row = lambda x: (x.sum(1) / jnp.maximum(rollout.mask.sum(1), 1.0) * w).sum() / norms[
        "rows"]
    terms["advantage_abs"] = per_row(jnp.abs(advantage))
    terms["baseline_value"] = per_row(jnp.where(rollout.mask > 0, b_hat, 0.0))  # mean b_t
    return total, terms

  def rl_step_loss(self, params, batch, ctx):
    """HappyBot's mixed RL step: one rollout per context, its reward, ``L_mixed + L_b``."""
    stage = ctx.stage
    keys = ctx.keys("sample", "score", "mle")
    rollout = self.sample_rollout(jax.lax.stop_gradient(params["policy"]), batch,
                                  keys["sample"], _temperature(stage))
    reward = jax.lax.stop_gradient(self.reward(str(stage.reward))(params, batch,
                                                                  rollout.tokens))
    w = batch["weight"]
    norms = {"rows": jnp.maximum(ctx.global_sum(w.sum()), 1.0),
             "tokens": jnp.maximum(ctx.global_sum((batch["response_out"] != 0).sum()), 1.0)}
    rngs = (keys["score"] if bool(stage.rollout_dropout) else None, keys["mle"])
    total, terms = self.rl_losses(params, batch, rollout, reward, stage, norms, rngs)
    terms["reward"] = (reward * w).sum() / norms["rows"]
    terms["sample_length"] = (rollout.mask.sum(1) * w).sum() / norms["rows"]
    metrics = {k: Weighted.of_shares(v) for k, v in terms.items()}
    return Weighted.of_shares(total), {"loss": metrics["mixed"], **metrics}

  # -- evaluation -------------------------------------------------------------------
  def greedy(self, policy_params, context: Array, max_len: int) -> Array:
    """Greedy responses ``[B, max_len]`` (the paper evaluates with greedy decoding).

    UNK/PAD/BOS are never chosen and EOS not first, as in the RL rollouts.
    """
    return policy_decode(self.policy, self.ids, DecodeOptions(mode="greedy"), max_len, 1,
                         policy_params, context, jax.random.key(0)).tokens

  def eval_step(self, state, batch):
    """Per-device sums: policy NLL, rewards of greedy responses, reward-model accuracies."""
    p, w = state.params, batch["weight"]
    nll, count = sequence_nll(self.policy, p["policy"], batch, self.chunk)
    sums = {"nll": (nll * w).sum(), "tokens": (count * w).sum(), "examples": w.sum()}
    tokens = self.greedy(p["policy"], batch["context"], batch["response_out"].shape[1])
    sums["reward_lookahead"] = (self.lookahead(p, batch, tokens) * w).sum()
    sums["reward_current"] = (self.current(p, batch, tokens) * w).sum()
    label = batch["response_label"]
    valid = (label >= 0) * w
    cls = self.current.logits(p, batch, batch["response_out"]) > 0
    sums["classifier_correct"] = ((cls == (label == 1)) * valid).sum()
    sums["classifier_count"] = valid.sum()
    valid = batch["has_next"] * w
    pred = self.lookahead.logits(p, batch, batch["response_out"]) > 0
    target = self.classifier_labels(p, batch["next_turn"]) > 0.5
    sums["predictor_correct"] = ((pred == target) * valid).sum()
    sums["predictor_count"] = valid.sum()
    return sums

  def summarize(self, sums):
    """NLL/perplexity, mean look-ahead/current reward of greedy responses, accuracies."""
    nll = float(sums["nll"]) / max(float(sums["tokens"]), 1.0)
    n = max(float(sums["examples"]), 1.0)
    out = {"nll": nll, "perplexity": float(jnp.exp(nll)), "examples": float(sums["examples"]),
           "reward_lookahead": float(sums["reward_lookahead"]) / n,
           "reward_current": float(sums["reward_current"]) / n}
    for name in ("classifier", "predictor"):
      count = float(sums[f"{name}_count"])
      if count > 0:
        out[f"{name}_accuracy"] = float(sums[f"{name}_correct"]) / count
    return out

  # -- generation, inputs, plots ----------------------------------------------------------
  def prompt_batch(self, inputs, prompts, label=None):
    del label
    return {"context": inputs.encode_contexts(self.config, prompts)}

  def generate(self, state, batch, rng, options):
    """Responses of the policy to ``batch["context"] [B, S]`` (greedy | sample | beam)."""
    return respond(self.policy, self.tokenizer, self.config, state.params["policy"], batch, rng,
                   options)

  def word_embeddings(self, state):
    """The policy's input embedding table ``[V, D]`` (the embedding metrics)."""
    return state.params["policy"]["embed"]["embedding"]

  @classmethod
  def make_inputs(cls, config, workdir: str):
    """The ``dialogue``, ``lookahead`` and ``sentences`` streams (:mod:`.data`)."""
    return data.make_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Epochs (unused by HappyBot's stages) are epochs of the ``dialogue`` stream."""
    self.steps_per_epoch = int(inputs.streams["dialogue"].num_batches_per_epoch)

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """``reward_distribution.png`` after the stages that train the policy (mle, multiseq,
    rl): see :func:`vedgan.papers.happybot.report.reward_distribution`."""
    span = next(s for s in Plan.from_config(self.config).spans if s.name == stage)
    if not set(POLICY_STEPS) & set(span.step_names):
      return []
    from vedgan.papers.happybot import report  # pylint: disable=import-outside-toplevel
    return report.reward_distribution(self, state, inputs, stage, out_dir)
