"""PNG plots written into ``WORKDIR/plots/`` at the end of every stage (matplotlib, headless).

What is drawn (all by :func:`stage_end`):

* ``training_curves.png``: one panel per scalar of ``metrics.jsonl`` (train and validation;
  perplexities on a log axis);
* one PNG per entry of the objective's ``PLOT_GROUPS`` (``{file stem: (Panel, ...)}``):
  the panels a researcher of that paper looks at, e.g. the KL term with its annealing
  weight on a twin axis, reward / baseline / advantage of a REINFORCE stage, or the
  discriminator and generator losses with D's accuracy on real and fake data;
* the objective's cheap end-of-stage evaluation plots (``Objective.stage_end_plots``,
  which writes them itself and returns their paths);
* every PNG of this stage end is also added to TensorBoard as an image (``plots/<stem>``).

Panels name their series by the scalar names the objectives log. A series is
``"name"`` (the train split), ``"validation/name"``, or a difference of two
scalars of one split, ``"reward_gen - reward_gold"`` (matched by step), optionally
preceded by a legend label, ``"advantage R-r = reward_gen - reward_gold"``. A train
series that several step functions log (train rows name theirs, ``step_name``: the
AE and CVAE phases of a cycle, a GAN's discriminator and generator steps) is drawn
as one curve per step function, ``"loss [ae]"``, ``"loss [cvae]"``. Series
the run did not log are left out, panels without any series are dropped, and a
group without panels writes no file, so one declaration serves every variant of
an objective.

What each objective adds (``plots/<file>``; "CLI" is the full-size evaluation the
stage end leaves out because it needs far more samples or the whole split)::

  seq2seq            likelihood.png (train loss and validation NLL on one axis, so that
                     overfitting shows; validation perplexity on a log axis).
  mojitalk           latent_kl.png (KL + annealing weight), rl_reward.png (R, baseline r,
                     advantage R - r, alpha), classifier_per_label.png (Fig. 1, after the
                     classifier stage).  CLI: python -m vedgan.evaluate --workdir W
                     --suite mojitalk_table2,mojitalk_classifier
  happybot           rl_reward.png (reward, baseline MSE, mean |R - b|, mixed loss),
                     reward_distribution.png (greedy responses, after mle / multiseq / rl).
                     CLI: python -m vedgan.evaluate --workdir W
                     --suite happybot_table2,happybot_variance
  collaborative_ved  latent_kl.png (KL + KL weight or keep rate, active units, MI),
                     latent_kl_per_dim.png (KL and Var[E_q z] per dimension).
                     CLI (Fig. 3 projection): python -m vedgan.evaluate --workdir W
                     --suite collaborative_ved_fig3
  latent_gan         gan.png (D / G losses, D accuracy on real / fake, reconstruction),
                     diversity_vs_temperature.png (distinct-n of 64 samples vs tau_2).
                     CLI (Fig. 3/4 quality-diversity, Table 2): python -m vedgan.evaluate
                     --workdir W --compare_workdirs W2 --suite latent_gan_fig3,latent_gan_table2
  topk_gan           gan.png (D / G losses, D accuracy, D on human / generated / top-k),
                     topk_nn_check.png (Fig. 3 on one validation batch, after mle_pretrain and
                     adversarial).  CLI (Fig. 3, Table 1): python -m vedgan.evaluate
                     --workdir W --suite topk_gan_fig3,topk_gan_table1,topk_gan_diversity

``config.train.eval_plots = False`` turns the evaluation
plots off (with several processes they are always off);
``config.train.curve_plots = False`` turns the curves off (``training_curves(workdir)``
draws them from ``metrics.jsonl`` at any time).

matplotlib is imported lazily and pyplot's global state is never touched, so
importing this module (objectives do, for :class:`Panel`) costs nothing.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterable, Sequence

from vedgan.writers import read_metrics

# The field of a train row naming its step function (vedgan.steps.STEP_NAME_FIELD).
STEP_NAME = "step_name"

# Scalars that are bookkeeping, not curves worth a panel of their own.
_NOT_CURVES = ("tokens", "examples", "tokens_per_sec", "learning_rate", "wall_time")


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axes of a plot group.

  Attributes:
    title: the axes title.
    series: series drawn on the left y axis (see the module docstring for the syntax).
    twin: series drawn dashed on a twin right y axis (e.g. the KL annealing weight).
    ylabel / twin_label: y-axis labels.
    log_y: a logarithmic left y axis (perplexities: exp of the NLL).
  """
  title: str
  series: tuple[str, ...]
  twin: tuple[str, ...] = ()
  ylabel: str = ""
  twin_label: str = ""
  log_y: bool = False


def _split_name(spec: str) -> tuple[str, str]:
  if "/" in spec:
    split, name = spec.split("/", 1)
    return split.strip(), name.strip()
  return "train", spec.strip()


def _label(spec: str) -> tuple[str, str]:
  """``(legend label, series)`` of ``"label = series"`` (the label defaults to the series)."""
  if "=" in spec:
    label, expr = spec.split("=", 1)
    return label.strip(), expr.strip()
  return spec.strip(), spec.strip()


