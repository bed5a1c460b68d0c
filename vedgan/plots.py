"""PNG plots written into the workdir (matplotlib, headless)."""
from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

from vedgan.writers import read_metrics  # noqa: E402


def training_curves(workdir: str, filename: str = "training_curves.png") -> str | None:
  """One panel per scalar of ``metrics.jsonl`` (train and validation), x = step.

  Returns the PNG path, or None when there is nothing to plot yet.
  """
  rows = read_metrics(workdir)
  series: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
  for row in rows:
    for key, value in row.items():
      if key in ("step", "stage", "split") or not isinstance(value, (int, float)):
        continue
      if key in ("tokens", "examples", "tokens_per_sec", "learning_rate"):
        continue
      series[key][row["split"]].append((row["step"], value))
  if not series:
    return None
  names = sorted(series)
  cols = min(3, len(names))
  rows_n = (len(names) + cols - 1) // cols
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
  for ax, name in zip(axes.flat, names):
    for split, points in sorted(series[name].items()):
      xs, ys = zip(*points)
      ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=split)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, filename)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
