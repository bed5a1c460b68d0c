"""HappyBot (Shin et al. 2019): sentiment look-ahead rewards and REINFORCE with a learned baseline.

A dialogue is ``[u_1, s_1, u_2, s_2, ...]`` (user / system turns). The policy is
the seq2seq objective's model (:mod:`vedgan.objectives.seq2seq`): a Bi-GRU
encoder over the flattened two-turn context ``x = [s_i; u_{i+1}]`` and a GRU
decoder with Luong dot attention (Eq. 1-4), embeddings tied with the output
layer. Its output distribution is ``P = softmax((V m*_t + b) / tau)`` (Eq. 5).

Networks in ``TrainState.params`` (each with its own Adam state in ``opt_state``):

==============  =================================================================
``policy``      the Seq2Seq generator
``baseline``    ``R^_t = W_r m_t + b_r`` on the stop-gradient decoder state (Eq. 7)
``classifier``  sentiment classifier of one utterance (:mod:`vedgan.nn.classifier`)
``predictor``   look-ahead predictor ``[u_{i+1}; s_{i+1}] -> sentiment of u_{i+2}``
``emotion``     MultiSeq's context-sentiment head on the encoder state
==============  =================================================================

Step functions (``config.stages.*.step``):

* ``classifier``: binary cross-entropy on labelled sentences (Sec. 3.1; demo:
  VADER-lexicon labels of the corpus' utterances, :mod:`vedgan.data.lexicon`).
* ``predictor``: binary cross-entropy of the predictor on ``[u_{i+1}; <eou>;
  s_{i+1}]`` against the sentiment of the next user turn ``u_{i+2}``, labelled
  *on the fly* by the frozen classifier inside the jitted step (``logit > 0``).
  This is the paper's "label the user turns with the classifier, then train the
  predictor" (Sec. 3.1) without a separate labelling pass: the classifier is
  frozen during this stage, so the labels are exactly those a labelling pass
  would write, and there is no label store to checkpoint.
* ``mle``: the seq2seq objective's own MLE step (Eq. 6) run on the policy.
* ``multiseq``: the MultiSeq baseline (Sec. 3.2): Eq. 6 plus the cross-entropy
  of a sentiment head on the Bi-GRU encoder state, targets from the frozen
  classifier on the context's last turn (the paper predicts ED's emotion of the
  context; binary sentiment is what the offline data has).
* ``rl``: HappyBot's mixed training (Eq. 5, 7-10), see :meth:`HappyBotObjective.rl_losses`.
  One rollout per step sampled from ``softmax(logits / tau)`` (UNK masked, EOS
  masked at ``t = 0``, length = the reference bucket), a reward from
  :mod:`vedgan.rewards` (``lookahead``: the predictor; ``current``: the
  classifier on the response), a teacher-forced pass over the sample for
  ``log P(w_t)`` (a log-softmax, never raw logits) and the decoder states
  ``m_t``, the baseline on ``stop_gradient(m_t)``. One gradient call over
  ``{policy, baseline}`` of ``L_mixed + L_b``: by the stop-gradients the policy
  receives exactly ``grad L_mixed`` and the baseline exactly ``grad L_b``; each
  network then gets exactly one clipped Adam update (the authors' code stepped
  twice and never clipped).

Batches. The driver pulls one batch per step from a single iterator;
:class:`StagedBatches` knows the stage plan and serves each step from the
stream its step function needs (``sentences`` for the classifier, ``lookahead``
rows that have a next user turn for the predictor, ``dialogue`` for the
policy), each a bucketed, resumable, process-sharded
:class:`vedgan.data.pipeline.BatchIterator` plus fixed-width per-example fields:

* dialogue/lookahead: ``context [B, Lc]`` (``[s_i; <eou>; u_{i+1}]``),
  ``response_in/response_out [B, Lr]`` (``s_{i+1}``), ``weight [B]``,
  ``last_turn [B, U]`` (``u_{i+1}``), ``next_turn [B, U]`` (``u_{i+2}``),
  ``has_next [B]``, ``response_label [B]`` (lexicon label of ``s_{i+1}``);
* sentences: ``response_out [B, Ls]`` (the sentence + EOS), ``weight [B]``,
  ``label [B]`` (0/1, -1 = none).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from vedgan import decode, losses, parallel, rewards
from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.errors import ConfigError, DataError
from vedgan.nn.classifier import SentenceClassifier
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.objectives import base
from vedgan.objectives.seq2seq import DTYPES, Seq2SeqObjective, mle_terms
from vedgan.plots import Panel

Array = jax.Array

#: Which batch stream each step function trains on.
STREAM_OF_STEP = {"classifier": "sentences", "predictor": "lookahead", "mle": "dialogue",
                  "multiseq": "dialogue", "rl": "dialogue"}

#: EmpatheticDialogues' 32 emotions -> sentiment (1 positive, 0 negative, None dropped):
#: the paper maps ED situations' emotions to sentiments without listing the map.
ED_SENTIMENT = {
    **{e: 1 for e in ("excited", "proud", "grateful", "impressed", "confident", "hopeful",
                      "joyful", "prepared", "content", "caring", "trusting", "faithful",
                      "anticipating")},
    **{e: 0 for e in ("annoyed", "angry", "sad", "lonely", "afraid", "disgusted", "terrified",
                      "anxious", "disappointed", "guilty", "furious", "jealous", "embarrassed",
                      "devastated", "ashamed", "apprehensive")},
    **{e: None for e in ("surprised", "nostalgic", "sentimental")},
}


# ============================================================================
# Losses (per example; the call site reduces).


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
# Model pieces.


def _teacher_forced(module: Seq2Seq, context, response_in, train: bool = False):
  """``(memory, decode outputs)`` of one teacher-forced pass (a ``method=`` for apply)."""
  memory = module.encode(context, train)
  return memory, module.decode(memory, module.initial_state(memory), response_in, train)


def mask_rollout_logits(logits: Array, forbid_ids: Sequence[int], eos_id: int,
                        min_len: int = 1) -> Array:
  """The masks :func:`vedgan.decode.sample` applies, for teacher-forced ``logits[B, T, V]``.

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


