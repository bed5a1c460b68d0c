"""The top-k softmax dialogue GAN (López Zorrilla et al.): replay, networks, steps, recipe."""
import doctest
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, make_config, restore_numpy_state
from fakes import FakeTokenizer

from vedgan import eval_suites, parallel, replay, steps, train
from vedgan.decode import DecodeOptions
from vedgan.errors import ConfigError
from vedgan.nn.topk_gan import TopKDialogueGAN
from vedgan.papers.topk_gan import report
from vedgan.papers.topk_gan.algorithm import TopKGANObjective
from vedgan.plan import Plan

V = 40

# A tiny version of the demo: 2-layer decoder, 1-layer encoder and discriminator.
TINY = dict(
    tokenizer__vocab_size=300, model__word_dim=16, model__encoder_hidden=16,
    model__encoder_layers=1, model__decoder_hidden=24, model__decoder_layers=2,
    model__attention_hidden=16, model__output_hidden=24, model__disc_hidden=8,
    model__disc_layers=1, model__disc_mlp_hidden=8, model__dropout=0.0,
    data__max_context_len=12, data__max_response_len=10, data__buckets=(12,),
    train__batch_size=8, train__eval_batch_size=16, train__eval_batches=2,
    train__eval_every=10_000, train__checkpoint_every=10_000, train__log_every=5,
    train__progress=False, train__num_samples=2,
    gan__replay_capacity=64, gan__replay_half_life=4)


def _config(**overrides):
  return make_config("configs/topk_gan.py", "demo", **{**TINY, **overrides})


TOK = FakeTokenizer(vocab_size=V)  # word-level: id i > 5 is the word "w<i>"


def _batch(seed=0, b=8, s=7, t=6):
  r = np.random.RandomState(seed)
  context = r.randint(6, V, size=(b, s)).astype(np.int32)
  context[0, 4:] = 0
  context[2, 2:] = 0
  resp = r.randint(6, V, size=(b, t)).astype(np.int32)
  resp[1, 3:] = 0
  lengths = (resp != 0).sum(1)
  out = resp.copy()
  out[np.arange(b), np.minimum(lengths, t - 1)] = 3  # eos
  response_in = np.concatenate([np.full((b, 1), 2, np.int32), out[:, :-1]], axis=1)
  response_in = response_in * (np.concatenate([np.ones((b, 1)), out[:, :-1]], 1) != 0)
  return {"context": context, "response_in": response_in.astype(np.int32),
          "response_out": out, "weight": np.ones(b, np.float32)}


def _objective(**overrides):
  obj = TopKGANObjective(_config(**overrides), TOK)
  return obj, jax.jit(obj.init)(jax.random.key(0), _batch())


def _generator_groups(params):
  """The groups the network ``generator`` spans: the shared ``words`` and ``generator``."""
  return {"words": params["words"], "generator": params["generator"]}


def _greedy(obj, state, context, max_len=10):
  return obj.generate(state, {"context": context}, jax.random.key(0),
                      DecodeOptions(mode="greedy", max_len=max_len))


@pytest.fixture(scope="module")
def tiny():
  """One tiny objective, its initial state and jitted functions, shared by the unit tests."""
  obj, state = _objective()

  def adversarial_loss(g, params, context):
    a, _ = obj.generator_adversarial_loss({**params, **g}, context)
    return a.sum()

  return {
      "obj": obj, "state": state,
      "free_run": jax.jit(lambda p, c: obj.free_run(p, c, vectors=True, logits=True)),
      "loss": jax.jit(adversarial_loss),
      "value_and_grad": jax.jit(jax.value_and_grad(adversarial_loss)),
      "d_batch": jax.jit(obj.discriminator_batch),
  }


# -- replay corpus ---------------------------------------------------------------------


