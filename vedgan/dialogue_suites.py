"""The generic evaluation suites of dialogue runs, registered in :mod:`vedgan.eval_suites`.

* ``likelihood``: the objective's validation statistics over the whole split;
* ``bleu``: corpus BLEU and Texygen BLEU of decoded responses;
* ``diversity``: distinct-1/2, average length and Self-BLEU;
* ``embedding``: Average / Greedy / Extrema embedding similarity;
* ``sweep``: the quality-diversity curve over sampling temperatures.

See :mod:`vedgan.eval_suites` for the options and what every file records.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from vedgan import metrics
from vedgan.errors import ConfigError, DataError
from vedgan.eval_suites import EvalRun, SuiteOutput, register_suite


def _fmt(x: float) -> str:
  return f"{x:.4g}"


@register_suite("likelihood", decodes=False)
def likelihood_suite(run: EvalRun) -> SuiteOutput:
  """The objective's evaluation over the whole split (``Trainer.evaluate``)."""
  values = {k: float(v) for k, v in run.trainer.evaluate().items()}
  tok = run.tokenizer
  enc = run.trainer.inputs.validation[run.objective.EVAL_STREAM]
  settings = {"metric": "likelihood", "objective": run.config.objective,
              "quantity": "teacher-forced NLL of the reference responses (EOS included), "
                          "summed over the split, per token; perplexity = exp(nll)",
              "tokenization": f"sentencepiece {tok.fingerprint[:16]}",
              "split": run.split, "eval_batches": "all",
              "implementation": metrics.IMPLEMENTATION_VERSION}
  if hasattr(enc, "context") and hasattr(enc, "response"):
    settings["num_examples"] = len(enc)
    settings["num_tokens"] = int(sum(len(r) + 1 for r in enc.response))
    settings["max_context_len"] = int(enc.max_context_len)
    settings["max_response_len"] = int(enc.max_response_len)
    settings["reference_hash"] = metrics.corpus_hash(
        [list(c) + [-1] + list(r) for c, r in zip(enc.context, enc.response)], ordered=False)
  head = "perplexity" if "perplexity" in values else next(iter(values))
  result = metrics.MetricResult("likelihood", values[head], dict(settings, value=head),
                                dict(values))
  shown = " ".join(f"{k} {_fmt(v)}" for k, v in values.items())
  return SuiteOutput(values, {"likelihood": result}, shown)


@register_suite("bleu")
def bleu_suite(run: EvalRun) -> SuiteOutput:
  """Corpus BLEU (paired references) and Texygen BLEU (the whole reference set)."""
  n = int(run.options.max_n)
  hyps = run.hypothesis_words()
  refs_all = run.reference_words()
  refs = refs_all[:len(hyps)]
  label = run.tokenization_label
  corpus = metrics.corpus_bleu_report(hyps, [[r] for r in refs], max_n=n, tokenization=label)
  texygen = metrics.bleu_report(hyps, refs_all, max_n=n, tokenization=label)
  run.write_responses()
  values = {"corpus_bleu": float(corpus.value), "bleu": float(texygen.value)}
  g = run.generation
  summary = (f"corpus BLEU-{n} {_fmt(corpus.value)} | Texygen BLEU-{n} {_fmt(texygen.value)} "
             f"({len(hyps)} {g['mode']} responses vs {len(refs_all)} references)")
  return SuiteOutput(values, {"corpus_bleu": corpus, "bleu": texygen}, summary,
                     generation=run.generation_record())


@register_suite("diversity")
def diversity_suite(run: EvalRun) -> SuiteOutput:
  """Distinct-1/2, average length and Self-BLEU of the generated responses."""
  n = int(run.options.max_n)
  hyps = run.hypothesis_words()
  if len(hyps) < 2:
    raise ConfigError(f"the diversity suite needs at least 2 responses, got {len(hyps)}; "
                      "raise --num_samples")
  label = run.tokenization_label
  div = metrics.diversity_report(hyps, orders=(1, 2), tokenization=label)
  sb = metrics.self_bleu_report(hyps, max_n=n, tokenization=label)
  run.write_responses()
  values = {"distinct_1": float(div.details["distinct_1"]),
            "distinct_2": float(div.details["distinct_2"]),
            "average_length": float(div.details["average_length"]),
            "self_bleu": float(sb.value)}
  summary = (f"distinct-1 {_fmt(values['distinct_1'])} distinct-2 {_fmt(values['distinct_2'])} "
             f"Self-BLEU-{n} {_fmt(values['self_bleu'])} average length "
             f"{_fmt(values['average_length'])} ({len(hyps)} {run.generation['mode']} responses)")
  return SuiteOutput(values, {"diversity": div, "self_bleu": sb}, summary,
                     generation=run.generation_record())


