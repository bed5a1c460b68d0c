"""Collaborative VED wiring: each step's loss (value and gradient) equals the paper's equation
composed by hand from the networks' forward passes on one fixed tiny batch (Eq. 8 for the
CVAE phase, Eq. 9 with the Eq. 7 coin for the AE phase, Eq. 2 with KLA and BoW for VHRED);
what the decoder receives at test time; and how Table 1's bound is formed.

The references share only the networks (``HRED`` / ``LatentNets`` methods) and the
documented key splits with the library; the Gaussian KL, the reparameterised sample, the
scheduled-sampling mix, the token NLL and the reductions are written out here."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from vedgan import losses, parallel
from test_collaborative_ved import TINY, _batch, _tokenizer
from vedgan.nn.hred import HRED, LatentNets
from vedgan.papers.collaborative_ved import algorithm as cved
from vedgan.plan import Plan
from vedgan.steps import StepContext

PATH = "configs/collaborative_ved.py"
# CO+SS with k = 4 and 4-step phases: at step 2 two AE steps are done, so p = 1 - 2/4.
CO = dict(TINY, ved__ss_k=4.0, ved__steps_per_epoch=4, ved__word_dropout=0.5)
STEP = 2
KEEP_RATE = 0.5


class _FixedKeyContext(StepContext):
  """A step context outside ``shard_map``: ``rng`` is a fixed key."""

  @property
  def rng(self):
    return jax.random.key(11)


def _context(cfg, step, name):
  plan = Plan.from_config(cfg)
  return _FixedKeyContext(types.SimpleNamespace(step=jnp.int32(step)), plan.span_at(step), plan,
                          name)


# -- independent pieces of the references ------------------------------------------------


def _kl(mu_q, lv_q, mu_p, lv_p):
  """``sum_d KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p))`` ``[B]`` (closed form)."""
  var_q, var_p = jnp.exp(lv_q), jnp.exp(lv_p)
  return 0.5 * jnp.sum(jnp.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0, -1)


def _nll(logits, targets):
  """``-log p(x | z, c)`` ``[B]``: summed over the real (non-zero) target tokens."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return -(picked * (targets != 0)).sum(-1)


def _decoder_inputs(obj, batch, key, train):
  """Word drop-out (training only, BOS and padding kept) by the library's pure function."""
  tokens = batch["response_in"]
  rate = float(obj.ved.word_dropout)
  if not train or rate <= 0:
    return tokens
  keep_first = jnp.arange(tokens.shape[1])[None, :] > 0
  return losses.word_dropout(key, tokens, rate, obj.tokenizer.unk_id,
                             (tokens != 0) & keep_first)


def _co_reference(obj, params, batch, key, train):
  """Per-example pieces of Eq. 8 / 9: ``kl``, ``recon`` (``1/2||g(eps) - z~||^2``, z~
  constant), ``nll_real`` (decoder fed z~), ``nll_cvae`` (fed g(eps)), eps ~ q(eps|z~,c)."""
  k_eps, _, k_drop = jax.random.split(key, 3)
  seq, lat = {"params": params["seq"]}, {"params": params["latent"]}
  c = obj.hred.apply(seq, batch["turns"], batch["num_turns"], method=HRED.encode_context)
  h_x = obj.hred.apply(seq, batch["response_out"], method=HRED.encode_response)
  z_tilde = obj.hred.apply(seq, h_x, method=HRED.code_of)
  mu_p, lv_p = obj.latent.apply(lat, c, method=LatentNets.prior)
  mu_q, lv_q = obj.latent.apply(lat, z_tilde, c, method=LatentNets.posterior)
  eps = mu_q + jnp.exp(0.5 * lv_q) * jax.random.normal(k_eps, mu_q.shape)
  g = obj.latent.apply(lat, eps, method=LatentNets.generate)
  tokens = _decoder_inputs(obj, batch, k_drop, train)

  def nll(z):
    return _nll(obj.hred.apply(seq, c, z, tokens, method=HRED.decode), batch["response_out"])

  return {"kl": _kl(mu_q, lv_q, mu_p, lv_p),
          "recon": 0.5 * jnp.sum((g - jax.lax.stop_gradient(z_tilde)) ** 2, -1),
          "nll_real": nll(z_tilde), "nll_cvae": nll(g)}


def _coins(key, p, b):
  """Eq. 7's coin per example (the second of the three keys): True = feed z~."""
  return jax.random.bernoulli(jax.random.split(key, 3)[1], p, (b,))