@base.register("happybot")
class HappyBotObjective(base.Objective):
  """HappyBot: classifier -> predictor -> MLE -> mixed RL (see the module docstring)."""

  STEPS = ("classifier", "predictor", "mle", "multiseq", "rl")
  #: training-curve figures (vedgan.plots): the sentiment reward, the learned per-step
  #: baseline (its value when logged as ``baseline_value``, and its MSE loss, Eq. 9) and
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
    self.seq2seq = Seq2SeqObjective(config, tokenizer)
    self.policy = self.seq2seq.model
    self.tx = self.seq2seq.tx
    mc = config.model.classifier
    self.reward_classifier = SentenceClassifier(
        vocab_size=tokenizer.vocab_size, embed_dim=int(mc.embed_dim), hidden=int(mc.hidden),
        layers=int(mc.layers), dropout=float(mc.dropout),
        dtype=DTYPES[config.model.dtype], unroll=int(config.model.get("unroll", 1)),
        remat=bool(config.model.get("remat", False)))
    self.baseline = nn.Dense(1)          # Eq. 7: R^_t = W_r m_t + b_r
    self.emotion_head = nn.Dense(1)      # MultiSeq: sentiment of the context
    self.bos, self.eos, self.pad, self.forbid = self.seq2seq.tokenizer_ids(forbid_unk=True)
    self.lookahead = rewards.get("lookahead", self)
    self.current = rewards.get("current", self)

  # -- state ----------------------------------------------------------------------
  def init(self, rng: Array, batch=None) -> base.TrainState:
    """All networks and optimizer states (shapes do not depend on ``batch``)."""
    del batch
    k_policy, k_base, k_cls, k_pred, k_emo = jax.random.split(rng, 5)
    tokens = jnp.full((1, 4), 7, jnp.int32)
    policy = self.seq2seq.init(k_policy, {"context": tokens, "response_in": tokens})
    hidden = int(self.config.model.hidden)
    params = {
        "policy": policy.params["model"],
        "baseline": self.baseline.init(k_base, jnp.zeros((1, 1, hidden)))["params"],
        "classifier": self.reward_classifier.init(k_cls, tokens)["params"],
        "predictor": self.reward_classifier.init(k_pred, tokens)["params"],
        "emotion": self.emotion_head.init(k_emo, jnp.zeros((1, 2 * hidden)))["params"],
    }
    opt_state = {k: self.tx.init(v) for k, v in params.items()}
    return base.TrainState(step=jnp.zeros((), jnp.int32), rng=policy.rng, params=params,
                           opt_state=opt_state)

  @staticmethod
  def policy_view(state: base.TrainState) -> base.TrainState:
    """The state as the seq2seq objective sees it (``params["model"]`` = the policy)."""
    return state.replace(params={"model": state.params["policy"]},
                         opt_state={"model": state.opt_state["policy"]})

  @staticmethod
  def _merge(state: base.TrainState, step, **updates) -> base.TrainState:
    """``state`` with new ``step`` and ``{name: (params, opt_state)}`` for some networks."""
    params, opt_state = dict(state.params), dict(state.opt_state)
    for name, (p, o) in updates.items():
      params[name], opt_state[name] = p, o
    return state.replace(step=step, params=params, opt_state=opt_state)

  # -- steps ------------------------------------------------------------------------
  @property
  def step_builders(self):
    return {"classifier": self.build_classifier_step, "predictor": self.build_predictor_step,
            "mle": self.build_mle_step, "multiseq": self.build_multiseq_step,
            "rl": self.build_rl_step}

  def build_mle_step(self, stage, start: int):
    """Eq. 6: the seq2seq objective's MLE step, run on the policy."""
    inner = self.seq2seq.build_mle_step(stage, start)

    def step(state, batch):
      view, metrics = inner(self.policy_view(state), batch)
      return self._merge(state, view.step, policy=(view.params["model"],
                                                   view.opt_state["model"])), metrics

    return step

  def classifier_labels(self, params, tokens: Array) -> Array:
    """Hard sentiment labels (1 = positive) of ``tokens[B, L]`` by the frozen classifier."""
    logits = self.reward_classifier.apply({"params": params["classifier"]}, tokens)[:, 0]
    return jax.lax.stop_gradient((logits > 0).astype(jnp.float32))

  def _binary_step(self, stage, start: int, key: str, make_inputs: Callable,
                   make_labels: Callable):
    """A BCE step of the network ``key`` (classifier or predictor)."""
    lr_fn = base.learning_rate_fn(stage)

    def step(state: base.TrainState, batch):
      rng = parallel.device_rng(state.step_key())
      tokens = make_inputs(batch)
      labels, valid = make_labels(state.params, batch)
      w = batch["weight"] * valid
      count = parallel.psum(w.sum())
      denom = jnp.maximum(count, 1.0)

      def loss_fn(p):
        logits = self.reward_classifier.apply({"params": p}, tokens, train=True,
                                              rngs={"dropout": rng})[:, 0]
        per = optax.sigmoid_binary_cross_entropy(logits, labels)
        return (per * w).sum() / denom, logits

      grads, logits = jax.grad(loss_fn, has_aux=True)(state.params[key])
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      p, o = base.apply_updates(self.tx, grads, state.opt_state[key], state.params[key], lr)
      per = optax.sigmoid_binary_cross_entropy(logits, labels)
      correct = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
      sums = parallel.psum({"loss": (per * w).sum(), "accuracy": (correct * w).sum(),
                            "positive_rate": (labels * w).sum()})
      metrics = {k: v / denom for k, v in sums.items()}
      metrics.update(examples=count, grad_norm=base.global_norm(grads), learning_rate=lr)
      return self._merge(state, state.step + 1, **{key: (p, o)}), metrics

    return step

  def build_classifier_step(self, stage, start: int):
    """Sentiment classifier (Sec. 3.1) on ``sentences`` batches."""
    return self._binary_step(
        stage, start, "classifier",
        lambda batch: rewards.strip_eos(batch["response_out"], self.eos),
        lambda params, batch: (jnp.maximum(batch["label"], 0).astype(jnp.float32),
                               (batch["label"] >= 0).astype(jnp.float32)))

  def build_predictor_step(self, stage, start: int):
    """Look-ahead predictor (Sec. 2.2): ``[u_{i+1}; s_{i+1}]`` -> classifier label of ``u_{i+2}``."""
    return self._binary_step(
        stage, start, "predictor",
        lambda batch: self.lookahead.inputs(batch, batch["response_out"]),
        lambda params, batch: (self.classifier_labels(params, batch["next_turn"]),
                               batch["has_next"].astype(jnp.float32)))

  def build_multiseq_step(self, stage, start: int):
    """MultiSeq (Sec. 3.2): Eq. 6 + ``emotion_weight`` * BCE of the context-sentiment head."""
    lr_fn = base.learning_rate_fn(stage)
    weight = float(stage.get("emotion_weight", 1.0))

    def step(state: base.TrainState, batch):
      rng = parallel.device_rng(state.step_key())
      labels = self.classifier_labels(state.params, batch["last_turn"])
      w = batch["weight"]
      rows = jnp.maximum(parallel.psum(w.sum()), 1.0)
      tokens = jnp.maximum(parallel.psum((batch["response_out"] != 0).sum()), 1.0)

      def loss_fn(trainable):
        memory, out = self.policy.apply({"params": trainable["policy"]}, batch["context"],
                                        batch["response_in"], True, method=_teacher_forced,
                                        rngs={"dropout": rng})
        nll, count = mle_terms(out["logits"], batch)
        logit = self.emotion_head.apply({"params": trainable["emotion"]}, memory.final)[:, 0]
        ce = optax.sigmoid_binary_cross_entropy(logit, labels)
        mle, emo = nll.sum() / tokens, (ce * w).sum() / rows
        correct = (((logit > 0) == (labels > 0.5)) * w).sum() / rows
        return mle + weight * emo, {"nll": mle, "emotion_loss": emo, "emotion_accuracy": correct}

      trainable = {"policy": state.params["policy"], "emotion": state.params["emotion"]}
      grads, aux = jax.grad(loss_fn, has_aux=True)(trainable)
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      updates = {k: base.apply_updates(self.tx, grads[k], state.opt_state[k], state.params[k], lr)
                 for k in trainable}
      metrics = parallel.psum(aux)
      metrics.update(loss=metrics["nll"], grad_norm=base.global_norm(grads["policy"]),
                     learning_rate=lr)
      return self._merge(state, state.step + 1, **updates), metrics

    return step

  # -- RL -----------------------------------------------------------------------------
  def sample_rollout(self, policy_params, batch, key: Array, temperature: float) -> Rollout:
    """Samples ``y^s ~ softmax(logits / tau)`` (Eq. 5) for ``batch["context"]``.

    UNK, PAD and BOS are never drawn, EOS not at ``t = 0`` (``min_len=1``); the
    length is the reference bucket ``batch["response_out"].shape[1]``.
    """
    variables = {"params": policy_params}
    memory = self.policy.apply(variables, batch["context"], method=Seq2Seq.encode)
    h0 = self.policy.apply(variables, memory, method=Seq2Seq.initial_state)

    def step_fn(h, tokens):
      h, logits, _ = self.policy.apply(variables, memory, h, tokens, method=Seq2Seq.decode_step)
      return h, logits

    out = decode.sample(step_fn, h0, key, batch_size=batch["context"].shape[0],
                        max_len=batch["response_out"].shape[1], bos_id=self.bos,
                        eos_id=self.eos, pad_id=self.pad, temperature=temperature,
                        forbid_ids=self.forbid, min_len=1)
    tokens = jax.lax.stop_gradient(out.tokens)
    inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], self.bos), tokens[:, :-1]], axis=1)
    return Rollout(tokens=tokens, inputs=inputs, mask=(tokens != self.pad).astype(jnp.float32),
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
    logits = mask_rollout_logits(out["logits"], self.forbid, self.eos)
    logp = losses.token_log_probs(logits, rollout.tokens, temperature)
    return jnp.where(rollout.mask > 0, logp, 0.0), out["states"]

  def baseline_values(self, baseline_params, states: Array) -> Array:
    """Eq. 7 on the stop-gradient decoder states: ``R^_t = W_r sg(m_t) + b_r``, ``[B, T]``."""
    return self.baseline.apply({"params": baseline_params},
                               jax.lax.stop_gradient(states))[..., 0]

  def rl_losses(self, trainable, batch, rollout: Rollout, reward: Array, stage,
                norms: dict, rngs: tuple[Array | None, Array]) -> tuple[Array, dict]:
    """``L_mixed + L_b`` and its terms, as this device's share of the global means.

    * ``rl``: Eq. 9, mean over sequences of ``-1/T sum_t (R - R^_t) log P(w_t)``;
    * ``mle``: Eq. 6 on the gold response, mean over the batch's tokens (the
      seq2seq objective's convention);
    * ``mixed``: Eq. 10, ``lambda rl + (1 - lambda) mle`` with ``lambda`` =
      ``stage.mixed_weight`` (the RL weight, 0.25 in the paper);
    * ``baseline``: Eq. 8, mean over sequences of ``1/T sum_t (R - R^_t)^2``.

    Args:
      trainable: ``{"policy": ..., "baseline": ...}``, the differentiated params.
      batch: a dialogue batch; ``rollout``/``reward``: the sample and its ``R`` [B].
      stage: the rl stage config.
      norms: ``{"rows": global number of rows, "tokens": global gold tokens}``.
      rngs: ``(dropout key of the scoring pass or None, dropout key of the MLE pass)``.
    """
    tau = float(stage.temperature)
    lam = float(stage.mixed_weight)
    use_baseline = _baseline_mode(stage) == "learned"
    reward = jax.lax.stop_gradient(reward)
    w = batch["weight"]
    logp, states = self.score_rollout(trainable["policy"], batch, rollout, tau, rngs[0])
    b_hat = self.baseline_values(trainable["baseline"], states)
    l_rl = (rl_loss(logp, reward, b_hat if use_baseline else None, rollout.mask) * w).sum()
    l_b = (baseline_mse(b_hat, reward, rollout.mask) * w).sum()
    logits = self.policy.apply({"params": trainable["policy"]}, batch["context"],
                               batch["response_in"], train=True, rngs={"dropout": rngs[1]})
    nll, _ = mle_terms(logits, batch)
    terms = {"rl": l_rl / norms["rows"], "mle": nll.sum() / norms["tokens"],
             "baseline": l_b / norms["rows"]}
    terms["mixed"] = losses.mixed_loss(terms["rl"], terms["mle"], lam)
    total = terms["mixed"] + (terms["baseline"] if use_baseline else 0.0)
    advantage = jnp.where(rollout.mask > 0, reward[:, None] - b_hat, 0.0)
    per_row = lambda x: (x.sum(1) / jnp.maximum(rollout.mask.sum(1), 1.0) * w).sum() / norms["rows"]
    terms["advantage_abs"] = per_row(jnp.abs(advantage))
    terms["baseline_value"] = per_row(jnp.where(rollout.mask > 0, b_hat, 0.0))  # mean b_t
    return total, terms

  def build_rl_step(self, stage, start: int):
    """HappyBot's mixed RL step (Eq. 5, 7-10); see the module docstring."""
    lr_fn = base.learning_rate_fn(stage)
    base_lr = float(stage.get("baseline_learning_rate", stage.learning_rate))
    use_baseline = _baseline_mode(stage) == "learned"
    reward_fn = rewards.get(str(stage.reward), self)
    tau = float(stage.temperature)
    if not tau > 0:
      raise ConfigError(f"config.stages.rl.temperature={tau} must be > 0")
    dropout_in_rollout = bool(stage.get("rollout_dropout", False))

    def step(state: base.TrainState, batch):
      rng = parallel.device_rng(state.step_key())
      k_sample, k_score, k_mle = jax.random.split(rng, 3)
      rollout = self.sample_rollout(state.params["policy"], batch, k_sample, tau)
      reward = jax.lax.stop_gradient(reward_fn(state.params, batch, rollout.tokens))
      norms = {"rows": jnp.maximum(parallel.psum(batch["weight"].sum()), 1.0),
               "tokens": jnp.maximum(parallel.psum((batch["response_out"] != 0).sum()), 1.0)}
      trainable = {"policy": state.params["policy"], "baseline": state.params["baseline"]}
      rngs = (k_score if dropout_in_rollout else None, k_mle)
      grads, terms = jax.grad(self.rl_losses, has_aux=True)(trainable, batch, rollout, reward,
                                                            stage, norms, rngs)
      grads = parallel.psum(grads)        # local shares of global means: psum = global grad
      lr = lr_fn(state.step - start)
      updates = {"policy": base.apply_updates(self.tx, grads["policy"],
                                              state.opt_state["policy"],
                                              state.params["policy"], lr)}
      if use_baseline:
        updates["baseline"] = base.apply_updates(self.tx, grads["baseline"],
                                                 state.opt_state["baseline"],
                                                 state.params["baseline"], base_lr)
      metrics = parallel.psum(terms)
      w = batch["weight"]
      stats = parallel.psum({"reward": (reward * w).sum(),
                             "sample_length": (rollout.mask.sum(1) * w).sum()})
      metrics.update({k: v / norms["rows"] for k, v in stats.items()})
      metrics.update(loss=metrics["mixed"], grad_norm=base.global_norm(grads["policy"]),
                     learning_rate=lr)
      return self._merge(state, state.step + 1, **updates), metrics

    return step

  # -- evaluation -------------------------------------------------------------------
  def greedy(self, policy_params, context: Array, max_len: int) -> Array:
    """Greedy responses ``[B, max_len]`` (the paper evaluates with greedy decoding).

    UNK/PAD/BOS are never chosen and EOS not first, as in the RL rollouts.
    """
    t = self.tokenizer
    forbid = (t.pad_id, t.bos_id, t.unk_id)
    variables = {"params": policy_params}
    memory = self.policy.apply(variables, context, method=Seq2Seq.encode)
    h0 = self.policy.apply(variables, memory, method=Seq2Seq.initial_state)

    def step_fn(h, tokens):
      h, logits, _ = self.policy.apply(variables, memory, h, tokens, method=Seq2Seq.decode_step)
      return h, logits

    return decode.greedy(step_fn, h0, context.shape[0], max_len, t.bos_id, t.eos_id, t.pad_id,
                         forbid, min_len=1).tokens

  def eval_step(self, state: base.TrainState, batch):
    """Per-device sums: policy NLL, rewards of greedy responses, reward-model accuracies."""
    sums = dict(self.seq2seq.eval_step(self.policy_view(state), batch))
    w = batch["weight"]
    tokens = self.greedy(state.params["policy"], batch["context"], batch["response_out"].shape[1])
    sums["reward_lookahead"] = (self.lookahead(state.params, batch, tokens) * w).sum()
    sums["reward_current"] = (self.current(state.params, batch, tokens) * w).sum()
    label = batch["response_label"]
    valid = (label >= 0) * w
    cls = self.current.logits(state.params, batch, batch["response_out"]) > 0
    sums["classifier_correct"] = ((cls == (label == 1)) * valid).sum()
    sums["classifier_count"] = valid.sum()
    valid = batch["has_next"] * w
    pred = self.lookahead.logits(state.params, batch, batch["response_out"]) > 0
    target = self.classifier_labels(state.params, batch["next_turn"]) > 0.5
    sums["predictor_correct"] = ((pred == target) * valid).sum()
    sums["predictor_count"] = valid.sum()
    return sums

  def summarize(self, sums):
    """NLL/perplexity, mean look-ahead/current reward of greedy responses, accuracies."""
    out = self.seq2seq.summarize(sums)
    n = max(float(sums["examples"]), 1.0)
    out["reward_lookahead"] = float(sums["reward_lookahead"]) / n
    out["reward_current"] = float(sums["reward_current"]) / n
    for name in ("classifier", "predictor"):
      count = float(sums[f"{name}_count"])
      if count > 0:
        out[f"{name}_accuracy"] = float(sums[f"{name}_correct"]) / count
    return out

  def generate(self, state: base.TrainState, context: Array, rng: Array | None = None,
               **options) -> decode.DecodeOutput:
    """Responses of the policy (see :meth:`Seq2SeqObjective.generate`)."""
    return self.seq2seq.generate(self.policy_view(state), context, rng, **options)

  def evaluate_generation(self, state: base.TrainState, inputs, max_batches: int = 0) -> dict:
    """Table 2's automatic part on the validation split, greedy decoding.

    Returns ``bleu`` (corpus BLEU-4 x 100 on lower-cased words, sacrebleu's
    definition), ``distinct_1``/``distinct_2``, ``reward_lookahead`` (mean
    predicted look-ahead sentiment of the responses), ``reward_current``,
    ``length`` (mean words) and ``examples``.
    """
    from vedgan import metrics  # pylint: disable=import-outside-toplevel

    fn = _jitted_generation(self)
    hyps, refs, look, cur = [], [], [], []
    for batch in inputs.validation_batches(self.config, max_batches):
      tokens, r_look, r_cur = jax.device_get(fn(state.params, {k: jnp.asarray(v)
                                                               for k, v in batch.items()}))
      keep = np.asarray(batch["weight"]) > 0
      for row, gold, ok in zip(np.asarray(tokens), np.asarray(batch["response_out"]), keep):
        if ok:
          hyps.append(words(self.tokenizer.decode(row.tolist())))
          refs.append([words(self.tokenizer.decode(gold.tolist()))])
      look.extend(np.asarray(r_look)[keep].tolist())
      cur.extend(np.asarray(r_cur)[keep].tolist())
    if not hyps:
      raise DataError("the validation split yields no batch; lower train.eval_batch_size")
    return {"bleu": 100.0 * metrics.corpus_bleu(hyps, refs),
            "distinct_1": metrics.distinct_n(hyps, 1), "distinct_2": metrics.distinct_n(hyps, 2),
            "reward_lookahead": float(np.mean(look)), "reward_current": float(np.mean(cur)),
            "length": float(np.mean([len(h) for h in hyps])), "examples": len(hyps)}

  def stage_end_plots(self, state: base.TrainState, inputs, stage: str, out_dir: str
                      ) -> list[str]:
    """``reward_distribution.png``: histograms of the look-ahead and current sentiment
    rewards of greedy responses to ``train.eval_batches`` validation batches (after the
    stages that train the policy: mle, multiseq, rl). Returns the PNG paths."""
    if stage not in ("mle", "multiseq", "rl"):
      return []
    fn = _jitted_generation(self)
    look, cur = [], []
    for batch in inputs.validation_batches(self.config, int(self.config.train.eval_batches)):
      _, r_look, r_cur = jax.device_get(fn(state.params, {k: jnp.asarray(v)
                                                          for k, v in batch.items()}))
      keep = np.asarray(batch["weight"]) > 0
      look.extend(np.asarray(r_look)[keep].tolist())
      cur.extend(np.asarray(r_cur)[keep].tolist())
    if not look:
      return []
    from vedgan import plots  # pylint: disable=import-outside-toplevel
    fig, axes = plots.new_figure((5.5, 3.6))
    ax = axes[0, 0]
    lo, hi = min(min(look), min(cur)), max(max(look), max(cur))
    bins = np.linspace(lo, max(hi, lo + 1e-3), 21)
    ax.hist(look, bins, alpha=0.6, label=f"look-ahead (mean {np.mean(look):.3f})")
    ax.hist(cur, bins, alpha=0.6, label=f"current (mean {np.mean(cur):.3f})")
    ax.set_xlabel("reward of the greedy response")
    ax.set_ylabel("validation contexts")
    ax.set_title(f"sentiment reward after stage {stage} ({len(look)} contexts)")
    ax.legend(fontsize=8)
    return [plots.save_figure(fig, os.path.join(out_dir, "reward_distribution.png"))]

  def policy_gradient_variance(self, state: base.TrainState, batch, key: Array,
                               num_rollouts: int, stage) -> dict:
    """Variance of the REINFORCE gradient (Eq. 9) with and without the learned baseline.

    On the fixed contexts of ``batch``, draws ``num_rollouts`` independent
    rollouts; for each computes ``grad_policy L_RL`` twice on the same sample:
    with ``R^_t`` from the current baseline and with no baseline. Returns the
    total variance (trace of the covariance over rollouts, summed over all
    policy parameters) of each, their ``ratio`` (with / without) and the mean
    squared gradient norms.
    """
    return {k: float(v) for k, v in _jitted_variance(self, int(num_rollouts), stage.temperature,
                                                     str(stage.reward))(
        state.params, {k: jnp.asarray(v) for k, v in batch.items()}, key).items()}

  # -- inputs ---------------------------------------------------------------------------
  @classmethod
  def make_inputs(cls, config, workdir: str):
    """Dialogue triples, sentences and the stage-aware iterator (see :class:`StagedBatches`)."""
    return make_happybot_inputs(config, workdir)


def _baseline_mode(stage) -> str:
  mode = str(stage.get("baseline", "learned"))
  if mode not in ("learned", "none"):
    raise ConfigError(f"config.stages.rl.baseline={mode!r} must be 'learned' or 'none'")
  return mode


@functools.lru_cache(maxsize=8)
def _jitted_generation(objective: HappyBotObjective):

  @jax.jit
  def fn(params, batch):
    tokens = objective.greedy(params["policy"], batch["context"], batch["response_out"].shape[1])
    return (tokens, objective.lookahead(params, batch, tokens),
            objective.current(params, batch, tokens))

  return fn


@functools.lru_cache(maxsize=8)
def _jitted_variance(objective: HappyBotObjective, num_rollouts: int, temperature: float,
                     reward_name: str):
  reward_fn = rewards.get(reward_name, objective)

  @jax.jit
  def fn(params, batch, key):
    w = batch["weight"]
    rows = jnp.maximum(w.sum(), 1.0)

    def one(k):
      rollout = objective.sample_rollout(params["policy"], batch, k, temperature)
      reward = jax.lax.stop_gradient(reward_fn(params, batch, rollout.tokens))

      def l_rl(policy, use_baseline):
        logp, states = objective.score_rollout(policy, batch, rollout, temperature)
        b_hat = objective.baseline_values(params["baseline"], states) if use_baseline else None
        return (rl_loss(logp, reward, b_hat, rollout.mask) * w).sum() / rows

      flat = lambda g: jax.flatten_util.ravel_pytree(g)[0]
      return (flat(jax.grad(l_rl)(params["policy"], True)),
              flat(jax.grad(l_rl)(params["policy"], False)))

    with_b, without_b = jax.lax.map(one, jax.random.split(key, num_rollouts))
    var_with = jnp.var(with_b, axis=0).sum()
    var_without = jnp.var(without_b, axis=0).sum()
    return {"variance_with_baseline": var_with, "variance_without_baseline": var_without,
            "ratio": var_with / var_without,
            "sq_norm_with_baseline": jnp.mean(jnp.sum(with_b ** 2, axis=1)),
            "sq_norm_without_baseline": jnp.mean(jnp.sum(without_b ** 2, axis=1))}

  return fn


_WORDS = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
  """Lower-cased word/punctuation tokens for BLEU and distinct-n."""
  return _WORDS.findall(text.lower())


# ============================================================================
# Data: dialogue triples, labelled sentences, staged batches.


@dataclasses.dataclass(frozen=True)
class Triple:
  """One policy example: ``context`` = ``[s_i; <eou>; u_{i+1}]``, ``response`` = ``s_{i+1}``,
  ``last_turn`` = ``u_{i+1}``, ``next_turn`` = ``u_{i+2}`` ("" when the dialogue ends)."""
  context: str
  response: str
  last_turn: str
  next_turn: str


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):
    return _text(value.item())
  return str(value)


