r"""Kojima et al.'s figures and table as evaluation suites of trained ``latent_gan`` /
``lstm_lm`` runs, run by ``python -m vedgan.evaluate``::

  python -m vedgan.evaluate --workdir runs/lgan_l1 --compare_workdirs runs/lgan_mle \
      --suite latent_gan_fig3,latent_gan_table2
  python -m vedgan.evaluate --workdir runs/lgan_l1 \
      --compare_workdirs runs/lgan_l0,runs/lgan_l0.5,runs/lgan_l2 --suite latent_gan_fig4

* ``latent_gan_fig3`` (Fig. 3: ours vs the MLE baseline) and ``latent_gan_fig4``
  (Fig. 4: the lambda ablation): for ``--workdir`` and every ``--compare_workdirs``
  run (latest checkpoint, read-only), ``N`` sentences at each word temperature
  ``tau_2`` (0 = greedy; the same seed, hence the same latent codes, at every
  temperature), scored by :func:`vedgan.metrics.quality_diversity_sweep`:
  negative Texygen BLEU-n against the reference split vs Self-BLEU-n. Writes
  ``eval/<suite>.json`` (every sweep, all orders; the training-data point; greedy
  statistics) and ``eval/<suite>.png`` (one curve per run, the training data as a
  star). Curves are labelled ``ours (λ=x)`` / ``λ=x`` and ``MLE``.
* ``latent_gan_table2`` (Table 2): greedy samples of every run next to real
  sentences, ``eval/latent_gan_table2.md``, with the distinct greedy sentences
  among the ``N`` latent codes.

Settings: ``N`` = ``--num_samples`` (0 = the run's ``sweep.num_samples``: 10,000
in ``paper``, 200 in ``demo``); temperatures = ``--temperatures`` where given,
else ``sweep.temperatures`` (0.0, 0.1, ..., 1.0); BLEU orders ``sweep.orders``,
plotted ``sweep.plot_order``; ``--seed``. The settings and references are those of
``--workdir``'s config: references are the sentences of ``data.validation_split``
(``test`` for COCO). Samples and references become words through
:func:`vedgan.metrics.text.words`; a generated ``<unk>`` id is the one word
``"<unk>"``, which that splitting never produces from a reference, so it never
matches (:meth:`SentenceObjective.sentence_words`).

The stage-end plot :func:`diversity_plot` (distinct-n of 64 samples against
``tau_2``) is the cheap view of the same trade-off drawn during training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from vedgan import eval_suites, metrics
from vedgan.errors import ConfigError
from vedgan.metrics import text as text_lib
from vedgan.papers.latent_gan import data
from vedgan.papers.latent_gan.sampling import SentenceObjective

#: word temperatures tau_2 of the stage-end diversity plot (0 = greedy) and its sample count.
PLOT_TEMPERATURES = (0.0, 0.5, 0.75, 1.0, 1.5)
PLOT_SAMPLES = 64
#: greedy sentences of each run shown in Table 2.
TABLE_ROWS = 10


# -- the stage-end plot ---------------------------------------------------------------


def diversity_by_temperature(objective: SentenceObjective, state, temperatures: Sequence[float],
                             num_samples: int, seed: int) -> dict[str, list[float]]:
  """Distinct-1, distinct-2 and the distinct-sentence fraction of ``num_samples`` samples
  at each word temperature (the same latent codes at every temperature; empty
  sentences count as sentences, not as n-grams). Returns ``{name: [value per tau]}``."""
  sample = objective.sampler(state, chunk=num_samples)
  curves = {"distinct-1": [], "distinct-2": [], "distinct sentences": []}
  for tau in temperatures:
    sents = sample(float(tau), num_samples, seed)
    words = [s for s in sents if s]
    curves["distinct-1"].append(metrics.distinct_n(words, 1) if words else 0.0)
    curves["distinct-2"].append(metrics.distinct_n(words, 2)
                                if any(len(s) > 1 for s in words) else 0.0)
    curves["distinct sentences"].append(len({" ".join(s) for s in sents}) / len(sents))
  return curves


def diversity_plot(objective: SentenceObjective, state, out_dir: str) -> str:
  """``out_dir/diversity_vs_temperature.png``: distinct-1, distinct-2 and the fraction of
  distinct sentences among :data:`PLOT_SAMPLES` samples (seed ``config.seed + 11``)
  against tau_2. The paper's curves need far more samples: ``latent_gan_fig3``."""
  from vedgan import plots  # pylint: disable=import-outside-toplevel
  n = PLOT_SAMPLES
  curves = diversity_by_temperature(objective, state, PLOT_TEMPERATURES, n,
                                    int(objective.config.seed) + 11)
  fig, axes = plots.new_figure((5.5, 3.6))
  ax = axes[0, 0]
  for name, ys in curves.items():
    ax.plot(PLOT_TEMPERATURES, ys, "o-", label=name)
  ax.set_xlabel("word temperature tau_2 (0 = greedy)")
  ax.set_ylabel("fraction")
  ax.set_ylim(0.0, 1.05)
  ax.set_title(f"diversity of {n} generated sentences")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return plots.save_figure(fig, os.path.join(out_dir, "diversity_vs_temperature.png"))


