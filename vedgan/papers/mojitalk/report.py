"""MojiTalk's tables and figures as evaluation suites of ``python -m vedgan.evaluate``.

* ``mojitalk_table2``: the paper's comparison of base seq2seq / CVAE / Reinforced CVAE
  in one run: the checkpoint at the end of each generator stage, every model scored by
  the run's final classifier (teacher-forced perplexities, BLEU, and how often the
  designated emoji tops the classifier on the generated responses). Perplexities, each
  named for what it is: ``perplexity`` (the CVAE's reconstruction-only ``exp`` of
  ``-log p(x|z,c)`` per token with ``z ~ q(z|x,c)``: no KL, not a bound; the base
  model's exact one), ``prior_perplexity`` (one ``z ~ p(z|c)``), ``mc_elbo_perplexity``
  (``exp(-ELBO / tokens)``, the ELBO of K posterior draws) and ``iw_perplexity`` (the
  K-sample importance-weighted bound, Burda et al. 2016, ``K = likelihood.iw_samples``):
  the last two are upper bounds on the true perplexity of ``p(x | c, e)``, the IW one the
  tighter (the base model's are its exact perplexity);
* ``mojitalk_classifier``: the emoji classifier's top-1 / top-5 accuracy on the gold
  responses, overall and per emoji (the paper's Fig. 1, ``eval/classifier_per_label.png``).

::

    python -m vedgan.evaluate --workdir runs/mojitalk --suite mojitalk_table2,mojitalk_classifier \\
        --split test

``--num_samples N`` scores the split's first N contexts (0: all), ``--seed`` and the
decoding flags (``--decode_mode`` ...) set how responses are generated (default:
``config.decode``, 5 candidates of which the classifier's favourite is kept).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from vedgan import eval_suites, metrics
from vedgan.errors import ConfigError
from vedgan.metrics import likelihood as likelihood_lib
from vedgan.metrics.text import words
from vedgan.papers.mojitalk import data
from vedgan.plan import Plan

MODEL_NAMES = {"base": "base seq2seq", "cvae": "CVAE", "rl": "Reinforced CVAE"}
GENERATOR_KINDS = ("rl", "cvae", "base")   # the step a generator stage is named after


def evaluate_generation(objective, state, inputs, pairs, labels, options, num_examples: int = 0,
                        seed: int = 0, batch_size: int = 0) -> dict[str, Any]:
  """Generates responses for ``pairs``' contexts with their gold emoji ``labels`` and scores them.

  Returns ``emoji_top1/top5/prob`` (the returned, reranked responses), ``emoji_*_single``
  (the first candidate alone: the generator without the classifier's choice),
  ``corpus_bleu`` (BLEU-4 of each response against its own reference, sacrebleu's
  definition, :func:`vedgan.metrics.text.words`), ``bleu`` (Texygen BLEU-4 against all
  references), ``response_length`` and the ``responses``. Batches have a fixed size (the
  last is padded by repeating its first row), and batch ``i`` uses
  ``fold_in(key(seed), i)``, so results are reproducible.
  """
  labels = np.asarray(labels, np.int32)
  n = len(pairs) if not num_examples else min(int(num_examples), len(pairs))
  bsz = int(batch_size or objective.config.train.eval_batch_size)
  root = jax.random.key(int(seed))
  hyps, probs, ranks, probs1, ranks1 = [], [], [], [], []
  for i, start in enumerate(range(0, n, bsz)):
    contexts = [c for c, _ in pairs[start:min(start + bsz, n)]]
    lab = labels[start:start + len(contexts)]
    rows = len(contexts)
    contexts += [contexts[0]] * (bsz - rows)
    lab = np.concatenate([lab, np.repeat(lab[:1], bsz - rows)])
    batch = objective.prompt_batch(inputs, contexts, label=lab)
    out = objective.generate(state, batch, jax.random.fold_in(root, i), options)
    info = jax.device_get(out.info)
    hyps += objective.texts(out)[:rows]
    probs += np.asarray(info["label_prob"])[:rows].tolist()
    ranks += np.asarray(info["rank"])[:rows].tolist()
    probs1 += np.asarray(info["label_prob_first"])[:rows].tolist()
    ranks1 += np.asarray(info["rank_first"])[:rows].tolist()
  hyp_words = [words(h) for h in hyps]
  ref_words = [words(r) for _, r in pairs[:n]]
  ranks, ranks1 = np.asarray(ranks), np.asarray(ranks1)
  names = objective.label_names()
  return {
      "num_examples": n,
      "emoji_top1": float(np.mean(ranks <= 1)), "emoji_top5": float(np.mean(ranks <= 5)),
      "emoji_prob": float(np.mean(probs)),
      "emoji_top1_single": float(np.mean(ranks1 <= 1)),
      "emoji_top5_single": float(np.mean(ranks1 <= 5)),
      "emoji_prob_single": float(np.mean(probs1)),
      "corpus_bleu": float(metrics.corpus_bleu(hyp_words, [[r] for r in ref_words])),
      "bleu": float(metrics.bleu(hyp_words, ref_words)),
      "response_length": float(np.mean([len(h) for h in hyp_words])) if hyp_words else 0.0,
      "responses": [{"context": c, "emoji": names[int(l)], "reference": r, "response": h}
                    for (c, r), l, h in zip(pairs[:n], labels[:n], hyps)],
  }


def classifier_report(objective, state, inputs, plot_path: str | None = None) -> dict[str, Any]:
  """Top-1/top-5 accuracy of the classifier on the gold validation responses, overall and
  per label (the paper's Fig. 1, drawn to ``plot_path`` if given)."""
  config = objective.config
  num_labels = int(config.data.num_labels)
  logits, labels = [], []
  classify = jax.jit(objective.net.classify)
  for batch in inputs.validation_batches(config):
    keep = np.asarray(batch["weight"]) > 0
    logits.append(np.asarray(classify(state.params, batch["response_out"]))[keep])
    labels.append(np.asarray(batch["label"])[keep])
  result = metrics.per_label_accuracy(np.concatenate(logits), np.concatenate(labels),
                                      num_labels, ks=(1, 5))
  if plot_path:
    metrics.plot_per_label_accuracy(result, plot_path, label_names=list(objective.label_names()),
                                    ks=(1, 5), max_labels=32,
                                    title="emoji classifier, validation")
  counts = np.asarray(result["count"])
  seen = counts > 0
  return {"top1": result["top1"], "top5": result["top5"],
          "balanced_top1": float(np.mean(np.asarray(result["per_label_top1"])[seen])),
          "majority_rate": float(counts.max() / max(counts.sum(), 1)),
          "count": counts.tolist(),
          "per_label_top1": [None if np.isnan(v) else float(v) for v in result["per_label_top1"]],
          "per_label_top5": [None if np.isnan(v) else float(v) for v in result["per_label_top5"]]}


#: The importance-weighted bound over the validation batches (one home: vedgan.metrics).
iw_evaluate = likelihood_lib.iw_evaluate


def compare_stages(trainer, pairs, labels, options=None, num_examples: int = 0, seed: int = 0,
                   batch_size: int = 0) -> dict[str, Any]:
  """Base / CVAE / Reinforced CVAE of one finished run, on ``trainer.inputs``' validation
  examples (``pairs`` and ``labels`` are their raw texts and emoji, aligned).

  Every stage-end checkpoint of a generator stage (:meth:`vedgan.plan.Plan.stage_ends`) is
  restored and paired with the *current* state's classifier, so all models are scored by
  the same classifier. Reports teacher-forced perplexities (``trainer.evaluate``) and the
  likelihood bounds (:func:`iw_evaluate`), BLEU and
  the emoji accuracy of generated responses (:func:`evaluate_generation`), and the
  classifier's own accuracy on the gold responses (:func:`classifier_report`).
  ``trainer.state`` is left as it was. ``options``: decoding (default ``config.decode``).
  """
  config, objective, final = trainer.config, trainer.objective, trainer.state
  likelihood_lib.iw_settings(config)
  options = options or objective.decode_options()
  plan = Plan.from_config(config)
  classifier_ends = [end for _, _, end in plan.stage_ends(("classifier",))]
  if not classifier_ends or trainer.step < classifier_ends[0]:
    raise ConfigError(f"the run in {trainer.workdir} has not finished its classifier stage "
                      f"(step {trainer.step}); train on before comparing")
  report = {"step": int(trainer.step), "seed": int(seed), "decode": dict(config.decode),
            "classifier": classifier_report(objective, final, trainer.inputs), "models": {}}
  available = set(trainer.checkpointer.manager.all_steps())
  try:
    for name, kind, end in plan.stage_ends(GENERATOR_KINDS):
      if end > trainer.step:
        continue
      if end not in available:
        report["models"][name] = {"error": f"checkpoint {end} was not kept (raise "
                                           "train.max_checkpoints)"}
        continue
      state = final if end == trainer.step else trainer.checkpointer.restore(end, final)[0]
      state = state.replace(params=dict(state.params, classifier=final.params["classifier"]))
      trainer.state = state
      likelihood = trainer.evaluate()
      likelihood.update(iw_evaluate(trainer))
      gen = evaluate_generation(objective, state, trainer.inputs, pairs, labels, options,
                                num_examples, seed, batch_size)
      # evaluate_generation's emoji metrics (per-batch seeds) replace eval_step's.
      report["models"][name] = {"model": MODEL_NAMES[kind], "step": end, **likelihood, **gen}
  finally:
    trainer.state = final
  return report


def format_comparison(report: dict[str, Any]) -> str:
  """A markdown table of :func:`compare_stages`' report."""
  iw_k = next((int(r["iw_samples"]) for r in report["models"].values() if "iw_samples" in r),
              0)
  cols = [("perplexity", "PPL (recon.)"), ("mc_elbo_perplexity", "PPL (ELBO)"),
          ("iw_perplexity", f"PPL (IW, K={iw_k})"), ("prior_perplexity", "PPL (z~prior)"),
          ("corpus_bleu", "BLEU-4"), ("emoji_top1", "emoji top-1"),
          ("emoji_top5", "emoji top-5"), ("emoji_prob", "p(emoji)"),
          ("emoji_top1_single", "top-1 (1 sample)"), ("emoji_prob_single", "p(emoji) (1 sample)")]
  lines = ["| model | step | " + " | ".join(c for _, c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for name, r in report["models"].items():
    if "error" in r:
      lines.append(f"| {name} | - | {r['error']} |")
      continue
    vals = []
    for k, _ in cols:
      v = r[k]
      vals.append(f"{100 * v:.1f}" if k.startswith(("corpus_bleu", "emoji_top")) else f"{v:.3g}")
    lines.append(f"| {r['model']} | {r['step']} | " + " | ".join(vals) + " |")
  c = report["classifier"]
  lines.append("")
  lines.append("PPL (recon.): exp(-log p(x|z,c) per token), z from the posterior: "
               "reconstruction-only, not a bound; PPL (ELBO) and PPL (IW) are upper bounds "
               "on the perplexity of p(x|c,e) (the base model's: exact)")
  lines.append(f"classifier on gold validation responses: top-1 {100 * c['top1']:.1f}%, "
               f"top-5 {100 * c['top5']:.1f}% (majority class {100 * c['majority_rate']:.1f}%), "
               f"mean per-label top-1 {100 * c['balanced_top1']:.1f}% "
               f"(chance {100 / max(sum(1 for n in c['count'] if n), 1):.1f}%)")
  return "\n".join(lines)


# =============================================================================
# The suites
# =============================================================================


def _labelled_split(run) -> tuple[list, np.ndarray]:
  """``(pairs, labels)`` of ``run.split``; the trainer's validation examples become the
  split's labelled encoding (what ``trainer.evaluate`` and the classifier read)."""
  if "mojitalk_split" not in run._cache:  # pylint: disable=protected-access
    if run.config.objective != "mojitalk":
      raise ConfigError(f"{run.workdir} is a {run.config.objective!r} run, not mojitalk")
    enc, pairs = data.labelled_split(run.config, run.split, run.tokenizer)
    run.trainer.inputs.validation["train"] = enc
    run._cache["mojitalk_split"] = (pairs, enc.fields["label"])  # pylint: disable=protected-access
  return run._cache["mojitalk_split"]  # pylint: disable=protected-access


def _decode_options(run):
  g = run.generation
  return run.objective.decode_options(
      mode=g["mode"], max_len=int(g["max_len"]), temperature=float(g["temperature"]),
      top_k=int(g["top_k"]), beam_width=int(g["beam_width"]),
      length_penalty=float(g["length_penalty"]), forbid_unk=bool(g["forbid_unk"]))


@eval_suites.register_suite("mojitalk_table2")
def table2_suite(run) -> eval_suites.SuiteOutput:
  """Base seq2seq / CVAE / Reinforced CVAE of the run, scored by its final classifier."""
  pairs, labels = _labelled_split(run)
  report = compare_stages(run.trainer, pairs, labels, _decode_options(run), run.num_samples,
                          int(run.options.seed), int(run.generation["batch_size"]))
  values = {}
  for name, r in report["models"].items():
    values.update({f"{name}/{k}": float(r[k]) for k in (
        "perplexity", "prior_perplexity", "mc_elbo_perplexity", "iw_perplexity", "iw_nll",
        "iw_nll_per_token", "mc_elbo_nll_per_token", "corpus_bleu", "bleu", "emoji_top1", "emoji_top5",
        "emoji_prob", "emoji_top1_single", "emoji_prob_single") if k in r})
  values.update({f"classifier/{k}": float(report["classifier"][k])
                 for k in ("top1", "top5", "balanced_top1")})
  table = format_comparison(report)
  summary = (f"{len(report['models'])} models on {run.num_samples} contexts, scored by the "
             f"classifier of step {report['step']}\n{table}")
  return eval_suites.SuiteOutput(values, {}, summary,
                                 generation=run.generation_record(num_candidates=int(
                                     run.config.decode.latent_samples)),
                                 extra={"models": report["models"],
                                        "classifier": report["classifier"], "table": table})


@eval_suites.register_suite("mojitalk_classifier", decodes=False)
def classifier_suite(run) -> eval_suites.SuiteOutput:
  """The classifier's top-1/top-5 per emoji on the split's gold responses (Fig. 1)."""
  _labelled_split(run)
  suffix = "" if run.split == "validation" else f"_{run.split}"
  os.makedirs(run.eval_dir, exist_ok=True)
  path = os.path.join(run.eval_dir, f"classifier_per_label{suffix}.png")
  c = classifier_report(run.objective, run.trainer.state, run.trainer.inputs, path)
  values = {k: float(c[k]) for k in ("top1", "top5", "balanced_top1", "majority_rate")}
  summary = (f"top-1 {100 * c['top1']:.1f}%, top-5 {100 * c['top5']:.1f}% (majority class "
             f"{100 * c['majority_rate']:.1f}%), mean per-label top-1 "
             f"{100 * c['balanced_top1']:.1f}% on {sum(c['count'])} gold responses -> "
             f"{os.path.relpath(path, run.workdir)}")
  return eval_suites.SuiteOutput(values, {}, summary, extra={"classifier": c}, plots=[path])
