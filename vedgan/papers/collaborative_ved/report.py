"""Table 1, Table 2 and Fig. 3 of the collaborative VED paper for a finished run.

    python -m vedgan.evaluate --workdir RUN --suite collaborative_ved_table1
    python -m vedgan.evaluate --workdir RUN --suite collaborative_ved_table2 \\
        [--word_vectors GoogleNews-vectors-negative300.bin] [--num_samples N]
    python -m vedgan.evaluate --workdir RUN --suite collaborative_ved_fig3 [--plot_context I]

* ``collaborative_ved_table1``: PPL, KL and NLL bound over the whole validation
  split (:meth:`CollaborativeVED.summarize`) with the collapse diagnostics, and the
  importance-weighted bound (:func:`iw_evaluate`, ``K = likelihood.iw_samples``). Named
  for what they are: ``perplexity`` / ``recon_perplexity`` is reconstruction-only
  (``exp`` of ``-log p(x|z,c)`` per token with ``z`` from the posterior: no KL, not a
  bound); ``nll_bound`` (per response), ``elbo_nll_per_token``, ``elbo_perplexity`` come
  from the ELBO; ``iw_nll``, ``iw_nll_per_token``, ``iw_perplexity`` from the K-sample
  bound (the tightest upper bound on the model's test-time NLL);
* ``collaborative_ved_table2``: Embedding Average / Greedy / Extrema (Liu et
  al. 2016) of responses decoded for the validation contexts with
  ``config.decode`` (the paper: beam 5, ``<unk>`` forbidden; ``--decode_mode``,
  ``--beam_width`` ... override it) against the references: with a word2vec
  file on words (:func:`vedgan.metrics.text.words`) as the paper, by default
  with the model's own input embeddings on token ids;
* ``collaborative_ved_fig3``: a 2-D PCA projection of 100 prior vs 100
  posterior latent samples for one validation context
  (``eval/latent_projection.png``; ``--plot_context -1``: the context with the
  most distinct responses, up to 10 x 10 samples). The paper used t-SNE.

Each writes ``WORKDIR/eval/<suite>.json``. ``--num_samples N`` restricts
Table 2 and Fig. 3 to the first ``N`` validation examples; ``--seed`` sets the
decoding and latent sampling keys. Also here: the stage-end plot of KL and
posterior-mean variance per latent dimension (:func:`kl_per_dim_plot`).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vedgan import eval_suites, losses, metrics, plots
from vedgan.data import pipeline
from vedgan.data.tokenizer import content_ids
from vedgan.errors import ConfigError, DataError
from vedgan.metrics import likelihood as likelihood_lib
from vedgan.metrics import text as text_lib
from vedgan.papers.collaborative_ved import data

OBJECTIVE = "collaborative_ved"


# -- what a run is asked for ---------------------------------------------------------------


def _check(run: eval_suites.EvalRun) -> None:
  if run.config.objective != OBJECTIVE:
    raise ConfigError(f"the collaborative_ved_* suites evaluate collaborative_ved runs; "
                      f"{run.workdir} trained {run.config.objective!r}")


def _examples(run: eval_suites.EvalRun) -> list[tuple[list[str], str]]:
  """The validation ``(turns, response)`` examples (the first ``--num_samples``, 0 = all)
  whose response has at least one token."""
  if "cved_examples" not in run._cache:  # pylint: disable=protected-access
    examples = data.load_examples(run.config, run.config.data.validation_split)
    n = int(run.options.num_samples)
    examples = examples[:n] if n > 0 else examples
    tok = run.tokenizer
    run._cache["cved_examples"] = [(h, r) for h, r in examples  # pylint: disable=protected-access
                                   if tok.encode(r)]
  return run._cache["cved_examples"]  # pylint: disable=protected-access


def _decode_options(run: eval_suites.EvalRun):
  """``config.decode`` with the ``--decode_mode``, ``--temperature``, ... given."""
  o = run.options
  given = {"mode": o.decode_mode, "temperature": o.temperature, "top_k": o.top_k,
           "beam_width": o.beam_width, "length_penalty": o.length_penalty}
  return run.objective.decode_options(**{k: v for k, v in given.items() if v is not None})


def decode_responses(run: eval_suites.EvalRun, histories, options) -> list[list[int]]:
  """Token ids (before EOS; no PAD / BOS) of responses to lists of turns.

  Batches of ``--batch_size`` rows (default ``train.eval_batch_size``; the last
  one padded with copies of its first row, so a mode compiles once); batch
  ``b`` decodes with ``fold_in(key(--seed), b)``.
  """
  obj, state, tok = run.objective, run.trainer.state, run.tokenizer
  bsz = int(run.options.batch_size) or int(run.config.train.eval_batch_size)
  root = jax.random.key(int(run.options.seed))
  out = []
  for b, start in enumerate(range(0, len(histories), bsz)):
    chunk = list(histories[start:start + bsz])
    rows = len(chunk)
    chunk = chunk + [chunk[0]] * (bsz - rows)
    res = obj.generate(state, data.encode_histories(tok, run.config, chunk),
                       jax.random.fold_in(root, b), options)
    out.extend(content_ids(row, tok.vocab_size)
               for row in np.asarray(jax.device_get(res.tokens))[:rows])
  return out


# -- Table 1 ------------------------------------------------------------------------------


#: The importance-weighted bound over the validation batches (one home: vedgan.metrics).
iw_evaluate = likelihood_lib.iw_evaluate


@eval_suites.register_suite("collaborative_ved_table1", decodes=False)
def table1_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Table 1: PPL, KL, NLL bound, the K-sample importance-weighted bound (+ active units,
  mutual information, largest KL per dimension) over the whole validation split."""
  _check(run)
  likelihood_lib.iw_settings(run.config)
  values = {k: float(v) for k, v in run.trainer.evaluate().items()}
  values.update(iw_evaluate(run.trainer))
  enc = run.trainer.inputs.validation["train"]
  settings = {"metric": "collaborative_ved_table1", "model": run.config.model.latent,
              "quantity": "perplexity = recon_perplexity = exp(reconstruction NLL per "
                          "token, z from the posterior, EOS included): reconstruction-only, "
                          "not a bound; kl = KL(q || p) per response; nll_bound = -ELBO = "
                          "(reconstruction NLL + KL) per response, elbo_perplexity = "
                          "exp(-ELBO / tokens); iw_nll / iw_perplexity = the K-sample "
                          "importance-weighted bound on -log p(x|c) (Burda et al. 2016), "
                          "per response / exp per token; mc_elbo_* = the ELBO of the same "
                          "K draws",
              "iw_samples": int(values["iw_samples"]),
              "tokenization": f"{run.config.tokenizer.kind} {run.tokenizer.fingerprint[:16]}",
              "split": run.config.data.validation_split, "num_examples": len(enc),
              "reference_hash": metrics.corpus_hash(
                  [[int(t) for turn in h for t in turn] + [-1] + r.tolist()
                   for h, r in zip(enc.turns, enc.response)], ordered=False),
              "implementation": metrics.IMPLEMENTATION_VERSION}
  result = metrics.MetricResult("collaborative_ved_table1", values["nll_bound"], settings,
                                dict(values))
  shown = (f"PPL (reconstruction-only) {values['perplexity']:.4g} KL {values['kl']:.4g} "
           f"NLL bound {values['nll_bound']:.4g} | ELBO PPL {values['elbo_perplexity']:.4g} "
           f"IW PPL (K={values['iw_samples']:.0f}) {values['iw_perplexity']:.4g} IW NLL "
           f"{values['iw_nll']:.4g}")
  if "active_units" in values:
    shown += (f" (active units {values['active_units']:.0f}, MI "
              f"{values['mutual_information']:.4g}, max KL/dim {values['kl_max_dim']:.4g})")
  return eval_suites.SuiteOutput(values, {"table1": result},
                                 f"{shown} over {values['examples']:.0f} examples")


