"""The top-k dialogue GAN (López Zorrilla et al.): who trains the shared word table ``W``
(``model.word_table_trained_by``) and the random-``W`` control of the Section 5
nearest-neighbour check.

Unit-size models (the tiny objective of ``test_topk_gan.py``), no training loop: the
losses' gradients, the optimizers, and single step functions as the driver builds them
(``train.step_function``).
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config
from test_topk_gan import TOK, _batch, _config, _objective

from vedgan import metrics, parallel, replay, steps, train
from vedgan.errors import ConfigError
from vedgan.metrics import topk_check
from vedgan.papers.topk_gan import report
from vedgan.papers.topk_gan.algorithm import TopKGANObjective
from vedgan.plan import Plan

OPTIONS = ("generator", "discriminator", "both")
H = 4  # human rows of a discriminator batch of 8


@pytest.fixture(scope="module")
def objectives():
  """``who -> (objective, initial state)``, built once per option (None: the config's
  default); every option starts from the same parameters (same key, same networks)."""
  cache = {}

  def get(who):
    if who not in cache:
      cache[who] = (_objective() if who is None
                    else _objective(model__word_table_trained_by=who))
    return cache[who]

  return get


def _corpus(obj, params, batch):
  """C_D: greedy responses (Eq. 3) to the second half's inputs and to two unseen inputs
  (one jitted program)."""
  other = np.array([[7, 7, 7], [8, 9, 0]], np.int32)

  def build(params, context):
    inputs = jnp.concatenate([replay.fit_width(context[H:], obj.input_len),
                              replay.fit_width(jnp.asarray(other), obj.input_len)])
    tokens = obj.free_run_logits(params, inputs)["tokens"]
    return replay.add(replay.init(obj.capacity, obj.input_len, obj.response_len), inputs,
                      tokens, time=0)

  return jax.jit(build)(params, batch["context"])


_FREE_RUNS = {}


def _free_run(obj):
  """``obj.free_run_logits`` jitted, once per objective (the same program for every option:
  a hit of the compilation cache after the first)."""
  if id(obj) not in _FREE_RUNS:
    _FREE_RUNS[id(obj)] = (obj, jax.jit(obj.free_run_logits))
  return _FREE_RUNS[id(obj)][1]


def _norm(tree):
  """The Euclidean norm of all leaves (numpy, float64: no compile, no underflow)."""
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(tree))))


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- the option -----------------------------------------------------------------------------


def test_word_table_option_defaults_to_the_generator_and_rejects_other_values():
  tokenizer = TOK  # test_topk_gan's objectives' tokenizer
  assert make_config("configs/topk_gan.py", "paper").model.word_table_trained_by == "generator"
  assert _config().model.word_table_trained_by == "generator"  # the demo inherits it
  for bad in ("nobody", "Generator"):
    with pytest.raises(ConfigError, match=r"model.word_table_trained_by=.* must be one of") as e:
      TopKGANObjective(_config(model__word_table_trained_by=bad), tokenizer)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def loss_grads(objectives):
  """``who -> (dL_D, dL_MLE, dL_G)``: each loss's gradient in every parameter group, at the
  shared initial parameters, on one batch and one replay corpus (built once)."""
  obj, state = objectives("both")
  params = state.params
  batch = {k: jnp.asarray(v) for k, v in _batch(seed=11).items()}
  corpus = _corpus(obj, params, batch)
  key = jax.random.key(3)
  d_ctx = types.SimpleNamespace(state=types.SimpleNamespace(extra={"replay": corpus}), rng=key)
  g_ctx = types.SimpleNamespace(rng=key)
  cache = {}

  def grad_of_mean(loss, ctx):
    """One jitted program per loss (not one for all three): a loss that reads ``W`` the same
    way under two options is the same program, compiled once (the compilation cache)."""
    def f(p):
      w, _ = loss(p, batch, ctx)
      return w.total / w.count
    return jax.device_get(jax.jit(jax.grad(f))(params))

  def get(who):
    if who not in cache:
      o, _ = objectives(who)
      cache[who] = (grad_of_mean(o.discriminator_loss, d_ctx), grad_of_mean(o.mle_loss, g_ctx),
                    grad_of_mean(o.adversarial_loss, None))
    return cache[who]

  return get


@pytest.mark.parametrize("who", OPTIONS)
def test_losses_have_a_w_gradient_only_for_the_networks_that_train_it(loss_grads, who):
  """``L_D`` (Eq. 5) has a gradient in ``W`` only if the discriminator trains it, ``L_MLE``
  (Eq. 4) and ``L_G`` (Eq. 6) only if the generator does (then the same as under "both");
  each network's own parameters get the same gradient under every option."""
  got, ref = loss_grads(who), loss_grads("both")  # "both": every loss reaches W
  trainers = {"generator": ("generator",), "discriminator": ("discriminator",),
              "both": ("generator", "discriminator")}[who]
  for name, g, r, network in zip(("L_D", "L_MLE", "L_G"), got, ref,
                                  ("discriminator", "generator", "generator")):
    assert _norm(r["words"]) > 0, name
    if network in trainers:
      np.testing.assert_allclose(g["words"], r["words"], rtol=1e-5, atol=1e-8, err_msg=name)
    else:
      assert _norm(g["words"]) == 0.0, (name, who)
    assert _norm(g[network]) > 0, name
    for x, y in zip(jax.tree.leaves(g[network]), jax.tree.leaves(r[network]), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("who", OPTIONS)
def test_optimizer_zeroes_the_w_update_of_a_network_that_does_not_train_it(objectives, who):
  """Whatever the gradient (here all ones, as Adam moments carried over from a run with
  another setting would give), the optimizer of a network that does not train ``W``
  returns a zero update for it, and a non-zero one for the network's own group."""
  obj, state = objectives(who)
  networks = obj.networks(state.params)

  def all_updates(params):  # one jitted program: every network's first update
    out = {}
    for network, groups in networks.items():
      own = steps.network_params(params, groups)
      tx = obj.optimizer(network)
      ones = jax.tree.map(jnp.ones_like, own)
      out[network], _ = tx.update(ones, tx.init(own), own)
    return out

  for network, updates in jax.device_get(jax.jit(all_updates)(state.params)).items():
    assert _norm(updates[network]) > 0
    if network in obj.word_trainers:
      assert float(np.min(np.abs(updates["words"]))) > 0, (who, network)
    else:
      assert _norm(updates["words"]) == 0.0, (who, network)
  assert obj.word_trainers == {"generator": ("generator",), "discriminator": ("discriminator",),
                               "both": ("generator", "discriminator")}[who]


def _driver_steps(obj, state, names):
  """``(state at the adversarial stage's first step, {name: jitted step}, batch)``."""
  config = obj.config
  start = Plan.from_config(config).spans[-1].start
  state = jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state)  # one program, not one a leaf
  state = state.replace(step=jnp.asarray(start, jnp.int32))
  mesh = parallel.make_mesh(jax.devices()[:1])
  fns = {n: train.step_function(obj, n, config, state, stage="adversarial", mesh=mesh)
         for n in names}  # each call donates the state it is given
  return state, fns, parallel.shard_batch(_batch(), mesh)


