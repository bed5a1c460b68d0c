"""losses.chunked_softmax_cross_entropy: values, gradients and memory against the naive CE.

The naive reference builds the full ``[N, V]`` logits and takes a log-softmax;
the chunked version must agree (values and gradients w.r.t. hidden, weight and
bias to 1e-5 relative in float32) while its compiled forward+backward keeps
less than a quarter of ``N * V * 4`` bytes of temporaries (the naive one needs
at least ``N * V * 4``). Finally the seq2seq objective gives the same MLE loss
with ``model.loss_chunk`` on and off.

Time budget: about 8 s.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakes import FakeTokenizer

from vedgan import losses


def naive_nll(hidden, weight, bias, targets, mask):
  logits = hidden.astype(jnp.float32) @ weight
  if bias is not None:
    logits = logits + bias
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
  return -picked * mask


def _problem(n=37, h=6, v=23, seed=0):
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(n, h)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(h, v)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(v,)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, size=(n,)), jnp.int32)
  mask = jnp.asarray(rng.random(n) < 0.7, jnp.float32)
  return hidden, weight, bias, targets, mask


@pytest.mark.parametrize("chunk,use_bias", [(8, True), (37, False), (100, True)])
def test_values_and_gradients_match_naive(chunk, use_bias):
  """N = 37 is not a multiple of 8 (padding path); chunk >= N is a single chunk."""
  hidden, weight, bias, targets, mask = _problem()
  bias = bias if use_bias else None
  got = losses.chunked_softmax_cross_entropy(hidden, weight, bias, targets, mask, chunk)
  want = naive_nll(hidden, weight, bias, targets, mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert got.dtype == jnp.float32 and got.shape == (37,)
  assert float(jnp.abs(got * (1 - mask)).max()) == 0.0

  rw = jnp.linspace(0.5, 1.5, 37)  # a non-uniform cotangent
  args = (hidden, weight) + ((bias,) if use_bias else ())
  loss_c = lambda h, w, *b: (rw * losses.chunked_softmax_cross_entropy(
      h, w, b[0] if b else None, targets, mask, chunk)).sum()
  loss_n = lambda h, w, *b: (rw * naive_nll(h, w, b[0] if b else None, targets, mask)).sum()
  argnums = tuple(range(len(args)))
  g_c = jax.grad(loss_c, argnums)(*args)
  g_n = jax.grad(loss_n, argnums)(*args)
  for a, b in zip(g_c, g_n):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_sequence_wrapper_matches_sequence_cross_entropy():
  hidden, weight, bias, targets, mask = _problem(n=4 * 9)
  h3, t2, m2 = hidden.reshape(4, 9, -1), targets.reshape(4, 9), mask.reshape(4, 9)
  nll, count = losses.chunked_sequence_cross_entropy(h3, weight, bias, t2, m2, chunk_size=5)
  ref_nll, ref_count = losses.sequence_cross_entropy(h3 @ weight + bias, t2, m2)
  np.testing.assert_allclose(nll, ref_nll, rtol=1e-5)
  np.testing.assert_allclose(count, ref_count)


def test_bf16_hidden_is_close_and_float32():
  hidden, weight, bias, targets, mask = _problem()
  got = losses.chunked_softmax_cross_entropy(hidden.astype(jnp.bfloat16), weight, bias, targets,
                                             mask, 8)
  assert got.dtype == jnp.float32
  want = naive_nll(hidden, weight, bias, targets, mask)
  np.testing.assert_allclose(got, want, rtol=0.05, atol=0.1)  # bf16 inputs: ~3 digits


def test_bad_shapes_are_errors():
  hidden, weight, bias, targets, mask = _problem()
  with pytest.raises(ValueError, match="weight"):
    losses.chunked_softmax_cross_entropy(hidden, weight.T, bias, targets, mask, 8)
  with pytest.raises(ValueError, match="chunk_size"):
    losses.chunked_softmax_cross_entropy(hidden, weight, bias, targets, mask, 0)


def test_never_materialises_n_by_v_float32():
  """Compiled forward+backward temporaries: naive >= N*V*4 bytes; chunked < N*V*4 / 4 and
  at most a few ``chunk * V`` float32 buffers (measured: about 2 of them on CPU)."""
  n, h, v, chunk = 2048, 32, 8192, 128
  hidden, weight, bias, targets, mask = _problem(n, h, v, seed=1)
  full = n * v * 4

  def temp_bytes(fn):
    loss = lambda *args: fn(*args).sum()
    grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
    compiled = grad.lower(hidden, weight, bias, targets, mask).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  naive = temp_bytes(naive_nll)
  chunked = temp_bytes(lambda hd, w, b, t, m: losses.chunked_softmax_cross_entropy(
      hd, w, b, t, m, chunk))
  assert naive >= full, (naive, full)
  assert chunked < full / 4, (chunked, full)
  assert chunked <= 3 * chunk * v * 4, (chunked, chunk * v * 4)


def test_seq2seq_loss_same_with_loss_chunk():
  """One MLE step of the seq2seq objective: identical loss and updated params on/off."""
  from tests.conftest import make_config  # pylint: disable=import-outside-toplevel

  results = []
  for chunk in (0, 7):  # 7 does not divide B * T = 20 (padding path)
    results.append(_one_step(make_config("configs/seq2seq.py", "demo", model__loss_chunk=chunk)))
  (l0, p0), (l1, p1) = results
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  chex.assert_trees_all_close(p0, p1, rtol=1e-4, atol=1e-6)


def _one_step(config):
  from vedgan import parallel, train  # pylint: disable=import-outside-toplevel
  from vedgan.objective import get_objective_class  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  batch = {"context": rng.integers(4, 40, (4, 6)), "response_in": rng.integers(4, 40, (4, 5)),
           "response_out": rng.integers(4, 40, (4, 5))}
  batch["response_out"][1:, 3:] = 0
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  objective = get_objective_class(config.objective)(config, FakeTokenizer(vocab_size=40))
  state = objective.init(jax.random.key(0), batch)
  mesh = parallel.make_mesh(jax.devices()[:1])
  step = train.step_function(objective, "mle", config, state, mesh=mesh)
  state, metrics = step(state, batch)
  evaluated = jax.jit(objective.eval_step)(state, {**batch, "weight": jnp.ones(4)})
  return (float(metrics["loss"]), float(evaluated["nll"])), state.params
