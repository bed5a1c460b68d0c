"""Latent-space language GAN (Kojima et al.): each step's loss against a hand-composed reference.

Unit-size networks (V = 40, T = 8, batch 4), no training loop. The references are
built from the paper's equations with jax.numpy and the networks' own ``apply``:

* Eq. 1 + App. A: ``L_D = (1/T) sum_t -log D(x_t) + (1/T) sum_t -log(1 - D(x~_t))
  + (wd / 2) ||phi||^2`` on real one-hots and the soft fakes;
* Eq. 3: ``L_G,R = (1/T) sum_t log(1 - D(x~_t)) + lambda (1/N_z) ||R(x.) - z||^2``
  with D on the soft one-hots ``x~`` and R on the hard ones ``x.``;
* Eq. 2 / Sec. 4.2: words are Gumbel-max samples ``argmax(o / tau_2 + g)``;
* the MLE baseline: the token-mean NLL up to and including the first blank.

The fixture's temperatures (tau_1 = 0.5, tau_2 = 0.7) and lambda = 0.5 differ from each
other and from 1, so a loss that swaps or drops one of them gives another value; D has no
dropout, so its logits do not depend on how the batch is split into calls.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config
from fakes import FakeTokenizer

from vedgan import parallel, relax
from vedgan.decode import DecodeOptions
from vedgan.nn import gan
from vedgan.papers.latent_gan import algorithm, lstm_lm

V, T, B, NZ = 40, 8, 4, 3
PAD, UNK, BOS, EOS, EOU, BLANK = 0, 1, 2, 3, 4, 5
TAU1, TAU2, LAMBDA, WD = 0.5, 0.7, 0.5, 0.003
SEED = 0
TOK = FakeTokenizer("ids", vocab_size=V)  # the fixed special ids: PAD ... BLANK above


class _Ctx:
  """What the losses read of a step context: ``keys`` (one split of ``rng``, in order) and
  ``global_sum`` (one device: the identity)."""

  def __init__(self, rng):
    self.rng = rng

  def keys(self, *names):
    return dict(zip(names, jax.random.split(self.rng, len(names))))

  @staticmethod
  def global_sum(x):
    return x


def _config(variant, **over):
  base = {"data.max_len": T, "model.embed_dim": 8, "model.gen_hidden": 16, "seed": SEED}
  base.update(over)
  return make_config("configs/latent_gan.py", variant,
                     **{k.replace(".", "__"): v for k, v in base.items()})


# Real sentences of lengths 3, 1, 7 and 8 words: eos then pad (tokens_out), blank-mapped
# to [y.., blank, ..] (what D and the language model read).
_WORDS = [[7, 8, 9], [11], [12, 13, 14, 15, 16, 17, 18], [19, 20, 21, 22, 23, 24, 25, 26]]


def _batch():
  out = np.full((B, T), PAD, np.int32)
  blanked = np.full((B, T), BLANK, np.int32)
  for i, w in enumerate(_WORDS):
    out[i, :len(w)] = w
    blanked[i, :len(w)] = w
    if len(w) < T:
      out[i, len(w)] = EOS
  tokens_in = np.concatenate([np.full((B, 1), BOS, np.int32), out[:, :-1]], 1)
  return {"tokens_in": tokens_in, "tokens_out": out, "weight": np.ones(B, np.float32)}, blanked


def _prefix_mask(tokens):
  """``[B, T]`` 1 up to and including the first blank: no blank strictly before ``t``."""
  is_blank = (jnp.asarray(tokens) == BLANK).astype(jnp.float32)
  return (jnp.cumsum(is_blank, 1) - is_blank == 0).astype(jnp.float32)


@pytest.fixture(scope="module")
def gan_setup():
  """The paper's minimax GAN at tau_1 = 0.5, tau_2 = 0.7, lambda = 0.5, wd = 0.003, no
  dropout; G's blank bias raised so that some fakes end early."""
  config = _config("demo", **{"model.disc_hidden": 16, "model.rec_hidden": 16,
                              "model.latent_dim": NZ, "model.gumbel_temperature": TAU1,
                              "model.word_temperature": TAU2, "model.recon_weight": LAMBDA,
                              "model.gen_loss": "minimax", "model.disc_dropout": 0.0,
                              "model.disc_weight_decay": WD, "model.mask_after_blank": True})
  obj = algorithm.LatentGAN(config, TOK)
  batch, blanked = _batch()
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  params = dict(state.params)
  g = jax.tree.map(lambda x: x, params["generator"])
  g["out"]["bias"] = g["out"]["bias"].at[BLANK].set(1.0)
  params["generator"] = g
  return obj, state.replace(params=params), batch, blanked