def series_points(rows: Sequence[dict], spec: str,
                  step_name: str | None = None) -> tuple[list[int], list[float]]:
  """``(steps, values)`` of one series spec over ``metrics.jsonl`` rows (empty if not logged);
  ``step_name``: only the train rows of that step function (``STEP_NAME`` field).

  >>> rows = [{"step": 2, "split": "train", "a": 3.0, "b": 1.0},
  ...         {"step": 4, "split": "train", "a": 5.0}]
  >>> series_points(rows, "a"), series_points(rows, "gap = a - b")
  (([2, 4], [3.0, 5.0]), ([2], [2.0]))
  """
  split, expr = _split_name(_label(spec)[1])
  names = [n.strip() for n in expr.split(" - ")]
  if len(names) > 2:
    raise ValueError(f"series {spec!r}: only 'a - b' differences are supported")
  xs, ys = [], []
  for row in rows:
    if row.get("split") != split:
      continue
    if step_name is not None and row.get(STEP_NAME) != step_name:
      continue
    values = [row.get(n) for n in names]
    if not all(isinstance(v, (int, float)) for v in values):
      continue
    xs.append(int(row["step"]))
    ys.append(float(values[0] - values[1]) if len(values) == 2 else float(values[0]))
  return xs, ys


def new_figure(figsize: tuple[float, float], rows: int = 1, cols: int = 1):
  """A Figure on the Agg canvas (no pyplot) and its ``[rows, cols]`` axes."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig, path: str, dpi: int = 90, tight: bool = True) -> str:
  """Writes ``fig`` as PNG (creating the folder) and returns ``path``.

  ``tight=False`` keeps the figure's own margins: ``tight_layout`` measures every
  tick label and costs about as much as drawing a grid of panels twice.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi, format="png")
  return path


def _grid_margins(fig, n_rows: int, n_cols: int) -> None:
  """Fixed margins in inches (room for tick labels, titles and a twin axis)."""
  width, height = fig.get_size_inches()
  fig.subplots_adjust(left=0.75 / width, right=1 - 0.7 / width, bottom=0.5 / height,
                      top=1 - 0.35 / height, wspace=2.0 / (width / n_cols),
                      hspace=0.9 / (height / n_rows))


def series_step_names(rows: Sequence[dict], spec: str) -> list[str]:
  """The step functions (``STEP_NAME`` of train rows) that logged series ``spec``, in the
  order they first did; empty for validation series and runs logged before the field.

  >>> rows = [{"step": 2, "split": "train", "step_name": "disc", "loss": 1.0},
  ...         {"step": 2, "split": "train", "step_name": "gen", "loss": 3.0}]
  >>> series_step_names(rows, "loss"), series_points(rows, "loss", "gen")
  (['disc', 'gen'], ([2], [3.0]))
  """
  names = [r[STEP_NAME] for r in rows if isinstance(r.get(STEP_NAME), str)]
  return [n for n in dict.fromkeys(names) if series_points(rows, spec, n)[0]]


def _draw(ax, rows, specs, style: str, colors) -> list:
  """Each spec as a curve; a train series logged by several step functions (a cycle's
  phases, a GAN's D and G steps) as one curve per step function, ``"label [step]"``."""
  handles = []
  for spec in specs:
    step_names = series_step_names(rows, spec)
    parts = ([(n, f"{_label(spec)[0]} [{n}]") for n in step_names] if len(step_names) > 1
             else [(None, _label(spec)[0])])
    for step_name, label in parts:
      xs, ys = series_points(rows, spec, step_name)
      if xs:
        marker = "." if len(xs) < 30 else None
        handles += ax.plot(xs, ys, style, marker=marker, label=label, color=next(colors))
  return handles


def stage_starts(rows: Sequence[dict]) -> list[int]:
  """The last logged step before each stage's first row (dotted lines between stages).

  >>> stage_starts([{"step": 2, "stage": "a"}, {"step": 4, "stage": "a"},
  ...               {"step": 6, "stage": "b"}, {"step": 4, "stage": "a"}])
  [0, 4]
  """
  starts, seen, last = [], set(), 0
  for row in sorted(rows, key=lambda r: r["step"]):
    stage = row.get("stage")
    if stage not in seen:
      seen.add(stage)
      starts.append(last)
    last = row["step"]
  return starts


def _grid(n: int) -> tuple[int, int]:
  cols = min(3, n)
  return (n + cols - 1) // cols, cols


def plot_panels(rows: Sequence[dict], panels: Iterable[Panel], path: str) -> str | None:
  """Draws ``panels`` (those with any logged series) into one PNG at ``path``.

  Returns the path, or None when none of the panels' series was logged.
  """
  panels = [p for p in panels if any(series_points(rows, s)[0] for s in p.series + p.twin)]
  if not panels:
    return None
  n_rows, n_cols = _grid(len(panels))
  fig, axes = new_figure((4.8 * n_cols, 3.4 * n_rows), n_rows, n_cols)
  starts = stage_starts(rows)
  for ax, panel in zip(axes.flat, panels):
    colors = iter(f"C{i}" for i in range(100))
    handles = _draw(ax, rows, panel.series, "-", colors)
    if panel.twin and any(series_points(rows, s)[0] for s in panel.twin):
      right = ax.twinx()
      handles += _draw(right, rows, panel.twin, "--", colors)
      right.set_ylabel(panel.twin_label)
    lo, hi = ax.get_xlim()
    for step in starts[1:]:
      if lo < step < hi:
        ax.axvline(step, color="0.6", lw=0.8, ls=":")
    ax.set_title(panel.title)
    if panel.log_y:
      ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  _grid_margins(fig, n_rows, n_cols)
  return save_figure(fig, path, tight=False)


