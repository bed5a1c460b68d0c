"""HappyBot: losses (Eq. 8-10), stop-gradients, one update per step, rewards, data, end to end."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import make_config
from fakes import FakeTokenizer

from vedgan import eval_suites, parallel, rewards, train
from vedgan.data.lexicon import Lexicon, parse_lexicon
from vedgan.errors import ConfigError, DataError
from vedgan.papers.happybot import algorithm as happybot
from vedgan.papers.happybot import data as happybot_data
from vedgan.papers.happybot import report
from vedgan.papers.happybot.algorithm import HappyBotObjective
from vedgan.plan import Plan

V = 40
EOS, EOU = 3, 4


TOK = FakeTokenizer(vocab_size=V)  # id i > 5 decodes to "w<i>"


def _cfg(**overrides):
  values = {"model__embed_dim": 16, "model__hidden": 16, "model__dropout": 0.1,
            "model__classifier__embed_dim": 8, "model__classifier__hidden": 8,
            "train__batch_size": 4, "train__progress": False}
  values.update(overrides)
  return make_config("configs/happybot.py", "demo", **values)


def _batch(seed=0, b=4, s=7, t=6, u=5):
  r = np.random.RandomState(seed)
  context = r.randint(5, V, size=(b, s)).astype(np.int32)
  context[0, 4:] = 0
  context[2, 2:] = 0
  resp = r.randint(5, V, size=(b, t)).astype(np.int32)
  lengths = [t - 1, 2, t - 2, 1]
  for i, n in enumerate(lengths):
    resp[i, n] = EOS
    resp[i, n + 1:] = 0
  response_in = np.concatenate([np.full((b, 1), 2, np.int32), resp[:, :-1]], axis=1)
  response_in = np.where(resp != 0, response_in, 0)
  last = r.randint(5, V, size=(b, u)).astype(np.int32)
  last[1, 2:] = 0
  nxt = r.randint(5, V, size=(b, u)).astype(np.int32)
  nxt[3] = 0
  return {"context": context, "response_in": response_in, "response_out": resp,
          "weight": np.ones(b, np.float32), "last_turn": last, "next_turn": nxt,
          "has_next": (nxt != 0).any(1).astype(np.float32),
          "response_label": np.array([1, 0, -1, 1], np.int32)}


def _objective(**overrides):
  config = _cfg(**overrides)
  obj = HappyBotObjective(config, TOK)
  state = jax.jit(obj.init)(jax.random.key(0))
  return obj, config, state


@pytest.fixture(scope="module")
def tiny():
  """One small objective and fresh state shared by the unit tests (compiles once)."""
  return _objective()


def _jbatch(seed):
  return {k: jnp.asarray(v) for k, v in _batch(seed).items()}


# ---------------------------------------------------------------------------
# Eq. 8, 9, 10 against hand-computed values.


def test_baseline_loss_eq8_is_masked_mean_square_error():
  predicted = jnp.array([[0.5, 1.0, 9.0], [0.0, 0.2, 0.4]])
  reward = jnp.array([1.0, 0.5])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]], jnp.float32)
  got = happybot.baseline_mse(predicted, reward, mask)
  # row 0: ((1 - .5)^2 + 0) / 2 (the 9.0 sits on padding); row 1: (.25 + .09 + .01) / 3
  np.testing.assert_allclose(got, [0.125, 0.35 / 3], rtol=1e-6)
  # Its gradient moves only the predictions of real steps, towards R.
  g = jax.grad(lambda p: happybot.baseline_mse(p, reward, mask).sum())(predicted)
  np.testing.assert_allclose(g, [[-0.5, 0.0, 0.0], [-1 / 3, -0.2, -0.0666667]], atol=1e-6)


def test_rl_loss_eq9_and_mixed_loss_eq10_hand_values():
  logp = jnp.log(jnp.array([[0.5, 0.25, 0.9], [0.8, 0.1, 0.1]]))
  reward = jnp.array([2.0, 0.0])
  b_hat = jnp.array([[1.0, 1.5, 7.0], [0.5, 0.5, 0.5]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32)
  got = happybot.rl_loss(logp, reward, b_hat, mask)
  # row 0: -(1 * log .5 + .5 * log .25) / 2 ; row 1: -(-.5 * log .8) / 1
  want = [-(1 * np.log(.5) + .5 * np.log(.25)) / 2, .5 * np.log(.8)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(happybot.rl_loss(logp, reward, None, mask),
                             [-2 * (np.log(.5) + np.log(.25)) / 2, 0.0], rtol=1e-6)
  # The advantage is a constant: d L / d log p = -(R - b) / T on real steps, 0 on padding.
  g = jax.grad(lambda lp: happybot.rl_loss(lp, reward, b_hat, mask).sum())(logp)
  np.testing.assert_allclose(g, [[-0.5, -0.25, 0.0], [0.5, 0.0, 0.0]], atol=1e-6)
  # Eq. 10 with the paper's lambda = 0.25 (the RL weight).
  l_rl, l_mle = float(np.mean(want)), 2.0
  from vedgan import losses
  np.testing.assert_allclose(losses.mixed_loss(l_rl, l_mle, 0.25), 0.25 * l_rl + 0.75 * 2.0,
                             rtol=1e-6)


def test_rl_losses_terms_match_the_equations_on_the_model(tiny):
  obj, config, state = tiny
  stage = config.stages.rl
  no_baseline = ml_collections.ConfigDict(stage.to_dict())
  no_baseline.baseline = "none"
  batch = _jbatch(0)
  rollout = jax.jit(obj.sample_rollout, static_argnums=3)(state.params["policy"], batch,
                                                          jax.random.key(1), 0.4)
  reward = jnp.array([0.9, 0.1, 0.5, 0.7])
  norms = {"rows": 4.0, "tokens": float((batch["response_out"] != 0).sum())}
  trainable = {"policy": state.params["policy"], "baseline": state.params["baseline"]}
  mle_key = jax.random.key(5)   # rl_losses reads params["policy"] and params["baseline"]

  @jax.jit
  def both(trainable, batch, rollout, reward):
    return (obj.rl_losses(trainable, batch, rollout, reward, stage, norms, (None, mle_key)),
            obj.rl_losses(trainable, batch, rollout, reward, no_baseline, norms,
                          (None, mle_key)))

  (total, terms), (total_nb, terms_nb) = both(trainable, batch, rollout, reward)
  # Independent computation from the network outputs.
  _, out = obj.policy.apply({"params": trainable["policy"]}, batch["context"], rollout.inputs,
                            method=happybot._teacher_forced)
  logits = np.array(out["logits"], np.float64)
  logits[..., [0, 1, 2]] = -np.inf                  # PAD, UNK, BOS never sampled
  logits[:, 0, EOS] = -np.inf                       # EOS not first
  z = logits / 0.4
  zmax = z.max(-1, keepdims=True)
  logsm = z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))
  tok = np.asarray(rollout.tokens)
  logp = np.take_along_axis(logsm, tok[..., None], -1)[..., 0]
  m = tok != 0
  states = np.asarray(out["states"])
  b_hat = states @ np.asarray(trainable["baseline"]["kernel"])[:, 0] + float(
      trainable["baseline"]["bias"][0])
  r = np.asarray(reward)[:, None]
  T = m.sum(1)
  want_rl = np.mean(-np.where(m, (r - b_hat) * logp, 0).sum(1) / T)
  want_rl_nb = np.mean(-np.where(m, r * logp, 0).sum(1) / T)
  want_b = np.mean(np.where(m, (r - b_hat) ** 2, 0).sum(1) / T)
  gold = obj.policy.apply({"params": trainable["policy"]}, batch["context"],
                          batch["response_in"], train=True, rngs={"dropout": mle_key})
  lp_gold = np.asarray(jax.nn.log_softmax(gold))
  tgt = np.asarray(batch["response_out"])
  want_mle = -np.where(tgt != 0, np.take_along_axis(lp_gold, tgt[..., None], -1)[..., 0],
                       0).sum() / (tgt != 0).sum()
  np.testing.assert_allclose(terms["rl"], want_rl, rtol=2e-4)
  np.testing.assert_allclose(terms["baseline"], want_b, rtol=2e-4)
  np.testing.assert_allclose(terms["mle"], want_mle, rtol=2e-4)
  np.testing.assert_allclose(terms["mixed"], 0.25 * want_rl + 0.75 * want_mle, rtol=2e-4)
  np.testing.assert_allclose(total, 0.25 * want_rl + 0.75 * want_mle + want_b, rtol=2e-4)
  # baseline="none": Eq. 9 without R^_t, and Eq. 8 is not part of the objective.
  np.testing.assert_allclose(terms_nb["rl"], want_rl_nb, rtol=2e-4)
  np.testing.assert_allclose(total_nb, 0.25 * want_rl_nb + 0.75 * want_mle, rtol=2e-4)


def test_scoring_pass_gives_the_samplers_log_probs(tiny):
  """No dropout in the scoring pass: log P(w_t) is exactly what decode.sample drew with."""
  obj, _, state = tiny
  batch = _jbatch(3)

  @jax.jit
  def run(params, batch):
    rollout = obj.sample_rollout(params, batch, jax.random.key(7), 0.4)
    return rollout, obj.score_rollout(params, batch, rollout, 0.4)[0]

  rollout, logp = run(state.params["policy"], batch)
  np.testing.assert_allclose(logp, rollout.log_probs, rtol=1e-5, atol=1e-5)
  tokens = np.asarray(rollout.tokens)
  assert not np.isin(tokens, [1, 2]).any()           # UNK and BOS never sampled
  assert (tokens[:, 0] != EOS).all() and (tokens[:, 0] != 0).all()   # EOS masked at t = 0
  assert rollout.tokens.shape == batch["response_out"].shape     # rollout = reference length


# ---------------------------------------------------------------------------
# Stop-gradients and one update per step.


def test_policy_and_baseline_gradients_do_not_cross(tiny):
  obj, config, state = tiny
  batch = _jbatch(1)
  reward = jnp.array([0.8, 0.3, 0.6, 0.1])
  norms = {"rows": 4.0, "tokens": 10.0}
  trainable = {"policy": state.params["policy"], "baseline": state.params["baseline"]}

  @jax.jit
  def grads(trainable, batch):
    rollout = obj.sample_rollout(trainable["policy"], batch, jax.random.key(2), 0.4)
    term = lambda name: jax.grad(lambda t: obj.rl_losses(
        t, batch, rollout, reward, config.stages.rl, norms, (None, jax.random.key(0)))[1][name])
    return {name: term(name)(trainable) for name in ("baseline", "rl", "mixed")}

  g = grads(trainable, batch)
  norm = lambda tree: float(optax.tree.norm(tree))
  assert norm(g["baseline"]["policy"]) == 0.0       # Eq. 8 does not move the policy
  assert norm(g["baseline"]["baseline"]) > 0.0
  assert norm(g["rl"]["baseline"]) == 0.0           # Eq. 9's advantage is a constant
  assert norm(g["mixed"]["baseline"]) == 0.0
  assert norm(g["rl"]["policy"]) > 0.0


def test_rl_step_applies_exactly_one_update_per_network():
  # eps=1 makes Adam's first update depend on the gradient's scale, so the
  # tiny clip norm is visible: the configured clipping must be applied.
  obj, config, state = _objective(optimizer__grad_clip_norm=1e-3, optimizer__eps=1.0)
  stage = config.stages.rl
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = parallel.shard_batch(_batch(2), mesh)
  state = state.replace(step=jnp.asarray(Plan.from_config(config).first_step("rl") + 2,
                                         jnp.int32))
  before = jax.device_get(state)
  key = state.step_key()
  assert obj.steps()["rl"].networks(stage) == ("policy", "baseline")
  step = train.step_function(obj, "rl", config, state, mesh=mesh)   # the driver's step
  after, metrics = step(state, batch)

  # Reproduce the step by hand: same keys, same rollout, one gradient per network,
  # each loss differentiated alone.
  @jax.jit
  def by_hand(params, batch, key):
    k_sample, _, k_mle = jax.random.split(jax.random.fold_in(key, 0), 3)  # device 0
    rollout = obj.sample_rollout(params["policy"], batch, k_sample, 0.4)
    reward = obj.lookahead(params, batch, rollout.tokens)
    norms = {"rows": 4.0, "tokens": jnp.sum(batch["response_out"] != 0).astype(jnp.float32)}
    trainable = {"policy": params["policy"], "baseline": params["baseline"]}
    terms = lambda t: obj.rl_losses(t, batch, rollout, reward, stage, norms, (None, k_mle))[1]
    g_policy = jax.grad(lambda p: terms({**trainable, "policy": p})["mixed"])(params["policy"])
    g_base = jax.grad(lambda b: terms({**trainable, "baseline": b})["baseline"])(
        params["baseline"])
    return g_policy, g_base

  g_policy, g_base = by_hand(before.params, batch, key)

  @functools.partial(jax.jit, static_argnums=(1, 2))  # one program, not one per operation
  def one_update(grads, name, lr):
    tx = obj.optimizer(name)
    updates, _ = tx.update(grads, before.opt_state[name], before.params[name])
    return jax.tree.map(lambda p, u: p - lr * u, before.params[name], updates)

  close = lambda a, b: all(np.allclose(x, y, rtol=1e-4, atol=1e-7)
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert close(after.params["policy"], one_update(g_policy, "policy", stage.learning_rate))
  assert close(after.params["baseline"],
               one_update(g_base, "baseline", stage.baseline_learning_rate))
  # Without the clip the first update would differ: clipping is applied.
  no_clip = optax.scale_by_adam(eps=1.0)
  unclipped = jax.jit(lambda g: jax.tree.map(lambda p, u: p - stage.learning_rate * u,
                                             before.params["policy"],
                                             no_clip.update(g, no_clip.init(g))[0]))(g_policy)
  assert not close(after.params["policy"], unclipped)
  adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  counts = lambda name: [int(x.count) for x in jax.tree.leaves(after.opt_state[name],
                                                               is_leaf=adam) if adam(x)]
  assert counts("policy") == [1] and counts("baseline") == [1]    # one Adam step each, not two
  for name in ("classifier", "predictor", "emotion"):
    assert counts(name) == [0]
    for a, b in zip(jax.tree.leaves(after.params[name]), jax.tree.leaves(before.params[name])):
      np.testing.assert_array_equal(a, b)
  assert int(after.step) == int(before.step) + 1
  assert np.isfinite(float(metrics["loss"])) and 0.0 <= float(metrics["reward"]) <= 1.0
  np.testing.assert_allclose(metrics["loss"], metrics["mixed"])    # the logged loss is Eq. 10


def test_rl_step_without_baseline_trains_only_the_policy():
  obj, config, _ = _objective()
  no_baseline = ml_collections.ConfigDict(config.stages.rl.to_dict())
  no_baseline.baseline = "none"
  assert obj.steps()["rl"].networks(no_baseline) == ("policy",)
  no_baseline.baseline = "sometimes"
  with pytest.raises(ConfigError, match="must be 'learned' or 'none'"):
    obj.steps()["rl"].networks(no_baseline)


def test_predictor_step_trains_only_the_predictor_on_frozen_classifier_labels(tiny):
  obj, config, state = tiny
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = parallel.shard_batch(_batch(4), mesh)
  before = jax.device_get(state)
  state = jax.tree.map(jnp.copy, state)     # the step donates its state; the fixture stays
  step = train.step_function(obj, "predictor", config, state, mesh=mesh)
  after, metrics = step(state, batch)
  changed = lambda n: any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(after.params[n]), jax.tree.leaves(before.params[n])))
  assert changed("predictor")
  assert not any(changed(n) for n in ("classifier", "policy", "baseline", "emotion"))
  labels = jax.jit(obj.classifier_labels)(before.params, batch["next_turn"])
  has_next = np.asarray(batch["has_next"])
  np.testing.assert_allclose(metrics["positive_rate"],
                             (np.asarray(labels) * has_next).sum() / has_next.sum(), rtol=1e-6)
  assert float(metrics["examples"]) == has_next.sum() == 3


# ---------------------------------------------------------------------------
# Rewards, lexicon, token helpers.


def test_join_turns_and_strip_eos():
  first = jnp.array([[5, 6, 0], [0, 0, 0], [7, 0, 8]])
  second = jnp.array([[9, EOS, 0, 0], [10, 11, EOS, 0], [0, 0, 0, 0]])
  got = rewards.join_turns(first, rewards.strip_eos(second, EOS), EOU)
  np.testing.assert_array_equal(got, [[5, 6, 4, 9, 0, 0, 0, 0],
                                      [4, 10, 11, 0, 0, 0, 0, 0],
                                      [7, 8, 4, 0, 0, 0, 0, 0]])


def test_lexicon_mean_valence_labels():
  lex = Lexicon(parse_lexicon(["good\t2.0\t0.5\t[2]\r\n", "bad\t-2.5\t0.3\t[-2]\n",
                               ":)\t1.5\t0.1\t[1]\n", "junk line\n"]))
  assert lex.valence("Good, bad!") == pytest.approx(-0.25)
  assert lex.label("good :)") == 1 and lex.label("so bad") == 0 and lex.label("nothing") == -1
  assert lex.score("nothing") == 0.5
  real = Lexicon.load()                              # the installed VADER file
  assert len(real.table) > 7000
  assert real.label("what a lovely, happy day") == 1
  assert real.label("this is terrible and sad") == 0


def test_text_reward_runs_a_python_scorer_inside_jit():
  seen = []

  def scorer(contexts, responses):
    seen.append((list(contexts), list(responses)))
    return [len(r.split()) / 10 for r in responses]

  rewards.register_text_scorer("test_length", scorer, look_ahead=True)

  class Obj:
    tokenizer = TOK

  reward = rewards.get("test_length", Obj())
  batch = {"last_turn": jnp.array([[6, 7, 0], [8, 0, 0]])}
  response = jnp.array([[9, 10, EOS, 0], [11, EOS, 0, 0]])
  got = jax.jit(lambda b, r: reward(None, b, r))(batch, response)
  np.testing.assert_allclose(got, [0.2, 0.1])
  assert seen[-1] == (["w6 w7", "w8"], ["w9 w10", "w11"])
  with pytest.raises(ConfigError, match="unknown reward 'nope'"):
    rewards.get("nope", Obj())
  by_path = rewards.get("vedgan.rewards:lexicon_reward", Obj())     # "module:factory"
  assert isinstance(by_path, rewards.TextReward) and by_path.name == "lexicon"
  with pytest.raises(ConfigError, match="cannot be imported"):
    rewards.get("vedgan.rewards:no_such_factory", Obj())


def test_builtin_rewards_score_the_right_inputs(tiny):
  obj, _, state = tiny
  batch = _jbatch(0)
  response = batch["response_out"]
  look, cur = jax.jit(lambda p, b: (obj.lookahead(p, b, b["response_out"]),
                                    obj.current(p, b, b["response_out"])))(state.params, batch)
  joined = rewards.join_turns(batch["last_turn"], rewards.strip_eos(response, EOS), EOU)
  want_look = jax.nn.sigmoid(obj.reward_classifier.apply(
      {"params": state.params["predictor"]}, joined)[:, 0])
  want_cur = jax.nn.sigmoid(obj.reward_classifier.apply(
      {"params": state.params["classifier"]}, rewards.strip_eos(response, EOS))[:, 0])
  np.testing.assert_allclose(look, want_look, rtol=1e-5)
  np.testing.assert_allclose(cur, want_cur, rtol=1e-5)


# ---------------------------------------------------------------------------
# Data and configs.


def test_dialogue_triples_and_sentence_records():
  records = [
      {"dialogue_id": b"d/0", "turn": 1, "history": [b"hi"], "response": b"hello"},
      {"dialogue_id": b"d/0", "turn": 2, "history": [b"hi", b"hello"], "response": b"how?"},
      {"dialogue_id": b"d/0", "turn": 3, "history": [b"hi", b"hello", b"how?"],
       "response": b"fine"},
      {"dialogue_id": b"e/0", "turn": 1, "history": [b"yo"], "response": b"sup"},
  ]
  triples = happybot_data.dialogue_triples(records, 2, "<eou>")
  assert triples[0] == happybot_data.Triple("hi", "hello", "hi", "how?")
  assert triples[1] == happybot_data.Triple("hi <eou> hello", "how?", "hello", "fine")
  assert triples[2].next_turn == "" and triples[3].next_turn == ""
  assert happybot_data.sentence_example({"sentence": b"great film", "label": 1}) == ("great film", 1)
  assert happybot_data.sentence_example({"situation": "I lost my dog", "emotion": "sad"}) == (
      "I lost my dog", 0)
  assert happybot_data.sentence_example({"prompt": "a gift", "context": "grateful"}) == ("a gift", 1)
  assert happybot_data.sentence_example({"prompt": "hm", "context": "surprised"}) is None
  assert happybot_data.sentence_example({"text": "unlabelled test row", "label": -1}) is None
  from vedgan.data.empathetic_dialogues.empathetic_dialogues import EMOTIONS
  assert happybot_data.sentence_example({"prompt": "my dog died", "response": "oh no",
                                    "emotion": np.int64(EMOTIONS.index("devastated"))}) == (
                                        "my dog died", 0)
  # PersonaChat-like records cover one speaker only: the next user turn comes from the
  # history of the speaker's next record.
  persona = [{"dialogue_id": "p", "turn": 0, "history": ["u1"], "response": "s1"},
             {"dialogue_id": "p", "turn": 1, "history": ["u1", "s1", "u2"], "response": "s2"},
             {"dialogue_id": "p", "turn": 2, "history": ["u1", "s1", "u2", "s2", "u3"],
              "response": "s3"}]
  got = happybot_data.dialogue_triples(persona, 2, "<eou>")
  assert [(t.last_turn, t.response, t.next_turn) for t in got] == [
      ("u1", "s1", "u2"), ("u2", "s2", "u3"), ("u3", "s3", "")]


@pytest.mark.parametrize("variant", ["demo", "demo_current", "demo_mle", "multiseq", "paper",
                                     "paper_current", "paper_mle", "paper_multiseq"])
def test_config_variants_are_valid(variant):
  config = make_config("configs/happybot.py", variant)
  from vedgan import configlib
  configlib.validate(config, HappyBotObjective.STEPS)
  assert config.stages.rl.mixed_weight == 0.25 and config.stages.rl.temperature == 0.4
  if variant == "paper":
    assert config.model.hidden == config.model.embed_dim == 300 and config.model.tie_embeddings
  assert (config.stages.rl.reward == "current") == variant.endswith("_current")
  assert ("rl" in config.stage_order) == (not variant.endswith(("mle", "multiseq")))
  assert ("multiseq" in config.stage_order) == variant.endswith("multiseq")
  with pytest.raises(ConfigError, match="unknown variant"):
    make_config("configs/happybot.py", "nope")


def test_unknown_data_source_is_a_clear_error(tmp_path):
  config = make_config("configs/happybot.py", "paper", data__dialogue_sources=("no_such_corpus",))
  with pytest.raises(DataError, match="'no_such_corpus', which has no TFDS builder"):
    HappyBotObjective.make_inputs(config, str(tmp_path))


def test_each_step_reads_its_stream_and_the_streams_resume(tmp_path):
  config = _cfg(stages__classifier__num_steps=2, stages__predictor__num_steps=2,
                stages__mle__num_steps=2, stages__rl__num_steps=2, tokenizer__vocab_size=300)
  inputs, _ = HappyBotObjective.make_inputs(config, str(tmp_path))
  tok = inputs.tokenizer
  obj = HappyBotObjective(config, tok)
  specs = obj.steps()
  assert {n: s.stream for n, s in specs.items()} == {
      "classifier": "sentences", "predictor": "lookahead", "mle": "dialogue",
      "multiseq": "dialogue", "rl": "dialogue"}
  # The batches the driver draws over the demo plan: each step from its own stream.
  plan = Plan.from_config(config)
  stream_of = lambda step: inputs.streams[specs[plan.step_name(step)].stream]
  batches = [next(stream_of(k)) for k in range(5)]
  assert all(set(b) == {"tokens_in", "tokens_out", "weight", "label"} for b in batches[:2])
  assert all("next_turn" in b and b["has_next"].all() for b in batches[2:4])
  assert "context" in batches[4] and batches[4]["response_out"].shape[0] == 4
  for b in batches[2:]:
    # last_turn is the end of the context: the turn after the last <eou>.
    for ctx, last in zip(b["context"], b["last_turn"]):
      ids = ctx[ctx != 0].tolist()
      tail = ids[len(ids) - 1 - ids[::-1].index(tok.eou_id) + 1:] if tok.eou_id in ids else ids
      want = last[last != 0].tolist()
      assert tail[-len(want):] == want
  state = inputs.get_state()
  json.dumps(state)
  ahead = [next(stream_of(k)) for k in range(5, 9)]
  inputs.set_state(state)
  again = [next(stream_of(k)) for k in range(5, 9)]
  for a, b in zip(ahead, again):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  val = next(inputs.validation_batches(config, 1, obj.EVAL_STREAM))
  assert {"last_turn", "next_turn", "has_next", "response_label"} <= set(val)


# ---------------------------------------------------------------------------
# End to end on a tiny demo.

E2E_OVERRIDES = dict(
    tokenizer__vocab_size=300, model__embed_dim=32, model__hidden=48, model__dropout=0.1,
    model__classifier__embed_dim=32, model__classifier__hidden=32, train__batch_size=32,
    train__eval_batch_size=64, train__eval_every=500, train__checkpoint_every=10_000,
    train__log_every=25, train__num_samples=2, train__progress=False, data__buckets=(32,),
    stages__classifier__num_steps=100, stages__predictor__num_steps=100,
    stages__mle__num_steps=300, stages__rl__num_steps=200, stages__rl__learning_rate=1e-3)
MLE_END, RL_END = 500, 700
#: The RL stage must raise the held-out greedy look-ahead reward by at least this much
#: (absolute, on a [0, 1] scale) over the MLE model it started from.
REWARD_MARGIN = 0.1
#: The trained baseline must cut the total variance of the policy gradient to at most this
#: fraction of the variance without a baseline.
VARIANCE_RATIO_MAX = 0.5


@pytest.mark.slow
def test_end_to_end_rl_lookahead_raises_reward_and_baseline_cuts_variance(tmp_path):
  config = make_config("configs/happybot.py", "demo", **E2E_OVERRIDES)
  workdir = str(tmp_path)
  assert train.run(config, workdir)["step"] == RL_END
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  val = {r["step"]: r for r in rows if r["split"] == "validation"}
  assert {r["stage"] for r in rows if r["split"] == "train"} == {
      "classifier", "predictor", "mle", "rl"}
  # Mean predicted look-ahead sentiment of greedy responses to the held-out contexts:
  # the MLE model at the end of its stage vs. the RL Look-ahead model it started.
  before, after = val[MLE_END]["reward_lookahead"], val[RL_END]["reward_lookahead"]
  print(f"reward_lookahead MLE {before:.4f} -> RL {after:.4f}")
  assert after >= before + REWARD_MARGIN, (before, after)

  trainer = train.Trainer(config, workdir)
  trainer.setup(write=False)
  try:
    result = report.evaluate_generation(trainer.objective, trainer.state, trainer.inputs)
    np.testing.assert_allclose(result["reward_lookahead"], after, rtol=1e-4)
    assert 0.0 <= result["bleu"] <= 100.0 and 0.0 < result["distinct_1"] <= 1.0
    batch = next(trainer.inputs.validation_batches(config, 1, "dialogue"))
    var = report.policy_gradient_variance(trainer.objective, trainer.state, batch,
                                          jax.random.key(3), 16, config.stages.rl)
  finally:
    trainer.close()
  print("variance", var)
  assert var["ratio"] <= VARIANCE_RATIO_MAX, var
  # The same numbers through python -m vedgan.evaluate's suites (eval/<suite>.json).
  out = eval_suites.run_suites(workdir, "happybot_table2,happybot_variance", echo=None)
  assert out["happybot_table2"]["values"] == pytest.approx(result, rel=1e-6)
  v = out["happybot_variance"]["values"]
  assert v["variance_without_baseline"] > v["variance_with_baseline"] > 0.0
  assert set(v) == {"variance_without_baseline", "variance_with_baseline", "ratio",
                    "variance_untrained_baseline", "ratio_untrained"}
  assert os.path.exists(os.path.join(workdir, "eval", "happybot_variance.json"))