# -- the compared runs ---------------------------------------------------------------


@dataclasses.dataclass
class Model:
  """One trained run of a figure: its curve label, objective, state, step and workdir."""
  label: str
  objective: SentenceObjective
  state: Any
  step: int
  workdir: str

  @property
  def config(self):
    return self.objective.config


def _label(config, style: str) -> str:
  if config.objective == "lstm_lm":
    return "MLE"
  lam = f"λ={float(config.model.recon_weight):g}"
  return f"ours ({lam})" if style == "fig3" else lam


@contextlib.contextmanager
def _models(run: eval_suites.EvalRun, style: str):
  """``run`` and every ``--compare_workdirs`` run as :class:`Model` s (opened read-only,
  closed on exit), in that order; for ``style="fig4"`` GAN runs by lambda, then MLE."""
  with eval_suites.compared_runs(run) as opened:
    models, labels = [], set()
    for r in opened:
      _check(r)
      label = _label(r.config, style)
      if label in labels:
        label = f"{label} ({os.path.basename(r.workdir)})"
      labels.add(label)
      models.append(Model(label, r.objective, r.trainer.state, r.step, r.workdir))
    if style == "fig4":
      models.sort(key=lambda m: (m.config.objective == "lstm_lm",
                                 float(m.config.model.recon_weight)
                                 if m.config.objective == "latent_gan" else 0.0))
    yield models


def _check(run: eval_suites.EvalRun) -> None:
  if not isinstance(run.objective, SentenceObjective):
    raise ConfigError(f"{run.workdir} trains {run.config.objective!r}; the latent_gan suites "
                      "compare latent_gan and lstm_lm runs")


def _settings(run: eval_suites.EvalRun) -> dict[str, Any]:
  """Samples, temperatures, BLEU orders and seed of the suites (see the module docstring)."""
  _check(run)
  sw = run.config.sweep
  temperatures = tuple(float(t) for t in run.options.temperatures)
  if temperatures == tuple(eval_suites.EvalOptions().temperatures):
    temperatures = tuple(float(t) for t in sw.temperatures)
  plot_order = int(sw.plot_order)
  return {"num_samples": int(run.options.num_samples) or int(sw.num_samples),
          "temperatures": temperatures, "plot_order": plot_order,
          "orders": tuple(sorted({int(n) for n in sw.orders} | {plot_order})),
          "seed": int(run.options.seed)}


def _references(config) -> list[list[str]]:
  """Words of every sentence of ``data.validation_split`` (the BLEU reference set)."""
  return [text_lib.words(t) for t in data.load_sentences(config.data,
                                                         config.data.validation_split)]


def greedy_texts(model: Model, num_samples: int, seed: int) -> list[str]:
  """Greedy (tau_2 = 0) sentences from ``num_samples`` latent codes (seed ``seed``)."""
  tokens = model.objective.sample(model.state, num_samples, jax.random.key(seed), 0.0)
  return model.objective.sentence_texts(tokens)


def _greedy_statistics(texts: list[str]) -> dict[str, Any]:
  distinct = len(set(texts))
  return {"num_samples": len(texts), "distinct_sentences": distinct,
          "distinct_fraction": distinct / max(len(texts), 1), "examples": texts[:TABLE_ROWS]}


def training_point(run: eval_suites.EvalRun, references, num_samples: int, seed: int,
                   orders: Sequence[int]) -> dict[str, Any]:
  """Texygen scores of ``num_samples`` random training sentences (the "training data" star):
  sentences the models learn from (those the encoder keeps at ``data.max_len``), their
  first ``max_len - 1`` words."""
  config = run.config
  texts = data.load_sentences(config.data, "train")
  kept = data.encode(config, texts, run.tokenizer).index
  rng = np.random.default_rng(seed)
  pick = rng.choice(len(kept), size=min(num_samples, len(kept)), replace=False)
  keep = int(config.data.max_len) - 1
  sample = [text_lib.words(texts[kept[i]])[:keep] for i in sorted(pick)]
  return metrics.evaluate_samples(sample, references, orders)


# -- Fig. 3 and Fig. 4 -----------------------------------------------------------------


