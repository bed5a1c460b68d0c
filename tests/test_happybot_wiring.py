"""HappyBot wiring: what the predictor, MultiSeq, RL and evaluation compute, against references
built from the networks and the paper (unit-size models, no training loop).

Step losses run through a one-device ``vmap`` over the data axis (``ctx.rng`` and
``ctx.global_sum`` read it). Dropout is off, so the references need no dropout keys.

* predictor (Sec. 2.2): BCE of ``P([u_{i+1}; <eou>; s_{i+1}])`` against the frozen
  classifier's positive label of the *next* user turn ``u_{i+2}``;
* MultiSeq (Sec. 3.2): Eq. 6 + ``w`` BCE of the context head against the classifier's label
  of the user's turn ``u_{i+1}``;
* the rl step (Sec. 2.2, Eq. 5): its reward is the look-ahead predictor's on its own sample;
* evaluation: the look-ahead and current rewards of the greedy responses.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_happybot import EOS, EOU, _batch, _objective

from vedgan import parallel, rewards, steps
from vedgan.papers.happybot import algorithm as happybot
from vedgan.plan import Plan, StageSpan

NO_DROPOUT = {"model__dropout": 0.0, "model__classifier__dropout": 0.0}


@pytest.fixture(scope="module")
def quiet():
  """A tiny objective without dropout, its state, and a batch whose turns u_{i+1} and
  u_{i+2} get different labels from the classifier (bias set to centre its logits)."""
  obj, config, state = _objective(**NO_DROPOUT)
  batch = {k: jnp.asarray(v) for k, v in _batch(0).items()}
  classify = jax.jit(lambda p, t: obj.reward_classifier.apply({"params": p}, t)[:, 0])
  params = jax.tree.map(jnp.asarray, state.params)
  both = classify(params["classifier"], jnp.concatenate([batch["last_turn"],
                                                          batch["next_turn"]]))
  out = params["classifier"]["out"]                           # the logit layer
  out["bias"] = out["bias"] - jnp.median(both)
  state = state.replace(params=params)
  return obj, config, state, batch, classify


def _labels(classify, state, tokens):
  """The classifier's hard positive labels of ``tokens`` (logit > 0 <=> P(positive) > .5)."""
  return (np.asarray(classify(state.params["classifier"], tokens)) > 0).astype(np.float32)


def _run(obj, name, state, span, plan, batch):
  fn = obj.steps()[name].loss

  def per_device(params, batch):
    return fn(params, batch, steps.StepContext(state, span, plan, name))

  loss, metrics = jax.jit(jax.vmap(per_device, in_axes=(None, 0), axis_name=parallel.AXIS))(
      state.params, jax.tree.map(lambda x: x[None], batch))
  value = lambda w: float(jnp.sum(w.total) / jnp.sum(w.count))
  return value(loss), {k: value(v) for k, v in metrics.items()
                       if isinstance(v, steps.Weighted)}


def test_predictor_step_learns_the_classifiers_label_of_the_next_user_turn(quiet):
  obj, config, state, batch, classify = quiet
  nxt = _labels(classify, state, batch["next_turn"])
  has_next = np.asarray(batch["has_next"])
  # The fixture: u_{i+1} and u_{i+2} are labelled differently on a row that has u_{i+2}.
  assert np.any((nxt != _labels(classify, state, batch["last_turn"])) & (has_next > 0))
  plan = Plan.from_config(config)
  span = next(s for s in plan.spans if s.name == "predictor")
  loss, metrics = _run(obj, "predictor", state, span, plan, batch)
  joined = rewards.join_turns(batch["last_turn"], rewards.strip_eos(batch["response_out"], EOS),
                              EOU)                           # [u_{i+1}; <eou>; s_{i+1}]
  logits = obj.reward_classifier.apply({"params": state.params["predictor"]}, joined)[:, 0]
  bce = np.asarray(optax.sigmoid_binary_cross_entropy(logits, nxt))
  np.testing.assert_allclose(loss, (bce * has_next).sum() / has_next.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics["positive_rate"],
                             (nxt * has_next).sum() / has_next.sum(), rtol=1e-6)


