"""The importance-weighted likelihood bound (Burda et al. 2016) and its wiring (issue 20).

* the pure pieces of :mod:`vedgan.metrics.likelihood` against hand-computed values:
  ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` by ``logsumexp``, ``K = 1`` is the one-sample
  ELBO, chunking never changes which key a draw reads;
* on a linear Gaussian model whose ``log p(x)`` is known (``z ~ N(0, 1)``,
  ``x | z ~ N(a z, s^2)``, so ``p(x) = N(0, a^2 + s^2)``) with a deliberately mismatched
  Gaussian ``q``: ``E[L_1]`` is the closed-form ELBO, ``E[L_K]`` rises with ``K``
  (1, 10, 1000), stays below ``log p(x)`` and is within 0.01 nats of it at ``K = 1000``;
* the collaborative VED (CO and VHRED rows, HRED) and MojiTalk's CVAE: the bound composed
  by hand from the networks with the model's test-time prior (``p(eps|c)`` then
  ``z = g(eps)``; MojiTalk's conditional prior ``p(z|c)``), the per-device sums of
  ``iw_step``, and the fields the evaluation reports (Table 1, the stage comparison).

The cost is XLA compiling, so every check is one jitted program (no eager ``jnp`` op: each
compiles a program of its own), the models, states and jitted functions are module-scoped
and shared by the tests, and the known-likelihood constants are numpy.
"""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from vedgan import parallel
from vedgan.errors import ConfigError
from vedgan.metrics import likelihood as lik
from vedgan.nn.hred import HRED, LatentNets

import test_collaborative_ved as cved_tests
import test_mojitalk as moji_tests
from vedgan.papers.collaborative_ved import algorithm as cved
from vedgan.papers.collaborative_ved import report as cved_report
from vedgan.papers.mojitalk import algorithm as mojitalk
from vedgan.papers.mojitalk import report as moji_report
from vedgan.papers.mojitalk.networks import response_tokens

K_TEST = 32         # draws in the wiring tests (the configs default to 100)
IW = dict(likelihood__iw_samples=K_TEST, likelihood__iw_chunk=8)


# -- hand-written references -------------------------------------------------------------


def _log_normal(x, mean, logvar):
  """``sum_d log N(x_d; mean_d, exp(logvar_d))`` ``[...]``, written out."""
  var = jnp.exp(logvar)
  return jnp.sum(-0.5 * jnp.log(2 * jnp.pi * var) - (x - mean) ** 2 / (2 * var), -1)


