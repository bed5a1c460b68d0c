r"""Quality-diversity temperature curves of trained ``latent_gan`` / ``lstm_lm`` runs.

Kojima et al. Fig. 3 (our model vs. the MLE baseline) and Fig. 4 (lambda
ablation), and Table 2 (greedy samples)::

  python -m vedgan.objectives.latent_gan_sweep --workdirs RUN_GAN RUN_MLE \
      --labels "ours (lambda=1)" "MLE" --out DIR --name fig3

For each run it restores the latest checkpoint read-only, generates
``sweep.num_samples`` sentences at each word temperature ``tau_2`` in
``sweep.temperatures`` (0.0 = greedy, same seed -- hence the same latent codes
-- at every temperature), scores them with :func:`vedgan.metrics.quality_diversity_sweep`
(negative Texygen BLEU-n against the reference split vs. Self-BLEU-n) and writes

* ``DIR/NAME.json``: every sweep (all orders), the training-data point and the
  greedy statistics (distinct sentences among the greedy samples);
* ``DIR/NAME.png``: negative BLEU-n vs Self-BLEU-n, one curve per run, the
  training data as a star;
* ``DIR/NAME_samples.md``: Table 2, greedy samples of every run next to real
  sentences.

Settings default to the first run's ``config.sweep`` (10,000 samples and
BLEU-5 in ``paper``; 200 and BLEU-3 in ``demo``). References are the sentences
of ``config.data.validation_split`` (``test`` for COCO; the embedded corpus's
``validation`` in the demo) cut into words by the first run's tokenizer
(:func:`vedgan.objectives.latent_gan.reference_words`: a word tokenizer's words
without the ``<unk>`` mapping, so a generated ``<unk>`` never matches; runs
trained on the same data with the same tokenizer settings share it; compare
``reference_hash`` in the JSON). Samples are ``decode(ids).split()``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from vedgan import metrics
from vedgan.objectives.latent_gan import reference_words


def load_run(workdir: str):
  """``(trainer, objective, state)`` of ``workdir``'s latest checkpoint (files untouched)."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  from vedgan import train  # pylint: disable=import-outside-toplevel
  from vedgan.errors import CheckpointError  # pylint: disable=import-outside-toplevel

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} has no config.json; is it a vedgan run?")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  trainer = train.Trainer(config, os.path.abspath(workdir))
  trainer.setup(write=False)
  if trainer.step == 0:
    raise CheckpointError(f"{workdir} has no checkpoint to evaluate")
  if not hasattr(trainer.objective, "sampler"):
    raise CheckpointError(f"{workdir} trains {config.objective!r}, which has no sentence sampler")
  return trainer, trainer.objective, trainer.state


def reference_texts(config, split: str | None = None) -> list[str]:
  from vedgan.objectives.latent_gan import load_sentences  # pylint: disable=import-outside-toplevel
  return load_sentences(config.data, split or config.data.validation_split)


def training_point(config, tokenizer, references, num_samples: int, seed: int,
                   orders: Sequence[int]) -> dict[str, Any]:
  """Texygen scores of ``num_samples`` random training sentences (the "training data" point).

  The sentences are those the models learn from: at most ``data.max_len - 1``
  tokens (longer ones skipped or cut, as ``data.too_long`` says).
  """
  from vedgan.objectives.latent_gan import load_sentences  # pylint: disable=import-outside-toplevel
  keep = int(config.data.max_len) - 1
  texts = []
  for text in load_sentences(config.data, "train"):
    n = len(tokenizer.encode(text))
    if n <= keep or config.data.too_long != "skip":
      texts.append((text, n))
  rng = np.random.default_rng(seed)
  pick = rng.choice(len(texts), size=min(num_samples, len(texts)), replace=False)
  sample = [w[:keep] for w in reference_words(tokenizer, [texts[i][0] for i in sorted(pick)])]
  return metrics.evaluate_samples(sample, references, orders)


def greedy_statistics(objective, state, num_samples: int, seed: int) -> dict[str, Any]:
  """Distinct sentences among ``num_samples`` greedy (tau_2 = 0) samples from different z."""
  sents = objective.sampler(state)(0.0, num_samples, seed)
  joined = [" ".join(s) for s in sents]
  return {"num_samples": len(joined), "distinct_sentences": len(set(joined)),
          "distinct_fraction": len(set(joined)) / max(len(joined), 1),
          "examples": joined[:10]}