def test_multiseq_head_predicts_the_sentiment_of_the_users_turn(quiet):
  obj, config, state, batch, classify = quiet
  plan = Plan.from_config(config)
  span = StageSpan("multiseq", config.stages.multiseq, 0, 10, (("multiseq", 1),))
  loss, metrics = _run(obj, "multiseq", state, span, plan, batch)
  p = state.params
  memory, out = obj.policy.apply({"params": p["policy"]}, batch["context"],
                                 batch["response_in"], method=happybot._teacher_forced)
  tgt = np.asarray(batch["response_out"])
  logp = np.asarray(jax.nn.log_softmax(out["logits"]))
  nll = -np.where(tgt != 0, np.take_along_axis(logp, tgt[..., None], -1)[..., 0], 0).sum()
  mle = nll / (tgt != 0).sum()                               # Eq. 6, token mean
  label = _labels(classify, state, batch["last_turn"])       # u_{i+1}, the context's turn
  assert np.any(label != _labels(classify, state, batch["next_turn"]))
  head = obj.emotion_head.apply({"params": p["emotion"]}, memory.final)[:, 0]
  emotion = float(np.mean(optax.sigmoid_binary_cross_entropy(head, label)))
  w = float(config.stages.multiseq.emotion_weight)
  np.testing.assert_allclose(metrics["emotion_loss"], emotion, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], mle, rtol=1e-5)
  np.testing.assert_allclose(loss, mle + w * emotion, rtol=1e-5)


def test_eval_scores_greedy_responses_with_the_lookahead_and_current_rewards(quiet):
  obj, _, state, batch, _ = quiet
  sums = jax.jit(obj.eval_step)(state, batch)
  tokens = jax.jit(obj.greedy, static_argnums=2)(state.params["policy"], batch["context"],
                                                 batch["response_out"].shape[1])
  words = rewards.strip_eos(tokens, EOS)
  look = jax.nn.sigmoid(obj.reward_classifier.apply(
      {"params": state.params["predictor"]},
      rewards.join_turns(batch["last_turn"], words, EOU))[:, 0])
  cur = jax.nn.sigmoid(obj.reward_classifier.apply({"params": state.params["classifier"]},
                                                   words)[:, 0])
  assert not np.allclose(look, cur)
  np.testing.assert_allclose(sums["reward_lookahead"], np.sum(look), rtol=1e-5)
  np.testing.assert_allclose(sums["reward_current"], np.sum(cur), rtol=1e-5)


def test_rl_step_rewards_its_rollout_with_the_lookahead_predictor(quiet):
  """RL Look-ahead (Sec. 2.2): R = sigmoid P([u_{i+1}; <eou>; y^s]) of the step's own sample
  y^s ~ softmax(logits / tau) (Eq. 5), not the classifier's sentiment of y^s."""
  obj, config, state, batch, _ = quiet
  plan = Plan.from_config(config)
  span = next(s for s in plan.spans if s.name == "rl")
  assert str(span.config.reward) == "lookahead"
  state = state.replace(step=jnp.asarray(span.start + 3, jnp.int32))
  _, metrics = _run(obj, "rl", state, span, plan, batch)
  rng = jax.random.fold_in(state.step_key(), 0)              # ctx.rng on device 0
  k_sample = jax.random.split(rng, 3)[0]                     # ctx.keys("sample", ...)
  rollout = jax.jit(obj.sample_rollout, static_argnums=3)(
      state.params["policy"], batch, k_sample, float(span.config.temperature))
  words = rewards.strip_eos(rollout.tokens, EOS)
  look = jax.nn.sigmoid(obj.reward_classifier.apply(
      {"params": state.params["predictor"]},
      rewards.join_turns(batch["last_turn"], words, EOU))[:, 0])
  cur = jax.nn.sigmoid(obj.reward_classifier.apply({"params": state.params["classifier"]},
                                                   words)[:, 0])
  assert abs(float(np.mean(look)) - float(np.mean(cur))) > 1e-3
  np.testing.assert_allclose(metrics["reward"], np.mean(look), rtol=1e-5)
  np.testing.assert_allclose(metrics["sample_length"], np.asarray(rollout.mask).sum(1).mean(),
                             rtol=1e-6)