def dialogue_triples(records: Sequence[dict], context_turns: int, eou: str) -> list[Triple]:
  """Dialogue records (``history``, ``response``, ``dialogue_id``) -> triples, in record order.

  ``history`` must hold all earlier utterances of the dialogue (as every
  vedgan dialogue builder writes it). Each dialogue's utterance sequence is
  rebuilt from its longest record, so the next user turn ``u_{i+2}`` of a
  record with ``h`` history turns is utterance ``h + 1`` -- also for corpora
  such as PersonaChat whose records only cover one speaker's turns.
  """
  if hasattr(records, "__getitems__") and hasattr(records, "__len__"):
    records = records.__getitems__(list(range(len(records))))
  rows, full = [], {}
  for r in records:
    utterances = [_text(t) for t in r["history"]] + [_text(r["response"])]
    key = _text(r["dialogue_id"])
    rows.append((key, utterances))
    if len(utterances) > len(full.get(key, ())):
      full[key] = utterances
  out = []
  for key, utterances in rows:
    history, response = utterances[:-1], utterances[-1]
    if not history:
      continue
    dialogue = full[key]
    out.append(Triple(context=f" {eou} ".join(history[-context_turns:]), response=response,
                      last_turn=history[-1],
                      next_turn=dialogue[len(utterances)] if len(dialogue) > len(utterances)
                      else ""))
  return out