def _fake(obj, g_params, key, n):
  """Alg. 1 lines 2-11: ``kz, kg = split(key)``, ``z ~ N(0, I)``, rollout at (tau_1, tau_2)."""
  kz, kg = jax.random.split(key)
  z = jax.random.normal(kz, (n, NZ), jnp.float32)
  return z, gan.rollout(obj.generator, g_params, z, kg, T, BLANK, TAU1, TAU2)


def _d(obj, d_params, x):
  return obj.discriminator.apply({"params": d_params}, x)


def _ref_disc_terms(obj, params, blanked, rng):
  """Eq. 1 as a loss, each term ``(1/T) sum_t`` and the mean over rows; and the fakes."""
  k_fake, _ = jax.random.split(rng)  # ctx.keys("fake", "dropout")
  _, out = _fake(obj, params["generator"], k_fake, B)
  real_logits = _d(obj, params["discriminator"], jax.nn.one_hot(blanked, V))
  fake_logits = _d(obj, params["discriminator"], jax.lax.stop_gradient(out.soft))
  m_real = _prefix_mask(blanked)
  m_fake = _prefix_mask(out.tokens)
  d_real = jnp.mean(jnp.sum(-m_real * jnp.log(jax.nn.sigmoid(real_logits)), 1)) / T
  d_fake = jnp.mean(jnp.sum(-m_fake * jnp.log(1.0 - jax.nn.sigmoid(fake_logits)), 1)) / T
  return d_real, d_fake, out


def _ref_disc_loss(obj, params, blanked, rng):
  d_real, d_fake, _ = _ref_disc_terms(obj, params, blanked, rng)
  l2 = WD / 2 * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params["discriminator"]))
  return d_real + d_fake + l2


def _ref_gen_loss(obj, params, rng):
  """Eq. 3: D on the soft one-hots, R on the hard (straight-through) ones."""
  k_fake, _ = jax.random.split(rng)
  z, out = _fake(obj, params["generator"], k_fake, B)
  logits = _d(obj, params["discriminator"], out.soft)
  mask = _prefix_mask(out.tokens)
  adv = jnp.mean(jnp.sum(mask * jnp.log(1.0 - jax.nn.sigmoid(logits)), 1)) / T
  z_hat = obj.reconstructor.apply({"params": params["reconstructor"]}, out.hard)
  recon = jnp.mean(jnp.mean((z_hat - z) ** 2, -1))
  return adv + LAMBDA * recon


def _assert_trees_close(a, b, rtol=2e-4, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))))


RNG = jax.random.key(21)


def test_disc_loss_is_eq1_plus_l2_value_and_gradient(gan_setup):
  """The D step's loss and its gradient w.r.t. D equal Eq. 1 + (wd / 2) ||phi||^2 built by
  hand: real one-hots labelled real, soft fakes (G's rollout at tau_1, tau_2 from z ~ N(0, I))
  labelled fake, each scored up to its own first blank, each term over T."""
  obj, state, batch, blanked = gan_setup
  np.testing.assert_array_equal(obj.real_tokens(batch), blanked)
  p = state.params
  ctx = _Ctx(RNG)
  loss_fn = lambda d: obj.disc_loss(dict(p, discriminator=d), batch, ctx)[0].total
  ref_fn = lambda d: _ref_disc_loss(obj, dict(p, discriminator=d), blanked, RNG)
  (loss, grad), (ref, ref_grad), (metrics, (d_real, d_fake, out)) = jax.jit(
      lambda d: (jax.value_and_grad(loss_fn)(d), jax.value_and_grad(ref_fn)(d),
                 (obj.disc_loss(p, batch, ctx)[1], _ref_disc_terms(obj, p, blanked, RNG))))(
                     p["discriminator"])
  # the fixture is meaningful: some fakes end early (masked prefixes), and some run long
  m_fake = np.asarray(_prefix_mask(out.tokens))
  assert 0 < m_fake.sum() < B * T and (m_fake.sum(1) > 3).any()
  assert float(metrics["d_real"]) > 0 and float(metrics["d_fake"]) > 0
  np.testing.assert_allclose(metrics["d_real"], d_real, rtol=1e-5)
  np.testing.assert_allclose(metrics["d_fake"], d_fake, rtol=1e-5)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  _assert_trees_close(grad, ref_grad)
  assert _norm(grad) > 1e-3