def _tree_close(a, b, rtol=2e-5, atol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# -- shared models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def co():
  """CO+SS with alpha between the examples' KLs at init (so max(alpha, KL) clamps some)."""
  batch = _batch()
  probe = cved.CollaborativeVED(make_config(PATH, "co_ss,demo", **CO), _tokenizer())
  state = probe.init(jax.random.key(0), batch)
  kl = np.sort(np.asarray(jax.jit(lambda p: _co_reference(probe, p, batch, jax.random.key(1),
                                                           False)["kl"])(state.params)))
  alpha = float(0.5 * (kl[1] + kl[2]))
  cfg = make_config(PATH, "co_ss,demo", **CO, ved__alpha=alpha)
  obj = cved.CollaborativeVED(cfg, _tokenizer())  # same networks: the probe's state fits
  return types.SimpleNamespace(cfg=cfg, obj=obj, state=state, batch=batch, alpha=alpha)


def test_ae_step_loss_is_eq9_with_the_scheduled_sampling_coin(co):
  """AE phase (Eq. 9): ``mean_b max(alpha, KL_b) - log p(x_b | z_b, c_b)`` with ``z_b = z~_b``
  on heads of a p-coin (Eq. 7), else ``g(eps_b)``; value and gradient w.r.t. "seq"."""
  obj, batch, params = co.obj, co.batch, co.state.params
  ctx = _context(co.cfg, STEP, "ae")
  assert float(obj.keep_rate(ctx)) == pytest.approx(KEEP_RATE)
  real = _coins(ctx.rng, KEEP_RATE, 4)
  assert 0 < int(real.sum()) < 4, "the fixed key must give both kinds of z"

  def reference(seq):
    r = _co_reference(obj, dict(params, seq=seq), batch, ctx.rng, True)
    nll = jnp.where(real, r["nll_real"], r["nll_cvae"])
    return jnp.mean(jnp.maximum(co.alpha, r["kl"]) + nll), r

  def library(seq):
    loss, metrics = obj.ae_loss(dict(params, seq=seq), batch, ctx)
    return loss.total / loss.count, metrics

  (want, r), g_want = jax.jit(jax.value_and_grad(reference, has_aux=True))(params["seq"])
  (got, metrics), g_got = jax.jit(jax.value_and_grad(library, has_aux=True))(params["seq"])
  kl = np.asarray(r["kl"])
  assert (kl < co.alpha).any() and (kl > co.alpha).any()  # both branches of max(alpha, KL)
  # The two decoder inputs differ, so the coin decides the NLL.
  assert np.all(np.abs(np.asarray(r["nll_real"] - r["nll_cvae"])) > 1e-4)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  assert float(metrics["ss_real_fraction"].total) == int(real.sum())
  _tree_close(g_got, g_want)


def test_cvae_step_loss_is_eq8(co):
  """CVAE phase (Eq. 8): ``mean_b KL(q(eps|z~,c) || p(eps|c)) + 1/2 ||g(eps) - z~||^2``,
  ``eps ~ q``; value and gradient w.r.t. "latent" (prior, posterior, generator)."""
  obj, batch, params = co.obj, co.batch, co.state.params
  ctx = _context(co.cfg, STEP, "cvae")

  def reference(lat):
    r = _co_reference(obj, dict(params, latent=lat), batch, ctx.rng, True)
    return jnp.mean(r["kl"] + r["recon"]), r

  def library(lat):
    loss, metrics = obj.cvae_loss(dict(params, latent=lat), batch, ctx)
    return loss.total / loss.count, metrics

  (want, r), g_want = jax.jit(jax.value_and_grad(reference, has_aux=True))(params["latent"])
  (got, metrics), g_got = jax.jit(jax.value_and_grad(library, has_aux=True))(params["latent"])
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  assert float(metrics["kl"].total) == pytest.approx(float(r["kl"].sum()), rel=1e-5)
  assert float(metrics["recon_z"].total) == pytest.approx(float(r["recon"].sum()), rel=1e-5)
  _tree_close(g_got, g_want)
  assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g_got["prior"]))


def _eval_sums(obj, state, batch):
  """``eval_step`` as the driver runs it (inside a named ``data`` axis, one device)."""
  return jax.jit(jax.vmap(lambda _: obj.eval_step(state, batch), axis_name=parallel.AXIS))(
      jnp.zeros((1,)))