def sentence_example(record: dict) -> tuple[str, int] | None:
  """A labelled sentence record -> ``(text, 0/1)``, or None when it has no usable label.

  Text: the first of ``sentence``, ``text``, ``situation``, ``prompt``. Label:
  ``label`` (0/1: SST-2; anything else, e.g. -1 for unlabelled, is dropped),
  else an EmpatheticDialogues emotion in ``emotion`` (a name, or the class id
  of the ED builder's ``ClassLabel``) or ``context``, mapped by :data:`ED_SENTIMENT`.
  """
  text = next((_text(record[k]) for k in ("sentence", "text", "situation", "prompt")
               if k in record), None)
  if not text or not text.strip():
    return None
  if "label" in record:
    label = int(np.asarray(record["label"]).item())
    return (text, label) if label in (0, 1) else None
  for key in ("emotion", "context"):
    if key in record:
      value = record[key]
      if isinstance(value, (int, np.integer)) or (hasattr(value, "dtype")
                                                  and np.issubdtype(value.dtype, np.integer)):
        from vedgan.data.empathetic_dialogues.empathetic_dialogues import EMOTIONS  # pylint: disable=import-outside-toplevel
        value = EMOTIONS[int(np.asarray(value).item())]
      label = ED_SENTIMENT.get(_text(value).strip().lower())
      return None if label is None else (text, label)
  return None