def test_replay_ring_buffer_wraps_and_stamps_time():
  c = replay.init(capacity=5, input_len=3, response_len=2)
  c = replay.add(c, np.array([[1, 2, 0, 0], [3, 0, 0, 0]]), np.array([[7], [8]]), time=10)
  assert c.inputs.shape == (5, 3) and c.responses.shape == (5, 2)
  np.testing.assert_array_equal(c.inputs[:2], [[1, 2, 0], [3, 0, 0]])
  np.testing.assert_array_equal(c.responses[:2], [[7, 0], [8, 0]])
  c = replay.add(c, np.arange(1, 13).reshape(4, 3), np.ones((4, 2), np.int32), time=11)
  # 6 rows into 5: the oldest (row 0, time 10) was overwritten by the last new row.
  assert int(c.count) == 5 and int(c.cursor) == 1
  np.testing.assert_array_equal(c.time, [11, 10, 11, 11, 11])
  np.testing.assert_array_equal(c.inputs[0], [10, 11, 12])
  with pytest.raises(ValueError, match="capacity"):
    replay.add(c, np.ones((6, 3), np.int32), np.ones((6, 2), np.int32), time=12)


def test_recency_weighted_sampling_favours_new_entries_as_specified():
  c = replay.init(capacity=8, input_len=2, response_len=2)
  for t, rows in ((0, 2), (2, 2), (4, 1)):
    c = replay.add(c, np.full((rows, 2), t + 1), np.full((rows, 2), t + 1), time=t)
  # w_i = 2 ** (-(t_newest - t_i) / half_life), newest t = 4, half-life 2: 1/4, 1/4, 1/2, 1/2, 1.
  expected = np.array([0.25, 0.25, 0.5, 0.5, 1.0, 0, 0, 0])
  expected /= expected.sum()
  np.testing.assert_allclose(replay.recency_weights(c, 2.0), expected, rtol=1e-6)
  # Uniform over the filled rows when the half-life is 0; nothing when empty.
  np.testing.assert_allclose(replay.recency_weights(c, 0.0), [0.2] * 5 + [0] * 3, rtol=1e-6)
  assert float(replay.recency_weights(replay.init(4, 2, 2), 2.0).sum()) == 0.0
  idx, ok = jax.jit(replay.sample, static_argnums=2)(c, jax.random.key(0), 40_000, 2.0)
  freq = np.bincount(np.asarray(idx), minlength=8) / 40_000
  assert bool(ok)
  np.testing.assert_allclose(freq, expected, atol=0.01)  # ~5 standard errors
  assert freq[5:].sum() == 0.0  # empty rows are never drawn
  # The newest row is drawn 4x as often as the oldest ones.
  assert freq[4] > 3.5 * freq[0]


def test_replay_docstring_example():
  failed, tried = doctest.testmod(replay, optionflags=doctest.NORMALIZE_WHITESPACE)[:2]
  assert tried >= 5 and failed == 0


def test_row_hash_ignores_padding_width():
  a = np.array([[5, 9, 0, 0]])
  assert int(replay.row_hash(a)[0]) == int(replay.row_hash(a[:, :2])[0])
  assert int(replay.row_hash(a)[0]) != int(replay.row_hash(np.array([[9, 5]]))[0])


def test_discriminator_batches_are_balanced_with_disjoint_inputs(tiny):
  batch = _batch()
  h = 4
  # The corpus holds responses to EVERY input of the batch (plus two others): the
  # rows whose input is one of the human half's inputs must never be drawn.
  other = np.array([[7, 7, 7], [8, 9, 0]], np.int32)
  inputs = np.concatenate([replay.fit_width(batch["context"], 12), replay.fit_width(other, 12)])
  corpus = replay.add(replay.init(64, 12, 10), inputs, np.full((10, 4), 11), time=0)
  build = tiny["d_batch"]
  human = np.asarray(replay.fit_width(batch["context"][:h], 12))
  seen = set()
  for seed in range(30):
    db = jax.device_get(build(corpus, batch["context"], batch["response_out"],
                              jax.random.key(seed)))
    np.testing.assert_array_equal(db["labels"], [0] * h + [1] * h)  # one human per generated
    assert db["context"].shape == (2 * h, 12) and db["response"].shape == (2 * h, 10)
    np.testing.assert_array_equal(db["context"][:h], human)
    np.testing.assert_array_equal(db["response"][:h],
                                  replay.fit_width(batch["response_out"][:h], 10))
    gen = db["context"][h:]
    assert not (gen[:, None, :] == human[None, :, :]).all(-1).any()
    assert bool(db["eligible"]) and float(db["overlap"]) == 0.0
    seen.update(map(tuple, gen))
  # Only the inputs of the other half and the two extra inputs were drawn (all of them).
  allowed = {tuple(r) for r in np.asarray(inputs[h:])}
  assert seen == allowed
  # A corpus holding only the human inputs cannot be disjoint: the batch says so.
  only_human = replay.add(replay.init(64, 12, 10), human, np.full((h, 4), 11), time=0)
  db = build(only_human, batch["context"], batch["response_out"], jax.random.key(0))
  assert not bool(db["eligible"]) and float(db["overlap"]) > 0