# -- Table 2 ------------------------------------------------------------------------------


@eval_suites.register_suite("collaborative_ved_table2", decodes=False)
def table2_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Table 2: Embedding Average / Greedy / Extrema of decoded responses vs references."""
  _check(run)
  examples = _examples(run)
  if not examples:
    raise DataError("the validation split has no example with a non-empty response")
  tok = run.tokenizer
  options = _decode_options(run)
  hyps = decode_responses(run, [h for h, _ in examples], options)
  path = run.options.word_vectors
  if path:  # a word-vector file, on words (the paper: word2vec)
    hyp_w = [text_lib.words(tok.decode(h)) for h in hyps]
    ref_w = [text_lib.words(r) for _, r in examples]
    try:
      vectors = metrics.load_word_vectors(path, vocabulary={w for s in hyp_w + ref_w for w in s})
    except (OSError, ValueError, UnicodeDecodeError) as e:
      raise DataError(f"--word_vectors {path} cannot be read ({e})") from None
    report = metrics.embedding_report(hyp_w, ref_w, vectors,
                                      tokenization=text_lib.TOKENIZATIONS["word"][1])
  else:  # the model's own input embeddings, on token ids
    table = np.asarray(jax.device_get(run.objective.word_embeddings(run.trainer.state)),
                       np.float32)
    vectors = metrics.WordVectors(table, None, source="model input embedding table")
    refs = [tok.encode(r) for _, r in examples]
    report = metrics.embedding_report(hyps, refs, vectors,
                                      ignore=(tok.pad_id, tok.bos_id, tok.eos_id),
                                      tokenization=f"token ids {tok.fingerprint[:16]}")
  d = report.details
  values = {k: float(d[k]) for k in ("average", "greedy", "extrema", "oov_rate")}
  generation = {"mode": options.mode, "beam_width": options.beam_width,
                "temperature": options.temperature, "top_k": options.top_k,
                "length_penalty": options.length_penalty, "forbid_unk": options.forbid_unk,
                "max_len": int(run.config.data.max_response_len),
                "seed": int(run.options.seed), "num_contexts": len(examples),
                "batch_size": int(run.options.batch_size) or
                              int(run.config.train.eval_batch_size)}
  summary = (f"Average {values['average']:.4g} Greedy {values['greedy']:.4g} Extrema "
             f"{values['extrema']:.4g} ({len(hyps)} {options.mode} responses; vectors: "
             f"{vectors.source}; OOV {values['oov_rate']:.1%})")
  return eval_suites.SuiteOutput(values, {"table2": report}, summary, generation=generation)


# -- Fig. 3 -------------------------------------------------------------------------------


def latent_samples(obj, state, batch, key, num: int = 10):
  """``(prior [num*R, D], posterior [num*R, D])`` latent codes for ``R`` responses.

  ``batch``: ``turns [R, T, L]`` (the same context on every row), ``num_turns
  [R]``, ``response_out [R, Lr]``. Posterior: ``num`` samples per response;
  prior: ``num * R`` samples given the context only (the paper: 10 responses x
  10). Collaborative VED codes are ``g(eps)``.
  """
  batch = {k: jnp.asarray(batch[k]) for k in ("turns", "num_turns", "response_out")}
  (mu_p, lv_p), (mu_q, lv_q) = obj.prior_posterior(state.params, batch)
  k_p, k_q = jax.random.split(key)
  prior = losses.gaussian_sample(k_p, jnp.repeat(mu_p, num, 0), jnp.repeat(lv_p, num, 0))
  post = losses.gaussian_sample(k_q, jnp.repeat(mu_q, num, 0), jnp.repeat(lv_q, num, 0))
  return obj.code_of_noise(state.params, prior), obj.code_of_noise(state.params, post)


def _plot_examples(examples, plot_context: int):
  """``(history, responses)``: ``examples[plot_context]``, or (-1) the context with the most
  distinct responses (first in split order on ties), up to 10 of them."""
  if plot_context >= 0:
    if plot_context >= len(examples):
      raise ConfigError(f"--plot_context {plot_context} is past the {len(examples)} "
                        "validation examples evaluated")
    history, response = examples[plot_context]
    return list(history), [response]
  groups: dict = {}
  for h, r in examples:
    groups.setdefault(tuple(h), []).append(r)
  history, responses = max(groups.items(), key=lambda kv: len(set(kv[1])))
  return list(history), list(dict.fromkeys(responses))[:10]


def _context_batch(config, tokenizer, history, responses) -> dict:
  """``history`` with each response, encoded as the training batches are."""
  d = config.data
  enc = pipeline.encode_dialogues([(history, r) for r in responses], tokenizer,
                                  int(d.max_turns), int(d.max_turn_len), int(d.max_response_len))
  if len(enc) != len(responses):
    raise DataError(f"the context {history!r} has no token to encode")
  it = pipeline.BatchIterator(enc, len(enc), (int(d.max_turn_len),), seed=0, shuffle=False,
                              drop_remainder=False, repeat=False,
                              response_buckets=(int(d.max_response_len),),
                              turn_buckets=(int(d.max_turns),))
  return next(it)


@eval_suites.register_suite("collaborative_ved_fig3", decodes=False)
def fig3_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Fig. 3: PCA of prior (red) vs posterior (blue) latent samples for one context."""
  _check(run)
  obj = run.objective
  if obj.kind == "none":
    return eval_suites.SuiteOutput({}, {}, "HRED has no latent variable: nothing to plot")
  history, responses = _plot_examples(_examples(run), int(run.options.plot_context))
  batch = _context_batch(run.config, run.tokenizer, history, responses)
  per = max(100 // len(responses), 1)
  prior, post = latent_samples(obj, run.trainer.state, batch,
                               jax.random.key(int(run.options.seed)), num=per)
  both = np.concatenate([np.asarray(prior), np.asarray(post)], 0).astype(np.float64)
  centred = both - both.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  xy = centred @ vt[:2].T
  n = prior.shape[0]
  fig, axes = plots.new_figure((5, 5))
  ax = axes[0, 0]
  ax.scatter(xy[:n, 0], xy[:n, 1], c="red", s=8, label="prior p(z|c)")
  ax.scatter(xy[n:, 0], xy[n:, 1], c="blue", s=8, label=f"posterior ({len(responses)} responses)")
  ax.set_title(" | ".join(history)[-60:], fontsize=8)
  ax.legend(fontsize=7)
  path = plots.save_figure(fig, os.path.join(run.eval_dir, "latent_projection.png"), dpi=100)
  values = {"num_prior": float(n), "num_posterior": float(post.shape[0]),
            "num_responses": float(len(responses))}
  summary = (f"{n} prior vs {post.shape[0]} posterior samples ({len(responses)} responses) of "
             f"one context -> {os.path.relpath(path, run.workdir)}")
  return eval_suites.SuiteOutput(values, {}, summary, plots=[path],
                                 extra={"context": history, "responses": responses})


# -- stage-end plot ------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _jitted_latent_terms(obj):
  return jax.jit(obj.latent_terms)


def kl_per_dim_plot(obj, state, inputs, out_dir: str) -> list[str]:
  """``latent_kl_per_dim.png``: the validation KL(q || p) of each latent dimension and the
  variance over examples of each dimension's posterior mean (a unit is active when it
  exceeds 0.01, Burda et al. 2016), on ``train.eval_batches`` batches."""
  fn = _jitted_latent_terms(obj)
  kl, means = [], []
  for batch in inputs.validation_batches(obj.config, int(obj.config.train.eval_batches)):
    needed = {k: jnp.asarray(batch[k]) for k in ("turns", "num_turns", "response_out")}
    kl_dim, mean = jax.device_get(fn(state.params, needed))
    w = np.asarray(batch["weight"], np.float64)
    kl.append(np.asarray(kl_dim, np.float64)[w > 0])
    means.append(np.asarray(mean, np.float64)[w > 0])
  kl, means = np.concatenate(kl), np.concatenate(means)
  if len(kl) < 2:
    return []
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
