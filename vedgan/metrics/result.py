"""Metric results that carry the settings they were computed with.

Every metric in :mod:`vedgan.metrics` has a plain function returning a number
(``bleu``, ``self_bleu``, ...) and a ``*_report`` twin returning a
:class:`MetricResult`: the same number plus

* ``settings``: everything that must be equal for two numbers to be
  comparable (metric name, n-gram order, weights, smoothing, tokenisation
  label, number of samples, hash of the reference set, implementation
  version);
* ``details``: facts about this particular computation that do not affect
  comparability (per-order precisions, hash of the hypotheses, timings ...).

``a.comparable_with(b)`` is True exactly when ``a.settings == b.settings``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# Bumped whenever a change to vedgan.metrics could change a reported number.
IMPLEMENTATION_VERSION = "vedgan.metrics/1"


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, np.generic):
    return x.item()
  if hasattr(x, "__array__") and hasattr(x, "dtype"):  # jax arrays
    return _jsonable(np.asarray(x))
  if isinstance(x, float) and not math.isfinite(x):
    return repr(x)
  return x


def _freeze(x: Any) -> Any:
  """A hashable, ==-comparable form of a settings value."""
  return json.dumps(_jsonable(x), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class MetricResult:
  """A metric value with the settings that make it comparable.

  Attributes:
    name: metric name, e.g. ``"bleu"``, ``"self_bleu"``.
    value: the number the plain function returns.
    settings: the comparability key (see module docstring); JSON-able.
    details: extra information; JSON-able except possibly numpy arrays.
  """
  name: str
  value: float
  settings: Mapping[str, Any]
  details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def comparable_with(self, other: "MetricResult") -> bool:
    """True when both numbers were computed under identical settings."""
    return (self.name == other.name
            and _freeze(self.settings) == _freeze(other.settings))

  def settings_diff(self, other: "MetricResult") -> dict[str, tuple[Any, Any]]:
    """The settings that differ, as ``{key: (self_value, other_value)}``."""
    keys = set(self.settings) | set(other.settings)
    out = {}
    for k in sorted(keys):
      a, b = self.settings.get(k), other.settings.get(k)
      if _freeze(a) != _freeze(b):
        out[k] = (a, b)
    if self.name != other.name:
      out["name"] = (self.name, other.name)
    return out

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict with name, value, settings and details."""
    return _jsonable({"name": self.name, "value": self.value,
                      "settings": dict(self.settings),
                      "details": dict(self.details)})

  def __float__(self) -> float:
    return float(self.value)


def _token_repr(tok: Any) -> str:
  if isinstance(tok, np.generic):
    tok = tok.item()
  if isinstance(tok, bool):
    tok = int(tok)
  if isinstance(tok, float) and tok.is_integer():
    tok = int(tok)
  return json.dumps(tok) if isinstance(tok, (str, int, float)) else repr(tok)


def corpus_hash(sentences: Iterable[Sequence[Any]], ordered: bool = True,
                length: int = 16) -> str:
  """Short SHA-256 fingerprint of a tokenised corpus.

  Args:
    sentences: token lists. Tokens are serialised with ``json.dumps`` (ints
      and numpy integers alike, strings quoted) so ``5``, ``np.int64(5)`` give
      the same hash and ``"5"`` a different one.
    ordered: if False the corpus is treated as a multiset of sentences (its
      order does not change the hash); use this for reference *sets*.
    length: number of hex digits returned.
  Returns:
    hex string of ``length`` characters.
  """
  lines = ["\x1f".join(_token_repr(t) for t in s) for s in sentences]
  if not ordered:
    lines.sort()
  h = hashlib.sha256()
  h.update(b"ordered\n" if ordered else b"multiset\n")
  for line in lines:
    h.update(line.encode("utf-8"))
    h.update(b"\x1e")
  return h.hexdigest()[:length]
