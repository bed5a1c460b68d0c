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
  reconstruction term is estimated with z ~ q(z|x). ``perplexity`` of a latent
  model scored with z ~ q(z|x) is reconstruction-only (no KL): no bound at all.
* The importance-weighted bound (Burda et al. 2016), tighter than the ELBO:
  :func:`importance_weighted_bound` from ``[K, B]`` log terms of K posterior
  draws (:func:`chunked_samples` draws them a chunk at a time), summed like the
  NLL and divided by :func:`bound_summary` into ``iw_nll`` (per sequence),
  ``iw_nll_per_token`` and ``iw_perplexity``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

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


# -- importance-weighted bound (Burda et al., 2016) ------------------------------------


LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """``log N(x; mean, diag(exp(logvar)))`` summed over the last axis.

  The ``log p(z)`` and ``log q(z|x)`` terms of the importance weights of
  :func:`importance_weighted_bound` for Gaussian priors / posteriors::

      sum_d -0.5 * (log 2 pi + logvar_d + (x_d - mean_d)^2 / exp(logvar_d))

  Args:
    x, mean, logvar: ``[..., D]`` (broadcastable).
  Returns:
    float ``[...]``.

  >>> print(round(float(gaussian_log_density(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))), 4))
  -0.9189
  """
  x, mean, logvar = (jnp.asarray(a, jnp.float32) for a in (x, mean, logvar))
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar), axis=-1)


@jax.jit
def importance_weighted_bound(log_px_z: jax.Array, log_pz: jax.Array,
                              log_qz: jax.Array) -> jax.Array:
  """The K-sample importance-weighted lower bound on ``log p(x)`` (Burda et al. 2016, Eq. 8).

  With ``z_1..z_K ~ q(z|x)`` and weights ``w_k = p(x|z_k) p(z_k) / q(z_k|x)``::

      L_K = log (1/K) sum_k w_k = logsumexp_k(log w_k) - log K  <=  log p(x)

  ``E[L_K]`` rises with ``K`` towards ``log p(x)``; ``L_1`` is the one-sample
  estimate of the ELBO (:func:`elbo_estimate`), and ``L_K >= elbo_estimate`` for
  the same draws (Jensen). For a conditional model (a CVAE) pass the conditional
  prior ``log p(z_k|c)``: the bound is then on ``log p(x|c)``.

  Args:
    log_px_z: ``[K, B]`` ``log p(x|z_k)`` (summed over the tokens of ``x``).
    log_pz: ``[K, B]`` ``log p(z_k)`` (or ``log p(z_k|c)``).
    log_qz: ``[K, B]`` ``log q(z_k|x)``.
  Returns:
    ``[B]`` float32 lower bounds on ``log p(x)`` (nats).

  >>> import jax.numpy as jnp
  >>> lw = jnp.log(jnp.array([[1.0], [3.0]]))   # weights 1 and 3: log mean = log 2
  >>> print(round(float(importance_weighted_bound(lw, jnp.zeros((2, 1)),
  ...                                             jnp.zeros((2, 1)))[0]), 4))
  0.6931
  """
  log_w = (jnp.asarray(log_px_z, jnp.float32) + jnp.asarray(log_pz, jnp.float32)
           - jnp.asarray(log_qz, jnp.float32))
  return jax.nn.logsumexp(log_w, axis=0) - jnp.log(jnp.float32(log_w.shape[0]))


@jax.jit
def elbo_estimate(log_px_z: jax.Array, log_pz: jax.Array, log_qz: jax.Array) -> jax.Array:
  """The Monte-Carlo ELBO of the same draws: ``mean_k log w_k`` ``[B]`` (inputs ``[K, B]`` as
  :func:`importance_weighted_bound`; ``E[.] = E_q log p(x|z) - KL(q || p)``)."""
  log_w = (jnp.asarray(log_px_z, jnp.float32) + jnp.asarray(log_pz, jnp.float32)
           - jnp.asarray(log_qz, jnp.float32))
  return jnp.mean(log_w, axis=0)


