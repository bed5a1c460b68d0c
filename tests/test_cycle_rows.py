"""Train rows of a cycle name the step function that produced them (issue 20).

A logging window of a cycle (the collaborative VED's ``"ae*N,cvae*N"``, a GAN's
``"disc*5,gen*1"``) mixes step functions; the driver writes one ``metrics.jsonl`` train row
per step function, its ``step_name`` field naming it and its scalars averaged over that
step function's steps only, and the training-curve plots draw a series that several step
functions log as one curve per step function.
"""
import json
import os

import numpy as np
import pytest
from conftest import make_config

from vedgan import plots, steps, train
from vedgan.papers.seq2seq.algorithm import Seq2SeqObjective
from vedgan.steps import Step, Weighted
from vedgan.writers import MetricWriter


def _row(name, ok=True, **metrics):
  return {"name": name, "ok": ok, "metrics": metrics}


def test_rows_by_step_averages_each_step_function_on_its_own():
  rows = [_row("disc", loss=1.0, d_acc=0.5), _row("disc", loss=3.0, d_acc=1.0),
          _row("gen", loss=10.0, g_adv=2.0), _row("disc", ok=False, loss=float("nan")),
          _row("disc", loss=5.0, d_acc=0.0)]
  out = steps.rows_by_step(rows, count_skipped=True)
  assert [name for name, _ in out] == ["disc", "gen"]            # first-run order
  disc, gen = dict(out)["disc"], dict(out)["gen"]
  assert disc == {"loss": 3.0, "d_acc": 0.5, "skipped_nonfinite": 1.0}   # the NaN step left out
  assert gen == {"loss": 10.0, "g_adv": 2.0, "skipped_nonfinite": 0.0}
  assert "skipped_nonfinite" not in dict(steps.rows_by_step(rows))["disc"]
  # A step function whose every step was skipped still gets its (empty) row.
  assert steps.rows_by_step([_row("gen", ok=False, loss=1.0)], True) == [
      ("gen", {"skipped_nonfinite": 1.0})]


def test_the_writer_adds_string_tags_and_plots_read_the_same_field(tmp_path):
  assert plots.STEP_NAME == steps.STEP_NAME_FIELD == "step_name"
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  writer.scalars(4, "co", "train", {"loss": 2.0}, tags={"step_name": "ae"})
  writer.scalars(4, "co", "validation", {"loss": 1.0})
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert all(r.pop("wall_time") > 0 for r in rows)          # when each row was written
  assert rows == [{"step": 4, "stage": "co", "split": "train", "step_name": "ae", "loss": 2.0},
                  {"step": 4, "stage": "co", "split": "validation", "loss": 1.0}]


ROWS = [{"step": 2, "stage": "co", "split": "train", "step_name": "ae", "loss": 1.0, "kl": 4.0},
        {"step": 2, "stage": "co", "split": "train", "step_name": "cvae", "loss": 7.0},
        {"step": 4, "stage": "co", "split": "train", "step_name": "ae", "loss": 2.0, "kl": 5.0},
        {"step": 4, "stage": "co", "split": "train", "step_name": "cvae", "loss": 6.0},
        {"step": 4, "stage": "co", "split": "validation", "loss": 3.0}]


def test_series_are_split_by_step_function():
  assert plots.series_points(ROWS, "loss") == ([2, 2, 4, 4], [1.0, 7.0, 2.0, 6.0])
  assert plots.series_points(ROWS, "loss", "cvae") == ([2, 4], [7.0, 6.0])
  assert plots.series_step_names(ROWS, "loss") == ["ae", "cvae"]
  assert plots.series_step_names(ROWS, "kl") == ["ae"]
  assert plots.series_step_names(ROWS, "validation/loss") == []


def _lines(rows, specs):
  fig, axes = plots.new_figure((3, 3))
  handles = plots._draw(axes[0, 0], rows, specs, "-", iter(f"C{i}" for i in range(9)))
  del fig
  return {h.get_label(): (list(h.get_xdata()), list(h.get_ydata())) for h in handles}