# -- the networks and the top-k path ------------------------------------------------------


def test_topk_vectors_equal_the_hand_computed_weighted_average(tiny):
  obj, state = tiny["obj"], tiny["state"]
  ctx = jnp.asarray(_batch(seed=3)["context"])
  run = tiny["free_run"](state.params, ctx)
  f, u = np.asarray(run["logits"], np.float64), np.asarray(run["vectors"], np.float64)
  tokens, emitted = np.asarray(run["tokens"]), np.asarray(run["emitted"])
  w = np.asarray(state.params["words"], np.float64)
  checked = 0
  for b in range(f.shape[0]):
    for t in range(f.shape[1]):
      top = np.argsort(-f[b, t], kind="stable")[:2]  # k_t: the two largest f_t
      p = np.exp(f[b, t, top] - f[b, t, top].max())
      p /= p.sum()                                     # p~_t = softmax(f~_t), Eq. 8
      np.testing.assert_allclose(u[b, t], p[0] * w[top[0]] + p[1] * w[top[1]], rtol=1e-5,
                                 atol=1e-6)            # Eq. 9
      if emitted[b, t]:
        assert tokens[b, t] == top[0]                  # Eq. 3: argmax feedback
        checked += 1
  assert checked >= 8
  # Argmax feedback = greedy decoding with the same forbidden ids.
  greedy = _greedy(obj, state, ctx)
  np.testing.assert_array_equal(greedy.tokens, tokens)
  np.testing.assert_array_equal(np.asarray(greedy.lengths), emitted.sum(1))


def test_generator_loss_gradient_reaches_the_output_layer_through_topk(tiny):
  state = tiny["state"]
  ctx = jnp.asarray(_batch(seed=5)["context"])
  g_group = _generator_groups(state.params)
  _, grads = tiny["value_and_grad"](g_group, state.params, ctx)
  out = grads["generator"]["out"]
  assert float(jnp.abs(out["kernel"]).sum()) > 0 and float(jnp.abs(out["bias"]).sum()) > 0
  assert float(jnp.abs(grads["generator"]["encoder"]["fwd_0"]["w_hidden"]).sum()) > 0
  # With k = 1 (the argmax's word vector, Eq. 7) nothing reaches the generator's
  # network: the top-k softmax is the only differentiable path from f_t to L_G.
  obj1 = TopKGANObjective(_config(gan__topk=1), TOK)
  g1 = jax.grad(lambda g: obj1.generator_adversarial_loss({**state.params, **g}, ctx)[0].sum())
  grads1 = jax.jit(g1)(g_group)
  for leaf in jax.tree.leaves(grads1["generator"]):
    assert float(jnp.abs(leaf).max()) == 0.0
  assert float(jnp.abs(grads1["words"]).sum()) > 0  # W still gets D's gradient


def test_generator_gradient_is_the_derivative_of_the_loss(tiny):
  """Central differences along the output layer's gradient match it where the
  top-k selection and the argmax tokens do not change (L_G is piecewise smooth)."""
  state = tiny["state"]
  params = dict(state.params, generator=dict(state.params["generator"]))
  out = params["generator"]["out"]
  params["generator"]["out"] = dict(out, kernel=out["kernel"] * 10)  # sharper f_t: fewer ties
  g_group = _generator_groups(params)
  eps, verified = 1e-3, 0
  for seed in range(4):
    ctx = jnp.asarray(_batch(seed=seed)["context"])
    _, grads = tiny["value_and_grad"](g_group, params, ctx)
    d = grads["generator"]["out"]
    norm = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(d))))

    def shifted(e):
      g = dict(g_group, generator=dict(g_group["generator"]))
      g["generator"]["out"] = jax.tree.map(lambda p, q: p + e * q / norm,
                                           g_group["generator"]["out"], d)
      return g

    def selection(g):
      run = tiny["free_run"]({**params, **g}, ctx)
      return np.asarray(jax.lax.top_k(run["logits"], 2)[1])

    base = selection(g_group)
    if any((selection(shifted(e)) != base).any() for e in (eps, -eps)):
      continue  # a top-k set (or an argmax token) changed within +-eps: L_G jumps there
    numeric = (float(tiny["loss"](shifted(eps), params, ctx))
               - float(tiny["loss"](shifted(-eps), params, ctx))) / (2 * eps)
    np.testing.assert_allclose(numeric, norm, rtol=0.02)  # d/de L(g + e g/|g|) = |g|
    verified += 1
  assert verified >= 2


