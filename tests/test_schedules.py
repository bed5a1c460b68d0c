"""Tests for vedgan.schedules: hand values, jit/vmap safety, bounds, validation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import schedules as S

STEPS = np.array([0, 1, 10, 50, 99, 100, 101, 250, 1000, 5000], np.int32)


def _values(sched, steps=STEPS):
  return np.array([float(sched(int(s))) for s in steps])


def _check_transforms(sched, steps=STEPS):
  """Python ints (each a traced step inside the schedule's jit), vmap, a
  whole array, and op-by-op execution without jit agree."""
  ref = _values(sched, steps)
  np.testing.assert_allclose(jax.vmap(sched)(jnp.asarray(steps)), ref,
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(sched(jnp.asarray(steps)), ref, rtol=1e-6,
                             atol=1e-7)
  with jax.disable_jit():  # op by op
    np.testing.assert_allclose(sched(jnp.asarray(steps)), ref, rtol=1e-6,
                               atol=1e-7)
  assert sched(0).dtype == jnp.float32
  # Negative steps behave like step 0.
  assert float(sched(-5)) == float(sched(0))
  return ref


# --------------------------------------------------------------------------
# KL annealing


def test_linear_kl_anneal():
  sched = S.linear_kl_anneal(100, ceiling=0.5)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(ref, 0.5 * np.clip(STEPS / 100, 0, 1), rtol=1e-6)
  assert float(sched(100)) == 0.5 and float(sched(10**7)) == 0.5  # exact
  delayed = S.linear_kl_anneal(12_000, start_step=1000)
  assert float(delayed(1000)) == 0.0
  np.testing.assert_allclose(delayed(7000), 0.5, rtol=1e-6)
  assert float(delayed(13_000)) == 1.0
  assert np.all(np.diff(ref) >= 0)


def test_sigmoid_kl_anneal():
  sched = S.sigmoid_kl_anneal(midpoint=100, steepness=0.05, ceiling=0.8)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(
      ref, 0.8 / (1 + np.exp(-0.05 * (STEPS - 100.0))), rtol=1e-5, atol=1e-7)
  assert float(sched(100)) == pytest.approx(0.4)
  assert np.all(np.diff(ref) >= 0) and ref.max() <= np.float32(0.8)


def test_cyclical_kl_anneal():
  sched = S.cyclical_kl_anneal(100, ratio=0.5, ceiling=0.6)
  ref = _check_transforms(sched)
  tau = (STEPS % 100) / 100
  np.testing.assert_allclose(ref, 0.6 * np.minimum(tau / 0.5, 1), rtol=1e-6)
  # Periodic, bounded by the ceiling, exactly 0 at the start of every cycle.
  for s in (0, 13, 49, 50, 77):
    assert float(sched(s)) == float(sched(s + 300))
  assert float(sched(200)) == 0.0 and float(sched(50)) == np.float32(0.6)
  assert _values(sched, np.arange(0, 400, 7)).max() <= np.float32(0.6)
  once = S.cyclical_kl_anneal(100, ratio=0.5, num_cycles=2)
  assert float(once(150)) == 1.0 and float(once(210)) == 1.0
  assert float(once(110)) == pytest.approx(0.2)


def test_mojitalk_kl_anneal_reproduces_the_code_and_the_paper():
  total = 8000  # 8 epochs of 1000 steps; ratio 0.75 = end of epoch 6
  code = S.mojitalk_kl_anneal(total)
  ref = _check_transforms(code, np.arange(0, 9000, 250))
  p = np.arange(0, 9000, 250) / total
  want = 0.48 * np.where(p < 0.75, np.tanh(6 * p / 0.75 - 3) + 1, 1.0)
  np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-7)
  # The code's quirk: just before p = 0.75 the weight is ~2 * ceiling, then
  # it drops to the ceiling.
  assert float(code(5999)) > 0.95 and float(code(6000)) == pytest.approx(0.48)
  paper = S.mojitalk_kl_anneal(total, smooth=True)
  ref = _values(paper, np.arange(0, 9000, 250))
  np.testing.assert_allclose(ref, want / np.where(p < 0.75, 2, 1), rtol=1e-5,
                             atol=1e-7)
  assert np.all(np.diff(ref) >= 0) and ref.max() == pytest.approx(0.48)
  assert float(paper(6000)) == pytest.approx(0.48)
  # Nearly continuous: (tanh(3) + 1) / 2 = 0.9975 of the ceiling at the end.
  assert float(paper(5999)) == pytest.approx(0.48, abs=2e-3)


# --------------------------------------------------------------------------
# scheduled sampling


def test_linear_keep_rate_eq7():
  sched = S.linear_keep_rate(2500)
  ref = _check_transforms(sched, np.array([0, 625, 1250, 2500, 2501, 10**6]))
  np.testing.assert_allclose(ref, [1.0, 0.75, 0.5, 0.0, 0.0, 0.0], atol=1e-7)
  assert float(sched(2500)) == 0.0  # exactly 0 at i = k
  np.testing.assert_allclose(S.linear_keep_rate(100, minimum=0.1)(1000), 0.1)


def test_exponential_keep_rate():
  sched = S.exponential_keep_rate(0.99)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(ref, 0.99 ** STEPS.astype(np.float64), rtol=1e-5)
  assert np.all(np.diff(ref) <= 0) and ref[0] == 1.0
  np.testing.assert_allclose(S.exponential_keep_rate(0.5, 0.2)(10), 0.2)


def test_inverse_sigmoid_keep_rate():
  k = 100.0
  sched = S.inverse_sigmoid_keep_rate(k)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(ref, k / (k + np.exp(STEPS / k)), rtol=1e-5,
                             atol=1e-8)
  np.testing.assert_allclose(sched(0), k / (k + 1), rtol=1e-6)
  np.testing.assert_allclose(sched(k * math.log(k)), 0.5, rtol=1e-5)
  # No overflow far out: exp(i / k) would be inf in float32.
  far = float(sched(10**9))
  assert far == 0.0 or (0 <= far < 1e-30)
  assert np.all(np.diff(ref) <= 0)


# --------------------------------------------------------------------------
# temperatures


def test_exponential_temperature():
  sched = S.exponential_temperature(1.0, 0.1, rate=0.01)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(ref, np.maximum(0.1, np.exp(-0.01 * STEPS)),
                             rtol=1e-5)
  assert float(sched(10**6)) == pytest.approx(0.1)


def test_linear_temperature():
  sched = S.linear_temperature(1.0, 0.1, 100)
  ref = _check_transforms(sched)
  np.testing.assert_allclose(ref, 1.0 - 0.9 * np.minimum(STEPS / 100, 1),
                             rtol=1e-5)
  assert float(sched(100)) == pytest.approx(0.1) and float(sched(500)) == \
      pytest.approx(0.1)
  rising = S.linear_temperature(0.5, 1.0, 10)
  np.testing.assert_allclose(rising(5), 0.75)


# --------------------------------------------------------------------------
# validation and use in a training step


@pytest.mark.parametrize("make", [
    lambda: S.linear_kl_anneal(0),
    lambda: S.linear_kl_anneal(10, ceiling=-1.0),
    lambda: S.sigmoid_kl_anneal(10, 0.0),
    lambda: S.cyclical_kl_anneal(100, ratio=0.0),
    lambda: S.cyclical_kl_anneal(100, num_cycles=0),
    lambda: S.mojitalk_kl_anneal(0),
    lambda: S.mojitalk_kl_anneal(100, ratio=1.5),
    lambda: S.linear_keep_rate(0),
    lambda: S.exponential_keep_rate(1.0),
    lambda: S.inverse_sigmoid_keep_rate(0.5),
    lambda: S.exponential_temperature(1.0, 0.0, 0.1),
    lambda: S.linear_temperature(1.0, 0.0, 10),
    lambda: S.linear_temperature(1.0, 0.5, float("nan")),
])
def test_invalid_hyper_parameters_raise(make):
  with pytest.raises(ValueError):
    make()


def test_schedules_inside_a_jitted_step_with_a_step_counter():
  """A step counter in the state drives several schedules in one jit."""
  kl = S.linear_kl_anneal(10)
  keep = S.linear_keep_rate(4)
  tau = S.exponential_temperature(1.0, 0.5, 0.1)

  @jax.jit
  def step_fn(step):
    return step + 1, (kl(step), keep(step), tau(step))

  step = jnp.int32(0)
  seen = []
  for _ in range(6):
    step, vals = step_fn(step)
    seen.append([float(v) for v in vals])
  want = [[kl(i), keep(i), tau(i)] for i in range(6)]
  np.testing.assert_allclose(seen, np.asarray(want, np.float64), rtol=1e-6)
  assert seen[4][1] == 0.0 and seen[5][0] == pytest.approx(0.5)
