"""Quality-diversity temperature sweeps (Caccia et al. 2020; Kojima et al.
latent-space language GAN, Fig. 3 and 4).

For each temperature a generator produces N samples; quality is the negative
Texygen BLEU-n of the samples against a test set (lower is better) and
diversity is their Self-BLEU-n (lower is better).  Plotting one point per
temperature on the (negative BLEU, Self-BLEU) plane gives each model a
curve; curves closer to the origin are better.  Greedy decoding
(temperature 0) is the upper-left end of a curve.

The generator is any Python callable
``generate(temperature: float, num_samples: int, seed: int) -> list[list[token]]``.
The same ``seed`` is passed for every temperature (common random numbers),
and the whole sweep -- settings, per-temperature values for every order,
timings -- is a JSON-able dict that :func:`save_sweep` writes and
:func:`plot_quality_diversity` draws, several models on one canvas.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vedgan.metrics import _ngrams, _plotting
from vedgan.metrics.bleu import _bleu_scores_orders, _self_bleu_scores_orders
from vedgan.metrics.diversity import average_length, distinct_n
from vedgan.metrics.result import IMPLEMENTATION_VERSION, corpus_hash

Generator = Callable[[float, int, int], Sequence[Sequence[Any]]]
KOJIMA_TEMPERATURES = tuple(round(0.1 * i, 1) for i in range(11))


def evaluate_samples(samples: Sequence[Sequence[Any]],
                     references: Sequence[Sequence[Any]],
                     orders: Sequence[int] = (2, 3, 4, 5)) -> dict[str, Any]:
  """BLEU / Self-BLEU (all ``orders``), distinct-n and length of one sample set.

  Returns:
    dict with ``bleu``, ``negative_bleu``, ``self_bleu`` (each a dict
    ``str(n) -> float``), ``distinct_1``, ``distinct_2``, ``average_length``,
    ``num_samples``, ``samples_hash``.
  """
  samples = _ngrams.as_corpus(samples, "samples")
  bl = _bleu_scores_orders(samples, references, orders)
  sb = (_self_bleu_scores_orders(samples, orders) if len(samples) >= 2
        else {n: np.full(len(samples), np.nan) for n in orders})

  def mean(x):
    return float(sum(x.tolist()) / len(x)) if len(x) else 0.0

  return {"bleu": {str(n): mean(bl[n]) for n in orders},
          "negative_bleu": {str(n): -mean(bl[n]) for n in orders},
          "self_bleu": {str(n): mean(sb[n]) for n in orders},
          "distinct_1": distinct_n(samples, 1),
          "distinct_2": distinct_n(samples, 2),
          "average_length": average_length(samples),
          "num_samples": len(samples), "samples_hash": corpus_hash(samples)}


def quality_diversity_sweep(generate: Generator, temperatures: Sequence[float],
                            references: Sequence[Sequence[Any]],
                            num_samples: int = 10_000, seed: int = 0,
                            orders: Sequence[int] = (2, 3, 4, 5),
                            name: str = "model",
                            tokenization: str = "pre-tokenized"
                            ) -> dict[str, Any]:
  """Generates and scores ``num_samples`` sentences per temperature.

  Args:
    generate: ``generate(temperature, num_samples, seed) -> list of token
      lists`` (temperature 0.0 conventionally means greedy decoding).
    temperatures: e.g. :data:`KOJIMA_TEMPERATURES` (0.0, 0.1, ..., 1.0).
    references: test-set token lists (the BLEU reference set).
    num_samples: N per temperature (10,000 in Texygen / Kojima et al.).
    seed: passed unchanged to every call.
    orders: BLEU / Self-BLEU orders recorded (all from one n-gram count).
    name: the curve's label.
    tokenization: label recorded in the settings.
  Returns:
    JSON-able dict ``{"name", "settings", "points": [...]}``, one point per
    temperature with the fields of :func:`evaluate_samples` plus
    ``temperature``, ``generate_seconds`` and ``metric_seconds``.
  """
  refs = _ngrams.as_corpus(references, "references")
  points = []
  for t in temperatures:
    t0 = time.perf_counter()
    samples = generate(float(t), int(num_samples), int(seed))
    t1 = time.perf_counter()
    point = evaluate_samples(samples, refs, orders)
    if point["num_samples"] != num_samples:
      raise ValueError(f"generate returned {point['num_samples']} samples at "
                       f"temperature {t}, expected {num_samples}")
    point.update(temperature=float(t), generate_seconds=t1 - t0,
                 metric_seconds=time.perf_counter() - t1)
    points.append(point)
  settings = {"metric": "quality-diversity-sweep",
              "quality": "negative Texygen BLEU-n vs references",
              "diversity": "Self-BLEU-n (self excluded)",
              "smoothing": "nltk-method1", "epsilon": 0.1,
              "orders": [int(n) for n in orders],
              "temperatures": [float(t) for t in temperatures],
              "num_samples": int(num_samples), "seed": int(seed),
              "tokenization": tokenization, "num_references": len(refs),
              "reference_hash": corpus_hash(refs, ordered=False),
              "implementation": IMPLEMENTATION_VERSION}
  return {"name": name, "settings": settings, "points": points}


def save_sweep(sweeps: Mapping[str, Any] | Sequence[Mapping[str, Any]],
               path: str | os.PathLike) -> str:
  """Writes one sweep or a list of sweeps as JSON; returns the path."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(sweeps, f, indent=1, sort_keys=True)
  return path


def load_sweep(path: str | os.PathLike) -> Any:
  """Reads what :func:`save_sweep` wrote."""
  with open(os.fspath(path), encoding="utf-8") as f:
    return json.load(f)


def plot_quality_diversity(sweeps: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                           path: str | os.PathLike, order: int = 5,
                           extra_points: Mapping[str, tuple[float, float]]
                           | None = None,
                           annotate: bool = True,
                           title: str | None = None) -> str:
  """Draws negative BLEU-n (x) against Self-BLEU-n (y), one curve per sweep.

  Args:
    sweeps: one sweep dict or a list of them (several models on one canvas).
    path: PNG file.
    order: the n of BLEU-n / Self-BLEU-n (must be among the sweeps' orders).
    extra_points: labelled single points, e.g. ``{"training data":
      (-bleu_of_train_vs_test, self_bleu_of_train)}``.
    annotate: write each point's temperature next to it.
    title: optional title.
  Returns:
    the PNG path written.
  """
  if isinstance(sweeps, Mapping):
    sweeps = [sweeps]
  key = str(order)
  fig, ax = _plotting.new_figure((6.0, 4.5))
  for sweep in sweeps:
    pts = sorted(sweep["points"], key=lambda p: p["temperature"])
    if any(key not in p["negative_bleu"] for p in pts):
      raise ValueError(f"sweep {sweep['name']!r} has no order {order}")
    xs = [p["negative_bleu"][key] for p in pts]
    ys = [p["self_bleu"][key] for p in pts]
    line, = ax.plot(xs, ys, "o-", label=sweep["name"], markersize=4)
    if annotate:
      for p, x, y in zip(pts, xs, ys):
        ax.annotate(f"{p['temperature']:g}", (x, y), fontsize=6,
                    xytext=(3, 3), textcoords="offset points",
                    color=line.get_color())
  for label, (x, y) in (extra_points or {}).items():
    ax.plot([x], [y], "*", markersize=10, label=label)
  ax.set_xlabel(f"negative BLEU-{order} (quality, lower is better)")
  ax.set_ylabel(f"Self-BLEU-{order} (diversity, lower is better)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  return _plotting.save(fig, path)
