"""HRED / VHRED baselines and collaborative VED (Shen et al., AAAI 2018).

One objective, three model kinds (``config.model.latent``):

* ``"none"``: HRED, teacher-forced NLL of the response given the context;
* ``"vhred"``: VHRED / CVAE, ``NLL + w * KL(q(z|x,c) || p(z|c))`` (Eq. 2) with
  the paper's baselines as config fields: KL annealing (``ved.kl_anneal_steps``),
  word drop-out (``ved.word_dropout``), bag-of-words loss (``ved.bow_weight``),
  free bits per dimension or for the whole latent (``ved.free_bits``,
  ``ved.free_bits_mode``);
* ``"co"``: collaborative VED. The response encoder gives ``z~ = f_theta(x)``;
  a CVAE over noise ``eps`` with ``z = g(eps)`` models it.

Step functions (``config.stages``):

``joint``
  HRED / VHRED: one update of everything. Collaborative VED: both phases on
  the same batch in one step (the paper's "CO+SS(joint)" ablation): the
  encoder-decoder gets the AE gradient, the latent networks the CVAE gradient.
``cvae``  (Eq. 8)
  ``KL(q(eps|z~,c) || p(eps|c)) + 1/2 ||g(eps) - z~||^2``; gradients only for
  ``params["latent"]`` (prior, posterior, generator); ``params["seq"]`` and its
  optimizer state stay bit-identical.
``ae``  (Eq. 9)
  ``max(alpha, KL(q(eps|z~,c) || p(eps|c))) - log p(x | z, c)`` with
  ``z = z~`` with probability ``p`` (a per-example coin flip) else ``g(eps)``;
  ``p = max(1 - i/k, 0)`` (Eq. 7, ``ved.ss_k``; 0 = no scheduled sampling, p = 0),
  ``i`` = AE-phase steps done in the stage, derived from the global step and
  the stage's cycle. Gradients only for ``params["seq"]``; the latent networks
  are fixed.

Phases alternate epoch-wise as the stage cycle ``"ae*N,cvae*N"`` with ``N`` =
batches per epoch (``bind_inputs`` logs a warning when ``N`` differs from the
data's epoch length; set ``ved.steps_per_epoch`` in the config to match).

Batches are hierarchical (:func:`vedgan.data.pipeline.encode_dialogues`):
``turns[B, T, L]`` (the context, oldest first), ``num_turns[B]``,
``response_in/out[B, Lr]`` (the last turn), ``weight[B]``. Each example's
context is cut so that context and response hold at most ``data.slice_words``
words (the paper's 80-word slices).

Evaluation (Table 1): ``perplexity`` (exp of the per-token reconstruction NLL,
``z`` from the posterior), ``kl`` (per response), ``nll_bound`` (reconstruction
NLL + KL per response: the ELBO bound averaged over the slices), plus the
posterior-collapse diagnostics ``active_units``, ``mutual_information`` and
``kl_max_dim``. :func:`evaluate_run` adds the embedding metrics (Table 2) and
the prior/posterior projection plot (Fig. 3)::

    python -m vedgan.objectives.collaborative_ved --workdir RUN [--word_vectors w2v.bin]
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vedgan import configlib, decode, losses, parallel, schedules
from vedgan.errors import ConfigError
from vedgan.metrics import collapse
from vedgan.metrics.likelihood import token_nll
from vedgan.nn.hred import HRED, LatentNets
from vedgan.objectives import base
from vedgan.plots import Panel

LATENT_KINDS = ("none", "vhred", "co")


# -- pure pieces (tested directly) -------------------------------------------------


def phase_steps_before(step, start: int, cycle, name: str):
  """Steps of phase ``name`` the stage ran before global ``step`` (the ``i`` of Eq. 7).

  ``cycle``: ``[(step_name, count), ...]`` of the stage (see
  :func:`vedgan.configlib.parse_cycle`). Works on ints and traced arrays.

  ``phase_steps_before(250, 0, [("ae", 100), ("cvae", 100)], "ae") == 150``.
  """
  period = sum(n for _, n in cycle)
  per_period = sum(n for s, n in cycle if s == name)
  pos = jnp.asarray(step) - start
  count = (pos // period) * per_period
  rem = pos % period
  offset = 0
  for s, n in cycle:
    if s == name:
      count = count + jnp.clip(rem - offset, 0, n)
    offset += n
  return count


def scheduled_sampling_mix(key, z_tilde, z_cvae, keep_rate):
  """Per-example coin flip: ``z~`` with probability ``keep_rate``, else the CVAE's ``z``.

  Returns ``(z[B, D], use_real[B] bool)``.
  """
  use_real = jax.random.bernoulli(key, keep_rate, z_tilde.shape[:1])
  return jnp.where(use_real[:, None], z_tilde, z_cvae), use_real


def kl_penalty(kl_per_dim, free_bits: float, mode: str):
  """The KL term of the VHRED baselines from ``kl_per_dim[B, D]``: a ``[B]`` array.

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


