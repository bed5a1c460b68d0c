"""Likelihood metrics -- NLL, perplexity, KL and the ELBO bound -- from sums.

Every metric here is a ratio of sums, so it is computed in two steps:

1. inside the (jit / shard_map) eval step, :func:`likelihood_stats` turns a
   batch into a dict of scalar **sums** (``nll_sum``, ``kl_sum``,
   ``num_tokens``, ``num_sequences``);
2. on the host, the sums of all batches and all devices are added
   (:func:`accumulate`, in float64; inside ``shard_map`` use
   ``jax.lax.psum(stats, "data")``) and :func:`finalize_likelihood` divides.

Because only sums cross device and batch boundaries, the result does not
depend on how the data was split (unlike averaging per-device means over
unequal shards or masked padding).

Definitions, with ``nll_t = -log p(x_t | x_<t, ...)`` for every real (mask 1)
target token and ``kl_i = KL(q(z|x_i) || p(z))`` per sequence:

* ``nll_per_token = sum nll_t / num_tokens``; ``perplexity = exp`` of it.
* ``nll_per_sequence = sum nll_t / num_sequences``.
* ``kl = sum kl_i / num_sequences``.
* ELBO bound for latent-variable models: ``-log p(x) <= E_q[-log p(x|z)] +
  KL``, so ``elbo_nll = (sum nll_t + sum kl_i) / num_sequences`` (per
  sequence, as the collaborative VED paper reports NLL), and
  ``elbo_nll_per_token = (sum nll_t + sum kl_i) / num_tokens`` with
  ``elbo_perplexity = exp`` of it -- upper bounds on the true values when the
  reconstruction term is estimated with z ~ q(z|x).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

STAT_KEYS = ("nll_sum", "kl_sum", "num_tokens", "num_sequences")


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token negative log-likelihood.

  Args:
    logits: float [..., V] unnormalised scores.
    targets: int [...] target ids.
  Returns:
    float32 [...]: ``-log softmax(logits)[target]`` (not masked).
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32),
                              axis=-1)[..., 0]


def likelihood_stats(token_nll: jax.Array, mask: jax.Array,
                     kl: jax.Array | None = None,
                     sequence_mask: jax.Array | None = None
                     ) -> dict[str, jax.Array]:
  """Summed statistics of one batch (jit / vmap / shard_map safe).

  Args:
    token_nll: float [B, T] per-token NLL (e.g. from :func:`token_nll`).
    mask: [B, T], 1 for real target tokens, 0 for padding.
    kl: optional float [B], KL(q(z|x) || p(z)) of each sequence summed over
      latent dimensions (and, for hierarchical models, over utterances).
    sequence_mask: optional [B], 1 for real sequences; defaults to
      "has at least one real token" (so all-padding rows do not count).
  Returns:
    dict of float32 scalars ``nll_sum``, ``kl_sum`` (0 without ``kl``),
    ``num_tokens``, ``num_sequences``.
  """
  mask = mask.astype(jnp.float32)
  if sequence_mask is None:
    sequence_mask = (jnp.sum(mask, axis=-1) > 0)
  sequence_mask = sequence_mask.astype(jnp.float32)
  nll_sum = jnp.sum(token_nll.astype(jnp.float32) * mask)
  kl_sum = (jnp.zeros((), jnp.float32) if kl is None
            else jnp.sum(kl.astype(jnp.float32) * sequence_mask))
  return {"nll_sum": nll_sum, "kl_sum": kl_sum,
          "num_tokens": jnp.sum(mask), "num_sequences": jnp.sum(sequence_mask)}


def accumulate(total: Mapping[str, Any] | None,
               stats: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Adds batch statistics into a float64 host-side running total.

  Works for any dict of summed statistics (this module's, the classifier's,
  the collapse diagnostics'): values are added elementwise.

  Args:
    total: previous total or None to start.
    stats: dict of arrays (device or host).
  Returns:
    a new dict of float64 numpy arrays.
  """
  stats = {k: np.asarray(jax.device_get(v), np.float64) for k, v in stats.items()}
  if total is None:
    return stats
  if set(total) != set(stats):
    raise ValueError(f"keys differ: {sorted(total)} vs {sorted(stats)}")
  return {k: np.asarray(total[k], np.float64) + stats[k] for k in stats}


def finalize_likelihood(stats: Mapping[str, Any]) -> dict[str, float]:
  """Ratios from summed statistics (see module docstring for definitions).

  Returns:
    dict of Python floats: ``nll_per_token``, ``perplexity``,
    ``nll_per_sequence``, ``kl``, ``elbo_nll``, ``elbo_nll_per_token``,
    ``elbo_perplexity``, ``num_tokens``, ``num_sequences``.  Ratios with a
    zero denominator are NaN.
  """
  s = {k: float(np.asarray(jax.device_get(stats[k]), np.float64))
       for k in STAT_KEYS}

  def div(a, b):
    return a / b if b else math.nan

  def exp(x):
    if math.isnan(x):
      return math.nan
    return math.exp(x) if x < 709.0 else math.inf

  nll_tok = div(s["nll_sum"], s["num_tokens"])
  elbo_tok = div(s["nll_sum"] + s["kl_sum"], s["num_tokens"])
  return {"nll_per_token": nll_tok, "perplexity": exp(nll_tok),
          "nll_per_sequence": div(s["nll_sum"], s["num_sequences"]),
          "kl": div(s["kl_sum"], s["num_sequences"]),
          "elbo_nll": div(s["nll_sum"] + s["kl_sum"], s["num_sequences"]),
          "elbo_nll_per_token": elbo_tok, "elbo_perplexity": exp(elbo_tok),
          "num_tokens": s["num_tokens"], "num_sequences": s["num_sequences"]}