def run_sweep(workdirs: Sequence[str], labels: Sequence[str] | None, out_dir: str,
              name: str = "sweep", num_samples: int | None = None,
              temperatures: Sequence[float] | None = None, orders: Sequence[int] | None = None,
              plot_order: int | None = None, seed: int = 0, title: str | None = None
              ) -> dict[str, Any]:
  """Sweeps every run, writes ``NAME.json``, ``NAME.png`` and ``NAME_samples.md`` under ``out_dir``.

  Returns the JSON written: ``{"sweeps": [...], "training_data": {...},
  "greedy": {label: ...}, "png": path}``.
  """
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f"{len(workdirs)} workdirs but {len(labels)} labels")
  sweeps, greedy, first_config, references = [], {}, None, None
  for workdir, label in zip(workdirs, labels):
    trainer, objective, state = load_run(workdir)
    try:
      config = trainer.config
      if first_config is None:
        first_config = config
        sw = config.sweep
        num_samples = int(num_samples or sw.num_samples)
        temperatures = tuple(float(t) for t in (temperatures or sw.temperatures))
        orders = tuple(int(n) for n in (orders or sw.orders))
        plot_order = int(plot_order or sw.plot_order)
        tokenizer = objective.tokenizer
        references = reference_words(tokenizer, reference_texts(config))
      sweep = metrics.quality_diversity_sweep(
          objective.sampler(state), temperatures, references, num_samples=num_samples, seed=seed,
          orders=orders, name=label,
          tokenization=f"{config.tokenizer.kind} tokenizer words (<unk> never matches)")
      sweep["workdir"] = os.path.abspath(workdir)
      sweep["step"] = int(trainer.step)
      sweep["objective"] = config.objective
      sweep["recon_weight"] = (float(config.model.recon_weight)
                               if "recon_weight" in config.model else None)
      sweeps.append(sweep)
      greedy[label] = greedy_statistics(objective, state, num_samples, seed)
    finally:
      trainer.close()
  train_pt = training_point(first_config, tokenizer, references, num_samples, seed, orders)
  key = str(plot_order)
  os.makedirs(out_dir, exist_ok=True)
  png = metrics.plot_quality_diversity(
      sweeps, os.path.join(out_dir, f"{name}.png"), order=plot_order,
      extra_points={"training data": (train_pt["negative_bleu"][key],
                                      train_pt["self_bleu"][key])},
      title=title)
  result = {"sweeps": sweeps, "training_data": train_pt, "greedy": greedy, "png": png,
            "plot_order": plot_order}
  metrics.save_sweep(result, os.path.join(out_dir, f"{name}.json"))
  max_words = int(first_config.data.max_len) - 1
  real = [t for t in reference_texts(first_config)
          if len(tokenizer.encode(t)) <= max_words][:10]
  _write_samples(os.path.join(out_dir, f"{name}_samples.md"), greedy, real)
  return result


def _write_samples(path: str, greedy: dict, real: list[str]) -> None:
  """Table 2: greedy samples of every run next to real sentences."""
  lines = ["| model | greedy samples (tau_2 = 0, different z) |", "|---|---|",
           "| real data (reference split) | " + "<br>".join(_md(t) for t in real) + " |"]
  for label, g in greedy.items():
    lines.append(f"| {_md(label)} ({g['distinct_sentences']}/{g['num_samples']} distinct) | "
                 + "<br>".join(_md(t) for t in g["examples"]) + " |")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _md(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vedgan.objectives.latent_gan_sweep",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdirs", nargs="+", required=True, help="trained runs")
  parser.add_argument("--labels", nargs="+", default=None, help="one curve label per run")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--name", default="sweep", help="file stem of the outputs")
  parser.add_argument("--num_samples", type=int, default=None)
  parser.add_argument("--temperatures", type=float, nargs="+", default=None)
  parser.add_argument("--orders", type=int, nargs="+", default=None)
  parser.add_argument("--plot_order", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--title", default=None)
  args = parser.parse_args(argv)
  from vedgan.errors import VedganError  # pylint: disable=import-outside-toplevel
  try:
    result = run_sweep(args.workdirs, args.labels, args.out, args.name, args.num_samples,
                       args.temperatures, args.orders, args.plot_order, args.seed, args.title)
  except (VedganError, ValueError, FileNotFoundError) as e:
    print(f"latent_gan_sweep: error: {e}", file=sys.stderr)
    return 2
  for sweep in result["sweeps"]:
    g = result["greedy"][sweep["name"]]
    print(f"{sweep['name']}: greedy {g['distinct_sentences']}/{g['num_samples']} distinct")
    for p in sweep["points"]:
      n = str(result["plot_order"])
      print(f"  tau_2={p['temperature']:.1f}  -BLEU-{n} {p['negative_bleu'][n]:.4f}  "
            f"Self-BLEU-{n} {p['self_bleu'][n]:.4f}")
  print(f"wrote {result['png']}")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