# -- model forward passes (as flax ``method=`` callables) ---------------------------


def _encode(m: HRED, turns, num_turns, response_out):
  c = m.encode_context(turns, num_turns)
  h_x = m.encode_response(response_out)
  return c, h_x, m.code_of(h_x)


def _decode(m: HRED, c, z, response_in, with_bow: bool):
  logits = m.decode(c, z, response_in)
  return logits, (m.bow_logits(c, z) if with_bow else None)


def _prior_posterior(m: LatentNets, x_code, c):
  return m.prior(c), m.posterior(x_code, c)


def _dtype(m):
  """``model.dtype`` (float32 | bfloat16) as a jnp dtype; unknown names are a ConfigError."""
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  name = m.get("dtype", "float32")
  if name not in dtypes:
    raise ConfigError(f"model.dtype={name!r} must be one of {sorted(dtypes)}")
  return dtypes[name]


@base.register("collaborative_ved")
class CollaborativeVED(base.Objective):
  """HRED, VHRED (+KLA/DO/BOW/FB) and collaborative VED (+DO/SS/joint)."""

  STEPS = ("joint", "ae", "cvae")
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
    self.kind = m.latent
    self.hred = HRED(vocab_size=tokenizer.vocab_size, embed_dim=m.embed_dim,
                     utterance_hidden=m.utterance_hidden, context_hidden=m.context_hidden,
                     decoder_hidden=m.decoder_hidden, latent_dim=m.latent_dim,
                     unroll=m.get("unroll", 1), remat=m.get("remat", False),
                     dtype=_dtype(m))
    self.latent = LatentNets(latent_dim=m.latent_dim, hidden=m.estimator_hidden,
                             softplus_variance=self.kind == "co")
    self.tx = base.make_optimizer(config.optimizer)
    self.ved = config.ved
    self.steps_per_epoch = None
    for name, stage in configlib.ordered_stages(config):
      steps = {s for s, _ in configlib.parse_cycle(stage.step)}
      if self.kind != "co" and steps & {"ae", "cvae"}:
        raise ConfigError(f"config.stages.{name} uses the ae/cvae phases, which only "
                          f"model.latent='co' has (this config has {self.kind!r}); use 'joint'")

  # -- data -----------------------------------------------------------------------
  @classmethod
  def make_inputs(cls, config, workdir: str):
    return make_dialogue_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Learns the epoch length; warns when an AE/CVAE cycle is not epoch-wise."""
    self.steps_per_epoch = int(inputs.train.num_batches_per_epoch)
    for name, stage in configlib.ordered_stages(self.config):
      cycle = configlib.parse_cycle(stage.step)
      for step, n in cycle:
        if step in ("ae", "cvae") and n != self.steps_per_epoch:
          logging.warning("stage %s alternates %s*%d but one epoch is %d batches; the paper "
                          "alternates epoch-wise: set --config.ved.steps_per_epoch=%d",
                          name, step, n, self.steps_per_epoch, self.steps_per_epoch)

  def word_embeddings(self, state):
    return state.params["seq"]["embed"]["embedding"]

  # -- state ------------------------------------------------------------------------
  def init(self, rng, batch) -> base.TrainState:
    k_seq, k_lat = jax.random.split(rng)
    seq = self.hred.init({"params": k_seq}, batch["turns"], batch["num_turns"],
                         batch["response_in"], batch["response_out"])["params"]
    d = self.config.model.latent_dim
    b = batch["response_in"].shape[0]
    x_dim = d if self.kind == "co" else self.config.model.utterance_hidden
    lat = self.latent.init({"params": k_lat}, jnp.zeros((b, x_dim)),
                           jnp.zeros((b, self.config.model.context_hidden)))["params"]
    params = {"seq": seq, "latent": lat}
    return base.TrainState(step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                           params=params,
                           opt_state={k: self.tx.init(v) for k, v in params.items()})

  # -- forward terms ------------------------------------------------------------------
  def _decoder_inputs(self, batch, key, train: bool):
    tokens = batch["response_in"]
    rate = float(self.ved.word_dropout)
    if not train or rate <= 0:
      return tokens
    keep_first = jnp.arange(tokens.shape[1])[None, :] > 0
    return losses.word_dropout(key, tokens, rate, self.tokenizer.unk_id,
                               (tokens != 0) & keep_first)

  def vhred_terms(self, params, batch, key, train: bool, kl_weight=1.0):
    """Per-example terms of HRED / VHRED: ``nll``, ``tokens``, ``kl``, ``kl_term``, ``bow``.

    Also the posterior ``mean``/``logvar`` (for the collapse diagnostics).
    """
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

  def co_terms(self, params, batch, key, train: bool, keep_rate=0.0):
    """Per-example terms of collaborative VED for both phases.

    ``ae_loss = max(alpha, KL) + nll`` (Eq. 9) and ``cvae_loss = KL + 1/2||g(eps) - z~||^2``
    (Eq. 8, ``z~`` a constant there); ``kl_term = max(alpha, KL)``; ``use_real``
    marks the examples whose decoder got ``z~`` (scheduled sampling).
    """
    k_eps, k_coin, k_drop = jax.random.split(key, 3)
    c, _, z_tilde = self.hred.apply({"params": params["seq"]}, batch["turns"],
                                    batch["num_turns"], batch["response_out"], method=_encode)
    (mu_p, lv_p), (mu_q, lv_q) = self.latent.apply({"params": params["latent"]}, z_tilde, c,
                                                   method=_prior_posterior)
    eps = losses.gaussian_sample(k_eps, mu_q, lv_q)
    z_cvae = self.latent.apply({"params": params["latent"]}, eps, method=LatentNets.generate)
    kl_dim = losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    kl = kl_dim.sum(-1)
    recon_z = losses.gaussian_reconstruction_loss(z_cvae, jax.lax.stop_gradient(z_tilde))
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
            "recon_z": recon_z, "ae_loss": kl_term + nll, "cvae_loss": kl + recon_z,
            "use_real": use_real.astype(jnp.float32), "mean": mu_q, "logvar": lv_q}

  # -- training ---------------------------------------------------------------------
  @property
  def step_builders(self):
    return {"joint": self.build_joint_step, "ae": functools.partial(self.build_co_step, ("ae",)),
            "cvae": functools.partial(self.build_co_step, ("cvae",))}

  def keep_rate_fn(self, stage, start: int):
    """``step -> p`` of Eq. 7 for a stage (0 without scheduled sampling)."""
    k = float(self.ved.ss_k)
    cycle = configlib.parse_cycle(stage.step)
    phase = "ae" if any(s == "ae" for s, _ in cycle) else "joint"
    if k <= 0:
      return lambda step: jnp.float32(0.0)
    sched = schedules.linear_keep_rate(k)
    return lambda step: sched(phase_steps_before(step, start, cycle, phase))

  def _update(self, state, grads, stage, start, names):
    lr = base.learning_rate_fn(stage)(state.step - start)
    params, opt_state = dict(state.params), dict(state.opt_state)
    for name in names:
      params[name], opt_state[name] = base.apply_updates(self.tx, grads[name], opt_state[name],
                                                         params[name], lr)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), lr

  def build_joint_step(self, stage, start: int):
    if self.kind == "co":
      return self.build_co_step(("ae", "cvae"), stage, start)
    anneal = int(self.ved.kl_anneal_steps)
    kl_weight_fn = (schedules.linear_kl_anneal(anneal) if anneal > 0
                    else (lambda s: jnp.float32(1.0)))
    names = ("seq",) if self.kind == "none" else ("seq", "latent")

    def step(state, batch):
      key = parallel.device_rng(state.step_key())
      kl_weight = kl_weight_fn(state.step - start)
      n_global = jnp.maximum(parallel.psum(batch["weight"].sum()), 1.0)

      def loss_fn(trainable):
        params = dict(state.params, **trainable)
        t = self.vhred_terms(params, batch, key, True, kl_weight)
        return (t["loss"] * batch["weight"]).sum() / n_global, t

      trainable = {n: state.params[n] for n in names}
      grads, t = jax.grad(loss_fn, has_aux=True)(trainable)
      grads = parallel.psum(grads)
      new_state, lr = self._update(state, grads, stage, start, names)
      w = batch["weight"]
      sums = parallel.psum({k: (t[k] * w).sum() for k in ("loss", "nll", "tokens", "kl", "bow")})
      metrics = {"loss": sums["loss"] / n_global, "nll": sums["nll"] / sums["tokens"],
                 "kl": sums["kl"] / n_global, "bow": sums["bow"] / n_global,
                 "kl_weight": kl_weight, "grad_norm": base.global_norm(grads),
                 "learning_rate": lr}
      return new_state, metrics

    return step

  def build_co_step(self, phases, stage, start: int):
    """Collaborative VED step: ``("ae",)``, ``("cvae",)`` or both (joint)."""
    if self.kind != "co":
      raise ConfigError("the ae/cvae steps need model.latent='co'")
    keep_rate_fn = self.keep_rate_fn(stage, start)
    owner = {"ae": ("seq", "ae_loss"), "cvae": ("latent", "cvae_loss")}

    def step(state, batch):
      key = parallel.device_rng(state.step_key())
      p = keep_rate_fn(state.step)
      n_global = jnp.maximum(parallel.psum(batch["weight"].sum()), 1.0)
      grads, t = {}, None
      for phase in phases:
        name, loss_key = owner[phase]

        def loss_fn(sub, name=name, loss_key=loss_key):
          params = dict(state.params, **{name: sub})
          terms = self.co_terms(params, batch, key, True, p)
          return (terms[loss_key] * batch["weight"]).sum() / n_global, terms

        grads[name], t = jax.grad(loss_fn, has_aux=True)(state.params[name])
      grads = parallel.psum(grads)
      new_state, lr = self._update(state, grads, stage, start, tuple(grads))
      w = batch["weight"]
      sums = parallel.psum({k: (t[k] * w).sum() for k in
                            ("ae_loss", "cvae_loss", "nll", "tokens", "kl", "recon_z",
                             "use_real")})
      metrics = {"loss": sums["ae_loss" if "ae" in phases else "cvae_loss"] / n_global,
                 "nll": sums["nll"] / sums["tokens"], "kl": sums["kl"] / n_global,
                 "recon_z": sums["recon_z"] / n_global, "keep_rate": p,
                 "ss_real_fraction": sums["use_real"] / n_global,
                 "grad_norm": base.global_norm(grads), "learning_rate": lr}
      return new_state, metrics

    return step

  # -- evaluation -------------------------------------------------------------------
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
    """Table 1 scalars: ``perplexity``, ``kl``, ``nll_bound`` (+ diagnostics)."""
    n = max(float(sums["examples"]), 1.0)
    tokens = max(float(sums["tokens"]), 1.0)
    nll, kl = float(sums["nll"]), float(sums["kl"])
    out = {"perplexity": math.exp(min(nll / tokens, 50.0)), "kl": kl / n,
           "nll_bound": (nll + kl) / n, "recon_nll": nll / n, "nll_per_token": nll / tokens,
           "elbo_perplexity": math.exp(min((nll + kl) / tokens, 50.0)), "examples": n}
    if self.kind != "none":
      mean = np.asarray(sums["mean_sum"], np.float64) / n
      var = (np.asarray(sums["mean_sq_sum"], np.float64) - n * mean ** 2) / max(n - 1.0, 1.0)
      out["active_units"] = float((var > 0.01).sum())
      out["mutual_information"] = float(sums["mi"]) / n
      out["kl_max_dim"] = float(np.max(np.asarray(sums["kl_dim"], np.float64) / n))
    return out

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """``latent_kl_per_dim.png``: the validation KL(q || p) of each latent dimension and
    the variance over examples of each dimension's posterior mean (a unit is active when
    it exceeds 0.01, Burda et al. 2016), on ``train.eval_batches`` batches. HRED: none."""
    del stage
    if self.kind == "none":
      return []
    fn = _jitted_latent_terms(self)
    kl, means = [], []
    for batch in inputs.validation_batches(self.config, int(self.config.train.eval_batches)):
      needed = {k: jnp.asarray(batch[k]) for k in ("turns", "num_turns", "response_out")}
      kl_dim, mean = jax.device_get(fn(state.params, needed))
      w = np.asarray(batch["weight"], np.float64)
      kl.append(np.asarray(kl_dim, np.float64)[w > 0])
      means.append(np.asarray(mean, np.float64)[w > 0])
    kl, means = np.concatenate(kl), np.concatenate(means)
    if len(kl) < 2:
      return []
    from vedgan import plots  # pylint: disable=import-outside-toplevel
    kl_mean, variance = kl.mean(0), means.var(0, ddof=1)
    active = variance > 0.01
    dims = np.arange(len(kl_mean))
    fig, axes = plots.new_figure((max(5.0, 0.18 * len(dims) + 2.0), 3.6))
    ax = axes[0, 0]
    ax.bar(dims, kl_mean, color=np.where(active, "C0", "0.7"))
    ax.set_xlabel("latent dimension (grey: inactive)")
    ax.set_ylabel("KL(q || p) [nats]")
    ax.set_title(f"KL per dimension: {int(active.sum())}/{len(dims)} active units\n"
                 f"({len(kl)} validation examples)", fontsize=10)
    right = ax.twinx()
    right.plot(dims, variance, "k.", label="Var[E_q z]")
    right.axhline(0.01, color="k", lw=0.6, ls=":")
    right.set_yscale("log")
    right.set_ylabel("variance of the posterior mean")
    return [plots.save_figure(fig, os.path.join(out_dir, "latent_kl_per_dim.png"))]

  # -- generation -------------------------------------------------------------------
  def generate(self, state, context, rng=None, mode: str = "beam", max_len: int | None = None,
               temperature: float = 1.0, top_k: int = 0, beam_width: int = 5,
               length_penalty: float = 0.0, forbid_unk: bool = True) -> decode.DecodeOutput:
    """Responses to ``context`` = ``{"turns": [B, T, L], "num_turns": [B]}`` (or ``turns``).

    ``z`` comes from the prior (VHRED: ``z ~ p(z|c)``; collaborative VED:
    ``z = g(eps)``, ``eps ~ p(eps|c)``; HRED: none). The paper decodes with
    beam search, width 5, ``<unk>`` forbidden.
    """
    if isinstance(context, dict):
      turns, num_turns = context["turns"], context["num_turns"]
    else:
      turns = context
      num_turns = (np.asarray(context) != 0).any(-1).sum(-1).astype(np.int32)
    t = self.tokenizer
    ids = (t.bos_id, t.eos_id, t.pad_id,
           (t.pad_id, t.bos_id) + ((t.unk_id,) if forbid_unk else ()))
    max_len = max_len or int(self.config.data.max_response_len)
    return _generate(self.hred, self.latent, self.kind, ids, mode, max_len, top_k, beam_width,
                     length_penalty, temperature, state.params, jnp.asarray(turns),
                     jnp.asarray(num_turns), jax.random.key(0) if rng is None else rng)

  def sample_texts(self, state, inputs, step: int):
    examples = list(getattr(inputs, "sample_examples", []))
    if not examples:
      return []
    d = self.config.decode
    ctx = inputs.encode_dialogue_contexts(self.config, [h for h, _ in examples])
    out = self.generate(state, ctx, rng=jax.random.key(step), mode=d.mode,
                        temperature=d.temperature, top_k=d.top_k, beam_width=d.beam_width,
                        length_penalty=d.length_penalty, forbid_unk=d.forbid_unk)
    tokens = np.asarray(jax.device_get(out.tokens))
    eou = f" {self.config.data.eou} "
    return [(eou.join(h), inputs.tokenizer.decode(tok.tolist()))
            for (h, _), tok in zip(examples, tokens)]

  # -- latent samples (Fig. 3) ------------------------------------------------------
  def latent_samples(self, state, context, responses, key, num: int = 10):
    """``(prior[num*R, D], posterior[num*R, D])`` latent codes for one context.

    ``context``: ``{"turns": [1, T, L], "num_turns": [1]}``; ``responses``:
    ``response_out[R, Lr]``. Posterior: ``num`` samples per response; prior:
    ``num * R`` samples given the context only (the paper: 10 responses x 10).
    Collaborative VED codes are ``g(eps)``.
    """
    r = responses.shape[0]
    turns = jnp.repeat(jnp.asarray(context["turns"]), r, axis=0)
    num_turns = jnp.repeat(jnp.asarray(context["num_turns"]), r, axis=0)
    c, h_x, z_tilde = self.hred.apply({"params": state.params["seq"]}, turns, num_turns,
                                      jnp.asarray(responses), method=_encode)
    x_code = z_tilde if self.kind == "co" else h_x
    (mu_p, lv_p), (mu_q, lv_q) = self.latent.apply({"params": state.params["latent"]}, x_code,
                                                   c, method=_prior_posterior)
    k_p, k_q = jax.random.split(key)
    prior = losses.gaussian_sample(k_p, jnp.repeat(mu_p, num, 0), jnp.repeat(lv_p, num, 0))
    post = losses.gaussian_sample(k_q, jnp.repeat(mu_q, num, 0), jnp.repeat(lv_q, num, 0))
    if self.kind == "co":
      gen = lambda e: self.latent.apply({"params": state.params["latent"]}, e,
                                        method=LatentNets.generate)
      prior, post = gen(prior), gen(post)
    return prior, post


@functools.lru_cache(maxsize=8)
def _jitted_latent_terms(objective: CollaborativeVED):
  """jit ``(params, batch) -> (kl_dim [B, D], posterior mean [B, D])``: the encoders and
  the prior / posterior nets only (the same KL as :meth:`CollaborativeVED.eval_step`,
  without running the decoder)."""

  @jax.jit
  def fn(params, batch):
    c, h_x, z_tilde = objective.hred.apply({"params": params["seq"]}, batch["turns"],
                                           batch["num_turns"], batch["response_out"],
                                           method=_encode)
    code = z_tilde if objective.kind == "co" else h_x
    (mu_p, lv_p), (mu_q, lv_q) = objective.latent.apply({"params": params["latent"]}, code, c,
                                                       method=_prior_posterior)
    return losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p), mu_q

  return fn


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 7, 8))
def _generate(hred, latent, kind, ids, mode, max_len, top_k, beam_width, length_penalty,
              temperature, params, turns, num_turns, rng):
  bos, eos, pad, forbid = ids
  k_z, k_dec = jax.random.split(rng)
  seq = {"params": params["seq"]}
  c = hred.apply(seq, turns, num_turns, method=HRED.encode_context)
  b = c.shape[0]
  d = hred.latent_dim
  if kind == "none":
    z = jnp.zeros((b, d), c.dtype)
  else:
    lat = {"params": params["latent"]}
    mu, lv = latent.apply(lat, c, method=LatentNets.prior)
    z = losses.gaussian_sample(k_z, mu, lv)
    if kind == "co":
      z = latent.apply(lat, z, method=LatentNets.generate)
  h0 = hred.apply(seq, c, z, method=HRED.initial_state)
  carry = (h0, z)
  if mode == "beam":
    carry = decode.tile_for_beam(carry, beam_width)

  def step_fn(carry, tokens):
    h, zz = carry
    h, logits = hred.apply(seq, h, tokens, zz, method=HRED.decode_step)
    return (h, zz), logits

  common = dict(batch_size=b, max_len=max_len, bos_id=bos, eos_id=eos, pad_id=pad,
                forbid_ids=forbid)
  return decode.run(mode, step_fn, carry, k_dec, temperature=temperature, top_k=top_k,
                    beam_width=beam_width, length_penalty=length_penalty, **common)


# -- data ---------------------------------------------------------------------------------


def slice_examples(examples, slice_words: int):
  """Cuts each ``(turns, response)`` to an ``slice_words``-word slice (oldest turns dropped).

  The paper feeds dialogues as 80-word slices; here a training example is the
  response plus as many of the most recent turns as fit in ``slice_words``
  words (at least one turn). ``slice_words = 0`` keeps everything.
  """
  if slice_words <= 0:
    return list(examples)
  out = []
  for turns, response in examples:
    budget = slice_words - len(response.split())
    kept = []
    for turn in reversed(list(turns)):
      n = len(turn.split())
      if kept and n > budget:
        break
      kept.append(turn)
      budget -= n
    out.append((kept[::-1], response))
  return out


@dataclasses.dataclass
class DialogueInputs:
  """:class:`vedgan.data.inputs.Inputs` for hierarchical batches.

  Attributes:
    tokenizer, train, validation, counts: as in ``Inputs`` (``validation`` is
      an ``EncodedDialogues``).
    sample_examples: a few raw ``(turns, response)`` validation examples.
    sample_pairs: the same as ``(" <eou> ".join(turns), response)`` strings.
  """
  tokenizer: object
  train: object
  validation: object
  sample_examples: list
  sample_pairs: list
  counts: dict
  validation_examples: list = dataclasses.field(default_factory=list)

  def validation_batches(self, config, max_batches: int = 0):
    from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel
    it = pipeline.BatchIterator(self.validation, config.train.eval_batch_size,
                                tuple(config.data.buckets), seed=config.seed, shuffle=False,
                                process_index=jax.process_index(),
                                process_count=jax.process_count(), drop_remainder=False,
                                repeat=False, turn_buckets=tuple(config.data.turn_buckets))
    for i, batch in enumerate(it):
      if max_batches and i >= max_batches:
        break
      yield batch

  def encode_dialogue_contexts(self, config, histories):
    """Lists of turns -> ``{"turns": [N, max_turns, max_turn_len], "num_turns": [N]}``."""
    max_t, max_l = int(config.data.max_turns), int(config.data.max_turn_len)
    turns = np.zeros((len(histories), max_t, max_l), np.int32)
    num = np.zeros((len(histories),), np.int32)
    for i, history in enumerate(histories):
      ids = [self.tokenizer.encode(t)[:max_l] for t in history]
      ids = [x for x in ids if x][-max_t:] or [[self.tokenizer.unk_id]]
      for j, row in enumerate(ids):
        turns[i, j, :len(row)] = row
      num[i] = len(ids)
    return {"turns": turns, "num_turns": num}

  def encode_contexts(self, config, contexts):
    """``" <eou> "``-joined context strings -> the dict of :meth:`encode_dialogue_contexts`."""
    eou = config.data.eou
    return self.encode_dialogue_contexts(
        config, [[t.strip() for t in c.split(eou) if t.strip()] for c in contexts])


def load_examples(config, split: str):
  """``(turns, response)`` string examples of ``split``, cut to ``data.slice_words``."""
  from vedgan.data import sources  # pylint: disable=import-outside-toplevel
  records = sources.load_split(config.data, split)
  examples = sources.dialogue_examples(records, int(config.data.max_turns))
  return slice_examples(examples, int(config.data.slice_words))


def make_dialogue_inputs(config, workdir: str):
  """Hierarchical inputs of a run: ``(DialogueInputs, tokenizer_is_new)``."""
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  train_ex = load_examples(config, "train")
  val_ex = load_examples(config, config.data.get("validation_split", "validation"))
  texts = [(r,) for _, r in train_ex] + [(h[0],) for h, _ in train_ex if h]
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, texts)
  d = config.data
  enc = functools.partial(pipeline.encode_dialogues, tokenizer=tok, max_turns=int(d.max_turns),
                          max_turn_len=int(d.max_turn_len),
                          max_response_len=int(d.max_response_len), too_long=d.too_long)
  train_enc, val_enc = enc(train_ex), enc(val_ex)
  train_it = pipeline.BatchIterator(train_enc, config.train.batch_size, tuple(d.buckets),
                                    seed=config.seed, shuffle=True,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count(),
                                    turn_buckets=tuple(d.turn_buckets))
  counts = {"train": train_enc.counts, "validation": val_enc.counts}
  for split, c in counts.items():
    inputs_lib.log_counts(f"{inputs_lib.dataset_label(d)} {split} (dialogues)", c)
  n = max(int(config.train.num_samples), 0)
  samples = val_ex[:n]
  eou = f" {d.eou} "
  return DialogueInputs(tok, train_it, val_enc, samples,
                        [(eou.join(h), r) for h, r in samples], counts, val_ex), is_new


# -- evaluation of a finished run (Table 1, Table 2, Fig. 3) ------------------------------


def evaluate_run(workdir: str, word_vectors: str | None = None, num_contexts: int = 0,
                 batch_size: int = 0, plot_context: int = -1, seed: int = 0) -> dict:
  """Table 1 + Table 2 + Fig. 3 for the latest checkpoint of ``workdir``.

  Decodes the validation contexts with ``config.decode`` (the paper: beam 5,
  ``<unk>`` forbidden), scores them against the references with Embedding
  Average / Greedy / Extrema (``word_vectors``: a word2vec/GloVe/fastText file
  as in the paper, on words; default the model's input embeddings, on token
  ids), and plots a 2-D PCA projection of 100 prior vs 100 posterior latent
  samples for one context (``plot_context``; -1 = the validation context with
  the most responses sharing it, up to 10). Writes
  ``WORKDIR/eval/collaborative_ved.json`` and ``eval/latent_projection.png``.
  """
  from vedgan import eval_suites, metrics, train  # pylint: disable=import-outside-toplevel
  from vedgan.metrics import _plotting  # pylint: disable=import-outside-toplevel

  workdir, config = eval_suites.load_run_config(workdir)
  config.train.eval_batches = 0
  trainer = train.Trainer(config, workdir)
  trainer.setup(write=False)
  try:
    obj, state, inputs = trainer.objective, trainer.state, trainer.inputs
    table1 = {k: float(v) for k, v in trainer.evaluate().items()}
    examples = inputs.validation_examples
    if num_contexts:
      examples = examples[:num_contexts]
    tok = inputs.tokenizer
    examples = [(h, r) for h, r in examples if tok.encode(r)]
    bsz = int(batch_size) or int(config.train.eval_batch_size)
    d = config.decode
    hyps = []
    for b, start in enumerate(range(0, len(examples), bsz)):
      chunk = [h for h, _ in examples[start:start + bsz]]
      rows = len(chunk)
      chunk = chunk + [chunk[0]] * (bsz - rows)
      ctx = inputs.encode_dialogue_contexts(config, chunk)
      out = obj.generate(state, ctx, rng=jax.random.fold_in(jax.random.key(seed), b),
                         mode=d.mode, temperature=d.temperature, top_k=d.top_k,
                         beam_width=d.beam_width, length_penalty=d.length_penalty,
                         forbid_unk=d.forbid_unk)
      for row in np.asarray(jax.device_get(out.tokens))[:rows].tolist():
        ids = []
        for t in row:
          if t == tok.eos_id:
            break
          if t not in (tok.pad_id, tok.bos_id):
            ids.append(int(t))
        hyps.append(ids)
    if word_vectors:
      words = lambda s: s.lower().split()
      hyp_w = [words(tok.decode(h)) for h in hyps]
      ref_w = [words(r) for _, r in examples]
      vectors = metrics.load_word_vectors(word_vectors,
                                          vocabulary={w for s in hyp_w + ref_w for w in s})
      report = metrics.embedding_report(hyp_w, ref_w, vectors, tokenization="lowercase words")
    else:
      table = np.asarray(jax.device_get(obj.word_embeddings(state)), np.float32)
      vectors = metrics.WordVectors(table, None, source="model input embedding table")
      refs = [tok.encode(r) for _, r in examples]
      report = metrics.embedding_report(hyps, refs, vectors,
                                        ignore=(tok.pad_id, tok.bos_id, tok.eos_id),
                                        tokenization=f"token ids {tok.fingerprint[:16]}")
    table2 = {k: float(report.details[k]) for k in ("average", "greedy", "extrema")}
    result = {"step": int(trainer.step), "variant_objective": config.model.latent,
              "table1": table1, "table2": table2, "num_contexts": len(examples),
              "word_vectors": word_vectors or "model embeddings",
              "decode": {"mode": d.mode, "beam_width": int(d.beam_width),
                         "forbid_unk": bool(d.forbid_unk)}}
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    if obj.kind != "none":
      result["plot"] = _plot_latents(obj, state, inputs, config, examples, plot_context,
                                     os.path.join(workdir, "eval", "latent_projection.png"),
                                     seed, _plotting)
    with open(os.path.join(workdir, "eval", "collaborative_ved.json"), "w",
              encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    return result
  finally:
    trainer.close()


def _plot_latents(obj, state, inputs, config, examples, plot_context, path, seed, plotting):
  """Fig. 3: PCA of prior (red) vs posterior (blue) latent samples for one context."""
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel
  if plot_context < 0:  # the context whose first turn has the most distinct responses
    groups: dict = {}
    for h, r in examples:
      groups.setdefault(tuple(h), []).append(r)
    history, responses = max(groups.items(), key=lambda kv: len(set(kv[1])))
    responses = list(dict.fromkeys(responses))[:10]
  else:
    history, response = examples[plot_context]
    responses = [response]
  history = list(history)
  ctx = inputs.encode_dialogue_contexts(config, [history])
  ctx = {k: v[:1] for k, v in ctx.items()}
  width = int(config.data.max_response_len)
  rows = [np.asarray(inputs.tokenizer.encode(r)[:width - 1], np.int32) for r in responses]
  _, resp_out = pipeline._decoder_rows(rows, width)  # pylint: disable=protected-access
  per = max(100 // len(responses), 1)
  prior, post = obj.latent_samples(state, ctx, resp_out, jax.random.key(seed), num=per)
  both = np.concatenate([np.asarray(prior), np.asarray(post)], 0).astype(np.float64)
  centred = both - both.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  xy = centred @ vt[:2].T
  n = prior.shape[0]
  fig, ax = plotting.new_figure((5, 5))
  ax.scatter(xy[:n, 0], xy[:n, 1], c="red", s=8, label="prior p(z|c)")
  ax.scatter(xy[n:, 0], xy[n:, 1], c="blue", s=8, label=f"posterior ({len(responses)} responses)")
  ax.set_title(" | ".join(history)[-60:], fontsize=8)
  ax.legend(fontsize=7)
  plotting.save(fig, path)
  return {"path": path, "context": history, "responses": responses}


def main(argv=None):
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description="Collaborative VED Table 1/2 and Fig. 3 of a run.")
  p.add_argument("--workdir", required=True)
  p.add_argument("--word_vectors", default=None)
  p.add_argument("--num_contexts", type=int, default=0)
  p.add_argument("--batch_size", type=int, default=0)
  p.add_argument("--plot_context", type=int, default=-1)
  args = p.parse_args(argv)
  res = evaluate_run(args.workdir, args.word_vectors, args.num_contexts, args.batch_size,
                     args.plot_context)
  print(json.dumps({k: res[k] for k in ("step", "table1", "table2")}, indent=1))


if __name__ == "__main__":
  main()
