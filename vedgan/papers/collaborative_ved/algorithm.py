"""HRED / VHRED baselines and the collaborative variational encoder-decoder
(Shen et al., AAAI 2018; ``shared/papers/collaborative_ved.txt``).

``c`` is the hierarchical context encoding of the previous turns, ``x`` the
response, ``z~ = f_theta(x)`` its autoencoder code. Networks: ``"seq"`` (HRED:
embeddings, utterance / context encoders, ``f_theta``, decoder, BoW head) and
``"latent"`` (prior, posterior, generator ``g``), each with its own Adam state.
One objective, three model kinds (``config.model.latent``)::

    HRED / VHRED ("none" | "vhred"), every batch:                stream "train"
      step "joint" (Eq. 2 and the paper's baselines):             trains seq (+ latent)
        z ~ q(z | x, c)                                   (HRED: z = 0)
        L = -log p(x | z, c) + w_t KL(q(z|x,c) || p(z|c)) + b BOW(x | z, c)
            w_t: KL annealing (ved.kl_anneal_steps), free bits (ved.free_bits),
            word drop-out on the decoder inputs (ved.word_dropout)

    collaborative VED ("co"), phases alternating epoch-wise (cycle "ae*N,cvae*N"):
      step "cvae" (Eq. 8), f_theta fixed:                          trains latent
        eps ~ q(eps | z~, c)
        L = KL(q(eps|z~,c) || p(eps|c)) + 1/2 ||g(eps) - z~||^2
      step "ae" (Eq. 9), the latent networks fixed:                trains seq
        p = max(1 - i/k, 0)                                (Eq. 7; i = AE steps done)
        z = z~ with probability p (one coin per example), else g(eps)
        L = max(alpha, KL(q(eps|z~,c) || p(eps|c))) - log p(x | z, c)
      step "joint" (the CO+SS(joint) ablation), both on one batch: trains seq, latent
        L = L_ae(seq, sg(latent)) + L_cvae(sg(seq), latent)
        (sg = stop-gradient: each network gets exactly the gradient of its own phase)

At test time ``z = g(eps)``, ``eps ~ p(eps|c)`` (VHRED: ``z ~ p(z|c)``).
Batches (:mod:`vedgan.papers.collaborative_ved.data`): ``turns[B, T, L]``
(oldest first), ``num_turns[B]``, ``response_in/out[B, Lr]``, ``weight[B]``.
Evaluation (Table 1): ``perplexity`` (= ``recon_perplexity``: exp of the
per-token reconstruction NLL, ``z`` from the posterior -- reconstruction-only, no
KL, not a bound on the model's likelihood), ``kl`` (per response), ``nll_bound``
(-ELBO per response: NLL + KL), ``elbo_nll_per_token`` / ``elbo_perplexity``, and
the collapse diagnostics ``active_units``, ``mutual_information``, ``kl_max_dim``.
:meth:`CollaborativeVED.iw_step` adds the importance-weighted bound on
``-log p(x | c)`` with ``K = likelihood.iw_samples`` posterior draws (``iw_nll``,
``iw_nll_per_token``, ``iw_perplexity``; ``mc_elbo_*`` the ELBO of the same draws):
the model scored is the test-time one, ``eps ~ p(eps|c)``, ``z = g(eps)`` (VHRED:
``z ~ p(z|c)``), ``q`` the posterior as proposal. Tables 1-2 and Fig. 3 of a
finished run: :mod:`vedgan.papers.collaborative_ved.report`.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vedgan import decode, losses, parallel, schedules
from vedgan.errors import ConfigError
from vedgan.losses import latent as latent_losses
from vedgan.metrics import collapse
from vedgan.metrics import likelihood
from vedgan.metrics.likelihood import token_nll
from vedgan.nn.hred import HRED, LatentNets
from vedgan.objective import Generation, Objective, register
from vedgan.papers.collaborative_ved import data
from vedgan.plan import Plan
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

LATENT_KINDS = ("none", "vhred", "co")
IW_SALT = 8  # the importance-weighted bound's key: state.step_key(IW_SALT), per device
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# -- pure pieces (tested directly) -------------------------------------------------


def scheduled_sampling_mix(key, z_tilde, z_cvae, keep_rate):
  """Eq. 9's ``z``: per example ``z~`` with probability ``keep_rate`` (a coin flip), else
  the CVAE's ``g(eps)``. ``z_tilde, z_cvae [B, D]`` -> ``(z [B, D], use_real [B] bool)``."""
  use_real = jax.random.bernoulli(key, keep_rate, z_tilde.shape[:1])
  return jnp.where(use_real[:, None], z_tilde, z_cvae), use_real


