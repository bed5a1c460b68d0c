"""The MLE LSTM language model: the baseline of the quality-diversity literature
(Kojima et al. Fig. 3 "MLE"; Caccia et al.).

The latent GAN's generator network without ``z`` (zero initial state), trained
by teacher forcing on the same blank-mapped sentences::

    mle                                        trains ("generator",)   stream "train"
        L = -sum_t log p(x_t | x_<t) / #tokens   targets [y.., blank], masked after
                                                 the first blank (the blank counts)

so both models are sampled and scored alike (:mod:`vedgan.papers.latent_gan.sampling`).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vedgan import losses
from vedgan.nn import gan
from vedgan.objective import register
from vedgan.papers.latent_gan.sampling import SentenceObjective, build_generator
from vedgan.steps import Step, Weighted


@register("lstm_lm")
class LSTMLanguageModel(SentenceObjective):
  """Maximum-likelihood LSTM language model on the GAN's sentences (no latent code)."""

  STEPS = ("mle",)

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.generator = build_generator(config, tokenizer, 0)

  def init(self, rng, batch):
    z = jnp.zeros((batch["tokens_in"].shape[0], 0), jnp.float32)
    params = {"generator": self.generator.init({"params": rng}, z, batch["tokens_in"])["params"]}
    return self.new_state(rng, params)

  def steps(self):
    return {"mle": Step(trains=("generator",), loss=self.mle_loss)}

  def nll(self, g_params, batch):
    """Per-sentence NLL sums and token counts, ``([B], [B])`` (targets up to and including
    the first blank)."""
    target = self.real_tokens(batch)
    z = jnp.zeros((target.shape[0], 0), jnp.float32)
    logits = self.generator.apply({"params": g_params}, z, batch["tokens_in"])
    return losses.sequence_cross_entropy(logits, target, gan.prefix_mask(target, self.blank_id))

  def mle_loss(self, params, batch, ctx):
    """The token-mean NLL over all devices' sentences."""
    nll, count = self.nll(params["generator"], batch)
    return Weighted(nll.sum(), count.sum()), {"tokens": ctx.global_sum(count.sum())}

  def eval_step(self, state, batch):
    """Per-device sums ``nll``, ``tokens``, ``examples`` (padding rows weigh 0)."""
    nll, count = self.nll(state.params["generator"], batch)
    w = batch["weight"]
    return {"nll": jnp.sum(w * nll), "tokens": jnp.sum(w * count), "examples": jnp.sum(w)}

  def summarize(self, sums):
    nll = float(sums["nll"]) / max(float(sums["tokens"]), 1.0)
    return {"nll": nll, "perplexity": float(np.exp(nll)), "examples": float(sums["examples"])}