def test_gen_loss_is_eq3_value_and_gradient(gan_setup):
  """The G/R step's loss and its gradient w.r.t. G and R equal Eq. 3 built by hand:
  (1/T) sum_t log(1 - D(x~)) on the soft one-hots (minimax) + lambda * MSE(R(x.), z) on the
  straight-through hard ones."""
  obj, state, batch, _ = gan_setup
  p = state.params
  ctx = _Ctx(RNG)
  loss_fn = lambda g, r: obj.gen_loss(dict(p, generator=g, reconstructor=r), batch, ctx)[0]
  ref_fn = lambda g, r: _ref_gen_loss(obj, dict(p, generator=g, reconstructor=r), RNG)
  grad = lambda f: jax.value_and_grad(f, argnums=(0, 1))
  (loss, (gg, gr)), (ref, (rg, rr)), weighted = jax.jit(
      lambda g, r: (grad(lambda g, r: loss_fn(g, r).total)(g, r), grad(ref_fn)(g, r),
                    loss_fn(g, r)))(p["generator"], p["reconstructor"])
  assert float(weighted.count) == 1.0
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  _assert_trees_close(gg, rg)
  _assert_trees_close(gr, rr)
  assert _norm(gg["out"]) > 1e-4 and _norm(gr) > 1e-4


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_one_step_of_each_player_moves_d_the_right_way(gan_setup):
  """Adversarial directions on the same noise: D's ability to tell real from generated
  sentences is the gap between its mean logit on real and on generated prefixes (each
  scored up to its first blank). A (small) gradient step of G on its step loss narrows the
  gap; a step of D on its step loss widens it.

  Each is the directional derivative ``d/de gap(theta - e grad L) = -<grad gap, grad L>`` at
  ``e = 0``, as a cosine: it must be below -0.1 for G and above 0.1 for D, well clear of
  float noise (measured -0.80 for G and 0.67 for D; a flipped sign or swapped labels flip it).
  """
  obj, state, batch, blanked = gan_setup
  p = state.params
  ctx = _Ctx(RNG)
  k_fake, _ = jax.random.split(RNG)
  m_real = _prefix_mask(blanked)

  def gap(g, d):
    _, out = _fake(obj, g, k_fake, B)
    m_fake = _prefix_mask(out.tokens)
    real_logits = _d(obj, d, jax.nn.one_hot(blanked, V))
    fake_logits = _d(obj, d, out.soft)
    return (jnp.sum(m_real * real_logits) / jnp.sum(m_real)
            - jnp.sum(m_fake * fake_logits) / jnp.sum(m_fake))

  @jax.jit
  def run(p):
    step_g = jax.grad(lambda g: obj.gen_loss(dict(p, generator=g), batch, ctx)[0].total)(
        p["generator"])
    step_d = jax.grad(lambda d: obj.disc_loss(dict(p, discriminator=d), batch, ctx)[0].total)(
        p["discriminator"])
    gap_g, gap_d = jax.grad(gap, argnums=(0, 1))(p["generator"], p["discriminator"])
    cos = lambda a, b: -_dot(a, b) / jnp.sqrt(_dot(a, a) * _dot(b, b))
    return cos(gap_g, step_g), cos(gap_d, step_d)

  after_g, after_d = map(float, run(p))
  assert after_g < -0.1, after_g  # G's step narrows the gap
  assert after_d > 0.1, after_d   # D's step widens it


def test_eval_step_matches_reference(gan_setup):
  """Validation (one device's keys as documented): recon of training-temperature rollouts
  with R on the hard one-hots, recon_greedy of greedy (tau_2 = 0) sentences, and Eq. 1's
  terms with D on real one-hots and soft fakes."""
  obj, state, batch, blanked = gan_setup
  ndev = 1                                        # one device: its keys, as documented
  mesh = parallel.make_mesh(jax.devices()[:ndev])
  sums = parallel.data_parallel_reduce(obj.eval_step, mesh)(
      state, parallel.shard_batch(batch, mesh))
  p = state.params
  rec = lambda x: obj.reconstructor.apply({"params": p["reconstructor"]}, x)
  want = {"recon": 0.0, "recon_greedy": 0.0, "d_real": 0.0, "d_fake": 0.0}
  rows = B // ndev
  for d in range(ndev):
    sl = slice(d * rows, (d + 1) * rows)
    key = jax.random.fold_in(jax.random.key(SEED + 1), d)
    key = jax.random.fold_in(key, int(np.sum(batch["tokens_out"][sl])))
    k_fake, k_greedy = jax.random.split(key)
    z, out = _fake(obj, p["generator"], k_fake, rows)
    zg = jax.random.normal(k_greedy, (rows, NZ), jnp.float32)
    greedy = gan.sample_tokens(obj.generator, p["generator"], zg, k_greedy, T, BLANK, 0.0)
    assert not np.array_equal(rec(out.hard), rec(out.soft))
    want["recon"] += float(jnp.sum(jnp.mean((rec(out.hard) - z) ** 2, -1)))
    want["recon_greedy"] += float(jnp.sum(jnp.mean((rec(jax.nn.one_hot(greedy, V)) - zg) ** 2,
                                                   -1)))
    rl = _d(obj, p["discriminator"], jax.nn.one_hot(blanked[sl], V))
    fl = _d(obj, p["discriminator"], out.soft)
    want["d_real"] += float(jnp.sum(-_prefix_mask(blanked[sl]) * jax.nn.log_sigmoid(rl))) / T
    want["d_fake"] += float(jnp.sum(-_prefix_mask(out.tokens) * jax.nn.log_sigmoid(-fl))) / T
  for name, value in want.items():
    np.testing.assert_allclose(float(sums[name]), value, rtol=1e-5, err_msg=name)
  assert float(sums["examples"]) == B