def _generator_view(obj, params, context):
  """Everything the generator reads or produces on ``context``: ``W``, its own parameters
  and its greedy run (Eq. 3: tokens and logits), as numpy."""
  run = _free_run(obj)(params, context)
  return jax.device_get({"words": params["words"], "generator": params["generator"],
                         "tokens": run["tokens"], "logits": run["logits"]})


@pytest.mark.parametrize("who", (None, "both"))
def test_a_discriminator_step_leaves_the_generator_alone_by_default(objectives, who):
  """One ``dstep`` as the driver runs it: with the default (None: the config as it is)
  ``W``, the generator's parameters and its greedy responses and logits on a fixed batch
  are unchanged bit for bit (the discriminator moved); with "both" the step moves ``W``
  and with it the generator's logits."""
  obj, state = objectives(who)
  state, fns, batch = _driver_steps(obj, state, ("refill", "dstep"))
  state, _ = fns["refill"](state, batch)
  context = jnp.asarray(_batch(seed=3)["context"])
  before = _generator_view(obj, state.params, context)
  d_before = jax.device_get(state.params["discriminator"])
  state, m = fns["dstep"](state, batch)
  assert float(m["replay_eligible"]) == 1.0
  after = _generator_view(obj, state.params, context)
  assert _norm(jax.tree.map(lambda a, b: a - b, d_before,
                            jax.device_get(state.params["discriminator"]))) > 0
  if who is None:
    _assert_trees_equal(after, before)
  else:
    assert np.abs(after["words"] - before["words"]).max() > 1e-4
    finite = np.isfinite(before["logits"])  # the forbidden ids are -inf in both
    assert np.abs(after["logits"][finite] - before["logits"][finite]).max() > 1e-6
    _assert_trees_equal(after["generator"], before["generator"])