def kl_penalty(kl_per_dim, free_bits: float, mode: str):
  """The KL term of the VHRED baselines from ``kl_per_dim [B, D]``: a ``[B]`` array.

  ``free_bits = 0``: the plain per-example KL. Otherwise the free-bits floor on
  the minibatch-average KL (Kingma et al. 2016), ``mode="per_dim"``:
  ``sum_d max(lambda, mean_b KL_bd)`` (FB, 0.01 per dimension) or
  ``mode="total"``: ``max(lambda, mean_b sum_d KL_bd)`` (FB-all, 5 for the whole
  latent); it is spread evenly over the batch rows so that ``sum_b`` of the
  result is ``B`` times the floored batch KL.
  """
  if not free_bits:
    return kl_per_dim.sum(-1)
  floored = losses.free_bits(kl_per_dim.mean(0), free_bits, mode=mode)
  return jnp.broadcast_to(floored, kl_per_dim.shape[:1])


def _mask(tokens):
  return (tokens != 0).astype(jnp.float32)


# -- model forward passes (flax ``method=`` callables) ---------------------------------


def _encode(m: HRED, turns, num_turns, response_out):
  """``(c [B, Hc], h_x [B, Hu], z~ [B, D])``."""
  c = m.encode_context(turns, num_turns)
  h_x = m.encode_response(response_out)
  return c, h_x, m.code_of(h_x)


def _decode(m: HRED, c, z, response_in, with_bow: bool):
  """``(logits [B, Lr, V], bow logits [B, V] or None)``."""
  logits = m.decode(c, z, response_in)
  return logits, (m.bow_logits(c, z) if with_bow else None)


def _prior_posterior(m: LatentNets, x_code, c):
  """``((mu_p, logvar_p), (mu_q, logvar_q))``, each ``[B, D]``."""
  return m.prior(c), m.posterior(x_code, c)


