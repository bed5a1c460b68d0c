"""Classifier metrics: top-k accuracy overall and per label (MojiTalk Fig. 1).

Top-k correctness uses ranks: example i is top-k correct when fewer than k
classes have a strictly larger score than its label, so ties go in the
label's favour and the result does not depend on a sort's tie order.

As with the likelihood metrics, :func:`classifier_stats` returns summed
counts (per label, per k) that can be ``psum``-ed across devices or added
over batches (:func:`vedgan.metrics.likelihood.accumulate`) before
:func:`finalize_classifier` divides.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vedgan.metrics import _plotting


def label_rank(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Number of classes scoring strictly higher than the label.

  Args:
    logits: float [B, C].
    labels: int [B].
  Returns:
    int32 [B]; 0 means the label is (one of) the top-1 class(es).
  """
  label_score = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32),
                                    axis=-1)
  return jnp.sum(logits > label_score, axis=-1).astype(jnp.int32)


def topk_accuracy(logits: jax.Array, labels: jax.Array, k: int = 1,
                  mask: jax.Array | None = None) -> jax.Array:
  """Fraction of (unmasked) examples whose label ranks in the top k.

  Args:
    logits: float [B, C]; labels: int [B]; mask: optional [B].
  Returns:
    float32 scalar.
  """
  hit = (label_rank(logits, labels) < k).astype(jnp.float32)
  if mask is None:
    return jnp.mean(hit)
  mask = mask.astype(jnp.float32)
  return jnp.sum(hit * mask) / jnp.sum(mask)


def classifier_stats(logits: jax.Array, labels: jax.Array, num_labels: int,
                     ks: Sequence[int] = (1, 5),
                     mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Summed per-label counts of one batch (jit-safe with static ks).

  Args:
    logits: float [B, C]; labels: int [B] in [0, num_labels); mask: [B].
    num_labels: C.
    ks: the k of each top-k accuracy.
  Returns:
    dict ``count`` float32 [C] (examples per label) and ``correct_top{k}``
    float32 [C] for each k.
  """
  if mask is None:
    mask = jnp.ones(labels.shape, jnp.float32)
  mask = mask.astype(jnp.float32)
  one_hot = jax.nn.one_hot(labels, num_labels, dtype=jnp.float32) * mask[:, None]
  rank = label_rank(logits, labels)
  out = {"count": jnp.sum(one_hot, axis=0)}
  for k in ks:
    hit = (rank < k).astype(jnp.float32)
    out[f"correct_top{k}"] = jnp.sum(one_hot * hit[:, None], axis=0)
  return out


def finalize_classifier(stats: Mapping[str, Any]) -> dict[str, Any]:
  """Overall and per-label accuracies from summed counts.

  Returns:
    dict with ``top{k}`` (float, overall), ``per_label_top{k}`` (float64 [C],
    NaN for labels without examples), ``count`` (int64 [C]) and
    ``num_examples``.
  """
  count = np.asarray(jax.device_get(stats["count"]), np.float64)
  total = count.sum()
  out: dict[str, Any] = {"count": count.astype(np.int64),
                         "num_examples": int(total)}
  for key in sorted(stats):
    if not key.startswith("correct_top"):
      continue
    k = key[len("correct_"):]
    correct = np.asarray(jax.device_get(stats[key]), np.float64)
    out[k] = float(correct.sum() / total) if total else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
      out[f"per_label_{k}"] = np.where(count > 0, correct / np.maximum(count, 1),
                                       np.nan)
  return out


def per_label_accuracy(logits: Any, labels: Any, num_labels: int,
                       ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
  """:func:`classifier_stats` + :func:`finalize_classifier` on one array."""
  stats = classifier_stats(jnp.asarray(logits), jnp.asarray(labels),
                           num_labels, tuple(ks))
  return finalize_classifier(stats)


def plot_per_label_accuracy(result: Mapping[str, Any], path: str | os.PathLike,
                            label_names: Sequence[str] | None = None,
                            ks: Sequence[int] = (1, 5), max_labels: int = 32,
                            title: str | None = None) -> list[int]:
  """Grouped bar plot of per-label top-k accuracy, most frequent labels first.

  Mirrors MojiTalk's Fig. 1 (top-1 and top-5 accuracy of the 32 most
  frequent emoji labels).

  Args:
    result: output of :func:`finalize_classifier` / :func:`per_label_accuracy`.
    path: PNG file to write.
    label_names: C display names (default: the label ids).
    ks: which ``per_label_top{k}`` to draw.
    max_labels: number of most frequent labels shown.
    title: optional title.
  Returns:
    the label ids plotted, left to right.
  """
  count = np.asarray(result["count"])
  order = [int(i) for i in np.argsort(-count, kind="stable")
           if count[i] > 0][:max_labels]
  names = [str(label_names[i]) if label_names is not None else str(i)
           for i in order]
  width = 0.8 / max(len(ks), 1)
  fig, ax = _plotting.new_figure((max(6.0, 0.35 * len(order) + 2), 4))
  x = np.arange(len(order))
  for j, k in enumerate(ks):
    acc = np.asarray(result[f"per_label_top{k}"])[order]
    ax.bar(x + (j - (len(ks) - 1) / 2) * width, acc, width, label=f"top-{k}")
  ax.set_xticks(x)
  ax.set_xticklabels(names, rotation=90)
  ax.set_ylim(0, 1)
  ax.set_ylabel("accuracy")
  ax.set_xlabel("label (most frequent first)")
  ax.legend()
  if title:
    ax.set_title(title)
  _plotting.save(fig, path)
  return order