def _load(name: str, data_config, split: str, what: str):
  cfg = {"name": name, "data_dir": data_config.get("data_dir", "")}
  try:
    return sources.load_split(cfg, split)
  except ValueError as e:
    if "unknown data.name" in str(e):
      raise DataError(f"config.data.{what} names {name!r}, which has no TFDS builder in "
                      f"vedgan.data.sources.BUILDERS ({', '.join(sorted(sources.BUILDERS))}); "
                      "the paper's corpora come from the data builders, see "
                      "docs/happybot.md") from None
    raise


def load_triples(data_config, split: str) -> list[Triple]:
  out = []
  for name in data_config.dialogue_sources:
    records = _load(name, data_config, split, "dialogue_sources")
    out.extend(dialogue_triples(records, int(data_config.context_turns), data_config.eou))
  if not out:
    raise DataError(f"config.data.dialogue_sources {tuple(data_config.dialogue_sources)} split "
                    f"{split!r} has no dialogue with at least two turns")
  return out


def load_sentences(data_config, split: str, triples: Sequence[Triple],
                   lexicon=None) -> list[tuple[str, int]]:
  """Labelled sentences of the classifier for ``split``.

  ``"lexicon"`` labels the distinct utterances of ``triples`` with the lexicon
  (the demo's offline stand-in for SST-2) and keeps those with a lexicon word
  (binary, no neutral class, as SST-2); other names are TFDS builders read with
  :func:`sentence_example`, each distinct text once (``"empathetic_dialogues"``
  gives its situations labelled through :data:`ED_SENTIMENT`).
  """
  out = []
  for name in data_config.sentiment_sources:
    if name == "lexicon":
      seen = {}
      for t in triples:
        for text in (t.last_turn, t.response, t.next_turn):
          if text and text not in seen:
            seen[text] = lexicon.label(text)
      out.extend((text, label) for text, label in seen.items() if label >= 0)
    else:
      seen = set()          # ED repeats a conversation's situation on every utterance
      for record in _records(_load(name, data_config, split, "sentiment_sources")):
        ex = sentence_example(record)
        if ex is not None and ex[0] not in seen:
          seen.add(ex[0])
          out.append(ex)
  if not out:
    raise DataError(f"config.data.sentiment_sources {tuple(data_config.sentiment_sources)} "
                    f"give no labelled sentence for split {split!r}")
  return out