def test_word_vectors_initialise_w_from_a_file(tmp_path):
  path = tmp_path / "vectors.txt"
  vecs = {"w7": [1.0, 2.0, 3.0, 4.0], "w9": [-1.0, 0.5, 0.0, 2.0], "unused": [9, 9, 9, 9]}
  path.write_text("3 4\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vecs.items()))
  obj = TopKGANObjective(_config(model__word_dim=4, model__word_vectors=str(path)), TOK)
  w = np.asarray(obj.model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                                method=TopKDialogueGAN.embed)["params"]["words"])
  np.testing.assert_allclose(w[7], vecs["w7"])
  np.testing.assert_allclose(w[9], vecs["w9"])
  assert obj.word_coverage == pytest.approx(2 / V)
  assert np.all(np.isfinite(w)) and not np.allclose(w[8], 0)
  with pytest.raises(ConfigError, match="4-d vectors but model.word_dim=16"):
    TopKGANObjective(_config(model__word_vectors=str(path)), TOK)


# -- step functions ------------------------------------------------------------------------


def test_refill_and_discriminator_steps(tiny):
  obj = tiny["obj"]
  config = obj.config
  start = Plan.from_config(config).spans[-1].start  # the adversarial stage, as the driver runs it
  state = jax.tree.map(jnp.copy, tiny["state"]).replace(step=jnp.asarray(start, jnp.int32))
  mesh = parallel.make_mesh(jax.devices()[:1])
  fns = {n: train.step_function(obj, n, config, state, stage="adversarial", mesh=mesh)
         for n in ("refill", "dstep")}  # each call donates the state it is given
  batch = parallel.shard_batch(_batch(), mesh)
  state, m = fns["refill"](state, batch)
  corpus = state.extra["replay"]
  assert int(corpus.count) == 8 and float(m["replay_size"]) == 8
  np.testing.assert_array_equal(corpus.time[:8], 0)
  np.testing.assert_array_equal(corpus.inputs[:8], replay.fit_width(_batch()["context"], 12))
  greedy = _greedy(obj, state, batch["context"]).tokens
  np.testing.assert_array_equal(corpus.responses[:8], greedy)  # Eq. 3 responses
  # Rows are stamped with the generator's version (its number of updates so far).
  state = state.replace(extra=dict(state.extra, generator_updates=jnp.asarray(7, jnp.int32)))
  state, _ = fns["refill"](state, batch)
  np.testing.assert_array_equal(state.extra["replay"].time[:16], [0] * 8 + [7] * 8)
  before = jax.tree.map(np.asarray, state.params["generator"])
  state, m = fns["dstep"](state, batch)
  assert float(m["input_overlap"]) == 0.0 and float(m["replay_eligible"]) == 1.0
  assert 0 < float(m["d_loss"]) < 5 and int(state.extra["generator_updates"]) == 7
  assert float(m["d_learning_rate"]) == pytest.approx(config.stages.adversarial.learning_rate)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params["generator"])):
    np.testing.assert_array_equal(a, b)  # D steps leave the generator alone
  assert int(state.step) == start + 3


def test_step_specs_train_the_networks_of_algorithm_1():
  """W is shared: each network spans it, so each keeps its own Adam state over it."""
  obj = TopKGANObjective(_config(), TOK)
  assert obj.NETWORKS == {"generator": ("words", "generator"),
                          "discriminator": ("words", "discriminator")}
  specs = obj.steps()
  assert {n: s.trains for n, s in specs.items()} == {
      "gmle": ("generator",), "refill": (), "dstep": ("discriminator",),
      "gadv": ("generator",)}
  assert specs["refill"].update is not None and specs["refill"].loss is None
  assert {n: s.prefix for n, s in specs.items()} == {"gmle": "", "refill": "", "dstep": "d_",
                                                     "gadv": "g_adv_"}


