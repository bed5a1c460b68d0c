"""Latent-space language GAN (Kojima et al.): the weight of G's adversarial term,
``model.adversarial_reduction`` (Alg. 1 l. 27's ``(1/T) sum_t`` = "mean", Eq. 3's
``sum_t`` = "sum").

Unit-size networks (V = 40, T = 8, batch 4; ``test_latent_gan_wiring.py``'s sizes), no
training loop. The references are composed from the library's pure pieces, not from the
objective's loss: :func:`vedgan.nn.gan.rollout`, :func:`vedgan.nn.gan.prefix_mask`, the
networks' ``apply``, :func:`vedgan.losses.prefix_generator_loss` and
:func:`vedgan.losses.latent_reconstruction_loss`.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config
from fakes import FakeTokenizer
from test_latent_gan_wiring import _batch, _config, _Ctx

from vedgan import losses
from vedgan.errors import ConfigError
from vedgan.nn import gan
from vedgan.papers.latent_gan import algorithm

T, B, NZ, BLANK = 8, 4, 3, 5
TAU1, TAU2, LAMBDA = 0.5, 0.7, 0.5
RNG = jax.random.key(21)


def _objective(reduction, **over):
  config = _config("demo", **{"model.disc_hidden": 16, "model.rec_hidden": 16,
                              "model.latent_dim": NZ, "model.gumbel_temperature": TAU1,
                              "model.word_temperature": TAU2, "model.recon_weight": LAMBDA,
                              "model.gen_loss": "minimax", "model.disc_dropout": 0.0,
                              "model.mask_after_blank": True,
                              "model.adversarial_reduction": reduction, **over})
  return algorithm.LatentGAN(config, FakeTokenizer("ids", vocab_size=40))


def _with_blank_bias(params, value):
  """``params`` with G's output bias of the blank token set to ``value`` (numpy: no compile)."""
  g = jax.tree.map(lambda x: x, params["generator"])
  bias = np.array(g["out"]["bias"])
  bias[BLANK] = value
  g["out"]["bias"] = jnp.asarray(bias)
  return dict(params, generator=g)


@pytest.fixture(scope="module")
def setup():
  """Both objectives (same networks) and one set of parameters; G's blank bias raised so
  that some fakes end early (masked prefixes)."""
  objs = {r: _objective(r) for r in ("mean", "sum")}
  batch, _ = _batch()
  params = dict(jax.jit(objs["mean"].init)(jax.random.key(0), batch).params)
  return objs, _with_blank_bias(params, 1.0), batch


@pytest.fixture(scope="module")
def checks(setup):
  """Everything the tests below compare, from one jitted function (compiled once) run at two
  parameter sets: ``"masked"`` (the setup's, some fakes end early) and ``"full"`` (G's blank
  logit pushed down: no fake ends early). Per reduction ``r``: ``step[r] = ((loss,
  metrics), grad)`` of the G/R step and ``ref[r] = ((loss, (adv, recon, mask)), grad)`` of
  the composed reference; ``per_prefix_mean``: the plain mean of ``log(1 - D)`` over the
  ``B x T`` prefixes of the fakes."""
  objs, params, batch = setup

  def run(p):
    step = {r: jax.value_and_grad(lambda q, r=r: _step_loss(objs[r], q, batch),
                                  has_aux=True)(p) for r in ("mean", "sum")}
    ref = {r: jax.value_and_grad(
        lambda q, r=r: (lambda x: (x[0], x[1:]))(_reference(objs[r], q, r)),
        has_aux=True)(p) for r in ("mean", "sum")}
    k_fake, _ = jax.random.split(RNG)
    kz, kg = jax.random.split(k_fake)
    z = jax.random.normal(kz, (B, NZ), jnp.float32)
    fake = gan.rollout(objs["mean"].generator, p["generator"], z, kg, T, BLANK, TAU1, TAU2)
    logits = objs["mean"].discriminator.apply({"params": p["discriminator"]}, fake.soft)
    return {"step": step, "ref": ref,
            "per_prefix_mean": jnp.mean(jax.nn.log_sigmoid(-logits))}  # log(1 - D)

  run = jax.jit(run)
  return {"masked": jax.device_get(run(params)),
          "full": jax.device_get(run(_with_blank_bias(params, -1e4)))}


