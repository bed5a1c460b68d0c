"""The likelihood terms of vedgan.losses.sequence against independent numpy references.

Each reference is written from the equation the docstring cites (a float64 log-softmax and
explicit sums), not from the library's helpers: the masked token sum of HappyBot Eq. 6 /
the CVAE reconstruction term, the label-smoothed target ``(1 - eps) onehot(y) + eps / V``,
the tempered policy of HappyBot Eq. 5/9 and the bag-of-words loss of MojiTalk's
supplement Eq. 1-2.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import losses

B, T, V, H = 3, 5, 7, 4
_R = np.random.RandomState(0)
LOGITS = (2.0 * _R.randn(B, T, V)).astype(np.float32)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], np.float32)
# Ids at padded positions are arbitrary (here out of range too): they must not matter.
TARGETS = np.where(MASK > 0, _R.randint(0, V, size=(B, T)), 99).astype(np.int32)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _target_distribution(eps):
  """``q[b, t] = (1 - eps) onehot(y_bt) + eps / V`` at real tokens (any row at padding)."""
  onehot = np.eye(V)[np.clip(TARGETS, 0, V - 1)]
  return (1.0 - eps) * onehot + eps / V


def _reference(eps=0.0):
  """``(sum_t mask * -sum_v q log p, sum_t mask)`` per row, and its logits-gradient
  ``mask * (softmax - q)``."""
  logp = _log_softmax(LOGITS)
  q = _target_distribution(eps)
  nll = (-(q * logp).sum(-1) * MASK).sum(-1)
  grad = (np.exp(logp) - q) * MASK[..., None]
  return nll, MASK.sum(-1), grad


def test_sequence_cross_entropy_matches_the_reference():
  """Per-row *sum* over the real tokens (no padding, no mean) and the real-token count."""
  nll, count = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK)
  want, want_count, grad = _reference()
  np.testing.assert_allclose(nll, want, rtol=1e-5)
  np.testing.assert_array_equal(count, want_count)
  got = jax.grad(lambda l: losses.sequence_cross_entropy(l, TARGETS, MASK)[0].sum())(LOGITS)
  np.testing.assert_allclose(got, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("traced", [False, True])
def test_label_smoothing_matches_the_smoothed_target_reference(traced):
  """Cross-entropy against ``(1 - eps) onehot(y) + eps / V``, given as a float or a
  (traced) array; value and gradient."""
  eps = 0.2
  smoothing = jnp.float32(eps) if traced else eps
  nll, count = losses.sequence_cross_entropy(LOGITS, TARGETS, MASK, label_smoothing=smoothing)
  want, want_count, grad = _reference(eps)
  np.testing.assert_allclose(nll, want, rtol=1e-5)
  np.testing.assert_array_equal(count, want_count)
  got = jax.grad(lambda l: losses.sequence_cross_entropy(
      l, TARGETS, MASK, label_smoothing=smoothing)[0].sum())(LOGITS)
  np.testing.assert_allclose(got, grad, rtol=1e-4, atol=1e-6)


class LabelSmoothingVariantsTest(chex.TestCase):
  """The smoothing as a Python float (``without_jit``: the library's wrapper sees the value
  and takes the plain path for 0) or traced through an outer ``jax.jit`` (a traced 0 is
  smoothed by 0): value, count and gradient of the reference for ``eps`` 0 and 0.2 alike."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_smoothing_float_or_traced_matches_the_reference(self):
    def fn(logits, eps):
      def total(l):
        nll, count = losses.sequence_cross_entropy(l, TARGETS, MASK, label_smoothing=eps)
        return nll.sum(), (nll, count)
      (_, out), grad = jax.value_and_grad(total, has_aux=True)(logits)
      return out + (grad,)

    for eps in (0.0, 0.2):
      nll, count, grad = self.variant(fn)(LOGITS, eps)
      want, want_count, want_grad = _reference(eps)
      chex.assert_shape([nll, count, grad], [(B,), (B,), (B, T, V)])
      np.testing.assert_allclose(nll, want, rtol=1e-5)
      np.testing.assert_array_equal(count, want_count)
      np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


def test_chunked_sequence_cross_entropy_matches_the_reference():
  """The chunked output layer gives the same per-row sums as the dense reference of
  ``hidden @ weight + bias`` (a chunk size that does not divide ``B * T``)."""
  hidden = _R.randn(B, T, H).astype(np.float32)
  weight = _R.randn(H, V).astype(np.float32)
  bias = _R.randn(V).astype(np.float32)
  logp = _log_softmax(hidden.astype(np.float64) @ weight + bias)
  picked = np.take_along_axis(logp, np.clip(TARGETS, 0, V - 1)[..., None], -1)[..., 0]
  nll, count = losses.chunked_sequence_cross_entropy(hidden, weight, bias, TARGETS, MASK,
                                                     chunk_size=4)
  np.testing.assert_allclose(nll, -(picked * MASK).sum(-1), rtol=1e-5)
  np.testing.assert_array_equal(count, MASK.sum(-1))


def test_token_log_probs_matches_the_tempered_softmax():
  """``log softmax(logits / tau)[token]`` (HappyBot's tau = 0.4), normalised over V."""
  tokens = np.clip(TARGETS, 0, V - 1)
  got = losses.token_log_probs(LOGITS, tokens, 0.4)
  want = np.take_along_axis(_log_softmax(LOGITS / 0.4), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bow_loss_matches_the_reference():
  """``-sum_t mask_t log softmax(f)[y_t]`` with one distribution per response."""
  f = LOGITS[:, 0]
  logp = _log_softmax(f)
  picked = np.take_along_axis(logp, np.clip(TARGETS, 0, V - 1), -1)
  np.testing.assert_allclose(losses.bow_loss(f, TARGETS, MASK), -(picked * MASK).sum(-1),
                             rtol=1e-5)