def test_learning_rates_decay_per_iteration_and_scale_the_adversarial_step():
  obj = TopKGANObjective(make_config("configs/topk_gan.py", "paper"), TOK)
  stage = obj.config.stages.adversarial
  plan = Plan.from_config(obj.config)
  span = plan.spans[-1]
  start, period = 51_489, stage.lr_decay_every
  assert span.start == start
  specs = obj.steps()
  for name, scale in (("gmle", 1.0), ("dstep", 1.0), ("gadv", 0.1)):
    def lr(step, name=name):  # Step.learning_rate as the driver calls it at global `step`
      state = steps.TrainState(step=jnp.asarray(step, jnp.int32), rng=None, params=None,
                               opt_state=None)
      network = specs[name].trains[0]
      return specs[name].learning_rate(steps.StepContext(state, span, plan, name), network)
    assert float(lr(start)) == pytest.approx(1e-3 * scale)
    assert float(lr(start + period - 1)) == pytest.approx(1e-3 * scale)
    assert float(lr(start + 3 * period)) == pytest.approx(1e-3 * scale * 0.995 ** 3)


# -- configs -------------------------------------------------------------------------------


def test_paper_config_follows_section_4():
  c = make_config("configs/topk_gan.py", "paper")
  m, adv = c.model, c.stages.adversarial
  assert (m.encoder_layers, m.encoder_hidden, m.decoder_layers, m.decoder_hidden) == (4, 512, 4,
                                                                                     1028)
  assert (m.attention_hidden, m.output_hidden, m.word_dim) == (250, 500, 300)
  assert (m.disc_layers, m.disc_hidden, m.disc_mlp_hidden, c.gan.topk) == (2, 128, 100, 2)
  assert c.train.batch_size == 256 and c.data.name == "opensubtitles/en"
  assert c.tokenizer.kind == "word" and c.tokenizer.vocab_size == 30_000
  assert c.stage_order == ("mle_pretrain", "fill", "d_pretrain", "adversarial")
  assert c.stages.mle_pretrain.num_steps == 50_000 and c.stages.d_pretrain.num_steps == 1_000
  assert 125_000 <= c.stages.fill.num_steps * 256 < 125_000 + 256
  cycle = dict(Plan.from_config(c).spans[-1].cycle)
  assert cycle["gadv"] == 35 and cycle["dstep"] == 40 and cycle["gmle"] == 50
  period = Plan.from_config(c).spans[-1].period
  assert adv.num_steps == 200 * period and adv.lr_decay_every == period
  assert adv.lr_decay == 0.995 and adv.gadv_lr_scale == 0.1 and adv.learning_rate == 1e-3
  assert 5_000 <= cycle["refill"] * 256 < 5_000 + 256  # responses added before each D block
  base = make_config("configs/topk_gan.py", "mle_paper")
  assert base.stage_order == ("mle_pretrain",)
  assert base.stages.mle_pretrain.num_steps == 50_000 + 200 * 50


def test_recipe_errors_are_one_line():
  with pytest.raises(ConfigError, match=r"stages.d_pretrain runs 'dstep' before any 'refill'"):
    TopKGANObjective(_config(stages__fill__num_steps=0), TOK)
  with pytest.raises(ConfigError, match="even number per device"):
    TopKGANObjective(_config(train__batch_size=7 * jax.device_count()), TOK)
  with pytest.raises(ConfigError, match="replay_capacity"):
    TopKGANObjective(_config(gan__replay_capacity=4), TOK)
  with pytest.raises(ConfigError, match="unknown variant"):
    make_config("configs/topk_gan.py", "nope")
  with pytest.raises(ConfigError, match="stages.d_pretrain runs 'gmle' but declares no "
                                        "gmle_lr_scale"):
    TopKGANObjective(_config(stages__d_pretrain__step="dstep,gmle"), TOK)


