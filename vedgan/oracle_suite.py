"""Suites of the synthetic oracle (issue 18): ``oracle_temperature``, the temperature sweep
(item 4), and ``oracle_curves``, NLL-oracle and NLL-test of several runs against epochs of
generator updates.

"Language GANs falling short" (Caccia et al.) compare generators by the whole
quality-diversity curve their sampling temperature traces, not one point. On the oracle
both axes are exact:

* quality: ``nll_oracle(T)``, the oracle's mean per-token NLL of ``N`` sequences sampled
  from the model at temperature ``T`` (lower is better);
* diversity / coverage: ``nll_test(T)``, the model's mean per-token NLL of the held-out
  oracle sequences under ``softmax(o / T)`` (models with a likelihood, ``lstm_lm``), or,
  for models without one (``latent_gan``), Self-BLEU-n of the first
  :data:`SELF_BLEU_SAMPLES` samples (ids as words; lower is more diverse).

``oracle_curves`` reads the validation rows of ``metrics.jsonl`` of the run and of every
``--compare_workdirs`` run and plots them against *epochs of generator updates* (a global
step of the latent GAN's ``disc*1,gen*1`` cycle is half a generator update), so an MLE run
and a GAN of as many generator updates share an axis; the oracle's own NLL is dashed.
Writes ``eval/oracle_curves.json`` and ``eval/oracle_curves.png``.

Usage::

  python -m vedgan.evaluate --workdir RUN --suite oracle_temperature \\
      [--compare_workdirs OTHER_RUN,...] [--num_samples N] [--temperatures 0.5,1,2]

``--num_samples`` (default ``data.oracle_eval_samples``) sequences per temperature, sampling
seed ``--seed``; the temperatures default to :data:`TEMPERATURES` (``--temperatures`` is
used when given). Writes ``eval/oracle_temperature.json`` and ``eval/oracle_temperature.png``
(NLL-oracle against the diversity axis, one curve per run, the oracle's own floor dashed).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from vedgan import eval_suites, oracle
from vedgan import oracle_eval
from vedgan.errors import ConfigError
from vedgan.metrics import _plotting
from vedgan.metrics.bleu import self_bleu

#: The sweep's default temperatures (0.5-2.0, as the issue and Caccia et al.).
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: Self-BLEU is quadratic in the sample count: the first 500 samples are scored.
SELF_BLEU_SAMPLES = 500


def _temperatures(run: eval_suites.EvalRun) -> tuple[float, ...]:
  given = tuple(float(t) for t in run.options.temperatures)
  temps = TEMPERATURES if given == tuple(eval_suites.EvalOptions().temperatures) else given
  if any(not t > 0 for t in temps):
    raise ConfigError(f"--temperatures {','.join(f'{t:g}' for t in temps)}: the oracle sweep "
                      "samples at each temperature, so every one must be > 0")
  return temps


@contextlib.contextmanager
def _runs(run: eval_suites.EvalRun):
  """``run`` and every ``--compare_workdirs`` run (opened read-only, closed on exit)."""
  with eval_suites.compared_runs(run) as opened:
    for r in opened:
      if not oracle_eval.applies(r.config):
        raise ConfigError(f"{r.workdir} trains on data.name={r.config.data.name!r}; the "
                          "oracle_temperature suite needs runs of configs/oracle.py")
    yield opened


def sweep(run: eval_suites.EvalRun, temperatures, num_samples: int, seed: int,
          max_n: int) -> dict[str, Any]:
  """One run's curve: ``{"name", "workdir", "step", "likelihood", "floor", "points":
  [{"temperature", "nll_oracle", "nll_test" | "self_bleu"}]}``."""
  ev = oracle_eval.OracleEvaluator(run.config, run.objective)
  floor = ev.floor              # as in metrics.jsonl: data.oracle_eval_samples fresh samples
  if num_samples:
    ev.num_samples, ev.chunk = num_samples, min(oracle_eval.CHUNK, num_samples)
  likelihood = oracle_eval.has_likelihood(run.objective)
  points = []
  for t in temperatures:
    tokens, _ = ev.model_samples(run.trainer.state, t, seed=seed)
    point = {"temperature": t, "nll_oracle": oracle.mean_nll(ev.params, tokens, ev.chunk)}
    if likelihood:
      point["nll_test"] = ev.nll_test(run.trainer.state, t)
    else:
      point["self_bleu"] = self_bleu(tokens[:SELF_BLEU_SAMPLES].tolist(), max_n)
    points.append(point)
  name = f"{run.config.objective} ({os.path.basename(os.path.normpath(run.workdir))})"
  return {"name": name, "workdir": run.workdir, "step": run.step, "likelihood": likelihood,
          "num_samples": ev.num_samples, "floor": floor, "points": points}


def _finish_axes(ax, floor, xlabel: str, ylabel: str) -> None:
  """The oracle's own NLL dashed (when known), labels, grid and legend."""
  if floor is not None:
    ax.axhline(floor, ls="--", color="grey", lw=1, label=f"oracle's own NLL ({floor:.2f})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot(curves, path: str, max_n: int) -> str:
  """NLL-oracle (y) against NLL-test or Self-BLEU (x), one panel per x-axis kind."""
  kinds = [k for k in (True, False) if any(c["likelihood"] == k for c in curves)]
  fig, axes = _plotting.new_figure((6.0 * len(kinds), 4.5), ncols=len(kinds))
  axes = list(axes) if len(kinds) > 1 else [axes]
  for ax, likelihood in zip(axes, kinds):
    key = "nll_test" if likelihood else "self_bleu"
    for c in (c for c in curves if c["likelihood"] == likelihood):
      xs = [p[key] for p in c["points"]]
      ys = [p["nll_oracle"] for p in c["points"]]
      line, = ax.plot(xs, ys, "o-", markersize=4, label=c["name"])
      for p, x, y in zip(c["points"], xs, ys):
        ax.annotate(f"T={p['temperature']:g}", (x, y), fontsize=6, xytext=(3, 3),
                    textcoords="offset points", color=line.get_color())
    _finish_axes(ax, curves[0]["floor"],
                 "NLL-test (coverage, lower is better)" if likelihood
                 else f"Self-BLEU-{max_n} of the samples (lower is more diverse)",
                 "NLL-oracle of the samples (quality, lower is better)")
  fig.suptitle("Synthetic oracle: temperature sweep")
  return _plotting.save(fig, path)


@eval_suites.register_suite("oracle_temperature", decodes=False)
def temperature_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """NLL-oracle against NLL-test (or Self-BLEU) over sampling temperatures."""
  temps = _temperatures(run)
  n, seed, max_n = int(run.options.num_samples), int(run.options.seed), int(run.options.max_n)
  with _runs(run) as runs:
    curves = [sweep(r, temps, n, seed, max_n) for r in runs]
  values = {}
  for c in curves:
    for p in c["points"]:
      for key in ("nll_oracle", "nll_test", "self_bleu"):
        if key in p:
          values[f"{c['name']}: {key}@{p['temperature']:g}"] = p[key]
  values["nll_oracle_data"] = curves[0]["floor"]
  png = plot(curves, os.path.join(run.eval_dir, "oracle_temperature.png"), max_n)
  summary = (f"{len(curves)} run(s) x {len(temps)} temperatures, "
             f"{curves[0]['num_samples']} samples each; floor {curves[0]['floor']:.3f} -> "
             f"{os.path.relpath(png, run.workdir)}")
  return eval_suites.SuiteOutput(values, {}, summary, extra={"curves": curves}, plots=[png])


def generator_epochs(run: eval_suites.EvalRun) -> float:
  """Epochs of generator updates per global step: the share of the stages' cycle steps
  that train the generator, over the batches in an epoch of the training split."""
  trainer, objective = run.trainer, run.objective
  steps = objective.steps()
  span = trainer.plan.spans[0]
  cycle = [name for name, n in span.cycle for _ in range(int(n))]
  share = sum("generator" in steps[name].trains for name in cycle) / len(cycle)
  d = run.config.data
  per_epoch = -(-int(d.oracle_train_size) // int(run.config.train.batch_size))
  return share / per_epoch


def _curve(run: eval_suites.EvalRun) -> dict[str, Any]:
  val = []
  with open(os.path.join(run.workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      try:   # a run still training may be writing its last line
        r = json.loads(line)
      except ValueError:
        continue
      if r.get("split") == "validation" and "nll_oracle" in r:
        val.append(r)
  scale = generator_epochs(run)
  name = f"{run.config.objective} ({os.path.basename(os.path.normpath(run.workdir))})"
  return {"name": name, "workdir": run.workdir, "epochs_per_step": scale,
          "points": [{"step": r["step"], "epoch": r["step"] * scale,
                      **{k: r[k] for k in ("nll_oracle", "nll_test", "nll_oracle_data")
                         if k in r}} for r in val]}


def plot_curves(curves, path: str) -> str:
  """NLL-oracle (solid) and NLL-test (dotted) against epochs of generator updates."""
  fig, ax = _plotting.new_figure((7.0, 4.5))
  for i, c in enumerate(curves):
    xs = [p["epoch"] for p in c["points"]]
    ax.plot(xs, [p["nll_oracle"] for p in c["points"]], "-", color=f"C{i}",
            label=f"{c['name']}: NLL-oracle")
    if any("nll_test" in p for p in c["points"]):
      pts = [p for p in c["points"] if "nll_test" in p]
      ax.plot([p["epoch"] for p in pts], [p["nll_test"] for p in pts], ":", color=f"C{i}",
              label=f"{c['name']}: NLL-test")
  floors = [p["nll_oracle_data"] for c in curves for p in c["points"] if "nll_oracle_data" in p]
  _finish_axes(ax, floors[0] if floors else None, "epochs of generator updates",
               "nats per token (lower is better)")
  fig.suptitle("Synthetic oracle: NLL-oracle (quality) and NLL-test (coverage) in training")
  return _plotting.save(fig, path)


@eval_suites.register_suite("oracle_curves", decodes=False)
def curves_suite(run: eval_suites.EvalRun) -> eval_suites.SuiteOutput:
  """The training curves of the run and of ``--compare_workdirs``, on one axis."""
  with _runs(run) as runs:
    curves = [_curve(r) for r in runs]
  values = {}
  for c in curves:
    if c["points"]:
      last = c["points"][-1]
      values[f"{c['name']}: final nll_oracle"] = last["nll_oracle"]
      values[f"{c['name']}: best nll_oracle"] = min(p["nll_oracle"] for p in c["points"])
  png = plot_curves(curves, os.path.join(run.eval_dir, "oracle_curves.png"))
  summary = f"{len(curves)} run(s) -> {os.path.relpath(png, run.workdir)}"
  return eval_suites.SuiteOutput(values, {}, summary, extra={"curves": curves}, plots=[png])
