"""Collaborative VED: phase parameter freezing, each network's own gradient in the joint step,
max(alpha, KL), scheduled sampling, free bits, configs, prompts, the report suites, and one
end-to-end comparison on the embedded demo corpus."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from vedgan import configlib, eval_suites, train
from vedgan.data.tokenizer import train_word_vocab
from vedgan.papers.collaborative_ved import algorithm as cved
from vedgan.papers.collaborative_ved import data
from vedgan.plan import Plan, StageSpan
from vedgan.steps import StepContext

PATH = "configs/collaborative_ved.py"
TINY = dict(model__embed_dim=8, model__utterance_hidden=8, model__context_hidden=12,
            model__decoder_hidden=12, model__latent_dim=6, model__estimator_hidden=8)


def _tokenizer():
  texts = ["hello there how are you", "i am fine thanks", "what is your name",
           "my name is bot", "do you like tea", "yes i like tea a lot"]
  return train_word_vocab(texts, 40)


def _batch(b=4, t=3, l=6):
  rng = np.random.default_rng(0)
  turns = rng.integers(6, 25, (b, t, l)).astype(np.int32)
  turns[:, :, -2:] = 0
  num_turns = np.array([1, 2, 3, 2][:b], np.int32)
  for i, n in enumerate(num_turns):
    turns[i, n:] = 0
  out = rng.integers(6, 25, (b, l)).astype(np.int32)
  out[:, -1] = 3  # eos
  inp = np.concatenate([np.full((b, 1), 2, np.int32), out[:, :-1]], 1)
  return {"turns": turns, "num_turns": num_turns, "response_in": inp, "response_out": out,
          "weight": np.ones((b,), np.float32)}


def _objective(row, **overrides):
  cfg = make_config(PATH, row + ",demo", **dict(TINY, **overrides))
  obj = cved.CollaborativeVED(cfg, _tokenizer())
  batch = _batch()
  state = obj.init(jax.random.key(0), batch)
  return cfg, obj, state, batch


def _step(obj, cfg, name, state, batch):
  """One driver step of ``name`` (on a copy: the jitted step donates its input state)."""
  fn = train.step_function(obj, name, cfg, state)
  return fn(jax.tree.map(jnp.copy, state), batch)


class _FixedKeyContext(StepContext):
  """A step context outside ``shard_map`` (no device axis): ``rng`` is a fixed key."""

  @property
  def rng(self):
    return jax.random.key(11)


def _context(cfg, obj, step, name, state=None):
  plan = Plan.from_config(cfg)
  state = state if state is not None else types.SimpleNamespace(step=jnp.int32(step))
  return _FixedKeyContext(state, plan.span_at(step), plan, name)


def _identical(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _all_modules_changed(before, after, skip=()):
  changed = {}
  for name in before:
    if name in skip:
      continue
    changed[name] = any(not np.array_equal(np.asarray(x), np.asarray(y))
                        for x, y in zip(jax.tree.leaves(before[name]),
                                        jax.tree.leaves(after[name])))
  return changed


def test_steps_are_specs_of_the_paper():
  _, obj, _, _ = _objective("co")
  specs = obj.steps()
  assert set(specs) == set(cved.CollaborativeVED.STEPS)
  assert specs["ae"].trains == ("seq",) and specs["cvae"].trains == ("latent",)
  assert specs["joint"].trains == ("seq", "latent")
  assert all(s.stream == "train" for s in specs.values())
  assert _objective("hred")[1].steps()["joint"].trains == ("seq",)
  assert _objective("kla")[1].steps()["joint"].trains == ("seq", "latent")


def test_cvae_phase_updates_only_the_latent_networks():
  cfg, obj, state, batch = _objective("co")
  new, metrics = _step(obj, cfg, "cvae", state, batch)
  assert _identical(state.params["seq"], new.params["seq"])
  assert _identical(state.opt_state["seq"], new.opt_state["seq"])
  changed = _all_modules_changed(state.params["latent"], new.params["latent"])
  assert changed == {"prior": True, "posterior": True, "generator": True}
  assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1


def test_ae_phase_updates_the_encoder_decoder_and_freezes_latent_networks():
  cfg, obj, state, batch = _objective("co")
  new, metrics = _step(obj, cfg, "ae", state, batch)
  assert _identical(state.params["latent"], new.params["latent"])
  assert _identical(state.opt_state["latent"], new.opt_state["latent"])
  changed = _all_modules_changed(state.params["seq"], new.params["seq"], skip=("bow",))
  # encoder (utterance + context + f_theta code), bridge, decoder, output, embeddings
  assert all(changed.values()) and set(changed) == {"embed", "utterance", "context", "code",
                                                   "bridge", "decoder", "out"}
  assert _identical(state.params["seq"]["bow"], new.params["seq"]["bow"])  # unused by CO
  assert float(metrics["keep_rate"]) == 0.0  # CO without SS: the decoder always gets g(eps)


def test_joint_steps_update_both_subtrees():
  cfg, obj, state, batch = _objective("co_ss_joint")
  new, _ = _step(obj, cfg, "joint", state, batch)
  assert not _identical(state.params["seq"], new.params["seq"])
  assert not _identical(state.params["latent"], new.params["latent"])
  cfg, obj, state, batch = _objective("kla", ved__kl_anneal_steps=0)  # KL weight 1 at step 0
  new, _ = _step(obj, cfg, "joint", state, batch)
  assert _all_modules_changed(state.params["latent"], new.params["latent"]) == {
      "prior": True, "posterior": True, "generator": False}  # VHRED has no generator g


@pytest.mark.default_codegen  # joint vs phase steps at float32 round-off
def test_joint_co_step_gives_each_network_its_own_phase_gradient():
  """One loss ``L_ae(seq, sg(latent)) + L_cvae(sg(seq), latent)``: "seq" gets the gradient of
  the AE loss (Eq. 9) alone, "latent" that of the CVAE loss (Eq. 8) alone, as the
  pre-refactor step computed them (one ``jax.grad`` per phase, w.r.t. its own subtree)."""
  cfg, obj, state, batch = _objective("co_ss_joint", ved__ss_k=4.0)
  batch = jax.tree.map(jnp.asarray, batch)
  ctx = _context(cfg, obj, 2, "joint", state=types.SimpleNamespace(step=jnp.int32(2)))
  p = obj.keep_rate(ctx)
  assert float(p) == pytest.approx(0.5)  # 2 joint steps done, k = 4: some coins real
  params = state.params
  n = batch["weight"].sum()

  @jax.jit
  def gradients(params):  # one compilation (op-by-op scans are slow on CPU)
    def old_phase_grad(name, loss_key):  # the pre-refactor per-phase gradient
      def loss(sub):
        terms = obj.co_terms(dict(params, **{name: sub}), batch, ctx.rng, True, p)
        return (terms[loss_key] * batch["weight"]).sum() / n
      return jax.grad(loss)(params[name])

    return {
        "joint": jax.grad(lambda prm: obj.co_joint_loss(prm, batch, ctx)[0].total / n)(params),
        "old": {"seq": old_phase_grad("seq", "ae_loss"),
                "latent": old_phase_grad("latent", "cvae_loss")},
        # the loss spec of each phase step, on its own network
        "seq": jax.grad(lambda s: obj.ae_loss(dict(params, seq=s), batch, ctx)[0].total / n)(
            params["seq"]),
        "latent": jax.grad(
            lambda s: obj.cvae_loss(dict(params, latent=s), batch, ctx)[0].total / n)(
                params["latent"])}

  g = gradients(params)
  for name in ("seq", "latent"):
    for a, b in zip(jax.tree.leaves(g["joint"][name]), jax.tree.leaves(g["old"][name])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # The loss spec of each phase step gives the same gradients to its own network.
    assert _identical(g[name], g["old"][name])
  # ... and the joint step is the two phase steps applied together.
  both, _ = _step(obj, cfg, "joint", state, batch)
  ae_state, _ = train.step_function(obj, "ae", cfg, state, stage="train")(
      jax.tree.map(jnp.copy, state), batch)
  cvae_state, _ = train.step_function(obj, "cvae", cfg, state, stage="train")(
      jax.tree.map(jnp.copy, state), batch)
  for got, want in ((both.params["seq"], ae_state.params["seq"]),
                    (both.params["latent"], cvae_state.params["latent"])):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_max_alpha_kl_has_zero_gradient_below_alpha():
  key = jax.random.key(3)

  def kl_grads(alpha):
    cfg, obj, state, batch = _objective("co", ved__alpha=alpha)
    batch = jax.tree.map(jnp.asarray, batch)

    def term(seq):
      params = dict(state.params, seq=seq)
      t = obj.co_terms(params, batch, key, True, 0.0)
      return t["kl_term"].sum(), t["kl"]

    grads, kl = jax.jit(jax.grad(term, has_aux=True))(state.params["seq"])  # one program
    return grads, kl

  grads, kl = kl_grads(1e4)  # KL far below alpha
  assert float(kl.max()) < 1e4
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  grads, kl = kl_grads(0.0)  # KL above alpha: the term pushes the encoder
  assert float(kl.min()) > 0.0
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0.0


def test_scheduled_sampling_keep_rate_counts_ae_steps_only():
  span = StageSpan("co", None, 5, 10**6, (("ae", 10), ("cvae", 10)))
  done = [int(span.phase_steps_before(s, "ae")) for s in (5, 10, 15, 25, 30, 45)]
  assert done == [0, 5, 10, 10, 15, 20]
  cfg, obj, _, _ = _objective("co_ss", ved__ss_k=20.0, ved__steps_per_epoch=10)
  assert cfg.stages.co.step == "ae*10,cvae*10"  # the cycle follows ved.steps_per_epoch
  rates = [float(obj.keep_rate(_context(cfg, obj, s, "ae"))) for s in
           (0, 5, 10, 19, 20, 25, 30, 100)]
  # p = max(1 - i/k, 0) with i the AE steps done: constant through a CVAE epoch
  np.testing.assert_allclose(rates, [1.0, 0.75, 0.5, 0.5, 0.5, 0.25, 0.0, 0.0], atol=1e-6)
  # The CVAE step reports the same rate (it counts AE steps too).
  assert float(obj.keep_rate(_context(cfg, obj, 15, "cvae"))) == pytest.approx(0.5)
  # Without an AE phase (CO+SS joint) i counts the joint steps.
  cfg, obj, _, _ = _objective("co_ss_joint", ved__ss_k=20.0)
  assert float(obj.keep_rate(_context(cfg, obj, 5, "joint"))) == pytest.approx(0.75)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8, 1.0])
def test_scheduled_sampling_coin_flip_frequency(p):
  n = 20000
  z_t, z_c = jnp.ones((n, 2)), -jnp.ones((n, 2))
  z, real = jax.jit(cved.scheduled_sampling_mix)(jax.random.key(1), z_t, z_c, p)
  frac = float(real.mean())
  assert abs(frac - p) < 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
  np.testing.assert_array_equal(np.asarray(z[:, 0] > 0), np.asarray(real))  # z~ iff heads


def test_training_coin_flip_frequency_in_the_ae_step():
  cfg, obj, state, batch = _objective("co_ss", ved__ss_k=1e9)  # p = 1 at step 0
  _, metrics = _step(obj, cfg, "ae", state, batch)
  assert float(metrics["keep_rate"]) == 1.0 and float(metrics["ss_real_fraction"]) == 1.0


def test_free_bits_per_dimension_vs_total():
  kl = jnp.array([[0.001, 0.002, 2.0], [0.003, 0.004, 4.0]])  # batch mean [0.002, 0.003, 3.0]

  def value_and_grad(fb, mode):
    f = lambda x: cved.kl_penalty(x, fb, mode).sum()
    return float(f(kl)), jax.grad(f)(kl)

  v, g = value_and_grad(0.01, "per_dim")
  assert v == pytest.approx(2 * (0.01 + 0.01 + 3.0))
  np.testing.assert_array_equal(np.asarray(g[:, :2]), 0.0)  # clamped dims: no gradient
  np.testing.assert_allclose(np.asarray(g[:, 2]), 1.0)
  v, g = value_and_grad(5.0, "total")  # batch KL 3.005 < 5: clamped as a whole
  assert v == pytest.approx(2 * 5.0)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  v, g = value_and_grad(2.0, "total")  # 3.005 > 2: every dimension gets gradient
  assert v == pytest.approx(2 * 3.005)
  np.testing.assert_allclose(np.asarray(g), 1.0)
  v, _ = value_and_grad(0.0, "per_dim")
  assert v == pytest.approx(float(kl.sum()))


def test_every_table1_row_is_a_config():
  from configs import collaborative_ved as c  # pylint: disable=import-outside-toplevel
  latent = {}
  for row in c.ROWS:
    cfg = c.get_config(row)
    assert cfg.objective == "collaborative_ved" and cfg.row == row
    assert cfg.decode.beam_width == 5 and cfg.decode.mode == "beam" and cfg.decode.forbid_unk
    latent[row] = cfg.model.latent
    configlib.validate(cfg, cved.CollaborativeVED.STEPS)
  assert latent["hred"] == "none" and latent["kla_bow"] == "vhred" and latent["co_ss"] == "co"
  co = c.get_config("co")
  assert co.stages.co.step == "ae*595,cvae*595" and co.ved.alpha == 5.0 and co.ved.ss_k == 0
  assert c.get_config("co_ss").ved.ss_k == 2500 and c.get_config("kla").ved.kl_anneal_steps == 12000
  assert c.get_config("fb").ved.free_bits == 0.01 and c.get_config("fb_all").ved.free_bits == 5.0
  assert c.get_config("kla_do").ved.word_dropout == 0.25
  assert c.get_config("co_ss_joint").stages.train.step == "joint"
  with pytest.raises(configlib.ConfigError, match="unknown variant"):
    c.get_config("nope")


def test_ae_cvae_phases_need_the_collaborative_model():
  cfg = make_config(PATH, "kla,demo", **TINY, stages__train__step="ae*2,cvae*2")
  with pytest.raises(configlib.ConfigError, match="only model.latent='co' has"):
    cved.CollaborativeVED(cfg, _tokenizer())


def test_bind_inputs_warns_when_a_phase_is_not_one_epoch(monkeypatch):
  cfg = make_config(PATH, "co_ss,demo", **TINY, ved__steps_per_epoch=10)
  obj = cved.CollaborativeVED(cfg, _tokenizer())
  inputs = types.SimpleNamespace(streams={"train": types.SimpleNamespace(num_batches_per_epoch=7)})
  # Recorded at the call (absl's handlers differ between test orders under xdist).
  warnings = []
  monkeypatch.setattr(cved.logging, "warning", lambda msg, *args: warnings.append(msg % args))
  obj.bind_inputs(inputs)
  assert obj.steps_per_epoch == 7
  text = "\n".join(warnings)
  assert "stage co alternates ae*10" in text
  assert "set --config.ved.steps_per_epoch=7" in text


def test_slices_keep_at_most_slice_words():
  ex = [(["a b c", "d e f g", "h i"], "j k l")]
  assert data.slice_examples(ex, 9) == [(["d e f g", "h i"], "j k l")]
  assert data.slice_examples(ex, 3) == [(["h i"], "j k l")]  # at least one turn
  assert data.slice_examples(ex, 0) == ex


def test_prompts_are_split_into_turns_and_encoded_turn_by_turn():
  cfg, obj, _, _ = _objective("co", data__max_turns=2, data__max_turn_len=3)
  tok = obj.tokenizer
  inputs = types.SimpleNamespace(tokenizer=tok)
  batch = obj.prompt_batch(inputs, ["hello there <eou> how are you today <eou> i am fine",
                                    "  what is your name  ", "<eou>"])
  assert obj.HIERARCHICAL and obj.prompt_turns() == 2
  assert batch["turns"].shape == (3, 2, 3) and batch["num_turns"].tolist() == [2, 1, 1]
  # The last max_turns turns, each its first max_turn_len tokens, oldest first.
  assert batch["turns"][0, 0].tolist() == tok.encode("how are you")
  assert batch["turns"][0, 1].tolist() == tok.encode("i am fine")
  assert batch["turns"][1, 0].tolist() == tok.encode("what is your")
  assert batch["turns"][2, 0].tolist() == [tok.unk_id, 0, 0]  # no turn: one <unk>


@pytest.mark.slow
def test_report_suites_on_a_tiny_run(tmp_path):
  """Table 1, Table 2 and Fig. 3 through ``vedgan.evaluate``'s suites on a 4-step CO+SS run."""
  workdir = str(tmp_path / "run")
  cfg = make_config(PATH, "co_ss,demo", **TINY, train__progress=False, train__num_samples=0,
                    train__eval_batches=1, train__eval_plots=True, ved__steps_per_epoch=2,
                    stages__co__num_steps=4)
  assert train.run(cfg, workdir)["step"] == 4
  # The stage end drew KL and Var[E_q z] per latent dimension.
  assert (tmp_path / "run" / "plots" / "latent_kl_per_dim.png").stat().st_size > 1000
  names = ["collaborative_ved_table1", "collaborative_ved_table2", "collaborative_ved_fig3"]
  lines = []
  out = eval_suites.run_suites(workdir, names, echo=lines.append, num_samples=6, batch_size=4,
                               decode_mode="greedy")
  t1 = out["collaborative_ved_table1"]["values"]
  assert t1["perplexity"] > 1 and t1["nll_bound"] > t1["kl"] >= 0
  assert t1["examples"] == 99 and 0 <= t1["active_units"] <= 6
  t2 = out["collaborative_ved_table2"]
  assert {"average", "greedy", "extrema"} <= set(t2["values"])
  assert all(-1.0 <= t2["values"][k] <= 1.0 for k in ("average", "greedy", "extrema"))
  assert t2["generation"]["mode"] == "greedy" and t2["generation"]["num_contexts"] == 6
  fig = out["collaborative_ved_fig3"]
  assert fig["plots"] == ["eval/latent_projection.png"]
  assert fig["values"]["num_prior"] == fig["values"]["num_posterior"] >= 100 - 9
  assert (tmp_path / "run" / "eval" / "latent_projection.png").stat().st_size > 1000
  assert len(lines) == 3 and lines[0].startswith("collaborative_ved_table1 [validation, step 4]")
  # --plot_context picks one example: its context and its one response.
  one = eval_suites.run_suites(workdir, ["collaborative_ved_fig3"], echo=None, num_samples=6,
                               plot_context=2)["collaborative_ved_fig3"]
  examples = data.load_examples(cfg, "validation")[:6]
  assert one["context"] == examples[2][0] and one["responses"] == [examples[2][1]]
  assert one["values"]["num_prior"] == 100
  with pytest.raises(configlib.ConfigError, match="--plot_context 6 is past"):
    eval_suites.run_suites(workdir, ["collaborative_ved_fig3"], echo=None, num_samples=6,
                           plot_context=6)


