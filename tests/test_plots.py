"""Stage-end plots (vedgan.plots) and the TensorBoard text / image summaries (vedgan.writers).

Budget: 30 s on 2 cores (one tiny seq2seq run; the rest draws synthetic metrics).
"""
import io
import json
import os
import struct

import numpy as np
import pytest
from conftest import make_config
from fakes import FakeTokenizer
from PIL import Image

from vedgan import plots, train, writers
from vedgan.objective import get_objective_class
from vedgan.papers.seq2seq.algorithm import Seq2SeqObjective

# The train scalars each objective's steps log (read off the metrics.jsonl of a tiny run
# of every stage of its demo config); validation scalars are the ``validation/`` ones.
LOGGED = {
    "mojitalk": ["loss", "nll", "rec", "kl", "kl_weight", "bow", "reward_gen", "reward_gold",
                 "alpha", "gen_top1", "cvae_loss", "policy", "validation/kl",
                 "validation/bow"],
    "collaborative_ved": ["loss", "kl", "kl_weight", "nll", "keep_rate", "recon_z",
                          "ss_real_fraction", "validation/kl", "validation/active_units",
                          "validation/kl_max_dim", "validation/mutual_information"],
    "happybot": ["loss", "reward", "baseline", "advantage_abs", "rl", "mle", "mixed",
                 "validation/reward_lookahead", "validation/reward_current"],
    "latent_gan": ["loss", "d_loss", "g_adv", "d_acc_real", "d_acc_fake", "d_real", "d_fake",
                   "recon", "validation/d_acc_real", "validation/d_acc_fake",
                   "validation/recon"],
    "topk_gan": ["loss", "d_loss", "g_adv_loss", "d_accuracy", "d_human", "d_generated",
                 "validation/d_accuracy", "validation/d_human", "validation/d_generated",
                 "validation/d_topk"],
}
# The figure each objective must draw from those scalars: latent, RL and GAN panels.
EXPECTED = {"mojitalk": ("latent_kl", "rl_reward"), "collaborative_ved": ("latent_kl",),
            "happybot": ("rl_reward",), "latent_gan": ("gan",), "topk_gan": ("gan",)}


def _synthetic_rows(names, steps=12, seed=0):
  """metrics.jsonl rows: train scalars every step, validation ones every 4 steps."""
  rng = np.random.RandomState(seed)
  rows = []
  for step in range(1, steps + 1):
    row = {"step": step, "stage": "s", "split": "train"}
    row.update({n: float(rng.rand()) for n in names if "/" not in n})
    rows.append(row)
    if step % 4 == 0:
      val = {"step": step, "stage": "s", "split": "validation"}
      val.update({n.split("/")[1]: float(rng.rand()) for n in names if "/" in n})
      rows.append(val)
  return rows


def _check_png(path, min_size=(300, 200)):
  """The file is a PNG of at least ``min_size`` (w, h) whose pixels are not all one colour."""
  pixels = writers.read_png(path)
  assert pixels.shape[1] >= min_size[0] and pixels.shape[0] >= min_size[1], pixels.shape
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
  return pixels


def test_series_points_select_split_and_difference():
  rows = [{"step": 1, "split": "train", "a": 2.0, "b": 0.5},
          {"step": 2, "split": "train", "a": 3.0},
          {"step": 2, "split": "validation", "a": 9.0, "b": "nan"}]
  assert plots.series_points(rows, "a") == ([1, 2], [2.0, 3.0])
  assert plots.series_points(rows, "validation/a") == ([2], [9.0])
  assert plots.series_points(rows, "gap = a - b") == ([1], [1.5])
  assert plots.series_points(rows, "validation/a - b") == ([], [])  # "nan" is no number
  assert plots.series_points(rows, "missing") == ([], [])


@pytest.mark.parametrize("name", sorted(LOGGED))
def test_every_panel_draws_scalars_its_objective_logs(tmp_path, name):
  cls = get_objective_class(name)
  groups = cls.PLOT_GROUPS
  logged = set(LOGGED[name])
  for stem, panels in groups.items():
    for panel in panels:
      specs = [s.split("=", 1)[-1] for s in panel.series + panel.twin]
      names = {n.strip() for s in specs for n in s.split(" - ")}
      assert names & logged, f"{name}/{stem}: panel {panel.title!r} shows nothing logged"
  paths = plots.group_plots(str(tmp_path), groups, _synthetic_rows(LOGGED[name]))
  stems = sorted(os.path.basename(p)[:-4] for p in paths)
  assert stems == sorted(EXPECTED[name])
  for p in paths:
    _check_png(p)