def _replay_sample(obj, g_params, z, key, tau2):
  """Gumbel-max sampling replayed step by step: word t is ``argmax(o_t / tau_2 + g_t)``,
  ``g_t = gumbel(fold_in(key, t))``, fed back; blank after the first blank."""
  variables = {"params": g_params}
  carry = obj.generator.apply(variables, z, method=gan.Generator.initial_state)
  prev = jnp.full((z.shape[0],), BOS, jnp.int32)
  done = np.zeros(z.shape[0], bool)
  words = []
  for t in range(T):
    carry, o = obj.generator.apply(variables, carry, prev, jnp.int32(t),
                                   method=gan.Generator.step)
    g = relax.gumbel_noise(jax.random.fold_in(key, t), o.shape, jnp.float32)
    word = np.where(done, BLANK, np.asarray(jnp.argmax(o / tau2 + g, -1)))
    done |= word == BLANK
    words.append(word)
    prev = jnp.asarray(word, jnp.int32)
  return np.stack(words, 1)


def test_sampling_draws_from_softmax_of_logits_over_tau2(gan_setup):
  """Sec. 4.2: sampling at tau_2 (obj.sample, generate(mode=sample)) and the training
  rollout's words at (tau_1, tau_2) are Gumbel-max samples of softmax(o / tau_2), with
  ``z`` from ``fold_in(rng, 0)`` and the noise from ``fold_in(rng, 1)``."""
  obj, state, _, _ = gan_setup
  g = state.params["generator"]
  rng = jax.random.key(5)
  z = jax.random.normal(jax.random.fold_in(rng, 0), (B, NZ), jnp.float32)
  noise = jax.random.fold_in(rng, 1)
  tau = 0.3
  want = _replay_sample(obj, g, z, noise, tau)
  assert not np.array_equal(want, _replay_sample(obj, g, z, noise, 1.0))  # tau_2 matters here
  np.testing.assert_array_equal(obj.sample(state, B, rng, tau, chunk=B), want)
  gen = obj.generate(state, None, rng, DecodeOptions(mode="sample", temperature=tau,
                                                     num_samples=B))
  np.testing.assert_array_equal(gen.tokens, want)
  # the training rollout's words at tau_2 = TAU2 (any tau_1) are the same Gumbel-max samples
  roll = gan.rollout(obj.generator, g, z, noise, T, BLANK, TAU1, TAU2)
  np.testing.assert_array_equal(roll.tokens, _replay_sample(obj, g, z, noise, TAU2))


def test_lstm_lm_loss_is_token_mean_nll_up_to_first_blank():
  """The MLE baseline: -sum log p(x_t | x_<t) over the targets [y.., blank] up to and
  including the first blank, divided by their number (teacher forcing, no z)."""
  obj = lstm_lm.LSTMLanguageModel(_config("mle_demo"), TOK)
  batch, blanked = _batch()
  state = jax.jit(obj.init)(jax.random.key(1), batch)
  g = state.params["generator"]
  loss, _ = jax.jit(lambda g: obj.mle_loss({"generator": g}, batch, _Ctx(RNG)))(g)
  logits = obj.generator.apply({"params": g}, jnp.zeros((B, 0)), batch["tokens_in"])
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), blanked[..., None], -1)[..., 0]
  mask = _prefix_mask(blanked)
  assert mask.sum() == sum(len(w) + 1 for w in _WORDS) - 1  # the 8-word row has no blank
  np.testing.assert_allclose(float(loss.total) / float(loss.count),
                             float(-jnp.sum(mask * logp) / mask.sum()), rtol=1e-5)