def _records(source):
  if hasattr(source, "__getitems__") and hasattr(source, "__len__"):
    return source.__getitems__(list(range(len(source))))
  return list(source)


def _fixed(tokenizer, texts: Sequence[str], width: int, keep_last: bool) -> np.ndarray:
  """Texts -> ``[N, width]`` int32 ids, right-padded; too long keeps the last/first ``width``."""
  out = np.zeros((len(texts), width), np.int32)
  for i, text in enumerate(texts):
    ids = tokenizer.encode(text) if text else []
    ids = ids[-width:] if keep_last else ids[:width]
    out[i, :len(ids)] = ids
  return out


@dataclasses.dataclass
class Stream:
  """Encoded examples of one kind: ``EncodedPairs`` + aligned ``[N, ...]`` extra fields."""
  encoded: pipeline.EncodedPairs
  extras: dict
  drop: tuple = ()

  def __len__(self):
    return len(self.encoded)


def encode_triples(triples: Sequence[Triple], tokenizer, data_config, lexicon) -> Stream:
  """Triples -> a dialogue :class:`Stream` (triples whose context or response encode to
  nothing are dropped first, so the extras stay aligned)."""
  triples = [t for t in triples if tokenizer.encode(t.context) and tokenizer.encode(t.response)]
  if not triples:
    raise DataError("no dialogue example survives tokenisation")
  enc = pipeline.encode_pairs([(t.context, t.response) for t in triples], tokenizer,
                              int(data_config.max_context_len), int(data_config.max_response_len))
  assert len(enc) == len(triples), "encode_pairs skipped a pre-filtered example"
  width = int(data_config.max_turn_len)
  next_turn = _fixed(tokenizer, [t.next_turn for t in triples], width, keep_last=False)
  extras = {
      "last_turn": _fixed(tokenizer, [t.last_turn for t in triples], width, keep_last=True),
      "next_turn": next_turn,
      "has_next": (next_turn != 0).any(axis=1).astype(np.float32),
      "response_label": np.asarray([lexicon.label(t.response) for t in triples], np.int32),
  }
  return Stream(enc, extras)