def test_groups_without_logged_scalars_write_nothing(tmp_path):
  rows = _synthetic_rows(["loss"])
  panels = (plots.Panel("gan", ("d_loss", "g_adv")),)
  assert plots.plot_panels(rows, panels, str(tmp_path / "x.png")) is None
  assert not (tmp_path / "x.png").exists()


def _tfrecords(path):
  """The serialized records of a TFRecord file (length, crc, data, crc)."""
  out = []
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return out
      (length,) = struct.unpack("<Q", header[:8])
      out.append(f.read(length))
      f.read(4)


def _summaries(workdir):
  """``{tag: [(step, summary value)]}`` of every TensorBoard event file of a run."""
  # TensorBoard's own protos (the ``tensorboard`` package of the test extra)
  from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
  found = {}
  tb = os.path.join(workdir, "tensorboard")
  for name in os.listdir(tb):
    for record in _tfrecords(os.path.join(tb, name)):
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        found.setdefault(value.tag, []).append((event.step, value))
  return found


def test_training_run_writes_group_and_evaluation_pngs_and_tensorboard(tmp_path, monkeypatch):
  calls = []

  def stage_end_plots(self, state, inputs, stage, out_dir):
    calls.append((int(state.step), stage, len(inputs.sample_pairs)))
    fig, axes = plots.new_figure((4, 3))
    axes[0, 0].bar(range(5), np.arange(5) + 1.0)
    return [plots.save_figure(fig, os.path.join(out_dir, "eval_bars.png"))]

  monkeypatch.setattr(Seq2SeqObjective, "PLOT_GROUPS", {"mle": (
      plots.Panel("loss and grad norm", ("loss",), ("grad_norm",)),)}, raising=False)
  monkeypatch.setattr(Seq2SeqObjective, "stage_end_plots", stage_end_plots)
  config = make_config(stages__mle__num_steps=2, train__eval_every=1, train__eval_plots=True,
                       train__curve_plots=True)
  train.run(config, str(tmp_path))
  assert calls == [(2, "mle", 2)]
  for stem in ("training_curves", "mle", "eval_bars"):
    _check_png(tmp_path / "plots" / f"{stem}.png", (250, 200))

  found = _summaries(str(tmp_path))
  # One markdown table of (context, response) per evaluation (steps 0, 1, 2).
  texts = found["samples/text_summary"]
  assert [s for s, _ in texts] == [0, 1, 2]
  samples = [json.loads(l) for l in open(tmp_path / "samples.jsonl", encoding="utf-8")]
  table = texts[-1][1].tensor.string_val[0].decode()
  assert "| # | context | response |" in table
  last = [s for s in samples if s["step"] == 2]
  assert len(last) == 2
  for i, s in enumerate(last, 1):
    assert f"| {i} | {writers._cell(s['context'])} |" in table  # pylint: disable=protected-access
  # Every stage-end PNG as an image at the stage's last step, pixel for pixel.
  for stem in ("training_curves", "mle", "eval_bars"):
    (step, value), = found[f"plots/{stem}"]
    assert step == 2
    png = writers.read_png(tmp_path / "plots" / f"{stem}.png")
    assert (value.image.height, value.image.width) == png.shape[:2]
    decoded = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(decoded, png)