def _nll(logits, targets):
  """``-log p(x | z, c)`` ``[B]``: summed over the real (non-zero) target tokens."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return -(picked * (targets != 0)).sum(-1)


def _bounds(log_w):
  """``(log mean_k exp(log_w), mean_k log_w)`` ``[B]`` in float64 from ``log_w [K, B]``."""
  lw = np.asarray(log_w, np.float64)
  top = lw.max(0)
  return top + np.log(np.mean(np.exp(lw - top), 0)), lw.mean(0)


# -- the pure pieces -----------------------------------------------------------------------


def test_gaussian_log_density_hand_values():
  x, mean = np.array([1.0, 2.0], np.float32), np.array([0.0, 1.0], np.float32)
  logvar = np.log(np.array([1.0, 4.0], np.float32))
  # log N(1; 0, 1) + log N(2; 1, 4) = -0.5 (2 log 2pi + log 4 + 1 + 1/4)
  want = -0.5 * (2 * math.log(2 * math.pi) + math.log(4.0) + 1.0 + 0.25)
  got = jax.jit(lik.gaussian_log_density)(x, mean, logvar)
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_iw_bound_and_elbo_on_a_hand_computed_case():
  """K = 3 draws of B = 2 examples: ``log w = log p(x|z) + log p(z) - log q(z|x)`` is
  (-0.5, -2, -3) and (-1.5, -1, -1)."""
  log_px_z = np.array([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0]], np.float32)
  log_pz = np.array([[-0.5, 0.0], [0.0, -1.0], [-1.0, 0.0]], np.float32)
  log_qz = np.array([[-1.0, -0.5], [-1.0, -1.0], [0.0, -1.0]], np.float32)
  iw, elbo, far = jax.jit(lambda a, b, c: (
      lik.importance_weighted_bound(a, b, c), lik.elbo_estimate(a, b, c),
      lik.importance_weighted_bound(a - 1000.0, b, c)))(log_px_z, log_pz, log_qz)
  want = [math.log((math.exp(-0.5) + math.exp(-2.0) + math.exp(-3.0)) / 3),
          math.log((math.exp(-1.5) + 2 * math.exp(-1.0)) / 3)]
  np.testing.assert_allclose(np.asarray(iw), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(elbo), [-5.5 / 3, -3.5 / 3], rtol=1e-6)
  # logsumexp, not exp then log: weights of e^-1000 do not underflow to log 0.
  np.testing.assert_allclose(np.asarray(far), np.asarray(want) - 1000.0, rtol=1e-6)


def test_one_sample_bound_is_the_single_sample_elbo_and_more_samples_never_lower_it():
  rng = np.random.default_rng(0)
  terms = [(rng.normal(size=(1, 5)) * 3).astype(np.float32) for _ in range(3)]
  single = (terms[0] + terms[1] - terms[2])[0]
  many = [(rng.normal(size=(7, 5)) * 3).astype(np.float32) for _ in range(3)]
  both = jax.jit(lambda t: (lik.importance_weighted_bound(*t), lik.elbo_estimate(*t)))
  iw1, elbo1 = both(terms)
  np.testing.assert_allclose(np.asarray(iw1), single, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(elbo1), single, rtol=1e-6)
  # Jensen, for the same draws: log mean w >= mean log w (deterministically).
  iw7, elbo7 = both(many)
  assert np.all(np.asarray(iw7) >= np.asarray(elbo7) - 1e-6)


def test_chunked_samples_give_draw_k_key_k_whatever_the_chunk():
  fn = jax.vmap(lambda k: jax.random.normal(k, (2,)))
  chunks = (1, 2, 3, 6)

  @jax.jit
  def draws():  # the reference (key k of split(key, 6)) and each chunking, in one program
    key = jax.random.key(3)
    want = jax.vmap(lambda k: jax.random.normal(k, (2,)))(jax.random.split(key, 6))
    return want, [lik.chunked_samples(fn, key, 6, c) for c in chunks]

  want, got = draws()
  for chunk, g in zip(chunks, got):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(want), err_msg=f"chunk={chunk}")
  with pytest.raises(ValueError, match="divide"):
    lik.chunked_samples(fn, np.zeros((2,), np.uint32), 6, 4)


def test_bound_summary_per_sequence_per_token_and_perplexity():
  out = lik.bound_summary(-12.0, 4.0, 3.0, "iw")
  assert out == {"iw_nll": 4.0, "iw_nll_per_token": 3.0, "iw_perplexity": math.exp(3.0)}
  assert math.isnan(lik.bound_summary(-1.0, 0.0, 0.0, "x")["x_perplexity"])


def test_iw_settings_are_checked_with_one_line_errors():
  cfg = make_config(cved_tests.PATH, "co,demo")
  assert lik.iw_settings(cfg) == (100, 5)          # the declared defaults
  assert lik.iw_settings(make_config("configs/mojitalk.py", "demo")) == (100, 5)
  for k, chunk in ((0, 1), (10, 3), (10, 0)):
    with pytest.raises(ConfigError, match="likelihood.iw_samples"):
      lik.iw_settings(make_config(cved_tests.PATH, "co,demo", likelihood__iw_samples=k,
                                  likelihood__iw_chunk=chunk))
  with pytest.raises(ConfigError, match="likelihood.iw_samples"):  # at construction
    cved.CollaborativeVED(make_config(cved_tests.PATH, "co,demo", likelihood__iw_chunk=7),
                          cved_tests._tokenizer())
  legacy = make_config(cved_tests.PATH, "co,demo")
  with legacy.unlocked():
    del legacy["likelihood"]
  with pytest.raises(ConfigError, match="is missing"):
    lik.iw_settings(legacy)


# -- a model with a known likelihood -------------------------------------------------------

A, S = 1.5, 0.8                                    # x | z ~ N(A z, S^2), z ~ N(0, 1)
XS = np.array([-2.0, -0.5, 0.0, 1.0, 2.5], np.float32)
POST_VAR = S ** 2 / (A ** 2 + S ** 2)              # the true posterior's variance
Q_MEAN = (A * XS / (A ** 2 + S ** 2) + 0.4).astype(np.float32)  # q: mean shifted by 0.85
Q_LOGVAR = np.full_like(XS, math.log(2 * POST_VAR))  # posterior sd, variance doubled
#: ``log p(x) = log N(x; 0, A^2 + S^2)`` ``[X]`` (float64, numpy: no compiled program).
EXACT = (-0.5 * np.log(2 * np.pi * (A ** 2 + S ** 2))
         - np.asarray(XS, np.float64) ** 2 / (2 * (A ** 2 + S ** 2)))
REPEATS = 400


def _linear_gaussian_bound(key, k):
  def draw(keys):
    def one(kk):
      z = Q_MEAN + jnp.exp(0.5 * Q_LOGVAR) * jax.random.normal(kk, XS.shape)
      return (lik.gaussian_log_density(XS[:, None], A * z[:, None], jnp.log(S ** 2)),
              lik.gaussian_log_density(z[:, None], 0.0, 0.0),
              lik.gaussian_log_density(z[:, None], Q_MEAN[:, None], Q_LOGVAR[:, None]))
    return jax.vmap(one)(keys)
  return lik.importance_weighted_bound(*lik.chunked_samples(draw, key, k, min(k, 100)))


def _closed_form_elbo():
  """``E_q log N(x; A z, S^2) + E_q log N(z; 0, 1) + H(q)``."""
  m, v = np.asarray(Q_MEAN, np.float64), np.exp(np.asarray(Q_LOGVAR, np.float64))
  x = np.asarray(XS, np.float64)
  rec = -0.5 * math.log(2 * math.pi * S ** 2) - ((x - A * m) ** 2 + A ** 2 * v) / (2 * S ** 2)
  prior = -0.5 * math.log(2 * math.pi) - (m ** 2 + v) / 2
  entropy = 0.5 * np.log(2 * math.pi * math.e * v)
  return rec + prior + entropy


@pytest.fixture(scope="module")
def linear_gaussian():
  """``{K: (mean over repeats and x of L_K - log p(x), its standard error)}`` and the
  closed-form ELBO gap (the same for every x: q is the posterior moved by the same amount)."""
  ks = (1, 10, 1000)

  @jax.jit
  def all_bounds():  # {K: L_K [REPEATS, X]}, every K and repeat in one program
    return {k: jax.vmap(lambda kk, k=k: _linear_gaussian_bound(kk, k))(
        jax.random.split(jax.random.key(k), REPEATS)) for k in ks}

  out = {}
  for k, bounds in all_bounds().items():
    gap = np.asarray(bounds, np.float64) - EXACT[None]   # [REPEATS, X]
    out[k] = (float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(gap.size)))
  return out, float(np.mean(_closed_form_elbo() - EXACT))


def test_linear_gaussian_one_sample_bound_is_the_elbo_in_expectation(linear_gaussian):
  gaps, elbo_gap = linear_gaussian
  mean, se = gaps[1]
  assert elbo_gap < -0.3                           # q is far from the posterior (KL 0.51)
  assert abs(mean - elbo_gap) < 4 * se, (mean, elbo_gap, se)


def test_linear_gaussian_bound_rises_with_k_and_stays_below_log_px(linear_gaussian):
  """In expectation (fixed seeds, 400 repeats x 5 values of x; margins of 4 standard
  errors): ELBO <= E[L_1] < E[L_10] < E[L_1000] <= log p(x), and E[L_1000] is within
  0.01 nats of log p(x)."""
  gaps, elbo_gap = linear_gaussian
  (m1, s1), (m10, s10), (m1000, s1000) = gaps[1], gaps[10], gaps[1000]
  assert m10 - m1 > 4 * math.hypot(s1, s10), gaps
  assert m1000 - m10 > 4 * math.hypot(s10, s1000), gaps
  assert m10 > elbo_gap and m1000 > elbo_gap
  for mean, se in gaps.values():
    assert mean < 4 * se, gaps                      # a lower bound on log p(x)
  assert abs(m1000) < 0.01, gaps


# -- collaborative VED ------------------------------------------------------------------------


def _cved(row):
  cfg = make_config(cved_tests.PATH, row + ",demo", **cved_tests.TINY, **IW)
  obj = cved.CollaborativeVED(cfg, cved_tests._tokenizer())
  batch = {k: jnp.asarray(v) for k, v in cved_tests._batch().items()}
  return obj, jax.jit(lambda b: obj.init(jax.random.key(0), b))(batch), batch


@pytest.fixture(scope="module", params=["co", "kla"])
def cved_model(request):
  """``(objective, state, batch, checks, keys)``: ``checks(params, batch, key)`` is the
  model's ``iw_terms`` and the hand-composed ``log w [K, B]`` in one program; ``keys``: the
  fixed key 5 and device 0's documented ``iw_step`` key."""
  obj, state, batch = _cved(request.param)
  checks = jax.jit(lambda p, b, key: (obj.iw_terms(p, b, key, K_TEST, 8),
                                      _cved_reference(obj, p, b, key, K_TEST)))
  keys = jax.jit(lambda s: {"fixed": jax.random.key(5),
                            "device0": jax.random.fold_in(s.step_key(salt=cved.IW_SALT), 0)})
  return obj, state, batch, checks, keys(state)