def quality_diversity(run: eval_suites.EvalRun, suite: str) -> eval_suites.SuiteOutput:
  """The temperature sweep of every run (Fig. 3 / Fig. 4); see the module docstring."""
  s = _settings(run)
  n, order, key = s["num_samples"], s["plot_order"], str(s["plot_order"])
  references = _references(run.config)
  tokenization = text_lib.TOKENIZATIONS["word"][1]
  sweeps, greedy, values = [], {}, {}
  with _models(run, suite.rsplit("_", 1)[-1]) as models:
    for m in models:
      sweep = metrics.quality_diversity_sweep(
          m.objective.sampler(m.state), s["temperatures"], references, num_samples=n,
          seed=s["seed"], orders=s["orders"], name=m.label, tokenization=tokenization)
      sweep.update(workdir=m.workdir, step=m.step, objective=m.config.objective,
                   recon_weight=(float(m.config.model.recon_weight)
                                 if m.config.objective == "latent_gan" else None))
      sweeps.append(sweep)
      greedy[m.label] = _greedy_statistics(greedy_texts(m, n, s["seed"]))
      for p in sweep["points"]:
        values[f"{m.label}: -BLEU-{order}@{p['temperature']:g}"] = p["negative_bleu"][key]
        values[f"{m.label}: Self-BLEU-{order}@{p['temperature']:g}"] = p["self_bleu"][key]
      values[f"{m.label}: greedy distinct fraction"] = greedy[m.label]["distinct_fraction"]
  train = training_point(run, references, n, s["seed"], s["orders"])
  values[f"training data: -BLEU-{order}"] = train["negative_bleu"][key]
  values[f"training data: Self-BLEU-{order}"] = train["self_bleu"][key]
  figure = "Fig. 3: ours vs MLE" if suite.endswith("fig3") else "Fig. 4: weight λ"
  png = metrics.plot_quality_diversity(
      sweeps, os.path.join(run.eval_dir, f"{suite}.png"), order=order,
      extra_points={"training data": (train["negative_bleu"][key], train["self_bleu"][key])},
      title=f"Kojima et al. {figure}, {n} samples / τ2")
  shown = ", ".join(f"{label} {g['distinct_sentences']}/{g['num_samples']}"
                    for label, g in greedy.items())
  summary = (f"{len(sweeps)} runs x {len(s['temperatures'])} temperatures, {n} samples each; "
             f"greedy distinct: {shown} -> {os.path.relpath(png, run.workdir)}")
  extra = {"sweeps": sweeps, "training_data": train, "greedy": greedy, "plot_order": order,
           "reference_split": run.config.data.validation_split}
  return eval_suites.SuiteOutput(values, {}, summary, extra=extra, plots=[png])


@eval_suites.register_suite("latent_gan_fig3", decodes=False)
def fig3_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Fig. 3: quality-diversity curves of the GAN run(s) and the MLE baseline."""
  return quality_diversity(run, "latent_gan_fig3")


@eval_suites.register_suite("latent_gan_fig4", decodes=False)
def fig4_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Fig. 4: quality-diversity curves for several reconstruction weights lambda."""
  return quality_diversity(run, "latent_gan_fig4")


# -- Table 2 -----------------------------------------------------------------------------


@eval_suites.register_suite("latent_gan_table2", decodes=False)
def table2_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """Table 2: greedy samples (different z) of every run next to real sentences."""
  s = _settings(run)
  n, config = s["num_samples"], run.config
  max_words = int(config.data.max_len) - 1
  real = [t for t in data.load_sentences(config.data, config.data.validation_split)
          if len(run.tokenizer.encode(t)) <= max_words][:TABLE_ROWS]
  greedy = {}
  with _models(run, "fig4") as models:
    for m in models:
      greedy[m.label] = _greedy_statistics(greedy_texts(m, n, s["seed"]))
  lines = ["| model | greedy samples (tau_2 = 0, different z) |", "|---|---|",
           f"| real data ({config.data.validation_split}) | "
           + "<br>".join(_md(t) for t in real) + " |"]
  for label, g in greedy.items():
    lines.append(f"| {_md(label)} ({g['distinct_sentences']}/{g['num_samples']} distinct) | "
                 + "<br>".join(_md(t) for t in g["examples"]) + " |")
  path = os.path.join(run.eval_dir, "latent_gan_table2.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  values = {f"{label}: greedy distinct fraction": g["distinct_fraction"]
            for label, g in greedy.items()}
  shown = ", ".join(f"{label} {g['distinct_sentences']}/{g['num_samples']}"
                    for label, g in greedy.items())
  summary = f"greedy distinct sentences: {shown} -> {os.path.relpath(path, run.workdir)}"
  return eval_suites.SuiteOutput(values, {}, summary,
                                 extra={"greedy": greedy, "real": real, "table": path})


def _md(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ") or "(empty)"