def training_curves(workdir: str, filename: str = "training_curves.png") -> str | None:
  """One panel per scalar of ``metrics.jsonl`` (train and validation), x = step.

  Returns the PNG path, or None when there is nothing to plot yet.
  """
  rows = read_metrics(workdir)
  panels = [Panel(name, tuple(f"{split}/{name}" for split in ("train", "validation")),
                  log_y="perplexity" in name) for name in curve_names(rows)]
  return plot_panels(rows, panels, os.path.join(workdir, "plots", filename))


#: Panels of ``training_curves.png`` read first (the objective) and last (bookkeeping).
_CURVES_FIRST = ("loss", "nll", "perplexity", "kl")
_CURVES_LAST = ("grad_norm",)


def curve_names(rows: Sequence[dict]) -> list[str]:
  """The scalars of ``rows`` that get a panel of ``training_curves.png``, in reading order:
  the loss and the likelihood first, then the rest alphabetically, the gradient norm last
  (a MojiTalk run logs 27: sorted alone, ``accuracy`` and ``alpha`` led and the loss was
  the 20th panel).

  >>> curve_names([{"step": 1, "split": "train", "grad_norm": 1.0, "alpha": 0.5,
  ...               "loss": 2.0, "tokens_per_sec": 9.0}, {"step": 1, "kl": 0.3}])
  ['loss', 'kl', 'alpha', 'grad_norm']
  """
  names = {k for r in rows for k, v in r.items()
           if k not in ("step", "stage", "split") and k not in _NOT_CURVES
           and isinstance(v, (int, float))}
  first = [n for n in _CURVES_FIRST if n in names]
  last = [n for n in _CURVES_LAST if n in names]
  return first + sorted(names - set(first) - set(last)) + last


def group_plots(workdir: str, groups: dict[str, Sequence[Panel]],
                rows: Sequence[dict] | None = None) -> list[str]:
  """Writes ``plots/<stem>.png`` for each ``{stem: panels}`` group that has data."""
  rows = read_metrics(workdir) if rows is None else rows
  paths = []
  for stem, panels in groups.items():
    path = plot_panels(rows, panels, os.path.join(workdir, "plots", f"{stem}.png"))
    if path:
      paths.append(path)
  return paths


def stage_end(workdir: str, objective: Any = None, state: Any = None, inputs: Any = None,
              stage: str = "", writer: Any = None, step: int = 0,
              evaluation: bool = True) -> list[str]:
  """All plots of a stage end; returns the PNG paths written (also sent to ``writer``'s TB).

  Args:
    workdir: the run's workdir (reads ``metrics.jsonl``, writes ``plots/``).
    objective: the run's objective: its ``PLOT_GROUPS`` and ``stage_end_plots``.
    state / inputs: the current TrainState and the run's inputs, for evaluation plots.
    stage: the name of the stage that just ended.
    writer: a :class:`vedgan.writers.MetricWriter` (or None): PNGs become TB images at ``step``.
    evaluation: False skips the objective's evaluation plots (they run the model); so
      does ``config.train.eval_plots = False`` where a config defines that field;
      ``config.train.curve_plots = False`` skips the curves (training_curves.png and the
      objective's plot groups).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  train_config = getattr(getattr(objective, "config", None), "train", None)
  if train_config is None or not hasattr(train_config, "get"):
    train_config = {}
  paths = []
  if train_config.get("curve_plots", True):
    paths += [p for p in [training_curves(workdir)] if p]
    if objective is not None:
      paths += group_plots(workdir, dict(getattr(objective, "PLOT_GROUPS", {}) or {}))
  if objective is not None:
    # Evaluation plots run the model on the chief only: with several processes the
    # other hosts would not join its computations, so they are left to the CLI tools.
    evaluation = evaluation and jax.process_count() == 1
    evaluation = evaluation and bool(train_config.get("eval_plots", True))
    if evaluation and state is not None and hasattr(objective, "stage_end_plots"):
      t0, c0 = time.perf_counter(), time.process_time()
      try:
        paths += list(objective.stage_end_plots(state, inputs, stage,
                                                os.path.join(workdir, "plots")))
      except Exception as e:  # pylint: disable=broad-except
        # A plot must never end a training run; the message says what failed.
        logging.warning("stage-end evaluation plots of %s failed: %s: %s", stage,
                        type(e).__name__, e)
      logging.info("stage-end evaluation plots of %s took %.2fs (%.2fs CPU)", stage,
                   time.perf_counter() - t0, time.process_time() - c0)
  if writer is not None:
    writer.images(step, paths)
  return paths
