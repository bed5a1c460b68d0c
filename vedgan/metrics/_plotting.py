"""Matplotlib helpers that never touch pyplot's global state or backend."""
from __future__ import annotations

import os
from typing import Any


def new_figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
  """Returns (figure, axes) drawn with the Agg canvas, without pyplot (``ncols > 1``:
  an array of axes side by side)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(1, ncols) if ncols > 1 else fig.subplots()


def save(fig: Any, path: str | os.PathLike, dpi: int = 100) -> str:
  """Writes ``fig`` as PNG and returns the path as a string."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi, format="png")
  return path
