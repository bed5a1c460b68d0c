"""Top-k softmax word-vector approximation check (dialogue GAN, Sec. 5)."""
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import metrics

# w2 sits next to the midpoint of w0 and w1, so averaging w0 and w1 with
# similar weights lands nearest to w2.
TABLE = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.1], [10.0, 10.0]])
LOGITS = np.array([
    [5.0, 0.0, 0.0, 0.0],      # token 0, peaked: recovered
    [5.0, 0.0, 0.0, 0.0],      # token 0: recovered
    [5.0, 0.0, 0.0, 0.0],      # token 0: recovered
    [0.9, 1.0, -10.0, -10.0],  # token 1, two-way split: nearest is w2, missed
    [0.0, 5.0, 0.0, 0.0],      # token 1, peaked: recovered
])


def test_topk_weighted_embedding():
  p = np.exp([0.9, 1.0]) / np.exp([0.9, 1.0]).sum()
  got = metrics.topk_weighted_embedding(jnp.asarray(LOGITS[3]), TABLE, 2)
  np.testing.assert_allclose(got, p[1] * TABLE[1] + p[0] * TABLE[0], rtol=1e-6)
  one = metrics.topk_weighted_embedding(jnp.asarray(LOGITS), TABLE, 1)
  np.testing.assert_allclose(one, TABLE[LOGITS.argmax(-1)], rtol=1e-6)
  batched = metrics.topk_weighted_embedding(jnp.asarray(LOGITS[None]), TABLE, 3)
  assert batched.shape == (1, 5, 2)


def test_nearest_word_matches_brute_force():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(50, 8))
  vecs = rng.normal(size=(37, 8))
  want = np.argmin(((vecs[:, None] - table[None]) ** 2).sum(-1), axis=1)
  assert metrics.nearest_word(vecs, table, chunk=8).tolist() == want.tolist()


def test_check_with_and_without_repetitions():
  res = metrics.topk_approximation_check(LOGITS, TABLE, ks=(2, 3, 4))
  assert res["k"] == [2, 3, 4]
  # All produced tokens: 4 of 5 recovered.
  assert res["with_repetitions"] == pytest.approx([0.8] * 3)
  # Distinct tokens: token 0 recovered 3/3, token 1 1/2 -> (1 + 0.5) / 2.
  assert res["without_repetitions"] == pytest.approx([0.75] * 3)
  assert res["num_tokens"] == 5 and res["num_distinct_tokens"] == 2
  # Masking out the missed position; [B, T, V] input; explicit tokens.
  masked = metrics.topk_approximation_check(
      LOGITS.reshape(1, 5, 4), TABLE, mask=np.array([[1, 1, 1, 0, 1]]), ks=(2,))
  assert masked["with_repetitions"] == [1.0]
  assert masked["without_repetitions"] == [1.0]
  explicit = metrics.topk_approximation_check(
      LOGITS, TABLE, tokens=np.array([0, 0, 0, 2, 1]), ks=(2,))
  assert explicit["with_repetitions"] == pytest.approx([1.0])
  with pytest.raises(ValueError):
    metrics.topk_approximation_check(LOGITS, TABLE, mask=np.zeros(5))


def test_check_default_ks_and_plot(tmp_path):
  rng = np.random.default_rng(1)
  table = rng.normal(size=(30, 6))
  logits = 3.0 * rng.normal(size=(64, 30))
  res = metrics.topk_approximation_check(logits, table)
  assert res["k"] == list(range(2, 11))
  assert all(0.0 <= x <= 1.0 for x in res["with_repetitions"])
  path = metrics.plot_topk_check(res, tmp_path / "topk.png", title="synthetic")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