def test_report_points_locate_table1_models():
  c = _config(stages__mle_pretrain__num_steps=10, stages__fill__num_steps=2,
              stages__d_pretrain__num_steps=3,
              stages__adversarial__step="gadv*2,refill*1,dstep*2,gmle*3,refill*1,dstep*2",
              stages__adversarial__num_steps=33, gan__table_iteration=2)
  # Adversarial stage from step 15, 11 steps per iteration; B: end of iteration 2's gmle
  # block (15 + 11 + 2+1+2+3), C: end of iteration 3's gadv block (15 + 22 + 2).
  assert report.report_points(c) == {"A": 15, "B": 34, "C": 39, "D": 48}
  with pytest.raises(ConfigError, match="table_iteration=3"):
    report.report_points(_config(stages__adversarial__num_steps=3 * 27, gan__table_iteration=3))


# -- the driver: resume, end to end --------------------------------------------------------
#
# These run the driver in a fresh interpreter whose XLA compiler skips LLVM
# optimisations (as tests/test_doctests.py does): compiling the step functions
# dominates their run time and the flag cannot be changed in the shared pytest
# process. The assertions below read what the runs wrote.

RESUME_SHORT = dict(stage_order=("fill",), stages__fill__step="refill*1")

E2E = dict(
    model__word_dim=64, model__decoder_layers=1, train__num_samples=0,
    stages__mle_pretrain__num_steps=250, stages__mle_pretrain__learning_rate=1e-2,
    stages__fill__num_steps=4, stages__d_pretrain__num_steps=10,
    stages__adversarial__step="gadv*4,refill*1,dstep*3,gmle*3,refill*1,dstep*3",
    stages__adversarial__num_steps=4 * 15, stages__adversarial__lr_decay_every=15,
    stages__adversarial__learning_rate=1e-2, gan__table_iteration=2, gan__report_inputs=48,
    gan__nn_check_ks=(2, 3, 4), train__checkpoint_every=145)  # keeps B (290), not C (298)
SUITES = "topk_gan_fig3,topk_gan_table1,topk_gan_diversity"


def _resume_scenario(workdir):
  """Run 1 stops after 2 refills; run 2 (the same command with 3) restores and continues."""
  assert train.run(_config(stages__fill__num_steps=2, **RESUME_SHORT), workdir)["step"] == 2
  _, saved = restore_numpy_state(workdir)
  saved = saved["extra"]["replay"]
  np.savez(os.path.join(workdir, "first_run_replay.npz"), **saved)
  trainer = train.Trainer(_config(stages__fill__num_steps=3, **RESUME_SHORT), workdir)
  trainer.setup()
  try:
    restored = trainer.state.extra["replay"]
    for name in ("inputs", "responses", "time", "count", "cursor"):
      np.testing.assert_array_equal(np.asarray(getattr(restored, name)), saved[name])
    assert trainer.train()["step"] == 3
  finally:
    trainer.close()


def _e2e_scenario(workdir):
  """Trains the tiny demo, runs Section 5's suites, and checks that a model the suites
  rebuild from an earlier checkpoint is the run's own: A (264) run forward to B (290)
  equals checkpoint 290 leaf for leaf."""
  train.run(_config(**E2E), workdir)
  eval_suites.run_suites(workdir, SUITES, echo=print)
  run = eval_suites.open_run(workdir, eval_suites.EvalOptions())
  try:
    trainer = run.trainer
    state, meta = trainer.checkpointer.restore(264, trainer.state)
    trainer.inputs.set_state(meta["data_state"])
    rebuilt = jax.device_get(report.run_forward(trainer, state, 264, 290))
    saved = jax.device_get(trainer.checkpointer.restore(290, trainer.state)[0])
    for x, y in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(saved)):
      np.testing.assert_array_equal(x, y)
  finally:
    trainer.close()


