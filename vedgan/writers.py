"""Where results go: ``metrics.jsonl``, ``samples.jsonl`` and TensorBoard, in the workdir.

``metrics.jsonl`` holds one JSON object per line: ``{"step", "stage", "split", <scalars>}``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


class MetricWriter:
  """Appends scalars and text samples to JSON-lines files and to TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.samples_path = os.path.join(workdir, "samples.jsonl")
    self.tb = None
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, stage: str, split: str, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "stage": stage, "split": split}
    for k, v in values.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)
      if self.tb is not None:
        self.tb.add_scalar(f"{split}/{k}", v, int(step))
    with open(self.metrics_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")

  def samples(self, step: int, stage: str, pairs: list[tuple[str, str]]) -> None:
    if not self.enabled:
      return
    with open(self.samples_path, "a", encoding="utf-8") as f:
      for context, response in pairs:
        f.write(json.dumps({"step": int(step), "stage": stage, "context": context,
                            "response": response}) + "\n")
    if self.tb is not None:
      text = "\n\n".join(f"**{c}** → {r}" for c, r in pairs)
      self.tb.add_text("samples", text, int(step))

  def flush(self) -> None:
    if self.tb is not None:
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
      self.tb = None


def read_metrics(workdir: str) -> list[dict]:
  """All rows of ``workdir/metrics.jsonl`` (empty if absent)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