def encode_sentences(sentences: Sequence[tuple[str, int]], tokenizer, data_config) -> Stream:
  """Labelled sentences -> a sentence :class:`Stream` (``response_out`` = sentence + EOS)."""
  sentences = [(s, l) for s, l in sentences if tokenizer.encode(s)]
  if not sentences:
    raise DataError("no labelled sentence survives tokenisation")
  width = int(data_config.max_turn_len)
  enc = pipeline.encode_pairs([(s, s) for s, _ in sentences], tokenizer, 1, width + 1)
  return Stream(enc, {"label": np.asarray([l for _, l in sentences], np.int32)},
                drop=("context", "response_in"))


def _subset(stream: Stream, keep: np.ndarray) -> Stream:
  idx = np.flatnonzero(keep)
  e = stream.encoded
  enc = pipeline.EncodedPairs([e.context[i] for i in idx], [e.response[i] for i in idx],
                              dict(e.counts, examples=len(idx)), e.max_context_len,
                              e.max_response_len)
  return Stream(enc, {k: v[idx] for k, v in stream.extras.items()}, stream.drop)


class ExtrasIterator:
  """A :class:`~vedgan.data.pipeline.BatchIterator` plus per-example fixed-width fields.

  Before each batch the wrapped iterator's position tells which examples it
  will return (``global_indices``); this process's rows of the ``extras``
  arrays are gathered alongside (0 for padding rows). State = the wrapped one's.
  """

  def __init__(self, stream: Stream, global_batch_size: int, buckets, seed: int, shuffle: bool,
               drop_remainder: bool = True, repeat: bool = True):
    self.process_index, self.process_count = jax.process_index(), jax.process_count()
    self.inner = pipeline.BatchIterator(stream.encoded, global_batch_size, buckets, seed=seed,
                                        shuffle=shuffle, process_index=self.process_index,
                                        process_count=self.process_count,
                                        drop_remainder=drop_remainder, repeat=repeat)
    self.extras = stream.extras
    self.drop = tuple(stream.drop)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    state = self.inner.get_state()
    idx = self.inner.global_indices(state["epoch"], state["position"])
    batch = next(self.inner)
    b = self.inner.local_batch_size
    local = idx[self.process_index * b:(self.process_index + 1) * b]
    real = local >= 0
    safe = np.where(real, local, 0)
    for key, values in self.extras.items():
      rows = values[safe]
      keep = real.reshape((-1,) + (1,) * (rows.ndim - 1))
      batch[key] = np.where(keep, rows, np.zeros_like(rows))
    for key in self.drop:
      batch.pop(key, None)
    return batch

  def get_state(self) -> dict:
    return self.inner.get_state()

  def set_state(self, state: dict) -> None:
    self.inner.set_state(state)


