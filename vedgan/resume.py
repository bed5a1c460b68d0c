"""What a run resumed from its workdir reads back: the unfinished log window carried in the
checkpoint, the last validation row of a finished run, and the one-line messages for a
checkpoint that cannot continue this run's data or was written on another device count."""
from __future__ import annotations

import numpy as np

from vedgan.data import pipeline
from vedgan.writers import WALL_TIME, read_metrics


def last_validation(workdir: str) -> dict[str, float]:
  """The metrics of the last validation row of ``workdir/metrics.jsonl`` ({} if none)."""
  rows = [r for r in read_metrics(workdir) if r.get("split") == "validation"]
  if not rows:
    return {}
  return {k: v for k, v in rows[-1].items() if k not in ("step", "stage", "split", WALL_TIME)}


def warn_if_elastic(meta: dict, devices: int, say) -> None:
  """One line when a run resumes on another number of devices than its checkpoint's: it
  continues correctly (same global batch, same data order) but each device sums its rows in
  another grouping, so the float32 results drift from an uninterrupted run's at round-off."""
  before = meta.get("num_devices")
  if before is not None and int(before) != devices:
    say(f"warning: resumed on {devices} device(s) from a checkpoint written on {before}: "
        "training continues with the same global batch and data order, but is no longer "
        "bit-identical to an uninterrupted run (sums over devices round differently)")


def data_state_message(error: ValueError, checkpoint: str) -> str:
  """One line for a data position that does not fit this run's data."""
  if isinstance(error, pipeline.StateMismatch) and error.key in ("num_examples", "data_hash"):
    return (f"the training data differ from the data checkpoint {checkpoint} was trained on "
            f"(then {error.key}={error.saved}, now {error.current}); restore the original data "
            "files (or their preparation) or use a new --workdir")
  return (f"checkpoint {checkpoint} cannot continue this run's data position ({error}); use the "
          "original settings or a new --workdir")


def window_to_meta(entries: list[dict]) -> list[dict]:
  """The host rows of an unfinished log window as JSON (non-finite values as strings)."""
  return [dict(r, metrics={k: v if np.isfinite(v) else repr(v) for k, v in r["metrics"].items()})
          for e in entries for r in e["rows"]]


def window_from_meta(rows: list[dict]) -> list[dict]:
  """Pending-log entries of :func:`window_to_meta`'s rows."""
  rows = [dict(r, metrics={k: float(v) for k, v in r["metrics"].items()}) for r in rows]
  return [{"rows": rows, "out": None}] if rows else []
