"""Small helpers for the Colab notebooks in ``colab/`` (and any Jupyter session).

The notebooks train and evaluate through the library itself (``vedgan.train.run``,
the objectives' evaluation functions); this module only holds what a notebook
needs around them:

* :func:`smoke_mode`: ``VEDGAN_SMOKE=1`` (set by ``tests/test_notebooks.py``)
  selects the ``demo`` configs shrunk to a handful of steps per stage, so every
  notebook runs top to bottom on a CPU in seconds;
* :func:`show_devices`: the accelerators JAX sees (TPU cores, GPUs or the CPU),
  with plain ``jax.devices()`` (works on current Colab TPU runtimes);
* :func:`run_dir`: where a notebook's runs go (``/content/runs`` on Colab);
* :func:`load_config`: a config file and variant plus dotted overrides, exactly
  as ``python -m vedgan.main --config configs/X.py:VARIANT --config.a.b=v``
  builds it (smoke shrinking applied last);
* :func:`open_run`: a finished run opened read-only for sampling;
* :func:`show_image`, :func:`show_markdown`, :func:`plot_metrics`: results inline.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

from vedgan.errors import ConfigError

SMOKE_ENV = "VEDGAN_SMOKE"
RUNS_ENV = "VEDGAN_NOTEBOOK_RUNS"

# Smoke mode (CI): tiny networks and vocabularies per objective, so a notebook's
# compilations and steps take seconds on one CPU core. Stage lengths are set by
# :func:`_shrink_stages` unless listed here. Not meant for anything but CI.
_TINY_DIALOGUE = {
    "tokenizer.vocab_size": 300,
    "train.batch_size": 8,
    "train.eval_batch_size": 16,
}
SMOKE_OVERRIDES: dict[str, dict[str, Any]] = {
    "seq2seq": {**_TINY_DIALOGUE, "model.embed_dim": 16, "model.hidden": 16,
                "data.max_context_len": 16, "data.max_response_len": 12, "data.buckets": (16,)},
    "mojitalk": {**_TINY_DIALOGUE, "model.embed_dim": 16, "model.hidden": 16,
                 "model.latent_dim": 8, "model.recognition_hidden": (8, 8),
                 "model.prior_hidden": (8, 8), "model.classifier.embed_dim": 16,
                 "model.classifier.hidden": 16, "data.max_context_len": 16,
                 "data.max_response_len": 12, "data.buckets": (16,),
                 "decode.latent_samples": 2,
                 "stages.rl.policy_start_epochs": 0.0},   # let the REINFORCE term run
    "happybot": {**_TINY_DIALOGUE, "model.embed_dim": 16, "model.hidden": 16,
                 "model.classifier.embed_dim": 16, "model.classifier.hidden": 16,
                 "data.max_context_len": 16, "data.max_response_len": 12,
                 "data.max_turn_len": 12, "data.buckets": (16,)},
    "collaborative_ved": {**_TINY_DIALOGUE, "model.embed_dim": 16,
                          "model.utterance_hidden": 16, "model.context_hidden": 16,
                          "model.decoder_hidden": 16, "model.latent_dim": 8,
                          "model.estimator_hidden": 16, "data.max_turns": 2,
                          "data.max_turn_len": 12, "data.max_context_len": 12,
                          "data.max_response_len": 12, "data.buckets": (12,),
                          "data.turn_buckets": (2,), "decode.beam_width": 2,
                          "ved.steps_per_epoch": 2},   # AE and CVAE phases both run
    "latent_gan": {"tokenizer.vocab_size": 300, "model.embed_dim": 16, "model.gen_hidden": 16,
                   "model.disc_hidden": 16, "model.rec_hidden": 16, "data.max_len": 10,
                   "train.batch_size": 8, "train.eval_batch_size": 16, "sweep.num_samples": 16,
                   "sweep.temperatures": (0.0, 1.0)},
    "lstm_lm": {"tokenizer.vocab_size": 300, "model.embed_dim": 16, "model.gen_hidden": 16,
                "data.max_len": 10, "train.batch_size": 8, "train.eval_batch_size": 16,
                "sweep.num_samples": 16, "sweep.temperatures": (0.0, 1.0)},
    "topk_gan": {**_TINY_DIALOGUE, "model.word_dim": 16, "model.encoder_layers": 1,
                 "model.encoder_hidden": 16, "model.decoder_layers": 1, "model.decoder_hidden": 16,
                 "model.attention_hidden": 16, "model.output_hidden": 16, "model.disc_layers": 1,
                 "model.disc_hidden": 16, "model.disc_mlp_hidden": 16,
                 "data.max_context_len": 12, "data.max_response_len": 12, "data.buckets": (12,),
                 "gan.replay_capacity": 64, "gan.report_inputs": 16, "gan.table_iteration": 1,
                 "gan.nn_check_ks": (2, 3)},
}
# Every smoke run: evaluate only at step 0 and at the end, few validation batches.
_SMOKE_TRAIN = {"train.eval_every": 10**6, "train.checkpoint_every": 10**6,
                "train.log_every": 2, "train.num_samples": 2, "train.eval_batches": 2}


def smoke_mode() -> bool:
  """True when ``$VEDGAN_SMOKE`` is set to 1/true/yes (CI runs the notebooks this way)."""
  return os.environ.get(SMOKE_ENV, "").strip().lower() in ("1", "true", "yes")


def in_colab() -> bool:
  """True inside a Google Colab runtime."""
  return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def show_devices() -> list:
  """Prints the backend and every device JAX sees; returns ``jax.devices()``.

  On a Colab TPU runtime this lists the TPU cores (8 on v2-8, 1 on v5e-1 ...),
  on a GPU runtime the GPU, otherwise the CPU. The global batch is split over
  all of them (``train.batch_size`` must be divisible by their number).
  """
  import jax  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  print(f"JAX {jax.__version__}, backend {jax.default_backend()}: {len(devices)} device(s) "
        f"({', '.join(kinds)}), {jax.process_count()} process(es)")
  for d in devices:
    print(f"  {d.id}: {d.platform} {d.device_kind}")
  return devices


def run_dir(name: str) -> str:
  """The workdir of a notebook's run ``name``.

  ``$VEDGAN_NOTEBOOK_RUNS/NAME`` if set (the tests use a temporary folder), else
  ``/content/runs/NAME`` on Colab (point it at a mounted Drive folder to keep runs
  across sessions) and ``~/vedgan-runs/NAME`` elsewhere.
  """
  root = os.environ.get(RUNS_ENV) or ("/content/runs" if in_colab()
                                      else os.path.join("~", "vedgan-runs"))
  return os.path.join(os.path.abspath(os.path.expanduser(root)), name)


def _config_module(config: str):
  """The module of ``config``: a name (``"mojitalk"``: ``configs.mojitalk``) or a ``.py`` path."""
  if config.endswith(".py"):
    path = os.path.abspath(os.path.expanduser(config))
    if not os.path.isfile(path):
      raise ConfigError(f"config file {config} not found; pass a name such as 'mojitalk' or the "
                        "path of a config file")
    spec = importlib.util.spec_from_file_location(
        "vedgan_notebook_config_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  try:
    return importlib.import_module(f"configs.{config}")
  except ModuleNotFoundError:
    raise ConfigError(f"no config named {config!r}; use one of seq2seq, mojitalk, happybot, "
                      "collaborative_ved, latent_gan, topk_gan, or a .py path") from None


def set_field(config, dotted: str, value: Any) -> None:
  """``config.a.b = value`` for ``dotted = "a.b"``; an unknown field is a one-line error."""
  node = config
  *parents, leaf = dotted.split(".")
  for i, p in enumerate(parents):
    if p not in node:
      raise ConfigError(f"config has no field {'.'.join(parents[:i + 1])!r} (override "
                        f"{dotted!r}); check the spelling against the config file")
    node = node[p]
  if leaf not in node:
    raise ConfigError(f"config has no field {dotted!r}; check the spelling against the config "
                      "file (overrides cannot add fields)")
  node[leaf] = value


def _shrink_stages(config, steps: int) -> None:
  """Each stage to ``steps`` passes of its cycle (so every step function runs)."""
  from vedgan.plan import Plan  # pylint: disable=import-outside-toplevel

  for span in Plan.from_config(config).spans:
    config.stages[span.name].num_steps = span.period * steps


def smoke_overrides(config) -> dict[str, Any]:
  """The overrides :func:`load_config` applies in smoke mode for ``config.objective``."""
  return {**_SMOKE_TRAIN, **SMOKE_OVERRIDES.get(str(config.objective), {})}


def load_config(config: str, variant: str = "", overrides: Mapping[str, Any] | None = None,
                smoke: bool | None = None, smoke_steps: int = 2):
  """Builds a locked config as ``--config configs/CONFIG.py:VARIANT --config.KEY=VALUE`` does.

  Args:
    config: a name of ``configs/`` (``"mojitalk"``) or the path of a config file.
    variant: the variant (``"demo"``, ``"paper"``, ...; "" = the file's default).
    overrides: ``{"train.batch_size": 256, ...}``; a ``None`` value keeps the
      variant's value. A misspelt field is a one-line :class:`ConfigError`.
    smoke: shrink to a few steps and tiny networks (default :func:`smoke_mode`).
    smoke_steps: passes of each stage's cycle in smoke mode.
  Returns:
    The ``ml_collections.ConfigDict``, locked (``lock_config=True`` as the CLI).
  """
  c = _config_module(config).get_config(variant)
  for dotted, value in (overrides or {}).items():
    if value is not None:
      set_field(c, dotted, value)
  if smoke_mode() if smoke is None else smoke:
    _shrink_stages(c, smoke_steps)
    for dotted, value in smoke_overrides(c).items():
      if dotted.split(".")[0] in c and (not dotted.startswith("stages.")
                                        or dotted.split(".")[1] in c.stages):
        set_field(c, dotted, value)
  c.lock()
  return c


@contextlib.contextmanager
def open_run(workdir: str) -> Iterator[Any]:
  """A trained run opened read-only: a :class:`vedgan.train.Trainer` after ``setup(write=False)``.

  ``with notebook.open_run(WORKDIR) as run:`` gives ``run.objective``,
  ``run.state`` (the latest checkpoint), ``run.inputs`` (tokenizer, validation
  data) and ``run.config`` (the run's saved ``config.json``); closed on exit.
  """
  from vedgan import eval_suites, train  # pylint: disable=import-outside-toplevel

  workdir, config = eval_suites.load_run_config(workdir)
  if not eval_suites.has_checkpoint(workdir):
    raise eval_suites._no_checkpoint(workdir)  # pylint: disable=protected-access
  trainer = train.Trainer(config, workdir)
  trainer.setup(write=False)
  try:
    yield trainer
  finally:
    trainer.close()


def show_image(path: str, width: int | None = 640) -> None:
  """Shows a PNG inline in Jupyter/Colab (prints its path elsewhere)."""
  if not path or not os.path.exists(path):
    print(f"(no plot at {path})")
    return
  try:
    from IPython.display import Image, display  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(f"plot: {path}")
    return
  display(Image(filename=path, width=width))


def show_markdown(text: str) -> None:
  """Renders markdown (e.g. a results table) inline; prints it outside IPython."""
  try:
    from IPython.display import Markdown, display  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(text)
    return
  display(Markdown(text))


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """A markdown table of ``rows`` (dicts) with ``columns``; floats to 4 significant digits."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def plot_metrics(workdir: str, keys: Sequence[str], split: str = "validation",
                 filename: str = "notebook_metrics.png", title: str | None = None) -> str | None:
  """Plots ``keys`` of ``metrics.jsonl`` (one ``split``) against the step, stage ends dashed.

  Writes ``WORKDIR/plots/FILENAME``, shows it inline and returns its path
  (None when no row has any of the keys).
  """
  from vedgan.metrics import _plotting  # pylint: disable=import-outside-toplevel
  from vedgan.writers import read_metrics  # pylint: disable=import-outside-toplevel

  rows = read_metrics(workdir)
  series = {k: [(r["step"], r[k]) for r in rows if r.get("split") == split and k in r]
            for k in keys}
  series = {k: v for k, v in series.items() if v}
  if not series:
    print(f"(no {split} values of {', '.join(keys)} in {workdir}/metrics.jsonl)")
    return None
  fig, ax = _plotting.new_figure((6.5, 3.5))
  for key, points in series.items():
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", label=key)
  stage_end, last = {}, None
  for r in rows:
    if last is not None and r.get("stage") != last[0]:
      stage_end[last[0]] = last[1]
    last = (r.get("stage"), r["step"])
  for stage, step in stage_end.items():
    ax.axvline(step, color="gray", linestyle="--", linewidth=0.8)
    ax.annotate(f"end of {stage}", (step, 1.0), xycoords=("data", "axes fraction"),
                fontsize=7, rotation=90, va="top", ha="right", color="gray")
  ax.set_xlabel("step")
  ax.set_title(title or f"{split}: {', '.join(series)}")
  ax.legend(fontsize=8)
  path = _plotting.save(fig, os.path.join(workdir, "plots", filename))
  show_image(path)
  return path


def bar_chart(table: Mapping[str, Mapping[str, float]], keys: Sequence[str], path: str,
              title: str | None = None) -> str:
  """Grouped bars: one group per key, one bar per row of ``table`` (``{model: {key: value}}``).

  Writes the PNG to ``path``, shows it inline and returns the path.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  from vedgan.metrics import _plotting  # pylint: disable=import-outside-toplevel

  names = list(table)
  width = 0.8 / max(len(names), 1)
  fig, ax = _plotting.new_figure((1.8 + 1.6 * len(keys), 3.5))
  x = np.arange(len(keys))
  for i, name in enumerate(names):
    values = [float(table[name].get(k, np.nan)) for k in keys]
    bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
  ax.set_xticks(x, list(keys))
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  path = _plotting.save(fig, path)
  show_image(path)
  return path