class StagedBatches:
  """The run's training iterator: step ``k`` draws from the stream its step function needs.

  ``schedule(k)`` names the stream of global step ``k``. The state is
  ``{"step": k, "streams": {name: state}}``: restored with the driver's step, the
  same batches follow as in an uninterrupted run.
  """

  def __init__(self, streams: dict, schedule: Callable[[int], str]):
    self.streams = streams
    self.schedule = schedule
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    name = self.schedule(self.step)
    batch = next(self.streams[name])
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {"step": self.step, "streams": {k: it.get_state() for k, it in self.streams.items()}}

  def set_state(self, state: dict) -> None:
    if set(state["streams"]) != set(self.streams):
      raise ValueError(f"iterator state has streams {sorted(state['streams'])}, this run has "
                       f"{sorted(self.streams)}; cannot resume")
    for k, it in self.streams.items():
      it.set_state(state["streams"][k])
    self.step = int(state["step"])


def stream_schedule(config) -> Callable[[int], str]:
  """``step -> stream name`` from ``config.stages`` / ``stage_order`` (the driver's plan)."""
  from vedgan import train as train_lib  # pylint: disable=import-outside-toplevel

  spans = train_lib.plan_stages(config)

  def schedule(step: int) -> str:
    return STREAM_OF_STEP[train_lib.stage_at(spans, step).step_name(step)]

  return schedule


@dataclasses.dataclass
class HappyBotInputs(inputs_lib.Inputs):
  """:class:`vedgan.data.inputs.Inputs` whose validation batches carry the dialogue extras."""
  validation_stream: Stream = None

  def validation_batches(self, config, max_batches: int = 0):
    it = ExtrasIterator(self.validation_stream, config.train.eval_batch_size,
                        tuple(config.data.buckets), seed=config.seed, shuffle=False,
                        drop_remainder=False, repeat=False)
    for i, batch in enumerate(it):
      if max_batches and i >= max_batches:
        break
      yield batch


def make_happybot_inputs(config, workdir: str):
  """``(HappyBotInputs, tokenizer_is_new)`` for :class:`HappyBotObjective`."""
  from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel

  d = config.data
  if int(d.max_turn_len) < 1:
    raise ConfigError(f"config.data.max_turn_len={d.max_turn_len} must be >= 1")
  lexicon = Lexicon.load(threshold=float(d.lexicon_threshold))
  train_triples = load_triples(d, "train")
  val_triples = load_triples(d, "validation")
  train_sentences = load_sentences(d, "train", train_triples, lexicon)
  text_pairs = [(t.context, t.response) for t in train_triples]
  if tuple(d.sentiment_sources) != ("lexicon",):
    text_pairs += [(s,) for s, _ in train_sentences]
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, text_pairs)

  buckets = tuple(d.buckets)
  batch_size = int(config.train.batch_size)
  dialogue = encode_triples(train_triples, tok, d, lexicon)
  lookahead = _subset(dialogue, dialogue.extras["has_next"] > 0)
  sentences = encode_sentences(train_sentences, tok, d)
  for name, stream in (("dialogue", dialogue), ("lookahead", lookahead),
                       ("sentences", sentences)):
    if len(stream) < batch_size:
      raise DataError(f"the {name} stream has {len(stream)} training examples, fewer than "
                      f"train.batch_size={batch_size}")
  streams = {name: ExtrasIterator(stream, batch_size, buckets, seed=int(config.seed) + k,
                                  shuffle=True)
             for k, (name, stream) in enumerate((("dialogue", dialogue),
                                                 ("lookahead", lookahead),
                                                 ("sentences", sentences)))}
  train_it = StagedBatches(streams, stream_schedule(config))
  val_stream = encode_triples(val_triples, tok, d, lexicon)
  n = max(int(config.train.num_samples), 0)
  counts = {"train": dialogue.encoded.counts, "validation": val_stream.encoded.counts,
            "lookahead_examples": len(lookahead), "sentences": len(sentences),
            "sentence_positive_rate": float(np.mean(sentences.extras["label"] == 1))}
  inputs = HappyBotInputs(tok, train_it, val_stream.encoded,
                          [(t.context, t.response) for t in val_triples[:n]], counts,
                          validation_stream=val_stream)
  return inputs, is_new


# ============================================================================
# Command line: Table 2's automatic metrics of a trained run.


def evaluate_run(config, workdir: str, max_batches: int = 0) -> dict:
  """Opens ``workdir`` read-only (latest checkpoint) and returns :meth:`evaluate_generation`
  plus the step it was measured at."""
  from vedgan import train as train_lib  # pylint: disable=import-outside-toplevel

  trainer = train_lib.Trainer(config, train_lib.check_workdir(workdir))
  trainer.setup(write=False)
  try:
    result = trainer.objective.evaluate_generation(trainer.state, trainer.inputs, max_batches)
    result["step"] = trainer.step
    return result
  finally:
    trainer.close()


def _main(argv):
  """``python -m vedgan.objectives.happybot --config configs/happybot.py:demo --workdir DIR``."""
  import json  # pylint: disable=import-outside-toplevel

  from absl import flags, logging  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
  result = evaluate_run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=ungrouped-imports
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':variant'.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained run's directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)
