"""Top-k and per-label accuracy (MojiTalk Fig. 1) and its plot."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import metrics


LOGITS = jnp.array([
    [5.0, 1.0, 0.0, 0.0],   # label 0: rank 0
    [5.0, 1.0, 0.0, 0.0],   # label 1: rank 1
    [0.0, 1.0, 2.0, 3.0],   # label 0: rank 3
    [1.0, 1.0, 0.0, 0.0],   # label 1: tie at the top -> rank 0
    [0.0, 0.0, 9.0, 0.0],   # label 2: rank 0 (padding row below)
])
LABELS = jnp.array([0, 1, 0, 1, 2])


def test_ranks_and_topk_accuracy():
  assert metrics.label_rank(LOGITS, LABELS).tolist() == [0, 1, 3, 0, 0]
  assert float(metrics.topk_accuracy(LOGITS, LABELS, 1)) == pytest.approx(3 / 5)
  assert float(metrics.topk_accuracy(LOGITS, LABELS, 2)) == pytest.approx(4 / 5)
  assert float(metrics.topk_accuracy(LOGITS, LABELS, 4)) == 1.0
  mask = jnp.array([1, 1, 1, 1, 0])
  assert float(metrics.topk_accuracy(LOGITS, LABELS, 1, mask)) == pytest.approx(0.5)


def test_per_label_accuracy_from_summed_stats():
  stats_fn = jax.jit(metrics.classifier_stats, static_argnums=(2, 3))
  whole = metrics.finalize_classifier(stats_fn(LOGITS, LABELS, 4, (1, 2)))
  assert whole["top1"] == pytest.approx(3 / 5)
  assert whole["top2"] == pytest.approx(4 / 5)
  assert whole["count"].tolist() == [2, 2, 1, 0]
  np.testing.assert_allclose(whole["per_label_top1"][:3], [0.5, 0.5, 1.0])
  np.testing.assert_allclose(whole["per_label_top2"][:3], [0.5, 1.0, 1.0])
  assert np.isnan(whole["per_label_top1"][3])  # label never seen
  # Summing two batches' counts gives the same answer.
  total = metrics.accumulate(None, stats_fn(LOGITS[:2], LABELS[:2], 4, (1, 2)))
  total = metrics.accumulate(total, stats_fn(LOGITS[2:], LABELS[2:], 4, (1, 2)))
  split = metrics.finalize_classifier(total)
  assert split["top1"] == whole["top1"] and split["num_examples"] == 5
  default = metrics.per_label_accuracy(LOGITS, LABELS, 4)
  assert set(default) >= {"top1", "top5", "per_label_top5"}
  assert default["top5"] == 1.0


def test_plot_per_label_accuracy(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.zipf(1.5, size=400) % 40
  logits = rng.normal(size=(400, 40)) + 2.0 * np.eye(40)[labels]
  res = metrics.per_label_accuracy(logits, labels, 40)
  path = tmp_path / "per_label.png"
  order = metrics.plot_per_label_accuracy(
      res, path, label_names=[f"e{i}" for i in range(40)], max_labels=32)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  counts = res["count"][order]
  assert len(order) <= 32 and list(counts) == sorted(counts, reverse=True)