def _cved_reference(obj, params, batch, key, k):
  """``log w [K, B]`` of the test-time model: ``eps ~ p(eps|c)`` (the prior network on
  the context), ``z = g(eps)`` (VHRED: ``z = eps``), proposal ``q`` at the posterior."""
  seq, lat = {"params": params["seq"]}, {"params": params["latent"]}
  c = obj.hred.apply(seq, batch["turns"], batch["num_turns"], method=HRED.encode_context)
  h_x = obj.hred.apply(seq, batch["response_out"], method=HRED.encode_response)
  code = obj.hred.apply(seq, h_x, method=HRED.code_of) if obj.kind == "co" else h_x
  mu_p, lv_p = obj.latent.apply(lat, c, method=LatentNets.prior)
  mu_q, lv_q = obj.latent.apply(lat, code, c, method=LatentNets.posterior)

  def one(kk):  # draw k from key k of split(key, K)
    eps = mu_q + jnp.exp(0.5 * lv_q) * jax.random.normal(kk, mu_q.shape)
    z = obj.latent.apply(lat, eps, method=LatentNets.generate) if obj.kind == "co" else eps
    logits = obj.hred.apply(seq, c, z, batch["response_in"], method=HRED.decode)
    return (-_nll(logits, batch["response_out"]) + _log_normal(eps, mu_p, lv_p)
            - _log_normal(eps, mu_q, lv_q))

  return jax.vmap(one)(jax.random.split(key, k))