@pytest.mark.slow
def test_demo_kla_collapses_while_bow_and_co_keep_kl_positive(tmp_path):
  """Same seed and 200-step budget on the embedded corpus (numbers in docs/collaborative_ved.md)."""
  results = {}
  for row in ("kla", "kla_bow", "co_ss"):
    stage = "co" if row == "co_ss" else "train"
    cfg = make_config(PATH, row + ",demo", train__progress=False, train__eval_every=10**6,
                      train__num_samples=0, **{f"stages__{stage}__num_steps": 200})
    results[row] = train.run(cfg, str(tmp_path / row))["validation"]
  kla, bow, co = results["kla"], results["kla_bow"], results["co_ss"]
  # KLA: the KL weight reaches 1 at step 200 and the KL has collapsed towards 0 ...
  assert kla["kl"] < 0.15 and kla["kl_max_dim"] < 0.02
  # ... while the BoW loss and collaborative VED keep it clearly positive.
  assert bow["kl"] > 2 * kla["kl"]
  assert co["kl"] > 2 * kla["kl"]
  # Not asserted: the paper's "CO+SS reaches a lower NLL bound than KLA". On this corpus and
  # budget it does not (measured: CO+SS 28.0 vs KLA 25.2 nats per response; CO trains the
  # decoder in only half of the steps); docs/collaborative_ved.md gives the numbers.
  assert np.isfinite(co["nll_bound"]) and co["nll_bound"] > co["kl"]