def _in_subprocess(scenario, workdir):
  code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_topk_gan as t; "
          f"t.{scenario}(sys.argv[2])")
  env = dict(os.environ, JAX_PLATFORMS="cpu",  # inherits conftest's cheap compilation setting
             PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  proc = subprocess.run([sys.executable, "-c", code, os.path.join(REPO, "tests"), str(workdir)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc.stdout


@pytest.mark.slow
def test_resumed_run_restores_the_replay_corpus(tmp_path):
  _in_subprocess("_resume_scenario", tmp_path)  # asserts the restored corpus equals run 1's
  first = np.load(tmp_path / "first_run_replay.npz")
  assert int(first["count"]) == 16 and first["time"][16] == -1
  step, state = restore_numpy_state(tmp_path)
  final = state["extra"]["replay"]
  # The resumed run appended to the restored rows instead of starting over.
  assert step == 3 and int(final["count"]) == 24 and int(final["cursor"]) == 24
  np.testing.assert_array_equal(final["inputs"][:16], first["inputs"][:16])
  np.testing.assert_array_equal(final["responses"][:16], first["responses"][:16])
  assert (final["inputs"][16:24] != 0).any() and (final["time"][:24] == 0).all()


@pytest.mark.slow
def test_end_to_end_tiny_demo(tmp_path):
  """MLE pretraining, C_D, D pretraining, 4 global iterations; Section 5's measures."""
  _in_subprocess("_e2e_scenario", tmp_path)
  suites = {name: json.load(open(tmp_path / "eval" / f"{name}.json"))
            for name in SUITES.split(",")}
  table = suites["topk_gan_table1"]["models"]
  points = {label: model["step"] for label, model in table.items()}
  a, d = suites["topk_gan_fig3"]["models"]["A"], suites["topk_gan_fig3"]["models"]["D"]
  # Section 5: after MLE pretraining W[y_t] is the nearest word vector to u~_t (k = 2)
  # for at least 90% of the produced tokens (the paper: 98%).
  assert a["topk_check"]["k"] == [2, 3, 4]
  assert a["topk_check"]["with_repetitions"][0] >= 0.9, a["topk_check"]
  assert a["topk_check"]["num_tokens"] > 48
  # Adversarial training ran through all its global iterations with finite losses.
  assert points == report.report_points(_config(**E2E)) == {"A": 264, "B": 290, "C": 298,
                                                             "D": 324}
  assert d["step"] == 324 and suites["topk_gan_fig3"]["not_reached"] == {}
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  adv = [r for r in rows if r["split"] == "train" and r["stage"] == "adversarial"]
  assert adv and all(math.isfinite(v) for r in adv for k, v in r.items()
                     if isinstance(v, float))
  assert max(r["step"] for r in adv) == 324
  assert {"g_adv_loss", "d_loss", "loss"} <= {k for r in adv for k in r}
  _, final = restore_numpy_state(tmp_path)
  assert int(final["extra"]["generator_updates"]) == 250 + 4 * (4 + 3)  # gmle and gadv steps
  # (4 + 4 x 2) refills of 8 rows went through the 64-row ring buffer.
  replayed = final["extra"]["replay"]
  assert int(replayed["count"]) == 64 and int(replayed["cursor"]) == (4 + 4 * 2) * 8 % 64
  # ... and it changed the responses (distinct-n is reported for both models).
  diversity = suites["topk_gan_diversity"]["models"]
  changed = sum(x != y for x, y in zip(diversity["A"]["responses"], diversity["D"]["responses"]))
  assert changed >= 2, (diversity["A"]["responses"], diversity["D"]["responses"])
  for label in "AD":
    assert {"distinct_1", "distinct_2", "mean_length"} <= set(diversity[label])
    assert f"{label}/distinct_2" in suites["topk_gan_diversity"]["values"]
  for label in "ABCD":
    assert len(table[label]["responses"]) == 5
  assert os.path.exists(tmp_path / "eval" / "topk_check_A.png")


def test_mle_baseline_reports_no_discriminator_metrics():
  """The MLE-only baseline never runs ``dstep``: its validation rows carry no ``d_*`` (an
  untrained D's outputs drew flat, meaningless curves); the GAN recipe reports them."""
  sums = {k: 2.0 for k in ("nll", "tokens", "seq_nll", "examples", "d_human", "d_generated",
                           "d_topk", "d_correct", "nn_hits", "nn_tokens")}
  d_keys = {"d_human", "d_generated", "d_topk", "d_accuracy"}
  gan = TopKGANObjective(_config(), TOK)
  assert gan.trains_discriminator and d_keys <= set(gan.summarize(sums))
  mle = TopKGANObjective(make_config("configs/topk_gan.py", "mle_demo", **TINY), TOK)
  assert not mle.trains_discriminator
  assert not d_keys & set(mle.summarize(sums)) and mle.summarize(sums)["nll"] == 1.0