def _reference(obj, params, reduction):
  """Eq. 3 / Alg. 1 l. 17-28 composed from the library's pure functions: ``(loss, adv,
  recon, mask)`` with ``adv = mean_b(sum_t mask log(1 - D)) / T`` ("mean") or without the
  ``1/T`` ("sum"), ``loss = adv + lambda * recon``."""
  k_fake, _ = jax.random.split(RNG)            # ctx.keys("fake", "dropout")
  kz, kg = jax.random.split(k_fake)
  z = jax.random.normal(kz, (B, NZ), jnp.float32)
  out = gan.rollout(obj.generator, params["generator"], z, kg, T, BLANK, TAU1, TAU2)
  logits = obj.discriminator.apply({"params": params["discriminator"]}, out.soft)
  mask = gan.prefix_mask(out.tokens, BLANK)
  per_sentence = losses.prefix_generator_loss(logits, mask)      # [B]: sum_t
  adv = per_sentence.mean() / {"mean": T, "sum": 1}[reduction]
  z_hat = obj.reconstructor.apply({"params": params["reconstructor"]}, out.hard)
  recon = losses.latent_reconstruction_loss(z_hat, z).mean()
  return adv + LAMBDA * recon, adv, recon, mask


def _step_loss(obj, params, batch):
  weighted, metrics = obj.gen_loss(params, batch, _Ctx(RNG))
  return weighted.total / weighted.count, metrics


def _trees_close(a, b, rtol=2e-5, atol=1e-7):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _norm(tree):
  """The Euclidean norm of all leaves (numpy, float64: no compile, no underflow)."""
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(tree))))


def test_option_is_declared_defaults_to_mean_and_rejects_other_values():
  for variant in ("paper", "demo", "paper_lambda2"):
    assert make_config("configs/latent_gan.py", variant).model.adversarial_reduction == "mean"
  assert _objective("mean").adversarial_divisor == float(T)
  assert _objective("sum").adversarial_divisor == 1.0
  for bad in ("avg", "Mean", ""):
    with pytest.raises(ConfigError, match="model.adversarial_reduction=.* must be one of") as e:
      _objective(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("reduction", ("mean", "sum"))
def test_gen_loss_matches_the_composed_reference_value_and_gradient(checks, reduction):
  """The G/R step's loss, its ``g_adv``/``recon`` metrics and its gradient in G and R equal
  the reference of the same reduction (and differ from the other reduction's)."""
  other = {"mean": "sum", "sum": "mean"}[reduction]
  res = checks["masked"]
  (loss, metrics), grad = res["step"][reduction]
  (ref, (adv, recon, mask)), ref_grad = res["ref"][reduction]
  (other_ref, _), other_grad = res["ref"][other]
  m = np.asarray(mask)
  assert 0 < m.sum() < B * T  # some fakes end early: the mask matters
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(metrics["g_adv"], adv, rtol=1e-5)
  np.testing.assert_allclose(metrics["recon"], recon, rtol=1e-5)
  for group in ("generator", "reconstructor"):
    _trees_close(grad[group], ref_grad[group])
    assert _norm(grad[group]) > 1e-5
  # The other reduction is another loss: the test tells them apart.
  assert abs(float(other_ref) - float(ref)) > 1e-3
  assert _norm(jax.tree.map(lambda a, b: a - b, other_grad["generator"],
                            ref_grad["generator"])) > 1e-4 * _norm(ref_grad["generator"])


def test_sum_is_t_times_mean_on_a_full_length_batch(checks):
  """With no fake ending early (G's blank logit pushed down, every one of the T prefixes
  scored), "mean" is the plain mean of the ``B x T`` per-prefix terms ``log(1 - D)`` and
  "sum" is T times it; the reconstruction term is the same under both."""
  res = checks["full"]
  (_, (_, _, mask)), _ = res["ref"]["mean"]
  assert float(np.asarray(mask).sum()) == B * T  # full length
  ((loss_mean, m_mean), _), ((loss_sum, m_sum), _) = res["step"]["mean"], res["step"]["sum"]
  np.testing.assert_allclose(m_mean["g_adv"], res["per_prefix_mean"], rtol=1e-5)
  np.testing.assert_allclose(m_sum["g_adv"], T * m_mean["g_adv"], rtol=1e-5)
  np.testing.assert_allclose(m_sum["recon"], m_mean["recon"], rtol=1e-6)
  np.testing.assert_allclose(loss_sum - LAMBDA * m_sum["recon"],
                             T * (loss_mean - LAMBDA * m_mean["recon"]), rtol=1e-5)
