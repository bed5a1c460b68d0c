"""Where results go: ``metrics.jsonl``, ``samples.jsonl`` and TensorBoard, in the workdir.

``metrics.jsonl`` holds one JSON object per line: ``{"step", "stage", "split", <scalars>,
"wall_time"}`` (UNIX seconds when written); train rows also name the step function that produced them (``"step_name"``: a logging
window of a cycle such as ``"ae*N,cvae*N"`` writes one row per step function).
TensorBoard (``WORKDIR/tensorboard``, event files written by :mod:`vedgan.event_file`,
which imports neither tensorboardX nor torch) gets the same scalars as ``<split>/<name>``,
the samples of each evaluation as a markdown table (text tag ``samples/text_summary``:
``| # | context | response |``) and the stage-end PNGs of :mod:`vedgan.plots` as images
(``plots/<file stem>``, the PNG files' bytes).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

from vedgan.event_file import EventFileWriter

#: every row of ``metrics.jsonl`` and ``samples.jsonl`` has the UNIX time it was written
WALL_TIME = "wall_time"
#: TensorBoard text tag of the samples (the tag tensorboardX gave them in earlier versions)
SAMPLES_TAG = "samples/text_summary"


class MetricWriter:
  """Appends scalars and text samples to JSON-lines files and to TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.samples_path = os.path.join(workdir, "samples.jsonl")
    self.tb = None
    if enabled and tensorboard:
      self.tb = EventFileWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, stage: str, split: str, values: dict[str, Any],
              tags: dict[str, str] | None = None) -> None:
    """Appends one row; ``tags``: string fields of the row (a train row's ``step_name``)."""
    if not self.enabled:
      return
    row = {"step": int(step), "stage": stage, "split": split, **(tags or {}),
           WALL_TIME: round(time.time(), 3)}
    scalars = {}
    for k, v in values.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)
      scalars[f"{split}/{k}"] = v
    if self.tb is not None and scalars:
      self.tb.add_scalars(scalars, int(step))  # one event per row
    with open(self.metrics_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")

  def samples(self, step: int, stage: str, pairs: list[tuple[str, str]],
              references: dict[str, str] | None = None,
              decoding: dict[str, Any] | None = None) -> None:
    """Appends ``{"step", "stage", "context", "response", "wall_time"}`` per pair, plus the
    validation ``"reference"`` of its context (when ``references`` has it) and how it was
    decoded (``"decoding"``: the decode options)."""
    if not self.enabled:
      return
    with open(self.samples_path, "a", encoding="utf-8") as f:
      for context, response in pairs:
        row = {"step": int(step), "stage": stage, "context": context, "response": response}
        if references and context in references:
          row["reference"] = references[context]
        if decoding:
          row["decoding"] = decoding
        row[WALL_TIME] = round(time.time(), 3)
        f.write(json.dumps(row) + "\n")
    if self.tb is not None and pairs:
      self.tb.add_text(SAMPLES_TAG, samples_markdown(step, stage, pairs), int(step))

  def images(self, step: int, paths: list[str]) -> None:
    """Adds PNG files to TensorBoard as images tagged ``plots/<file stem>`` at ``step``."""
    if not self.enabled or self.tb is None:
      return
    for path in paths:
      tag = "plots/" + os.path.splitext(os.path.basename(path))[0]
      self.tb.add_png(tag, path, int(step))
    self.tb.flush()

  def flush(self) -> None:
    if self.tb is not None:
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
      self.tb = None


def _cell(text: str) -> str:
  """Text made safe for one markdown table cell (pipes escaped, one line)."""
  text = " ".join(str(text).split())
  return text.replace("\\", "\\\\").replace("|", "\\|") or " "


def samples_markdown(step: int, stage: str, pairs: list[tuple[str, str]]) -> str:
  """A markdown table ``| # | context | response |`` of one evaluation's samples.

  >>> print(samples_markdown(3, "mle", [("hi | there", "hello")]))
  samples at step 3 (stage mle)
  <BLANKLINE>
  | # | context | response |
  |---|---|---|
  | 1 | hi \\| there | hello |
  """
  lines = [f"samples at step {int(step)} (stage {stage})", "",
           "| # | context | response |", "|---|---|---|"]
  lines += [f"| {i} | {_cell(c)} | {_cell(r)} |" for i, (c, r) in enumerate(pairs, 1)]
  return "\n".join(lines)


def read_png(path: str) -> np.ndarray:
  """A PNG file as ``uint8[H, W, 3]`` (alpha dropped)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_metrics(workdir: str) -> list[dict]:
  """All rows of ``workdir/metrics.jsonl`` (empty if absent)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
