"""Latent-space language GAN (Kojima et al.): the networks' properties and a tiny end-to-end run."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config
from fakes import FakeTokenizer

from vedgan import eval_suites, train
from vedgan.decode import DecodeOptions
from vedgan.errors import ConfigError
from vedgan.nn import gan
from vedgan.nn.rnn import LSTM
from vedgan.objective import Generation
from vedgan.papers.latent_gan import algorithm, data

V, T, B, NZ, BLANK, BOS = 40, 9, 6, 4, 5, 2
FORBID = (0, 2, 3, 4)


def _generator(latent_dim=NZ):
  return gan.Generator(vocab_size=V, embed_dim=8, hidden=16, latent_dim=latent_dim,
                       position_features=8, start_id=BOS, forbid_ids=FORBID)


def _gen_params(blank_bias=None, seed=0):
  g = _generator()
  params = g.init(jax.random.key(seed), jnp.zeros((B, NZ)), jnp.zeros((B, T), jnp.int32))["params"]
  if blank_bias is not None:
    params = jax.tree.map(lambda x: x, params)
    params["out"]["bias"] = params["out"]["bias"].at[BLANK].set(blank_bias)
  return g, params


def _z(seed=1):
  return jax.random.normal(jax.random.key(seed), (B, NZ))


# -- the LSTM layer -----------------------------------------------------------------


def test_lstm_sequence_equals_free_running_steps_and_mask_keeps_carry():
  layer = LSTM(12)
  x = jax.random.normal(jax.random.key(0), (3, 5, 7))
  params = jax.jit(layer.init)(jax.random.key(1), x)
  run = jax.jit(lambda x, mask=None: layer.apply(params, x, mask=mask))
  ys, (c, h) = run(x)
  carry = layer.initial_state(3)
  step = jax.jit(lambda c, x: layer.apply(params, c, x, method=LSTM.step))
  for t in range(5):
    carry = step(carry, x[:, t])
    np.testing.assert_allclose(carry[1], ys[:, t], atol=1e-6)
  np.testing.assert_allclose(carry[0], c, atol=1e-6)
  mask = jnp.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
  _, (c_m, h_m) = run(x, mask)
  _, (c_2, h_2) = run(x[:, :2])
  np.testing.assert_allclose(h_m[0], h_2[0], atol=1e-6)
  np.testing.assert_allclose(c_m[0], c_2[0], atol=1e-6)
  np.testing.assert_allclose(h_m[1], h[1], atol=1e-6)
  assert not np.allclose(h_m[0], h[0])


def test_sinusoidal_positions_and_prefix_mask():
  pos = gan.sinusoidal_positions(37, 8)
  assert pos.shape == (37, 8) and pos.dtype == np.float32
  np.testing.assert_allclose(pos[0], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_allclose(pos[5, 0], np.sin(5.0), rtol=1e-6)  # timescale 1
  assert len({tuple(r) for r in np.round(pos, 5)}) == 37        # every position distinct
  tokens = jnp.array([[7, 8, BLANK, BLANK], [7, 7, 7, 7], [BLANK, BLANK, BLANK, BLANK]])
  np.testing.assert_array_equal(gan.prefix_mask(tokens, BLANK),
                                [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


# -- straight-through hard one-hots -------------------------------------------------


def test_hard_one_hot_is_exactly_one_hot_and_carries_the_soft_gradient():
  g, params = _gen_params()
  z, key = _z(), jax.random.key(3)
  roll = jax.jit(lambda p: gan.rollout(g, p, z, key, T, BLANK, 0.5, 1.0))
  out = roll(params)
  hard = np.asarray(out.hard)
  # forward: exact zeros and ones, one 1 per position, at the soft sample's argmax
  assert set(np.unique(hard).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), np.ones((B, T)))
  np.testing.assert_array_equal(hard.argmax(-1), np.asarray(out.soft).argmax(-1))
  np.testing.assert_array_equal(hard.argmax(-1), out.tokens)
  soft = np.asarray(out.soft)
  assert (soft.max(-1) < 1.0).any()  # the soft sample really is soft at tau_1 = 0.5
  # backward: any downstream function sees the soft sample's gradient
  w = jax.random.normal(jax.random.key(4), (B, T, V))
  f_hard = lambda p: jnp.sum(w * roll(p).hard)
  f_soft = lambda p: jnp.sum(w * roll(p).soft)
  g_hard, g_soft = jax.jit(jax.grad(f_hard))(params), jax.jit(jax.grad(f_soft))(params)
  for a, b in zip(jax.tree.leaves(g_hard), jax.tree.leaves(g_soft)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(optax_norm(g_hard)) > 1e-4
  # ... whereas a plain one-hot of the argmax would carry none
  f_argmax = lambda p: jnp.sum(w * jax.nn.one_hot(jnp.argmax(roll(p).soft, -1), V))
  assert float(optax_norm(jax.jit(jax.grad(f_argmax))(params))) == 0.0


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# -- the blank rule -----------------------------------------------------------------


def test_blank_rule_pads_the_rest_of_the_sentence():
  # A blank bias that makes blank likely but not certain at every step.
  g, params = _gen_params(blank_bias=3.0)
  z, key = jax.random.normal(jax.random.key(5), (64, NZ)), jax.random.key(6)
  roll = jax.jit(lambda p: gan.rollout(g, p, z, key, T, BLANK, 0.1, 1.0))
  out = roll(params)
  tokens = np.asarray(out.tokens)
  first = np.where((tokens == BLANK).any(1), (tokens == BLANK).argmax(1), T)
  assert ((first > 0) & (first < T - 1)).sum() >= 10  # sentences that end early, not at once
  after = np.arange(T)[None, :] > first[:, None]
  assert after.sum() > 50
  assert (tokens[after] == BLANK).all()
  blank_row = np.eye(V, dtype=np.float32)[BLANK]
  np.testing.assert_array_equal(np.asarray(out.soft)[after], np.broadcast_to(blank_row,
                                                                             (after.sum(), V)))
  np.testing.assert_array_equal(np.asarray(out.hard)[after], np.broadcast_to(blank_row,
                                                                             (after.sum(), V)))
  # Without the rule the generator would often go on: its own distribution
  # after the first blank puts most mass on other words.
  p_blank = np.asarray(jax.nn.softmax(out.logits, -1))[..., BLANK][after]
  assert p_blank.mean() < 0.6
  # The forced positions carry no gradient; the generator never emits pad/bos/eos/eou.
  w = jax.random.normal(jax.random.key(7), (64, T, V)) * jnp.asarray(after[..., None], jnp.float32)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(w * roll(p).soft)))(params)
  assert float(optax_norm(grads)) == 0.0
  assert not np.isin(tokens, FORBID).any()
  # The same rule in plain sampling (greedy and tau_2 = 1) of the sweep.
  sample = jax.jit(lambda p, tau: gan.sample_tokens(g, p, z, key, T, BLANK, tau))
  for temperature in (0.0, 1.0):
    toks = np.asarray(sample(params, temperature))
    first = np.where((toks == BLANK).any(1), (toks == BLANK).argmax(1), T)
    assert (toks[np.arange(T)[None, :] > first[:, None]] == BLANK).all()
  # sample_tokens at tau_2 = 1 draws the same words as the training rollout (Gumbel-max)
  np.testing.assert_array_equal(sample(params, 1.0), tokens)


def test_greedy_sampling_is_the_argmax_and_deterministic():
  g, params = _gen_params()
  z = _z()
  sample = jax.jit(lambda p, key: gan.sample_tokens(g, p, z, key, T, BLANK, 0.0))
  a, b = sample(params, jax.random.key(0)), sample(params, jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  # replay the greedy path step by step
  variables = {"params": params}
  carry = g.apply(variables, z, method=gan.Generator.initial_state)
  prev = jnp.full((B,), BOS, jnp.int32)
  step = jax.jit(lambda c, x, t: g.apply(variables, c, x, t, method=gan.Generator.step))
  for t in range(T):
    carry, o = step(carry, prev, jnp.int32(t))
    prev = jnp.argmax(o, -1)
    expected = np.where(np.asarray(a[:, :t] == BLANK).any(1), BLANK, np.asarray(prev))
    np.testing.assert_array_equal(a[:, t], expected)
    prev = a[:, t]


# -- the discriminator --------------------------------------------------------------


def test_discriminator_logit_at_t_depends_only_on_the_prefix():
  d = gan.Discriminator(vocab_size=V, embed_dim=8, hidden=16, dropout=0.1)
  x = jax.nn.softmax(jax.random.normal(jax.random.key(0), (2, T, V)) * 3, -1)
  params = jax.jit(d.init)(jax.random.key(1), x)
  apply = jax.jit(lambda x: d.apply(params, x))
  logits = apply(x)
  assert logits.shape == (2, T)
  # Perturbing positions > t leaves logits <= t unchanged (exactly), and changes later ones.
  for t in (0, 3, T - 2):
    y = x.at[:, t + 1:].set(jax.nn.one_hot(jnp.full((2, T - t - 1), 11), V))
    other = apply(y)
    np.testing.assert_array_equal(other[:, :t + 1], logits[:, :t + 1])
    assert not np.allclose(other[:, t + 1:], logits[:, t + 1:])
  # Jacobian: d logit_t / d x_s is zero for s > t and nonzero for s <= t.
  jac = jax.jit(jax.jacrev(lambda x: d.apply(params, x)[0]))(x)  # [T, 2, T, V]
  norms = np.asarray(jnp.sqrt(jnp.sum(jnp.square(jac[:, 0]), -1)))  # [t, s]
  assert (norms[np.triu_indices(T, 1)] == 0).all()
  assert (norms[np.tril_indices(T)] > 0).all()
  # Real one-hots and soft one-hots go through the same embedding path
  tokens = jnp.array([[7, 8, BLANK] + [BLANK] * (T - 3)] * 2)
  table = params["params"]["embedding"]
  np.testing.assert_allclose(jax.nn.one_hot(tokens, V) @ table, table[tokens], atol=1e-6)
  # Dropout only in training mode
  a = d.apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, logits)


# -- the GAN objective --------------------------------------------------------------


TOK = FakeTokenizer("ids", vocab_size=V)  # id i > 5 decodes to str(i)


class _Ctx:
  """What the losses read of a step context: ``keys`` (one split of ``rng``, in order)."""

  def __init__(self, rng):
    self.rng = rng

  def keys(self, *names):
    return dict(zip(names, jax.random.split(self.rng, len(names))))


def _objective(**overrides):
  over = {"data.max_len": T, "model.embed_dim": 8, "model.gen_hidden": 16,
          "model.disc_hidden": 16, "model.rec_hidden": 16, "model.latent_dim": NZ}
  over.update(overrides)
  config = make_config("configs/latent_gan.py", "demo", **{k.replace(".", "__"): v
                                                          for k, v in over.items()})
  obj = algorithm.LatentGAN(config, TOK)
  rows = np.full((B, T), 0, np.int32)
  rows[:, :3] = [[7, 8, 9]]
  rows[:, 3] = 3  # eos, then pad
  batch = {"tokens_in": np.concatenate([np.full((B, 1), 2), rows[:, :-1]], 1).astype(np.int32),
           "tokens_out": rows, "weight": np.ones(B, np.float32)}
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  return obj, state, batch


def test_real_sentences_end_with_blank_padding():
  out = data.blank_tokens(jnp.array([[7, 8, 3, 0, 0], [9, 9, 9, 9, 3]]), TOK)
  np.testing.assert_array_equal(out, [[7, 8, 5, 5, 5], [9, 9, 9, 9, 5]])
  obj, _, _ = _objective()
  tokens = np.array([[7, 8, 5, 9], [5, 1, 1, 1]])
  assert obj.texts(Generation(tokens, np.array([3, 1]), np.zeros(2))) == ["7 8", ""]
  # Metric words: text between <unk> ids split by metrics.text.words, each <unk> id one word
  # that no reference's words can hold (metrics.text.words splits "<unk>" into 3 symbols).
  unk = np.array([[7, 1, 8, 9, 5, 9], [1, 5, 5, 5, 5, 5]])
  assert obj.sentence_words(unk) == [["7", "<unk>", "8", "9"], ["<unk>"]]


def test_unconditional_generate_samples_num_samples_sentences():
  obj, state, _ = _objective()
  assert not obj.CONDITIONAL and obj.prompt_batch(None, ["hi"]) is None
  key = jax.random.key(3)
  out = obj.generate(state, None, key, DecodeOptions(mode="greedy", num_samples=5))
  tokens = np.asarray(out.tokens)
  assert tokens.shape == (5, T) and out.lengths.shape == out.scores.shape == (5,)
  # Greedy = word temperature 0 from the latent codes of key(3) (chunk 0: fold_in(key, 0)).
  np.testing.assert_array_equal(tokens, obj.sample(state, 5, key, 0.0))
  blank = tokens == BLANK
  np.testing.assert_array_equal(out.lengths, np.where(blank.any(1), blank.argmax(1) + 1, T))
  texts = obj.texts(out)
  for row, text in zip(tokens.tolist(), texts):
    end = row.index(BLANK) if BLANK in row else T
    # cut at the first blank, no blank shown
    assert text == " ".join(map(TOK.id_to_piece, row[:end]))
  sampled = obj.generate(state, None, key, DecodeOptions(mode="sample", temperature=1.0,
                                                         num_samples=5))
  np.testing.assert_array_equal(sampled.tokens, obj.sample(state, 5, key, 1.0))
  assert not np.array_equal(sampled.tokens, tokens)
  with pytest.raises(ConfigError, match="beam search needs a context"):
    obj.generate(state, None, key, DecodeOptions(mode="beam", num_samples=5))


def test_generator_gets_gradients_from_both_discriminator_and_reconstructor():
  obj, state, _ = _objective()
  p = state.params
  ctx = _Ctx(jax.random.key(11))
  batch = {"tokens_out": np.zeros((B, T), np.int32)}
  gen_loss = lambda g, r: obj.gen_loss(dict(p, generator=g, reconstructor=r), batch, ctx)
  terms = lambda g, r: gen_loss(g, r)[1]
  # d g_adv / d(G, R) and d recon / d(G, R), each term on its own
  (g_adv, r_adv), (g_rec, r_rec) = jax.jit(
      lambda g, r: (jax.grad(lambda g, r: terms(g, r)["g_adv"], argnums=(0, 1))(g, r),
                    jax.grad(lambda g, r: terms(g, r)["recon"], argnums=(0, 1))(g, r)))(
                        p["generator"], p["reconstructor"])
  # each term alone moves the generator's output layer (through the soft/hard one-hots)
  assert float(optax_norm(g_adv["out"])) > 1e-6
  assert float(optax_norm(g_rec["out"])) > 1e-6
  assert float(optax_norm(g_rec["init_c"])) > 1e-6  # z -> initial state is trained by R's loss
  assert float(optax_norm(r_rec)) > 1e-6 and float(optax_norm(r_adv)) == 0.0
  g, r = p["generator"], p["reconstructor"]
  # the total is g_adv + lambda * recon
  loss, aux = jax.jit(gen_loss)(g, r)
  assert float(loss.count) == 1.0  # this device's mean over its rows
  np.testing.assert_allclose(loss.total,
                             aux["g_adv"] + obj.config.model.recon_weight * aux["recon"],
                             rtol=1e-6)


def test_disc_step_moves_only_d_and_gen_step_only_g_and_r():
  obj, state, batch = _objective()
  from vedgan import parallel
  mesh = parallel.make_mesh()
  batch = parallel.shard_batch(batch, mesh)
  specs = obj.steps()
  assert specs["disc"].networks(None) == ("discriminator",)
  assert specs["gen"].networks(None) == ("generator", "reconstructor")
  copy = lambda s: jax.tree.map(jnp.copy, s)  # the driver's step donates its state
  after_d, m_d = train.step_function(obj, "disc", obj.config, copy(state), mesh=mesh)(
      copy(state), batch)
  after_g, m_g = train.step_function(obj, "gen", obj.config, copy(state), mesh=mesh)(
      copy(state), batch)

  def changed(a, b):
    return {k: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a[k]),
                                                          jax.tree.leaves(b[k])))
            for k in a}

  assert changed(after_d.params, state.params) == {"discriminator": True, "generator": False,
                                                   "reconstructor": False}
  assert changed(after_g.params, state.params) == {"discriminator": False, "generator": True,
                                                   "reconstructor": True}
  assert int(after_d.step) == int(after_g.step) == 1
  assert np.isfinite(float(m_d["d_loss"])) and float(m_d["d_l2"]) > 0
  # d_loss is Eq. 1 without the L2 penalty; the driver names D's norm and rate with "d_".
  np.testing.assert_allclose(m_d["d_loss"], m_d["d_real"] + m_d["d_fake"], rtol=1e-6)
  assert {"d_grad_norm", "d_learning_rate"} <= set(m_d) and "loss" not in m_d
  assert np.isfinite(float(m_g["loss"])) and 0 < float(m_g["recon"]) < 10
  assert {"grad_norm", "learning_rate", "g_adv", "fake_length"} <= set(m_g)


# -- end to end ---------------------------------------------------------------------


def _tiny(variant, **overrides):
  """The demo config (its model sizes) on a 500-word vocabulary with batch 32."""
  values = {"tokenizer.vocab_size": 500, "train.batch_size": 32, "train.eval_batch_size": 64,
            "train.progress": False, "train.num_samples": 2, "train.log_every": 50}
  values.update(overrides)
  return make_config("configs/latent_gan.py", variant,
                     **{k.replace(".", "__"): v for k, v in values.items()})


@pytest.mark.slow
@pytest.mark.optimised  # long in-process training: see tests/conftest.py
def test_demo_end_to_end_reconstruction_falls_and_greedy_samples_differ(tmp_path):
  steps = 900
  # The paper's minimax generator loss (the demo variant uses the non-saturating one).
  config = _tiny("demo", **{"stages.gan.num_steps": steps, "train.eval_every": steps,
                            "train.checkpoint_every": steps, "model.gen_loss": "minimax"})
  result = train.run(config, str(tmp_path / "gan"))
  assert result["step"] == steps and not result["stopped"]
  rows = [json.loads(l) for l in open(tmp_path / "gan" / "metrics.jsonl")]
  val = [r for r in rows if r["split"] == "validation"]
  assert [r["step"] for r in val] == [0, steps]
  first, last = val[0], val[-1]
  # Reconstruction MSE starts near E||z||^2 / N_z = 1 and falls well below it.
  assert first["recon"] > 0.8
  print("recon", first["recon"], "->", last["recon"], "greedy", first["recon_greedy"], "->",
        last["recon_greedy"], "greedy_distinct_frac", last["greedy_distinct_frac"])
  assert last["recon"] < 0.5 * first["recon"], (first["recon"], last["recon"])
  assert last["recon_greedy"] < 0.6 * first["recon_greedy"]
  train_rows = [r for r in rows if r["split"] == "train"]
  # One row per step function of each logging window (``step_name``): D's and G's.
  assert {r["step_name"] for r in train_rows} == {"disc", "gen"}
  assert all(np.isfinite(r["d_loss"]) for r in train_rows if r["step_name"] == "disc")
  assert all(np.isfinite(r["g_adv"]) for r in train_rows if r["step_name"] == "gen")
  # Greedy (tau_2 = 0) sentences from different z are not all the same.
  trainer = train.Trainer(config, str(tmp_path / "gan"))
  trainer.setup(write=False)
  try:
    sents = trainer.objective.sampler(trainer.state)(0.0, 64, 0)
  finally:
    trainer.close()
  assert len(sents) == 64
  distinct = len({" ".join(s) for s in sents})
  print("distinct greedy sentences from 64 z:", distinct)
  assert distinct >= 8, distinct
  assert last["greedy_distinct_frac"] > 0.1

  # The MLE baseline trains on the same sentences; the sweep treats both alike.
  lm = _tiny("mle_demo", **{"stages.mle.num_steps": 60, "train.eval_every": 60,
                            "train.checkpoint_every": 60})
  train.run(lm, str(tmp_path / "lm"))
  lm_val = [json.loads(l) for l in open(tmp_path / "lm" / "metrics.jsonl")
            if json.loads(l)["split"] == "validation"]
  assert lm_val[-1]["perplexity"] < 0.5 * lm_val[0]["perplexity"]
  out = eval_suites.run_suites(str(tmp_path / "gan"), "latent_gan_fig3,latent_gan_table2",
                               echo=None, num_samples=40, temperatures=(0.0, 0.5, 1.0),
                               compare_workdirs=(str(tmp_path / "lm"),))
  fig = out["latent_gan_fig3"]
  assert [s["name"] for s in fig["sweeps"]] == ["ours (λ=1)", "MLE"]
  for s in fig["sweeps"]:
    assert [p["temperature"] for p in s["points"]] == [0.0, 0.5, 1.0]
    assert all(p["num_samples"] == 40 for p in s["points"])
  mle_greedy = fig["greedy"]["MLE"]
  assert mle_greedy["distinct_sentences"] == 1  # no latent code: greedy is one sentence
  assert fig["greedy"]["ours (λ=1)"]["distinct_sentences"] >= 4
  assert out["latent_gan_table2"]["greedy"] == {"λ=1": fig["greedy"]["ours (λ=1)"],
                                                "MLE": mle_greedy}
  eval_dir = tmp_path / "gan" / "eval"
  assert os.path.getsize(eval_dir / "latent_gan_fig3.png") > 1000
  assert json.load(open(eval_dir / "latent_gan_fig3.json"))["plot_order"] == 3
  assert "real data" in open(eval_dir / "latent_gan_table2.md").read()


def test_config_variants():
  assert make_config("configs/latent_gan.py", "paper").model.recon_weight == 1.0
  paper = make_config("configs/latent_gan.py", "paper")
  assert (paper.train.batch_size, paper.stages.gan.num_steps, paper.stages.gan.step) == (
      256, 100_000, "disc*1,gen*1")
  assert (paper.optimizer.b1, paper.optimizer.b2, paper.stages.gan.learning_rate) == (
      0.5, 0.999, 2e-4)
  assert (paper.model.gumbel_temperature, paper.model.word_temperature) == (0.1, 0.1)
  for lam in ("0", "0.5", "1", "2"):
    assert make_config("configs/latent_gan.py", f"demo_lambda{lam}").model.recon_weight == float(lam)
  assert make_config("configs/latent_gan.py", "mle_demo").objective == "lstm_lm"
  from vedgan.errors import ConfigError
  with pytest.raises(ConfigError, match="unknown variant"):
    make_config("configs/latent_gan.py", "nope")
  with pytest.raises(ConfigError, match="lambda applies to the GAN only"):
    make_config("configs/latent_gan.py", "mle_demo_lambda1")