def test_each_step_functions_losses_are_their_own_curve():
  assert _lines(ROWS, ["loss", "validation/loss", "kl"]) == {
      "loss [ae]": ([2, 4], [1.0, 2.0]), "loss [cvae]": ([2, 4], [7.0, 6.0]),
      "validation/loss": ([4], [3.0]), "kl": ([2, 4], [4.0, 5.0])}
  # Rows logged before the field existed: one curve, as before.
  old = [{k: v for k, v in r.items() if k != "step_name"} for r in ROWS]
  assert _lines(old, ["loss"]) == {"loss": ([2, 2, 4, 4], [1.0, 7.0, 2.0, 6.0])}


# -- the driver ------------------------------------------------------------------------------


def _two_step_objective(monkeypatch):
  """seq2seq with a second step function ``half`` (half the MLE loss, its own metric), so
  that a stage can cycle ``"mle*1,half*1"``."""
  original = Seq2SeqObjective.steps

  def two_steps(self):
    mle = original(self)["mle"]

    def half(params, batch, ctx):
      loss, metrics = self.mle_loss(params, batch, ctx)
      return Weighted(0.5 * loss.total, loss.count), {**metrics, "half_only": 1.0}

    return {"mle": mle, "half": Step(trains=("model",), loss=half)}

  monkeypatch.setattr(Seq2SeqObjective, "STEPS", ("mle", "half"))
  monkeypatch.setattr(Seq2SeqObjective, "steps", two_steps)


def _train_rows(workdir):
  with open(os.path.join(str(workdir), "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r["split"] == "train"]


def test_driver_writes_one_row_per_step_function_of_a_window(tmp_path, monkeypatch, capsys):
  _two_step_objective(monkeypatch)
  # The stage-end validation is no part of this: a fixed value (no evaluation program).
  monkeypatch.setattr(train.Trainer, "evaluate", lambda self: {"nll": 1.0, "perplexity": 2.0})
  common = dict(stages__mle__step="mle*1,half*1", stages__mle__num_steps=4,
                train__eval_every=10_000, train__checkpoint_every=10_000, train__num_samples=0,
                train__eval_plots=False)
  train.run(make_config(train__log_every=4, train__curve_plots=True, **common),
            str(tmp_path / "window"))
  capsys.readouterr()
  train.run(make_config(train__log_every=1, train__progress=True, **common),
            str(tmp_path / "each"))
  # the progress bar's label is the running stage and its own steps (the bar counts all)
  assert "mle 4/4: 100%" in capsys.readouterr().err
  window, each = _train_rows(tmp_path / "window"), _train_rows(tmp_path / "each")
  # Every step on its own: steps 1, 3 ran "mle", 2, 4 "half".
  assert [(r["step"], r["step_name"]) for r in each] == [(1, "mle"), (2, "half"), (3, "mle"),
                                                         (4, "half")]
  # One window of 4 steps: a row per step function, each its own steps' mean.
  assert [(r["step"], r["stage"], r["step_name"]) for r in window] == [
      (4, "mle", "mle"), (4, "mle", "half")]
  for row in window:
    mine = [r for r in each if r["step_name"] == row["step_name"]]
    assert row["loss"] == pytest.approx(np.mean([r["loss"] for r in mine]), rel=1e-6)
    assert row["tokens_per_sec"] > 0
  assert "half_only" in window[1] and "half_only" not in window[0]
  # The curves: "loss [mle]" and "loss [half]" in the run's training_curves.png.
  assert set(_lines(window, ["loss"])) == {"loss [mle]", "loss [half]"}
  assert (tmp_path / "window" / "plots" / "training_curves.png").stat().st_size > 1000


def test_the_progress_bar_shows_each_step_functions_loss_and_never_nan():
  """It showed loss=nan whenever the window's last step function computes no loss (the
  top-k GAN's replay refill)."""
  cycle = [("gadv", {"g_adv_loss": 0.3}), ("refill", {"replay_size": 64.0}),
           ("dstep", {"loss": 0.7}), ("gmle", {"loss": 4.25})]
  assert train.bar_postfix(cycle, 1234.4) == {"loss[dstep]": "0.7000", "loss[gmle]": "4.2500",
                                              "tok_s": "1234"}
  assert train.bar_postfix([("mle", {"loss": 2.0})], 10.0) == {"loss": "2.0000", "tok_s": "10"}
  assert train.bar_postfix([("refill", {"replay_size": 1.0})], 10.0) == {"tok_s": "10"}