@register_suite("embedding")
def embedding_suite(run: EvalRun) -> SuiteOutput:
  """Embedding Average / Greedy / Extrema of each response vs its reference."""
  tok = run.tokenizer
  path = run.options.word_vectors
  if path is None:  # the model's own table, on token ids
    table = np.asarray(jax.device_get(run.objective.word_embeddings(run.trainer.state)),
                       np.float32)
    vectors = metrics.WordVectors(
        table, None, source=f"model input embedding table ({run.config.objective}, "
                            f"step {run.step})")
    hyps = run.hypothesis_ids()
    refs = [tok.encode(r) for _, r in run.pairs[:len(hyps)]]
    ignore = (tok.pad_id, tok.bos_id, tok.eos_id)
    label = f"sentencepiece ids {tok.fingerprint[:16]}"
  else:  # a word-vector file, on words
    hyps = run.hypothesis_words()
    refs = run.reference_words()[:len(hyps)]
    try:
      vectors = metrics.load_word_vectors(path, vocabulary={w for s in hyps + refs for w in s})
    except (OSError, ValueError, UnicodeDecodeError) as e:
      raise DataError(f"--word_vectors {path} cannot be read ({e})") from None
    ignore = ()
    label = run.tokenization_label
  report = metrics.embedding_report(hyps, refs, vectors, ignore=ignore, tokenization=label)
  run.write_responses()
  d = report.details
  values = {"average": float(d["average"]), "greedy": float(d["greedy"]),
            "extrema": float(d["extrema"]), "oov_rate": float(d["oov_rate"])}
  summary = (f"Average {_fmt(values['average'])} Greedy {_fmt(values['greedy'])} "
             f"Extrema {_fmt(values['extrema'])} (vectors: {vectors.source}; "
             f"OOV {values['oov_rate']:.1%}; {len(hyps)} pairs)")
  return SuiteOutput(values, {"embedding": report}, summary, generation=run.generation_record())


@register_suite("sweep")
def sweep_suite(run: EvalRun) -> SuiteOutput:
  """Quality-diversity curve over the sampling temperatures (0 = greedy)."""
  n = int(run.options.max_n)
  orders = tuple(sorted({2, 3, 4, 5, n}))
  num = run.num_samples

  def generate(temperature: float, num_samples: int, seed: int):
    mode = "greedy" if temperature == 0 else "sample"
    ids = run.decode_ids(mode, temperature if temperature > 0 else 1.0, num_samples, seed)
    return [run.words(run.tokenizer.decode(x)) for x in ids]

  name = f"{os.path.basename(run.workdir)} (step {run.step})"
  sweep = metrics.quality_diversity_sweep(
      generate, [float(t) for t in run.options.temperatures], run.reference_words(),
      num_samples=num, seed=int(run.options.seed), orders=orders, name=name,
      tokenization=run.tokenization_label)
  png = metrics.plot_quality_diversity(
      sweep, os.path.join(run.eval_dir, "quality_diversity.png"), order=n,
      title=f"{run.config.objective}: {run.split}, {num} responses per temperature")
  values = {}
  for p in sweep["points"]:
    values[f"bleu_{n}@{p['temperature']:g}"] = p["bleu"][str(n)]
    values[f"self_bleu_{n}@{p['temperature']:g}"] = p["self_bleu"][str(n)]
  pts = sweep["points"]
  summary = (f"{len(pts)} temperatures {pts[0]['temperature']:g}..{pts[-1]['temperature']:g}, "
             f"BLEU-{n} {_fmt(pts[0]['bleu'][str(n)])}..{_fmt(pts[-1]['bleu'][str(n)])}, "
             f"Self-BLEU-{n} {_fmt(pts[0]['self_bleu'][str(n)])}.."
             f"{_fmt(pts[-1]['self_bleu'][str(n)])} ({num} responses each) -> "
             f"{os.path.relpath(png, run.workdir)}")
  generation = run.generation_record(mode="greedy at temperature 0, else sample",
                                     temperature=None, temperatures=list(sweep["settings"][
                                         "temperatures"]))
  # The sweep's own fields stay at the top level so that metrics.load_sweep and
  # metrics.plot_quality_diversity read eval/sweep.json directly.
  return SuiteOutput(values, {}, summary, generation=generation,
                     extra={"name": sweep["name"], "settings": sweep["settings"],
                            "points": sweep["points"]}, plots=[png])