def test_evaluation_decodes_the_cvae_sample_and_bounds_nll_with_kl(co):
  """Test time: ``z = g(eps)``, ``eps ~ q(eps|z~,c)`` (never z~, no word drop-out), the true
  KL (not max(alpha, KL)); padding rows (weight 0) count nowhere."""
  obj, state = co.obj, co.state
  batch = dict(co.batch, weight=jnp.asarray([1.0, 1.0, 0.0, 1.0]))
  sums = jax.tree.map(lambda x: np.asarray(x[0]), _eval_sums(obj, state, batch))
  key = jax.random.fold_in(state.step_key(salt=7), 0)  # device 0's key
  r = jax.jit(lambda p: _co_reference(obj, p, batch, jax.random.split(key)[0], False))(
      state.params)
  w = np.asarray(batch["weight"])
  assert float(sums["examples"]) == 3.0
  np.testing.assert_allclose(sums["nll"], (np.asarray(r["nll_cvae"]) * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["kl"], (np.asarray(r["kl"]) * w).sum(), rtol=1e-5)
  assert float(sums["tokens"]) == float((np.asarray(batch["response_out"] != 0) * w[:, None]).sum())
  summary = obj.summarize(sums)
  assert summary["nll_bound"] == pytest.approx(float(sums["nll"] + sums["kl"]) / 3, rel=1e-6)


def test_summary_bound_is_nll_plus_kl_per_response(co):
  """Table 1: ``PPL = exp(NLL / tokens)``, ``KL`` per response, ``NLL = (NLL + KL) / N``."""
  d = 6
  sums = {"nll": 30.0, "tokens": 10.0, "kl": 6.0, "examples": 3.0,
          "kl_dim": np.full((d,), 1.5), "mean_sum": np.zeros((d,)),
          "mean_sq_sum": np.ones((d,)), "mi": 0.3}
  out = co.obj.summarize(sums)
  assert out["perplexity"] == pytest.approx(np.exp(3.0))
  assert out["kl"] == pytest.approx(2.0)
  assert out["nll_bound"] == pytest.approx(12.0)
  assert out["recon_nll"] == pytest.approx(10.0)
  assert out["kl_max_dim"] == pytest.approx(0.5)


def test_vhred_step_loss_is_eq2_with_annealing_and_bow():
  """KLA+BOW (Eq. 2): ``mean_b -log p(x|z,c) + w_t KL(q(z|x,c) || p(z|c)) + BOW(x|z,c)``,
  ``z ~ q``, ``w_t = t / 4`` at stage step 1; value and gradient w.r.t. both networks."""
  cfg = make_config(PATH, "kla_bow,demo", **TINY, ved__kl_anneal_steps=4)
  obj = cved.CollaborativeVED(cfg, _tokenizer())
  batch = _batch()
  params = obj.init(jax.random.key(0), batch).params
  ctx = _context(cfg, 1, "joint")
  assert float(cfg.ved.bow_weight) == 1.0 and float(cfg.ved.word_dropout) == 0.0

  def reference(prm):
    k_z, _ = jax.random.split(ctx.rng)
    seq, lat = {"params": prm["seq"]}, {"params": prm["latent"]}
    c = obj.hred.apply(seq, batch["turns"], batch["num_turns"], method=HRED.encode_context)
    h_x = obj.hred.apply(seq, batch["response_out"], method=HRED.encode_response)
    mu_p, lv_p = obj.latent.apply(lat, c, method=LatentNets.prior)
    mu_q, lv_q = obj.latent.apply(lat, h_x, c, method=LatentNets.posterior)
    z = mu_q + jnp.exp(0.5 * lv_q) * jax.random.normal(k_z, mu_q.shape)
    out = batch["response_out"]
    nll = _nll(obj.hred.apply(seq, c, z, batch["response_in"], method=HRED.decode), out)
    bow_logp = jax.nn.log_softmax(obj.hred.apply(seq, c, z, method=HRED.bow_logits), -1)
    bow = -(jnp.take_along_axis(bow_logp, out, -1) * (out != 0)).sum(-1)
    return jnp.mean(nll + 0.25 * _kl(mu_q, lv_q, mu_p, lv_p) + bow)

  def library(prm):
    loss, _ = obj.vhred_loss(prm, batch, ctx)
    return loss.total / loss.count

  want, g_want = jax.jit(jax.value_and_grad(reference))(params)
  got, g_got = jax.jit(jax.value_and_grad(library))(params)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  _tree_close(g_got, g_want)