def chunked_samples(fn: Callable[[jax.Array], Any], key: jax.Array, num_samples: int,
                    chunk: int) -> Any:
  """``fn`` over ``num_samples`` keys, ``chunk`` at a time, stacked ``[num_samples, ...]``.

  ``fn(keys [chunk]) -> pytree of [chunk, ...]``; the keys are
  ``jax.random.split(key, num_samples)`` in order (sample ``k`` always gets key
  ``k``, whatever the chunk size), and the chunks run one after the other under
  ``lax.map`` (static shapes, one compiled body; memory grows with ``chunk``, not
  with ``num_samples``). ``chunk`` must divide ``num_samples``.
  """
  num_samples, chunk = int(num_samples), int(chunk)
  if num_samples < 1 or chunk < 1 or num_samples % chunk:
    raise ValueError(f"chunk={chunk} must be >= 1 and divide num_samples={num_samples} >= 1")
  keys = jax.random.split(key, num_samples).reshape(num_samples // chunk, chunk)
  out = jax.lax.map(fn, keys)
  return jax.tree.map(lambda x: x.reshape((num_samples,) + x.shape[2:]), out)


def bound_summary(log_likelihood_sum: float, num_tokens: float, num_sequences: float,
                  prefix: str) -> dict[str, float]:
  """Per-sequence and per-token NLL and perplexity from a summed lower bound on ``log p(x)``.

  Returns ``{prefix}_nll`` (``-sum / num_sequences``), ``{prefix}_nll_per_token``
  (``-sum / num_tokens``) and ``{prefix}_perplexity`` (``exp`` of the latter): upper
  bounds on the true NLL / perplexity when the sum is of lower bounds. NaN for a zero
  denominator.

  >>> out = bound_summary(-6.0, 3.0, 2.0, "iw")
  >>> out["iw_nll"], out["iw_nll_per_token"], round(out["iw_perplexity"], 4)
  (3.0, 2.0, 7.3891)
  """
  total = float(log_likelihood_sum)
  per_token = -total / float(num_tokens) if float(num_tokens) else math.nan
  per_seq = -total / float(num_sequences) if float(num_sequences) else math.nan
  if math.isnan(per_token):
    ppl = math.nan
  else:
    ppl = math.exp(per_token) if per_token < 709.0 else math.inf
  return {f"{prefix}_nll": per_seq, f"{prefix}_nll_per_token": per_token,
          f"{prefix}_perplexity": ppl}


def iw_settings(config) -> tuple[int, int]:
  """``(K, chunk)`` from ``config.likelihood.iw_samples`` / ``iw_chunk``, checked (a
  one-line :class:`vedgan.errors.ConfigError` otherwise): ``K >= 1`` samples per
  example, evaluated ``chunk`` at a time (``chunk`` divides ``K``)."""
  from vedgan.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if "likelihood" not in config:
    raise ConfigError("config.likelihood.iw_samples is missing (a run saved before the "
                      "importance-weighted bound existed): add \"likelihood\": "
                      "{\"iw_samples\": 100, \"iw_chunk\": 5} to its config.json")
  section = config.likelihood
  k, chunk = int(section.iw_samples), int(section.iw_chunk)
  if k < 1 or chunk < 1 or k % chunk:
    raise ConfigError(f"likelihood.iw_samples={k} must be >= 1 and a multiple of "
                      f"likelihood.iw_chunk={chunk} >= 1")
  return k, chunk


def summarize_iw(sums: Mapping[str, Any], num_samples: int) -> dict[str, float]:
  """The named bounds from the summed outputs of an objective's ``iw_step``.

  Args:
    sums: scalars ``iw`` and ``elbo`` (sums of per-example lower bounds on ``log p(x)``:
      the K-sample importance-weighted bound and the ELBO of the same draws), ``tokens``
      and ``examples`` (their denominators).
    num_samples: K, reported as ``iw_samples``.

  Returns:
    ``iw_nll`` (per response), ``iw_nll_per_token``, ``iw_perplexity``, the same for
    ``mc_elbo``, and ``iw_samples``.
  """
  s = {k: float(np.asarray(v)) for k, v in sums.items()}
  out = bound_summary(s["iw"], s["tokens"], s["examples"], "iw")
  out.update(bound_summary(s["elbo"], s["tokens"], s["examples"], "mc_elbo"))
  out["iw_samples"] = float(num_samples)
  return out


def iw_evaluate(trainer) -> dict[str, float]:
  """:func:`summarize_iw` of ``trainer.objective.iw_step`` (``K = likelihood.iw_samples``)
  summed over the validation batches :meth:`vedgan.train.Trainer.evaluate` reads, and over
  devices. A bad K or an empty validation split is a one-line error before any work."""
  import sys  # pylint: disable=import-outside-toplevel
  import tqdm  # pylint: disable=import-outside-toplevel
  from vedgan import parallel  # pylint: disable=import-outside-toplevel
  from vedgan.errors import ConfigError  # pylint: disable=import-outside-toplevel
  obj, config = trainer.objective, trainer.config
  k, _ = iw_settings(config)
  fn = parallel.data_parallel_reduce(obj.iw_step, trainer.mesh)
  max_batches, sums = int(config.train.eval_batches), None
  # K decoder passes per example: minutes to an hour on a CPU for a whole validation split
  bar = tqdm.tqdm(total=trainer.inputs.validation_batch_count(config, max_batches,
                                                              obj.EVAL_STREAM),
                  desc=f"importance-weighted bound (K={k})", unit="batch", file=sys.stderr,
                  disable=not (bool(config.train.get("progress", True))
                               and jax.process_index() == 0),
                  dynamic_ncols=True, mininterval=1.0)
  for batch in trainer.inputs.validation_batches(config, max_batches, obj.EVAL_STREAM):
    out = fn(trainer.state, parallel.shard_batch(batch, trainer.mesh))
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    bar.update(1)
  bar.close()
  if sums is None:
    raise ConfigError("the validation split yields no batch; lower train.eval_batch_size")
  return summarize_iw(jax.device_get(sums), k)