@pytest.mark.parametrize("who", ("generator", "discriminator"))
def test_generator_steps_train_w_when_the_option_says(objectives, who):
  """One ``gmle`` and one ``gadv`` step as the driver runs them move ``W`` under
  "generator" and leave it unchanged bit for bit under "discriminator"; both always move
  the generator's own parameters."""
  obj, state = objectives(who)
  state, fns, batch = _driver_steps(obj, state, ("gmle", "gadv"))
  for name in ("gmle", "gadv"):
    before = jax.device_get({"words": state.params["words"],
                             "generator": state.params["generator"]})
    state, _ = fns[name](state, batch)
    after = jax.device_get({"words": state.params["words"],
                            "generator": state.params["generator"]})
    assert _norm(jax.tree.map(lambda a, b: a - b, after["generator"], before["generator"])) > 0
    moved = np.abs(after["words"] - before["words"]).max()
    if who == "generator":
      assert moved > 0, name
    else:
      assert moved == 0.0, name


# -- the random-W control of the nearest-neighbour check (Sec. 5, Fig. 3) -------------------


def test_random_table_is_seeded_with_the_given_shape_and_scale():
  a, b = topk_check.random_table((500, 64), 0), topk_check.random_table((500, 64), 0)
  assert a.shape == (500, 64) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, topk_check.random_table((500, 64), 1))
  np.testing.assert_allclose(a.std(), 64 ** -0.5, rtol=0.02)  # N(0, 1/D)
  np.testing.assert_allclose(a.mean(), 0.0, atol=0.01)


def _collinear_table(v, d, seed=0):
  """Rows on a line (``W[i] = i e_1`` + small noise): the top-2 average of two rows lands
  near a row between them, so the model's check is low where the control is ~100%."""
  w = np.zeros((v, d), np.float32)
  w[:, 0] = np.arange(v)
  return w + 1e-3 * np.random.default_rng(seed).standard_normal((v, d)).astype(np.float32)