@register("collaborative_ved")
class CollaborativeVED(Objective):
  """HRED, VHRED (+KLA/DO/BOW/FB) and collaborative VED (+DO/SS/joint)."""

  STEPS = ("joint", "ae", "cvae")
  HIERARCHICAL = True
  #: training-curve figures (vedgan.plots): KL with the KL-annealing weight (VHRED rows)
  #: or the scheduled-sampling keep rate (collaborative rows) on a twin axis, and the
  #: validation latent-usage diagnostics (active units, KL, mutual information).
  PLOT_GROUPS = {
      "latent_kl": (
          Panel("KL(q || p) and its schedule", ("kl",),
                ("KL weight = kl_weight", "keep rate = keep_rate"), "KL [nats]",
                "weight / keep rate"),
          Panel("validation latent usage", ("validation/kl", "validation/kl_max_dim",
                                            "validation/mutual_information"),
                ("active units = validation/active_units",), "nats", "active units"),
          Panel("collaborative phase", ("recon_z",), ("ss_real_fraction",))),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    m = config.model
    if m.latent not in LATENT_KINDS:
      raise ConfigError(f"model.latent={m.latent!r} must be one of {LATENT_KINDS}")
    if m.dtype not in DTYPES:
      raise ConfigError(f"model.dtype={m.dtype!r} must be one of {sorted(DTYPES)}")
    self.kind = m.latent
    self.hred = HRED(vocab_size=tokenizer.vocab_size, embed_dim=m.embed_dim,
                     utterance_hidden=m.utterance_hidden, context_hidden=m.context_hidden,
                     decoder_hidden=m.decoder_hidden, latent_dim=m.latent_dim,
                     unroll=m.unroll, remat=m.remat, dtype=DTYPES[m.dtype])
    self.latent = LatentNets(latent_dim=m.latent_dim, hidden=m.estimator_hidden,
                             softplus_variance=self.kind == "co")
    self.ved = config.ved
    if self.ved.free_bits_mode not in latent_losses.FREE_BITS_MODES:
      raise ConfigError(f"config.ved.free_bits_mode={self.ved.free_bits_mode!r} must be one "
                        f"of {latent_losses.FREE_BITS_MODES} (FB or FB-all)")
    if "likelihood" in config:  # checked now; a run saved before it existed lacks it
      likelihood.iw_settings(config)
    self.plan = Plan.from_config(config)
    for span in self.plan.spans:
      if self.kind != "co" and {"ae", "cvae"} & set(span.step_names):
        raise ConfigError(f"config.stages.{span.name} uses the ae/cvae phases, which only "
                          f"model.latent='co' has (this config has {self.kind!r}); use 'joint'")

  def init(self, rng, batch):
    k_seq, k_lat = jax.random.split(rng)
    seq = self.hred.init({"params": k_seq}, batch["turns"], batch["num_turns"],
                         batch["response_in"], batch["response_out"])["params"]
    m = self.config.model
    b = batch["response_in"].shape[0]
    x_dim = m.latent_dim if self.kind == "co" else m.utterance_hidden
    lat = self.latent.init({"params": k_lat}, jnp.zeros((b, x_dim)),
                           jnp.zeros((b, m.context_hidden)))["params"]
    return self.new_state(rng, {"seq": seq, "latent": lat})

  # -- the algorithm ------------------------------------------------------------------
  def steps(self):
    """The box above as step specs: each reads stream ``"train"`` at the stage's learning
    rate; a loss returns ``(Weighted(sum over the batch rows, rows), metrics)``."""
    if self.kind == "co":
      joint = Step(trains=("seq", "latent"), loss=self.co_joint_loss)
    else:
      joint = Step(trains=("seq",) if self.kind == "none" else ("seq", "latent"),
                   loss=self.vhred_loss)
    return {"joint": joint,
            "cvae": Step(trains=("latent",), loss=self.cvae_loss),
            "ae": Step(trains=("seq",), loss=self.ae_loss)}

  def vhred_loss(self, params, batch, ctx):
    """HRED / VHRED (Eq. 2 with KLA / DO / BOW / FB): ``nll + w_t * kl_term + b * bow``."""
    kl_weight = self.kl_weight(ctx)
    t = self.vhred_terms(params, batch, ctx.rng, True, kl_weight)
    w = batch["weight"]
    n = w.sum()
    return Weighted((t["loss"] * w).sum(), n), {
        "nll": Weighted((t["nll"] * w).sum(), (t["tokens"] * w).sum()),
        "kl": Weighted((t["kl"] * w).sum(), n), "bow": Weighted((t["bow"] * w).sum(), n),
        "kl_weight": kl_weight}

  def cvae_loss(self, params, batch, ctx):
    """Eq. 8: ``KL(q(eps|z~,c) || p(eps|c)) + 1/2 ||g(eps) - z~||^2`` (trains "latent")."""
    p = self.keep_rate(ctx)
    t = self.co_terms(params, batch, ctx.rng, True, p)
    return self._co_loss(t["cvae_loss"], t, batch["weight"], p)

  def ae_loss(self, params, batch, ctx):
    """Eq. 9: ``max(alpha, KL) - log p(x | z, c)``, ``z`` mixed by Eq. 7 (trains "seq")."""
    p = self.keep_rate(ctx)
    t = self.co_terms(params, batch, ctx.rng, True, p)
    return self._co_loss(t["ae_loss"], t, batch["weight"], p)

  def co_joint_loss(self, params, batch, ctx):
    """Both phases on one batch: ``L_ae(seq, sg(latent)) + L_cvae(sg(seq), latent)``, so
    "seq" gets exactly the gradient of Eq. 9 and "latent" that of Eq. 8 (same keys and
    coin flips for both terms; :meth:`co_terms` with ``joint=True`` runs the encoder and
    the decoder once for both). Logged ``loss``: the AE loss, as before."""
    p = self.keep_rate(ctx)
    t = self.co_terms(params, batch, ctx.rng, True, p, joint=True)
    w = batch["weight"]
    total, metrics = self._co_loss(t["ae_loss"] + t["cvae_loss"], t, w, p)
    return total, {"loss": Weighted((t["ae_loss"] * w).sum(), w.sum()), **metrics}

  def _co_loss(self, per_example, t, w, p):
    """``Weighted`` sum of ``per_example [B]`` over the rows (``w [B]``) and the phase
    metrics from the terms ``t`` of :meth:`co_terms` (``p``: the keep rate)."""
    n = w.sum()
    return Weighted((per_example * w).sum(), n), {
        "nll": Weighted((t["nll"] * w).sum(), (t["tokens"] * w).sum()),
        "kl": Weighted((t["kl"] * w).sum(), n), "recon_z": Weighted((t["recon_z"] * w).sum(), n),
        "keep_rate": p, "ss_real_fraction": Weighted((t["use_real"] * w).sum(), n)}

  def keep_rate(self, ctx):
    """Eq. 7: ``p = max(1 - i/k, 0)``, ``i`` = steps of this stage's AE phase run before
    this step (of the ``joint`` step in a stage without AE phase); 0 when ``ved.ss_k = 0``."""
    k = float(self.ved.ss_k)
    if k <= 0:
      return jnp.float32(0.0)
    phase = "ae" if "ae" in ctx.span.step_names else "joint"
    return schedules.linear_keep_rate(k)(ctx.phase_step(phase))

  def kl_weight(self, ctx):
    """KL annealing: 0 -> 1 linearly over ``ved.kl_anneal_steps`` of the stage (1 if 0)."""
    anneal = int(self.ved.kl_anneal_steps)
    return schedules.linear_kl_anneal(anneal)(ctx.stage_step) if anneal > 0 else jnp.float32(1.0)

  # -- forward terms ------------------------------------------------------------------
  def _decoder_inputs(self, batch, key, train: bool):
    """``response_in`` with word drop-out (``ved.word_dropout``, training only; BOS kept)."""
    tokens = batch["response_in"]
    rate = float(self.ved.word_dropout)
    if not train or rate <= 0:
      return tokens
    keep_first = jnp.arange(tokens.shape[1])[None, :] > 0
    return losses.word_dropout(key, tokens, rate, self.tokenizer.unk_id,
                               (tokens != 0) & keep_first)

  def vhred_terms(self, params, batch, key, train: bool, kl_weight=1.0):
    """Per-example ``[B]`` terms of HRED / VHRED: ``nll``, ``tokens``, ``kl`` and, when
    training, ``kl_term``, ``bow``, ``loss``; plus ``kl_dim`` and the posterior
    ``mean`` / ``logvar`` ``[B, D]`` (collapse diagnostics). ``key`` splits into the
    posterior sample's and the word drop-out's keys."""
    k_z, k_drop = jax.random.split(key)
    c, h_x, _ = self.hred.apply({"params": params["seq"]}, batch["turns"], batch["num_turns"],
                                batch["response_out"], method=_encode)
    b, d = c.shape[0], self.config.model.latent_dim
    if self.kind == "none":
      z = jnp.zeros((b, d), c.dtype)
      mu_q = lv_q = kl_dim = jnp.zeros((b, d), jnp.float32)
    else:
      (mu_p, lv_p), (mu_q, lv_q) = self.latent.apply({"params": params["latent"]}, h_x, c,
                                                     method=_prior_posterior)
      z = losses.gaussian_sample(k_z, mu_q, lv_q)
      kl_dim = losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    with_bow = train and float(self.ved.bow_weight) > 0
    logits, bow_logits = self.hred.apply(
        {"params": params["seq"]}, c, z, self._decoder_inputs(batch, k_drop, train), with_bow,
        method=_decode)
    mask = _mask(batch["response_out"])
    nll = (token_nll(logits, batch["response_out"]) * mask).sum(-1)
    out = {"nll": nll, "tokens": mask.sum(-1), "kl": kl_dim.sum(-1), "kl_dim": kl_dim,
           "mean": mu_q, "logvar": lv_q}
    if train:
      kl_term = (kl_penalty(kl_dim, float(self.ved.free_bits), self.ved.free_bits_mode)
                 if self.kind == "vhred" else jnp.zeros((b,)))
      bow = (losses.bow_loss(bow_logits, batch["response_out"], mask) if with_bow
             else jnp.zeros((b,)))
      out["kl_term"] = kl_term
      out["bow"] = bow
      out["loss"] = nll + kl_weight * kl_term + float(self.ved.bow_weight) * bow
    return out

  def co_terms(self, params, batch, key, train: bool, keep_rate=0.0, joint: bool = False):
    """Per-example ``[B]`` terms of collaborative VED for both phases.

    ``ae_loss = max(alpha, KL) + nll`` (Eq. 9), ``cvae_loss = KL + 1/2||g(eps) - z~||^2``
    (Eq. 8, ``z~`` a constant there), ``kl_term = max(alpha, KL)``, ``use_real`` (1 where
    the decoder got ``z~``; at test time never), ``nll``, ``tokens``, ``kl``,
    ``recon_z``; ``kl_dim``, ``mean``, ``logvar`` ``[B, D]``. ``key`` splits into the
    keys of ``eps``, the coins and the word drop-out.

    ``joint=True`` (the CO+SS(joint) step) routes the gradients of one forward pass as the
    two phases would: ``ae_loss`` reads the latent networks as constants (Eq. 9 trains
    theta only) and ``cvae_loss`` reads the encoder's ``z~`` and ``c`` as constants (Eq. 8,
    f_theta fixed). The latent networks run twice (once per view, same ``eps`` noise, the
    same values); the encoder and the decoder run once.
    """
    k_eps, k_coin, k_drop = jax.random.split(key, 3)
    c, _, z_tilde = self.hred.apply({"params": params["seq"]}, batch["turns"],
                                    batch["num_turns"], batch["response_out"], method=_encode)
    sg = jax.lax.stop_gradient
    if joint:
      ae_view = self._co_latent(sg(params["latent"]), z_tilde, c, k_eps)
      cvae_view = self._co_latent(params["latent"], sg(z_tilde), sg(c), k_eps)
    else:  # one phase trains one network: the other's gradient is never used
      ae_view = cvae_view = self._co_latent(params["latent"], z_tilde, c, k_eps)
    kl_dim, z_cvae, mu_q, lv_q = ae_view
    kl = kl_dim.sum(-1)
    cvae_kl = cvae_view[0].sum(-1)
    recon_z = losses.gaussian_reconstruction_loss(cvae_view[1], sg(z_tilde))
    if train:
      z, use_real = scheduled_sampling_mix(k_coin, z_tilde, z_cvae, keep_rate)
    else:  # test time: always the CVAE's z
      z, use_real = z_cvae, jnp.zeros(z_cvae.shape[:1], bool)
    logits, _ = self.hred.apply({"params": params["seq"]}, c, z,
                                self._decoder_inputs(batch, k_drop, train), False,
                                method=_decode)
    mask = _mask(batch["response_out"])
    nll = (token_nll(logits, batch["response_out"]) * mask).sum(-1)
    kl_term = losses.kl_threshold(kl, float(self.ved.alpha))
    return {"nll": nll, "tokens": mask.sum(-1), "kl": kl, "kl_dim": kl_dim, "kl_term": kl_term,
            "recon_z": recon_z, "ae_loss": kl_term + nll, "cvae_loss": cvae_kl + recon_z,
            "use_real": use_real.astype(jnp.float32), "mean": mu_q, "logvar": lv_q}

  def _co_latent(self, latent_params, z_tilde, c, k_eps):
    """The CVAE of Eq. 8 on the encoder's ``z~ [B, D]`` and ``c [B, Hc]``: ``(kl_dim [B, D]
    = KL(q(eps|z~,c) || p(eps|c)) per dimension, z = g(eps) [B, D] with eps ~ q, and q's
    mean and log-variance [B, D])``."""
    (mu_p, lv_p), (mu_q, lv_q) = self.latent.apply({"params": latent_params}, z_tilde, c,
                                                   method=_prior_posterior)
    eps = losses.gaussian_sample(k_eps, mu_q, lv_q)
    z_cvae = self.latent.apply({"params": latent_params}, eps, method=LatentNets.generate)
    return losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p), z_cvae, mu_q, lv_q

  def prior_posterior(self, params, batch):
    """The encoders and the prior / posterior nets only (no decoder): ``((mu_p, logvar_p),
    (mu_q, logvar_q))``, each ``[B, D]``, of ``p(.|c)`` and ``q(.|x, c)`` (VHRED: over
    ``z``, reading ``h_x``; collaborative VED: over ``eps``, reading ``z~``)."""
    c, h_x, z_tilde = self.hred.apply({"params": params["seq"]}, batch["turns"],
                                      batch["num_turns"], batch["response_out"], method=_encode)
    code = z_tilde if self.kind == "co" else h_x
    return self.latent.apply({"params": params["latent"]}, code, c, method=_prior_posterior)

  def latent_terms(self, params, batch):
    """``(kl_dim [B, D], posterior mean [B, D])``: the KL of :meth:`eval_step` without
    running the decoder."""
    (mu_p, lv_p), (mu_q, lv_q) = self.prior_posterior(params, batch)
    return losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p), mu_q

  def code_of_noise(self, params, eps):
    """``z = g(eps)`` ``[N, D]`` (collaborative VED; VHRED's Gaussian sample is ``z``)."""
    if self.kind != "co":
      return eps
    return self.latent.apply({"params": params["latent"]}, eps, method=LatentNets.generate)

  # -- evaluation ---------------------------------------------------------------------
  def eval_step(self, state, batch):
    """Per-device sums for Table 1 and the collapse diagnostics (padding rows weigh 0)."""
    key = parallel.device_rng(state.step_key(salt=7))
    k_terms, k_mi = jax.random.split(key)
    if self.kind == "co":
      t = self.co_terms(state.params, batch, k_terms, False)
    else:
      t = self.vhred_terms(state.params, batch, k_terms, False)
    w = batch["weight"]
    mi = (collapse.mutual_information(k_mi, t["mean"], t["logvar"], w)
          if self.kind != "none" else jnp.zeros(()))
    n = w.sum()
    return {"nll": (t["nll"] * w).sum(), "tokens": (t["tokens"] * w).sum(),
            "kl": (t["kl"] * w).sum(), "examples": n,
            "kl_dim": (t["kl_dim"] * w[:, None]).sum(0),
            "mean_sum": (t["mean"] * w[:, None]).sum(0),
            "mean_sq_sum": (jnp.square(t["mean"]) * w[:, None]).sum(0),
            "mi": jnp.where(n > 0, mi * n, 0.0)}

  def summarize(self, sums):
    """Table 1 scalars: ``perplexity`` (reconstruction-only, also ``recon_perplexity``),
    ``kl``, ``nll_bound`` (-ELBO per response), ``elbo_nll_per_token``,
    ``elbo_perplexity`` (+ diagnostics)."""
    n = max(float(sums["examples"]), 1.0)
    tokens = max(float(sums["tokens"]), 1.0)
    nll, kl = float(sums["nll"]), float(sums["kl"])
    recon_ppl = math.exp(min(nll / tokens, 50.0))
    out = {"perplexity": recon_ppl, "recon_perplexity": recon_ppl, "kl": kl / n,
           "nll_bound": (nll + kl) / n, "recon_nll": nll / n, "nll_per_token": nll / tokens,
           "elbo_nll_per_token": (nll + kl) / tokens,
           "elbo_perplexity": math.exp(min((nll + kl) / tokens, 50.0)), "examples": n}
    if self.kind != "none":
      mean = np.asarray(sums["mean_sum"], np.float64) / n
      var = (np.asarray(sums["mean_sq_sum"], np.float64) - n * mean ** 2) / max(n - 1.0, 1.0)
      out["active_units"] = float((var > 0.01).sum())
      out["mutual_information"] = float(sums["mi"]) / n
      out["kl_max_dim"] = float(np.max(np.asarray(sums["kl_dim"], np.float64) / n))
    return out

  def iw_terms(self, params, batch, key, num_samples: int, chunk: int):
    """Per-example ``[B]`` ``iw`` (the K-sample bound ``L_K <= log p(x | c)``, Burda et al.
    2016), ``elbo`` (``mean_k log w_k`` of the same draws) and ``tokens``.

    ``log w_k = log p(x | z_k, c) + log p(eps_k | c) - log q(eps_k | z~, c)`` with
    ``eps_k ~ q`` and ``z_k = g(eps_k)`` (VHRED: ``z_k = eps_k``, ``q(z|x,c)``), so ``p`` is
    the test-time prior of :meth:`generate`; no word drop-out. Draw ``k`` reads key ``k`` of
    ``split(key, num_samples)`` (``eps_k = mu_q + exp(logvar_q / 2) N(0, I)`` ``[B, D]``),
    ``chunk`` draws per decoder pass. HRED (no latent): the exact ``log p(x | c)``.
    """
    seq = {"params": params["seq"]}
    c, h_x, z_tilde = self.hred.apply(seq, batch["turns"], batch["num_turns"],
                                      batch["response_out"], method=_encode)
    mask = _mask(batch["response_out"])

    def log_px(z):  # [B, D] -> [B]
      logits, _ = self.hred.apply(seq, c, z, batch["response_in"], False, method=_decode)
      return -(token_nll(logits, batch["response_out"]) * mask).sum(-1)

    if self.kind == "none":
      exact = log_px(jnp.zeros((c.shape[0], self.config.model.latent_dim), c.dtype))
      return {"iw": exact, "elbo": exact, "tokens": mask.sum(-1)}
    lat = {"params": params["latent"]}
    code = z_tilde if self.kind == "co" else h_x
    (mu_p, lv_p), (mu_q, lv_q) = self.latent.apply(lat, code, c, method=_prior_posterior)

    def draw(k):
      eps = losses.gaussian_sample(k, mu_q, lv_q)
      z = (self.latent.apply(lat, eps, method=LatentNets.generate) if self.kind == "co"
           else eps)
      return (log_px(z), likelihood.gaussian_log_density(eps, mu_p, lv_p),
              likelihood.gaussian_log_density(eps, mu_q, lv_q))

    lw = likelihood.chunked_samples(jax.vmap(draw), key, num_samples, chunk)
    return {"iw": likelihood.importance_weighted_bound(*lw),
            "elbo": likelihood.elbo_estimate(*lw), "tokens": mask.sum(-1)}

  def iw_step(self, state, batch):
    """Per-device sums of :meth:`iw_terms` with ``K = likelihood.iw_samples`` (padding rows
    weigh 0): ``iw``, ``elbo`` (log-likelihood bounds), ``tokens``, ``examples``."""
    k, chunk = likelihood.iw_settings(self.config)
    key = parallel.device_rng(state.step_key(salt=IW_SALT))
    t = self.iw_terms(state.params, batch, key, k, chunk)
    w = batch["weight"]
    return {"iw": (t["iw"] * w).sum(), "elbo": (t["elbo"] * w).sum(),
            "tokens": (t["tokens"] * w).sum(), "examples": w.sum()}

  def summarize_iw(self, sums):
    """``iw_nll`` (per response), ``iw_nll_per_token``, ``iw_perplexity``, the same for
    ``mc_elbo`` (the ELBO of the same draws), and ``iw_samples`` (K)."""
    return likelihood.summarize_iw(sums, likelihood.iw_settings(self.config)[0])

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """``latent_kl_per_dim.png`` (KL and Var[E_q z] per latent dimension on
    ``train.eval_batches`` validation batches); HRED: none."""
    del stage
    if self.kind == "none":
      return []
    from vedgan.papers.collaborative_ved import report  # pylint: disable=import-outside-toplevel
    return report.kl_per_dim_plot(self, state, inputs, out_dir)

  # -- data and generation -------------------------------------------------------------
  @classmethod
  def make_inputs(cls, config, workdir: str):
    return data.make_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Learns the epoch length; warns when an AE/CVAE phase is not one epoch long."""
    super().bind_inputs(inputs)
    for span in self.plan.spans:
      for step, n in span.cycle:
        if step in ("ae", "cvae") and n != self.steps_per_epoch:
          logging.warning("stage %s alternates %s*%d but one epoch is %d batches; the paper "
                          "alternates epoch-wise: set --config.ved.steps_per_epoch=%d",
                          span.name, step, n, self.steps_per_epoch, self.steps_per_epoch)

  def word_embeddings(self, state):
    return state.params["seq"]["embed"]["embedding"]

  def prompt_turns(self) -> int:
    """The hierarchical encoder keeps the last ``data.max_turns`` turns."""
    return int(self.config.data.max_turns)

  def prompt_batch(self, inputs, prompts, label=None):
    """``{"turns": [N, max_turns, max_turn_len], "num_turns": [N]}`` of prompts whose turns
    are joined by ``data.eou``."""
    del label
    eou = self.config.data.eou
    return data.encode_histories(inputs.tokenizer, self.config,
                                 [data.split_turns(p, eou) for p in prompts])

  def generate(self, state, batch, rng, options):
    """Responses to ``batch = {"turns": [B, T, L], "num_turns": [B]}``.

    ``z`` comes from the prior (VHRED: ``z ~ p(z|c)``; collaborative VED:
    ``z = g(eps)``, ``eps ~ p(eps|c)``; HRED: none). The paper decodes with
    beam search, width 5, ``<unk>`` forbidden.
    """
    max_len = options.max_len or int(self.config.data.max_response_len)
    ids = decode.special_ids(self.tokenizer, options.forbid_unk)
    static, temperature = options.split_temperature()
    out = _generate(self.hred, self.latent, self.kind, tuple(sorted(ids.items())), static,
                    max_len, state.params, jnp.asarray(batch["turns"]),
                    jnp.asarray(batch["num_turns"]), rng, temperature)
    return Generation(out.tokens, out.lengths, out.scores)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _generate(hred, latent, kind, ids, options, max_len, params, turns, num_turns, rng,
              temperature):
  options = options.with_temperature(temperature)
  k_z, k_dec = jax.random.split(rng)
  seq = {"params": params["seq"]}
  c = hred.apply(seq, turns, num_turns, method=HRED.encode_context)
  b = c.shape[0]
  if kind == "none":
    z = jnp.zeros((b, hred.latent_dim), c.dtype)
  else:
    lat = {"params": params["latent"]}
    mu, lv = latent.apply(lat, c, method=LatentNets.prior)
    z = losses.gaussian_sample(k_z, mu, lv)
    if kind == "co":
      z = latent.apply(lat, z, method=LatentNets.generate)
  h0 = hred.apply(seq, c, z, method=HRED.initial_state)

  def step(zz, h, tokens):
    return hred.apply(seq, h, tokens, zz, method=HRED.decode_step)

  return decode.conditional(step, z, h0, k_dec, options, b, max_len, dict(ids))