def test_cved_bound_is_composed_with_the_test_time_prior(cved_model):
  _, state, batch, checks, keys = cved_model
  got, log_w = checks(state.params, batch, keys["fixed"])
  iw, elbo = _bounds(log_w)
  np.testing.assert_allclose(np.asarray(got["iw"]), iw, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got["elbo"]), elbo, rtol=1e-5, atol=1e-4)
  assert np.all(iw > elbo + 1e-4)          # the draws differ: the bound is strictly tighter


_REDUCED = {}


def _reduced(obj, name, state, batch):
  """``obj.<name>(state, batch)`` summed over devices as the driver runs it
  (:func:`vedgan.parallel.data_parallel_reduce`: inside the named ``data`` axis), as numpy;
  one jitted function per objective and step, shared by the tests."""
  key = (id(obj), name)
  if key not in _REDUCED or _REDUCED[key][0] is not obj:
    mesh = parallel.make_mesh()
    _REDUCED[key] = obj, mesh, parallel.data_parallel_reduce(getattr(obj, name), mesh)
  _, mesh, fn = _REDUCED[key]
  out = fn(state, parallel.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh))
  return jax.tree.map(np.asarray, out)


def test_cved_iw_step_sums_weighted_rows_with_its_documented_key(cved_model):
  obj, state, plain, checks, keys = cved_model
  batch = dict(plain, weight=jnp.asarray([1.0, 0.0, 1.0, 1.0]))
  sums = _reduced(obj, "iw_step", state, batch)
  # device 0's key; the reference reads no weight
  iw, elbo = _bounds(checks(state.params, plain, keys["device0"])[1])
  w = np.asarray(batch["weight"])
  assert float(sums["examples"]) == 3.0
  assert float(sums["tokens"]) == float(((np.asarray(batch["response_out"]) != 0) * w[:, None])
                                        .sum())
  np.testing.assert_allclose(sums["iw"], (iw * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["elbo"], (elbo * w).sum(), rtol=1e-5)


def _validation(batch):
  """``batch`` as numpy with the ``weight`` a validation batch carries (all rows real)."""
  out = {k: np.asarray(v) for k, v in batch.items()}
  return dict(out, weight=np.ones(len(out["response_out"]), np.float32))


class _Inputs:
  """Validation batches as :meth:`vedgan.data.inputs.Inputs.validation_batches` yields them."""

  def __init__(self, batches):
    self.batches = batches
    self.validation = {"train": None}

  def validation_batches(self, config, max_batches=0, stream="train"):
    del config, max_batches, stream
    yield from self.batches

  def validation_batch_count(self, config, max_batches=0, stream="train"):
    del config, max_batches, stream
    return len(self.batches)


def test_cved_evaluation_reports_elbo_and_iw_fields_with_iw_below_elbo(cved_model, capsys):
  """Table 1's evaluation of an untrained tiny model: reconstruction-only perplexity, the
  ELBO's and the K-sample bound's NLL per token and perplexity; ``iw <= mc_elbo`` (same
  draws) and the IW NLL is below the ELBO NLL of the plain evaluation."""
  obj, state, batch, _, _ = cved_model
  batches = [_validation(batch), {k: v[::-1].copy() for k, v in _validation(batch).items()}]
  trainer = types.SimpleNamespace(objective=obj, config=obj.config, state=state,
                                  mesh=parallel.make_mesh(), inputs=_Inputs(batches))
  assert obj.config.train.progress
  out = cved_report.iw_evaluate(trainer)
  # the K-sample pass over the split shows its progress (batches done of the split's)
  bar = capsys.readouterr().err
  assert f"importance-weighted bound (K={K_TEST})" in bar and "2/2" in bar, bar
  sums = [_reduced(obj, "iw_step", state, b) for b in batches]
  total = {k: sums[0][k] + sums[1][k] for k in sums[0]}
  assert out["iw_samples"] == K_TEST
  assert out["iw_nll"] == pytest.approx(-float(total["iw"]) / 8, rel=1e-5)
  assert out["iw_nll_per_token"] == pytest.approx(-float(total["iw"]) / float(total["tokens"]),
                                                  rel=1e-5)
  assert out["iw_perplexity"] == pytest.approx(math.exp(out["iw_nll_per_token"]), rel=1e-6)
  assert out["iw_nll"] < out["mc_elbo_nll"]
  assert out["iw_perplexity"] < out["mc_elbo_perplexity"]
  ev = obj.summarize(_reduced(obj, "eval_step", state, batch))
  assert {"perplexity", "recon_perplexity", "elbo_nll_per_token", "elbo_perplexity",
          "nll_bound"} <= set(ev)
  assert ev["recon_perplexity"] == ev["perplexity"]
  assert ev["elbo_perplexity"] == pytest.approx(math.exp(ev["elbo_nll_per_token"]), rel=1e-6)
  # ... and below the ELBO NLL of the plain evaluation (one z ~ q, closed-form KL), taken
  # in expectation over 16 draws (the four responses, both batches hold the same ones).
  terms = obj.co_terms if obj.kind == "co" else obj.vhred_terms
  elbo = jax.jit(lambda p, b: jax.vmap(lambda k: terms(p, b, k, False))(
      jax.random.split(jax.random.key(2), 16)))(state.params, batch)
  elbo_nll = float(np.mean(np.asarray(elbo["nll"]) + np.asarray(elbo["kl"])))
  tokens = float(np.sum(np.asarray(batch["response_out"]) != 0))
  assert out["iw_nll"] < elbo_nll
  assert out["iw_perplexity"] < math.exp(4 * elbo_nll / tokens)


def test_hred_bound_is_its_exact_likelihood():
  obj, state, batch = _cved("hred")
  t, r = jax.jit(lambda p, b: (obj.iw_terms(p, b, jax.random.key(0), K_TEST, 4),
                               obj.vhred_terms(p, b, jax.random.key(1), False)))(
                                   state.params, batch)
  np.testing.assert_allclose(np.asarray(t["iw"]), -np.asarray(r["nll"]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(t["elbo"]), -np.asarray(r["nll"]), rtol=1e-6)


def test_table1_suite_reports_the_bounds_by_name(cved_model):
  obj, state, batch, _, _ = cved_model
  batches = [_validation(batch)]

  class _Enc(list):
    """The encoded validation split: its length, turns and responses (for the hash)."""
    turns, response = [[[5, 6]]], [np.asarray([7, 3])]

  inputs = _Inputs(batches)
  inputs.validation = {"train": _Enc([0])}
  trainer = types.SimpleNamespace(
      objective=obj, config=obj.config, state=state, mesh=parallel.make_mesh(), inputs=inputs,
      evaluate=lambda: obj.summarize(_reduced(obj, "eval_step", state, batch)))
  run = types.SimpleNamespace(config=obj.config, trainer=trainer, workdir="w",
                              tokenizer=types.SimpleNamespace(fingerprint="f" * 64))
  out = cved_report.table1_suite(run)
  v = out.values
  for name in ("perplexity", "recon_perplexity", "nll_bound", "elbo_perplexity",
               "elbo_nll_per_token", "iw_nll", "iw_nll_per_token", "iw_perplexity",
               "iw_samples"):
    assert name in v, name
  assert v["iw_samples"] == K_TEST and v["iw_nll"] <= v["nll_bound"]
  assert "reconstruction-only" in out.summary and f"IW PPL (K={K_TEST})" in out.summary


# -- MojiTalk -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moji():
  config = make_config("configs/mojitalk.py", "demo", **moji_tests.TINY, **IW)
  obj = mojitalk.MojiTalkObjective(config, moji_tests.TOK)
  batch = {k: jnp.asarray(v) for k, v in moji_tests._batch().items()}
  state = jax.jit(lambda b: obj.init(jax.random.key(0), b))(batch)
  cvae = state.replace(step=jnp.asarray(obj.latent_start + 1, state.step.dtype))
  assert obj.is_latent(int(cvae.step)) and not obj.is_latent(int(state.step))
  return obj, state, cvae, batch


@pytest.fixture(scope="module")
def moji_checks(moji):
  """``(checks, keys)``: ``checks(params, batch, key)`` is ``net.iw_terms`` and the
  hand-composed ``log w [K, B]`` in one program; ``keys``: the fixed key 9 and device 0's
  documented ``iw_step`` key."""
  obj = moji[0]
  checks = jax.jit(lambda p, b, key: (obj.net.iw_terms(p, b, key, K_TEST, 8),
                                      _moji_reference(obj, p, b, key, K_TEST)))
  keys = jax.jit(lambda: {"fixed": jax.random.key(9), "device0": jax.random.fold_in(
      jax.random.fold_in(jax.random.key(int(obj.config.seed)), mojitalk._IW), 0)})()
  return checks, keys


def _moji_reference(obj, params, batch, key, k):
  """``log w [K, B]``: ``z ~ q(z|x,c)``, the conditional prior network ``p(z|c)``."""
  net = obj.net
  memory, cond, e = net.condition(params, batch["context"], batch["label"])
  mean_q, lv_q = net.posterior(params, response_tokens(batch, obj.tokenizer.eos_id), cond)
  mean_p, lv_p = net.prior(params, cond)

  def one(kk):  # draw k from key k of split(key, K)
    z = mean_q + jnp.exp(0.5 * lv_q) * jax.random.normal(kk, mean_q.shape)
    logits = net.decode_logits(params, memory, net.initial_state(params, memory, e, z),
                               batch["response_in"])
    return (-_nll(logits, batch["response_out"]) + _log_normal(z, mean_p, lv_p)
            - _log_normal(z, mean_q, lv_q))

  return jax.vmap(one)(jax.random.split(key, k))


def test_mojitalk_bound_uses_the_conditional_prior(moji, moji_checks):
  _, _, cvae, batch = moji
  checks, keys = moji_checks
  got, log_w = checks(cvae.params, batch, keys["fixed"])
  iw, elbo = _bounds(log_w)
  np.testing.assert_allclose(np.asarray(got["iw"]), iw, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got["elbo"]), elbo, rtol=1e-5, atol=1e-4)


def test_mojitalk_iw_step_scores_the_cvae_once_latent_and_the_base_model_before(
    moji, moji_checks):
  obj, base_state, cvae, plain = moji
  checks, keys = moji_checks
  batch = dict(plain, weight=jnp.asarray([1.0, 1.0, 0.0, 1.0]))
  w = np.asarray(batch["weight"])
  sums = _reduced(obj, "iw_step", cvae, batch)
  # device 0's key; the reference reads no weight
  iw, elbo = _bounds(checks(cvae.params, plain, keys["device0"])[1])
  np.testing.assert_allclose(sums["iw"], (iw * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["elbo"], (elbo * w).sum(), rtol=1e-5)
  assert float(sums["tokens"]) == float(((np.asarray(batch["response_out"]) != 0)
                                         * w[:, None]).sum())
  # Before any CVAE step the generator is the base model (z = 0): its exact likelihood.
  base = _reduced(obj, "iw_step", base_state, batch)
  nll_base, _ = jax.jit(obj.net.base_terms)(base_state.params, batch)
  np.testing.assert_allclose(base["iw"], -(np.asarray(nll_base) * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(base["elbo"], base["iw"], rtol=1e-6)


def test_mojitalk_comparison_reports_iw_below_elbo_and_names_the_columns(moji):
  obj, _, cvae, batch = moji
  batches = [_validation(batch)]
  trainer = types.SimpleNamespace(objective=obj, config=obj.config, state=cvae,
                                  mesh=parallel.make_mesh(), inputs=_Inputs(batches))
  out = moji_report.iw_evaluate(trainer)
  assert out["iw_samples"] == K_TEST
  assert out["iw_nll"] < out["mc_elbo_nll"] and out["iw_perplexity"] < out["mc_elbo_perplexity"]
  # The validation line's ELBO (one z ~ q and the closed-form KL, as eval_step sums it), in
  # expectation over 16 draws: above the IW bound.
  t = jax.jit(lambda p, b: jax.vmap(lambda k: obj.net.cvae_terms(p, b, k))(
      jax.random.split(jax.random.key(1), 16)))(cvae.params, batch)
  t = {k: np.asarray(v) for k, v in t.items()}
  tokens = float(np.sum(t["tokens"][0]))
  ev = {"perplexity": math.exp(float(np.sum(t["rec"][0])) / tokens),
        "elbo_perplexity": math.exp(float(np.sum(t["rec"] + t["kl"])) / 16 / tokens)}
  assert out["iw_perplexity"] < ev["elbo_perplexity"]
  model = {"model": "CVAE", "step": 5, **ev, **out, "prior_perplexity": 50.0,
           "corpus_bleu": 0.1, "emoji_top1": 0.5,
           "emoji_top5": 0.9, "emoji_prob": 0.4, "emoji_top1_single": 0.3,
           "emoji_prob_single": 0.2}
  report = {"models": {"cvae": model},
            "classifier": {"top1": 0.5, "top5": 0.9, "majority_rate": 0.3, "balanced_top1": 0.4,
                           "count": [3, 2]}}
  table = moji_report.format_comparison(report)
  header = table.splitlines()[0]
  assert f"PPL (recon.) | PPL (ELBO) | PPL (IW, K={K_TEST})" in header
  row = table.splitlines()[2].split(" | ")
  assert row[2:5] == [f"{ev['perplexity']:.3g}", f"{out['mc_elbo_perplexity']:.3g}",
                      f"{out['iw_perplexity']:.3g}"]
  assert "reconstruction-only" in table
