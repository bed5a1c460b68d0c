"""Latent-space language GAN (Kojima, Iwasawa, Matsuo; ../shared/papers/latent_space_language_gan.txt).

Algorithm 1 (App. C) as two step specs; a stage cycles ``"disc*1,gen*1"``, so one
paper iteration is two global steps::

    disc (lines 2-15)                     trains ("discriminator",)      stream "train"
        z ~ N(0, I); x~ = free-running Gumbel-softmax rollout of G(z)       Eq. 2
        L_D = (1/T) sum_t -log D(x_t | x_<t)            real sentences x
            + (1/T) sum_t -log(1 - D(x~_t | x~_<t))     SG(soft one-hots)   Eq. 1
            + (wd / 2) ||phi||^2                        L2 penalty          App. A
    gen (lines 17-30)                     trains ("generator", "reconstructor")
        z ~ N(0, I); x~, x. = rollout of G(z)     soft / hard one-hots      Eq. 2, Fig. 2
        L_G,R = (1/T) sum_t log(1 - D(x~_t | x~_<t))                        Eq. 3
              + lambda (1/N_z) ||R(x._1 .. x._T) - z||^2
              (the 1/T of Alg. 1 l. 27 by default; model.adversarial_reduction)

``x. = onehot(argmax x~) - SG(x~) + x~`` is the straight-through (vector-
quantised) hard one-hot the reconstructor reads (Fig. 2); the discriminator
reads the soft ``x~``. After the first ``<blank>`` every word is blank (the
blank rule, lines 4-5), and prefixes after it are not scored
(``model.mask_after_blank``, ScratchGAN). ``model.gen_loss="non_saturating"``
replaces ``log(1 - D)`` by ``-log D``.

The weight of G's adversarial term against ``lambda`` is ``model.adversarial_reduction``
(:data:`ADVERSARIAL_REDUCTIONS`): ``"mean"`` (default) is Alg. 1 l. 27's
``(1/T) sum_t``, ``"sum"`` is Eq. 3's ``sum_t`` (T = 38 times more weight at COCO's length:
as if lambda were divided by T). The paper gives both; the default keeps the training
algorithm's, which also scales D's loss by 1/T (lines 12-13; D's loss always does here).
Both steps use the stage's learning rate;
each loss is this device's mean over its rows (count 1 per device: the devices
hold equal rows, so the gradient is that of the global mean).

Data: :mod:`vedgan.papers.latent_gan.data` (real sentences blank-mapped to
``[y.., blank, ..]``); sampling and texts: :mod:`vedgan.papers.latent_gan.sampling`;
the MLE baseline ``lstm_lm``: :mod:`vedgan.papers.latent_gan.lstm_lm`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vedgan import losses, parallel
from vedgan.errors import ConfigError
from vedgan.nn import gan
from vedgan.objective import register
from vedgan.papers.latent_gan.sampling import (SentenceObjective, build_generator, dtype,
                                               sentence_lengths)
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

GEN_LOSSES = ("minimax", "non_saturating")
#: ``model.adversarial_reduction`` -> how G's adversarial term reduces over the T prefixes:
#: ``"mean"`` (1/T) sum_t (Alg. 1 l. 27), ``"sum"`` sum_t (Eq. 3).
ADVERSARIAL_REDUCTIONS = ("mean", "sum")


@register("latent_gan")
class LatentGAN(SentenceObjective):
  """Kojima et al.: Gumbel-softmax generator, per-prefix discriminator, reconstructor."""

  STEPS = ("disc", "gen")
  #: training-curve figure (vedgan.plots): D and G losses (Eq. 1, 3), D's accuracy on real
  #: and generated prefixes, and the latent reconstruction loss.
  PLOT_GROUPS = {
      "gan": (
          Panel("discriminator and generator losses", ("D loss = d_loss", "G loss = g_adv")),
          Panel("D accuracy", ("real = d_acc_real", "fake = d_acc_fake",
                               "validation/d_acc_real", "validation/d_acc_fake")),
          Panel("D loss terms", ("d_real", "d_fake")),
          Panel("latent reconstruction", ("recon", "validation/recon"))),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    m = config.model
    if m.gen_loss not in GEN_LOSSES:
      raise ConfigError(f"model.gen_loss={m.gen_loss!r} must be one of {GEN_LOSSES}")
    if m.adversarial_reduction not in ADVERSARIAL_REDUCTIONS:
      raise ConfigError(f"model.adversarial_reduction={m.adversarial_reduction!r} must be one "
                        f"of {ADVERSARIAL_REDUCTIONS}")
    #: what G's per-sentence adversarial sum is divided by: T ("mean") or 1 ("sum").
    self.adversarial_divisor = float(self.length) if m.adversarial_reduction == "mean" else 1.0
    for name in ("gumbel_temperature", "word_temperature"):
      if not float(m[name]) > 0:
        raise ConfigError(f"model.{name}={m[name]} must be > 0 for training")
    self.latent_dim = int(m.latent_dim)
    if self.latent_dim < 1:
      raise ConfigError(f"model.latent_dim={m.latent_dim} must be >= 1")
    v, dt = tokenizer.vocab_size, dtype(m)
    self.generator = build_generator(config, tokenizer, self.latent_dim)
    self.discriminator = gan.Discriminator(
        vocab_size=v, embed_dim=int(m.embed_dim), hidden=int(m.disc_hidden),
        position_features=int(m.position_features), dropout=float(m.disc_dropout),
        forget_bias=float(m.forget_bias), unroll=int(m.unroll), dtype=dt, remat=bool(m.remat))
    self.reconstructor = gan.Reconstructor(
        vocab_size=v, embed_dim=int(m.embed_dim), hidden=int(m.rec_hidden),
        latent_dim=self.latent_dim, position_features=int(m.position_features),
        forget_bias=float(m.forget_bias), unroll=int(m.unroll), dtype=dt, remat=bool(m.remat))

  def init(self, rng, batch):
    """G, D and R (``kg, kd, kr = split(rng, 3)``), an Adam state each."""
    b = batch["tokens_out"].shape[0]
    kg, kd, kr = jax.random.split(rng, 3)
    z = jnp.zeros((b, self.latent_dim), jnp.float32)
    onehot = jax.nn.one_hot(self.real_tokens(batch), self.tokenizer.vocab_size)
    params = {
        "generator": self.generator.init({"params": kg}, z, batch["tokens_in"])["params"],
        "discriminator": self.discriminator.init({"params": kd}, onehot)["params"],
        "reconstructor": self.reconstructor.init({"params": kr}, onehot)["params"],
    }
    return self.new_state(rng, params)

  # -- Algorithm 1 ------------------------------------------------------------------
  def steps(self):
    return {"disc": Step(trains=("discriminator",), loss=self.disc_loss, prefix="d_"),
            "gen": Step(trains=("generator", "reconstructor"), loss=self.gen_loss)}

  def fake(self, g_params, key, n: int):
    """``(z [n, N_z], Rollout)``: ``z ~ N(0, I)`` and G's free-running rollout at the
    training temperatures tau_1, tau_2 (lines 2-11; ``kz, kg = split(key)``)."""
    m = self.config.model
    kz, kg = jax.random.split(key)
    z = self.latent(kz, n)
    out = gan.rollout(self.generator, g_params, z, kg, self.length, self.blank_id,
                      m.gumbel_temperature, m.word_temperature)
    return z, out

  def disc_loss(self, params, batch, ctx):
    """Eq. 1 as a loss (lines 12-14) + the L2 penalty; D with dropout."""
    keys = ctx.keys("fake", "dropout")
    real = self.real_tokens(batch)
    n = real.shape[0]
    _, out = self.fake(params["generator"], keys["fake"], n)
    fake_soft = jax.lax.stop_gradient(out.soft)
    real_onehot = jax.nn.one_hot(real, self.tokenizer.vocab_size)
    real_mask, fake_mask = self.mask(real), self.mask(out.tokens)
    d_params = params["discriminator"]
    logits = self.discriminate(d_params, jnp.concatenate([real_onehot, fake_soft]),
                               keys["dropout"])
    real_logits, fake_logits = logits[:n], logits[n:]
    d_real, d_fake = losses.prefix_discriminator_loss(real_logits, real_mask, fake_logits,
                                                      fake_mask)
    d_real, d_fake = d_real.mean() / self.length, d_fake.mean() / self.length
    l2 = 0.5 * float(self.config.model.disc_weight_decay) * sum(
        jnp.sum(jnp.square(p)) for p in jax.tree.leaves(d_params))
    metrics = {"d_real": d_real, "d_fake": d_fake, "d_l2": l2, "d_loss": d_real + d_fake,
               "d_acc_real": _masked_mean((real_logits > 0).astype(jnp.float32), real_mask),
               "d_acc_fake": _masked_mean((fake_logits < 0).astype(jnp.float32), fake_mask)}
    return Weighted(d_real + d_fake + l2, jnp.float32(1.0)), metrics

  def gen_loss(self, params, batch, ctx):
    """Eq. 3 (lines 17-28): D reads the soft one-hots, R the hard ones; D with dropout.

    ``adv`` = the batch mean of ``sum_t mask_t log(1 - D_t)`` over ``T`` (``"mean"``, Alg. 1
    l. 27) or not (``"sum"``, Eq. 3), per ``model.adversarial_reduction``; the loss is
    ``adv + lambda * recon``.
    """
    m = self.config.model
    keys = ctx.keys("fake", "dropout")
    z, out = self.fake(params["generator"], keys["fake"], batch["tokens_out"].shape[0])
    logits = self.discriminate(params["discriminator"], out.soft, keys["dropout"])
    adv = losses.prefix_generator_loss(logits, self.mask(out.tokens),
                                       non_saturating=m.gen_loss == "non_saturating")
    adv = adv.mean() / self.adversarial_divisor
    z_hat = self.reconstructor.apply({"params": params["reconstructor"]}, out.hard)
    recon = losses.latent_reconstruction_loss(z_hat, z).mean()
    metrics = {"g_adv": adv, "recon": recon,
               "fake_length": sentence_lengths(out.tokens, self.blank_id).mean()}
    return Weighted(adv + float(m.recon_weight) * recon, jnp.float32(1.0)), metrics

  def mask(self, tokens: jax.Array) -> jax.Array:
    """``[B, T]``: the prefixes scored, up to the first blank (``model.mask_after_blank``)
    or all ``T``."""
    if self.config.model.mask_after_blank:
      return gan.prefix_mask(tokens, self.blank_id)
    return jnp.ones(tokens.shape, jnp.float32)

  def discriminate(self, d_params, x, key=None):
    """Per-prefix logits ``[B, T]`` of one-hots ``x [B, T, V]``; dropout when ``key``."""
    if key is None:
      return self.discriminator.apply({"params": d_params}, x)
    return self.discriminator.apply({"params": d_params}, x, train=True, rngs={"dropout": key})

  # -- evaluation ---------------------------------------------------------------------
  def eval_step(self, state, batch):
    """Per-device sums on validation sentences and fixed-seed fakes (one fake per row).

    ``recon``: reconstruction MSE of training-temperature rollouts;
    ``recon_greedy``: of greedy (tau_2 = 0) sentences; discriminator losses and
    prefix accuracies on real vs. fake; ``greedy_distinct``: distinct greedy
    sentences among each evaluation batch of latent codes (all devices).
    """
    p = state.params
    w = batch["weight"]
    real = self.real_tokens(batch)
    n = real.shape[0]
    key = jax.random.fold_in(jax.random.key(int(self.config.seed) + 1),
                             jax.lax.axis_index(parallel.AXIS))
    key = jax.random.fold_in(key, jnp.sum(batch["tokens_out"]))  # differs between batches
    k_fake, k_greedy = jax.random.split(key)
    z, out = self.fake(p["generator"], k_fake, n)
    z_hat = self.reconstructor.apply({"params": p["reconstructor"]}, out.hard)
    recon = losses.latent_reconstruction_loss(z_hat, z)
    zg = self.latent(k_greedy, n)
    greedy = gan.sample_tokens(self.generator, p["generator"], zg, k_greedy, self.length,
                               self.blank_id, 0.0)
    onehot_g = jax.nn.one_hot(greedy, self.tokenizer.vocab_size)
    recon_g = losses.latent_reconstruction_loss(
        self.reconstructor.apply({"params": p["reconstructor"]}, onehot_g), zg)
    real_mask, fake_mask = self.mask(real), self.mask(out.tokens)
    logits = self.discriminate(p["discriminator"],
                               jnp.concatenate([jax.nn.one_hot(real, self.tokenizer.vocab_size),
                                                out.soft]))
    rl, fl = logits[:n], logits[n:]
    d_real, d_fake = losses.prefix_discriminator_loss(rl, real_mask, fl, fake_mask)
    all_greedy = jax.lax.all_gather(greedy, parallel.AXIS, tiled=True)
    all_w = jax.lax.all_gather(w, parallel.AXIS, tiled=True)
    ndev = jax.lax.psum(1, parallel.AXIS)
    return {
        "recon": jnp.sum(w * recon), "recon_greedy": jnp.sum(w * recon_g),
        "d_real": jnp.sum(w * d_real) / self.length, "d_fake": jnp.sum(w * d_fake) / self.length,
        "real_correct": jnp.sum(w[:, None] * real_mask * (rl > 0)),
        "real_prefixes": jnp.sum(w[:, None] * real_mask),
        "fake_correct": jnp.sum(w[:, None] * fake_mask * (fl < 0)),
        "fake_prefixes": jnp.sum(w[:, None] * fake_mask),
        "fake_length": jnp.sum(w * sentence_lengths(out.tokens, self.blank_id)),
        "greedy_length": jnp.sum(w * sentence_lengths(greedy, self.blank_id)),
        "greedy_distinct": _distinct_rows(all_greedy, all_w) / ndev,
        "examples": jnp.sum(w),
    }

  def summarize(self, sums):
    s = {k: float(v) for k, v in sums.items()}
    n = max(s["examples"], 1.0)
    return {"recon": s["recon"] / n, "recon_greedy": s["recon_greedy"] / n,
            "d_real": s["d_real"] / n, "d_fake": s["d_fake"] / n,
            "d_acc_real": s["real_correct"] / max(s["real_prefixes"], 1.0),
            "d_acc_fake": s["fake_correct"] / max(s["fake_prefixes"], 1.0),
            "fake_length": s["fake_length"] / n, "greedy_length": s["greedy_length"] / n,
            "greedy_distinct_frac": s["greedy_distinct"] / n, "examples": s["examples"]}

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """``diversity_vs_temperature.png`` (:func:`vedgan.papers.latent_gan.report.diversity_plot`)."""
    del inputs, stage
    from vedgan.papers.latent_gan import report  # pylint: disable=import-outside-toplevel
    return [report.diversity_plot(self, state, out_dir)]


def _masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _distinct_rows(tokens: jax.Array, weight: jax.Array) -> jax.Array:
  """Number of distinct rows of ``tokens[N, T]`` among rows with ``weight > 0``."""
  same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)
  valid = weight > 0
  n = tokens.shape[0]
  earlier = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]
  dup = jnp.any(same & earlier & valid[None, :], axis=1)
  return jnp.sum(valid & ~dup).astype(jnp.float32)