def test_latent_gan_diversity_plot_counts_its_own_samples(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from vedgan.papers.latent_gan import algorithm, report  # pylint: disable=import-outside-toplevel

  config = make_config("configs/latent_gan.py", "demo", data__max_len=6, model__embed_dim=8,
                       model__gen_hidden=16, model__disc_hidden=8, model__rec_hidden=8,
                       model__latent_dim=4)
  # id i > 5 decodes to the word "w<i>" (5 is the GAN's blank)
  obj = algorithm.LatentGAN(config, FakeTokenizer(vocab_size=24))
  rows = np.zeros((4, 6), np.int32)
  batch = {"tokens_in": rows, "tokens_out": rows, "weight": np.ones(4, np.float32)}
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  taus, n, seed = (0.0, 1.0, 3.0), report.PLOT_SAMPLES, 5
  curves = report.diversity_by_temperature(obj, state, taus, n, seed)
  for i, tau in enumerate(taus):  # recount from the raw token rows (<unk> = id 1: one word)
    sents = []
    for row in obj.sample(state, n, jax.random.key(seed), tau, chunk=n).tolist():
      row = row[:row.index(5)] if 5 in row else row
      sents.append(["<unk>" if t == 1 else f"w{t}" for t in row if t > 5 or t == 1])
    uni = [w for s in sents for w in s]
    bi = [tuple(s[j:j + 2]) for s in sents for j in range(len(s) - 1)]
    assert curves["distinct-1"][i] == pytest.approx(len(set(uni)) / len(uni) if uni else 0.0)
    assert curves["distinct-2"][i] == pytest.approx(len(set(bi)) / len(bi) if bi else 0.0)
    assert curves["distinct sentences"][i] == pytest.approx(
        len({" ".join(s) for s in sents}) / n)
  assert curves["distinct-1"][2] > curves["distinct-1"][0]  # hotter sampling, more words
  paths = obj.stage_end_plots(state, None, "gan", str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["diversity_vs_temperature.png"]
  _check_png(paths[0])


def test_perplexity_is_on_a_log_axis_and_seq2seq_shows_train_and_validation_nll_together(
    tmp_path, monkeypatch):
  """Issue 22: the train loss and the validation NLL were in separate panels (overfitting
  invisible) and the perplexity on a linear axis."""
  seen = {}
  real_save = plots.save_figure

  def spy(fig, path, **kwargs):
    seen[os.path.basename(path)] = [(ax.get_title(), ax.get_yscale(),
                                     [l.get_label() for l in ax.get_lines()])
                                    for ax in fig.axes if ax.get_title()]
    return real_save(fig, path, **kwargs)

  monkeypatch.setattr(plots, "save_figure", spy)
  rows = [{"step": s, "stage": "mle", "split": "train", "loss": 3.0 - s / 10} for s in (1, 2, 3)]
  rows += [{"step": s, "stage": "mle", "split": "validation", "nll": 3.2 - s / 20,
            "perplexity": float(np.exp(3.2 - s / 20))} for s in (1, 2, 3)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  plots.training_curves(str(tmp_path))
  scales = {title: scale for title, scale, _ in seen["training_curves.png"]}
  assert scales["perplexity"] == "log" and scales["loss"] == "linear"
  # reading order: the loss and the likelihood first, bookkeeping last
  assert [t for t, _, _ in seen["training_curves.png"]] == ["loss", "nll", "perplexity"]
  names = plots.curve_names([{"split": "train", "step": 1, "alpha": 1.0, "bow": 60.0,
                              "grad_norm": 2.0, "loss": 1.0, "tokens_per_sec": 5.0},
                             {"split": "validation", "step": 1, "kl": 0.5, "nll": 3.0}])
  assert names == ["loss", "nll", "kl", "alpha", "bow", "grad_norm"]
  # MojiTalk's validation KL (~1 nat) and BoW loss (~60 nats) on their own y axes
  from vedgan.papers.mojitalk.algorithm import MojiTalkObjective  # pylint: disable=import-outside-toplevel
  (kl_bow,) = [p for p in MojiTalkObjective.PLOT_GROUPS["latent_kl"] if "bag" in p.title]
  assert kl_bow.series == ("validation/kl",) and kl_bow.twin == ("validation/bow",)
  plots.group_plots(str(tmp_path), Seq2SeqObjective.PLOT_GROUPS)
  (nll_title, nll_scale, nll_lines), (_, ppl_scale, _) = seen["likelihood.png"]
  assert nll_lines == ["train loss", "validation NLL"] and nll_scale == "linear"
  assert ppl_scale == "log"
  # the top-k GAN's D outputs P(generated) (human responses have label 0 in Eq. 5)
  from vedgan.papers.topk_gan.algorithm import TopKGANObjective  # pylint: disable=import-outside-toplevel
  (panel,) = [p for p in TopKGANObjective.PLOT_GROUPS["gan"] if "human" in p.title]
  assert "P(generated)" in panel.ylabel and "P(human)" not in panel.ylabel