def test_control_is_the_same_check_on_a_random_w_of_the_same_shape():
  """The control is the check on the same logits and tokens with ``random_table(W.shape,
  seed)``; on random logits it is ~100% at k = 2 while a collinear ``W`` scores low."""
  rng = np.random.default_rng(0)
  v, d = 300, 64
  logits = 3.0 * rng.standard_normal((400, v)).astype(np.float32)
  table = _collinear_table(v, d)
  res = metrics.topk_approximation_check(logits, table, ks=(2, 3), control_seed=5)
  control = res["random_table_control"]
  assert control["seed"] == 5 and control["shape"] == [v, d]
  by_hand = metrics.topk_approximation_check(logits, topk_check.random_table((v, d), 5),
                                             ks=(2, 3), control_seed=None)
  assert "random_table_control" not in by_hand
  assert control["with_repetitions"] == by_hand["with_repetitions"]
  assert control["without_repetitions"] == by_hand["without_repetitions"]
  assert control["with_repetitions"][0] >= 0.99 and control["without_repetitions"][0] >= 0.99
  assert res["with_repetitions"][0] < 0.7  # the model's W, not the control's
  # The default seed is 0; another seed gives another table (same statistic, ~100%).
  default = metrics.topk_approximation_check(logits, table, ks=(2,))["random_table_control"]
  assert default["seed"] == 0 and default["with_repetitions"][0] >= 0.99


def test_control_on_a_small_table_by_hand():
  """On a 4 x 2 table (``tests/metrics``' example, 80% for the model) the control is the
  check with the 4 x 2 random table of seed 0, computed by hand."""
  table = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.1], [10.0, 10.0]])
  logits = np.array([[5.0, 0, 0, 0], [5.0, 0, 0, 0], [5.0, 0, 0, 0], [0.9, 1.0, -10, -10],
                     [0.0, 5.0, 0, 0]])
  res = metrics.topk_approximation_check(logits, table, ks=(2,))
  assert res["with_repetitions"] == pytest.approx([0.8])
  r = topk_check.random_table((4, 2), 0).astype(np.float64)
  hits = []
  for row in logits:
    top = np.argsort(-row, kind="stable")[:2]
    p = np.exp(row[top] - row[top].max())
    p /= p.sum()
    u = p[0] * r[top[0]] + p[1] * r[top[1]]
    hits.append(np.argmin(((r - u) ** 2).sum(-1)) == top[0])
  assert res["random_table_control"]["with_repetitions"] == pytest.approx([np.mean(hits)])


def test_report_carries_the_model_number_and_its_control(objectives):
  """``report.topk_check`` on the tiny generator's greedy responses: the model's fractions
  and the control's, on the same produced tokens, with a random ``W`` of the model's
  shape; the suite's values and summary line carry both."""
  obj, state = objectives("generator")
  words = state.params["words"]
  params = dict(state.params, words=jnp.asarray(_collinear_table(*words.shape)))
  contexts = _batch(seed=3)["context"]
  check = report.topk_check(obj, params, contexts, ks=(2, 3), batch_size=8)
  control = check["random_table_control"]
  assert control["shape"] == list(words.shape) and control["seed"] == report.CONTROL_SEED
  run = jax.device_get(_free_run(obj)(params, jnp.asarray(contexts)))
  keep = run["emitted"]
  by_hand = metrics.topk_approximation_check(
      run["logits"][keep], topk_check.random_table(words.shape, report.CONTROL_SEED),
      tokens=run["tokens"][keep], ks=(2, 3), control_seed=None)
  assert control["with_repetitions"] == by_hand["with_repetitions"]
  assert control["without_repetitions"] == by_hand["without_repetitions"]
  assert check["num_tokens"] == by_hand["num_tokens"] == int(keep.sum())
  model_k2, control_k2 = check["with_repetitions"][0], control["with_repetitions"][0]
  assert control_k2 - model_k2 > 0.2, (model_k2, control_k2)  # tells the two apart
  values = report.fig3_values("A", check)
  assert values["A/k2"] == model_k2 and values["A/k2_random_w"] == control_k2
  assert values["A/k3_without_repetitions"] == check["without_repetitions"][1]
  assert values["A/k3_random_w_without_repetitions"] == control["without_repetitions"][1]
  line = report.fig3_line("A", 7, check)
  assert line.startswith(f"model A (step 7): k=2 {model_k2:.3f} ")
  assert (f"random-W control {control_k2:.3f} / {control['without_repetitions'][0]:.3f}"
          in line)
