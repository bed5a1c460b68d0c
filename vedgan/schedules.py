"""Step-indexed schedules: KL annealing, scheduled-sampling keep rates, temperatures.

Each constructor validates its hyper-parameters in Python and returns a
schedule in the style of ``optax`` schedules: a pure function
``step -> value`` built from ``jnp`` operations only, so it can be called with
a Python int, a traced step counter inside ``jax.jit``, or an array of steps
(it is elementwise, and ``jax.vmap``-safe). Values are float32. Negative steps
are treated like step 0.

The returned schedules are wrapped in ``jax.jit`` (one compilation per
input type, not per call), and trace normally inside your own ``jit``.

Store the step counter in the training state (not a Python variable) and call
the schedule inside the jitted step::

    kl_weight = linear_kl_anneal(12_000)(state.step)

KL annealing: :func:`linear_kl_anneal`, :func:`sigmoid_kl_anneal`,
:func:`cyclical_kl_anneal`, :func:`mojitalk_kl_anneal`, each with a
``ceiling``. Scheduled sampling (collaborative VED Eq. 7):
:func:`linear_keep_rate`, :func:`exponential_keep_rate`,
:func:`inverse_sigmoid_keep_rate`. Temperatures: :func:`exponential_temperature`,
:func:`linear_temperature`.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "Schedule",
    "linear_kl_anneal",
    "sigmoid_kl_anneal",
    "cyclical_kl_anneal",
    "mojitalk_kl_anneal",
    "linear_keep_rate",
    "exponential_keep_rate",
    "inverse_sigmoid_keep_rate",
    "exponential_temperature",
    "linear_temperature",
]

Schedule = Callable[[int | jax.Array], jax.Array]


def _step(step) -> jax.Array:
  return jnp.maximum(jnp.asarray(step, jnp.float32), 0.0)


def _is_real(value) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def _positive(name: str, value) -> None:
  if not (_is_real(value) and value > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _non_negative(name: str, value) -> None:
  if not (_is_real(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


# --------------------------------------------------------------------------
# KL annealing


def linear_kl_anneal(warmup_steps: int, ceiling: float = 1.0,
                     start_step: int = 0) -> Schedule:
  """KL weight rising linearly from 0 to ``ceiling``, then constant.

  The KL annealing of Bowman et al. (2016) as used by collaborative VED
  (Experiments, "KLA": weight 0 rising to 1 over the first 12000 / 25000
  steps for DailyDialog / Switchboard)::

      w(step) = ceiling * clip((step - start_step) / warmup_steps, 0, 1)

  Args:
    warmup_steps: steps to reach the ceiling (> 0).
    ceiling: final weight.
    start_step: steps at weight 0 before the ramp starts.

  Returns:
    A schedule ``step -> weight``.

  >>> sched = linear_kl_anneal(100, ceiling=0.5)
  >>> print(sched(0), sched(50), sched(100), sched(1000))
  0.0 0.25 0.5 0.5
  """
  _positive("warmup_steps", warmup_steps)
  _non_negative("ceiling", ceiling)
  _non_negative("start_step", start_step)

  def schedule(step):
    s = _step(step)
    frac = jnp.clip((s - start_step) / warmup_steps, 0.0, 1.0)
    # Exactly the ceiling from the end of the ramp on (no rounding residue).
    frac = jnp.where(s >= start_step + warmup_steps, 1.0, frac)
    return jnp.float32(ceiling) * frac

  return jax.jit(schedule)


def sigmoid_kl_anneal(midpoint: float, steepness: float,
                      ceiling: float = 1.0) -> Schedule:
  """Logistic KL weight ``ceiling * sigmoid(steepness * (step - midpoint))``.

  The logistic KL annealing of Bowman et al. (2016, Sec. 3.1), one of the KL
  annealing variants of collaborative VED's "KLA" baseline (Experiments). The
  weight is ``ceiling / 2`` at ``midpoint`` and goes from ~12% to ~88% of the
  ceiling within ``+-2 / steepness`` steps of it.

  Args:
    midpoint: step where the weight is half the ceiling.
    steepness: slope ``k > 0`` (1/steps).
    ceiling: final weight.

  Returns:
    A schedule ``step -> weight``.

  >>> sched = sigmoid_kl_anneal(midpoint=1000, steepness=0.01)
  >>> print(sched(1000), round(float(sched(0)), 5), round(float(sched(5000)), 5))
  0.5 5e-05 1.0
  """
  _non_negative("midpoint", midpoint)
  _positive("steepness", steepness)
  _non_negative("ceiling", ceiling)

  def schedule(step):
    x = jnp.float32(steepness) * (_step(step) - jnp.float32(midpoint))
    return jnp.float32(ceiling) * jax.nn.sigmoid(x)

  return jax.jit(schedule)


def cyclical_kl_anneal(cycle_steps: int, ratio: float = 0.5,
                       ceiling: float = 1.0,
                       num_cycles: int | None = None) -> Schedule:
  """Cyclical KL annealing: repeated linear ramps (Fu et al., 2019).

  A KL-annealing alternative to the linear schedule of collaborative VED's
  "KLA" baseline. Within each cycle of ``cycle_steps`` steps the weight rises
  linearly from 0 to ``ceiling`` during the first ``ratio`` of the cycle and
  stays at the ceiling for the rest::

      tau  = (step mod cycle_steps) / cycle_steps
      w    = ceiling * min(tau / ratio, 1)

  After ``num_cycles`` cycles (if given) the weight stays at the ceiling.

  Args:
    cycle_steps: length of one cycle (> 0).
    ratio: fraction of a cycle spent ramping, in (0, 1].
    ceiling: the maximum weight.
    num_cycles: number of cycles, or None to cycle forever.

  Returns:
    A schedule ``step -> weight``.

  >>> sched = cyclical_kl_anneal(100, ratio=0.5)
  >>> print(sched(0), sched(25), sched(50), sched(99), sched(100), sched(125))
  0.0 0.5 1.0 1.0 0.0 0.5
  >>> print(cyclical_kl_anneal(100, num_cycles=1)(125))
  1.0
  """
  _positive("cycle_steps", cycle_steps)
  if not (_is_real(ratio) and 0 < ratio <= 1):
    raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
  _non_negative("ceiling", ceiling)
  if num_cycles is not None and not (isinstance(num_cycles, numbers.Integral)
                                     and num_cycles >= 1):
    raise ValueError(f"num_cycles must be None or an int >= 1, got "
                     f"{num_cycles!r}")

  ramp_steps = ratio * cycle_steps

  def schedule(step):
    s = _step(step)
    in_cycle = jnp.mod(s, cycle_steps)
    w = jnp.where(in_cycle >= ramp_steps, 1.0, in_cycle / ramp_steps)
    if num_cycles is not None:
      w = jnp.where(s >= num_cycles * cycle_steps, 1.0, w)
    return jnp.float32(ceiling) * w

  return jax.jit(schedule)


def mojitalk_kl_anneal(total_steps: int, ceiling: float = 0.48,
                       ratio: float = 0.75, smooth: bool = False) -> Schedule:
  """MojiTalk's tanh KL annealing, as in the authors' code.

  The weight of the KL term of MojiTalk's CVAE objective (supplement Eq. 2,
  ``L'``). The paper (supplement Sec. 0.4, "Training Setting") anneals it
  "to 0.5 at the end of the 6th epoch" (of 8, i.e. progress 0.75); the
  authors' code (see REFERENCE_NOTES) computes, for training progress
  ``p = step / total_steps``::

      w(p) = ceiling * (tanh(6 p / ratio - 3) + 1)   if p < ratio
             ceiling                                 otherwise

  with ``ceiling = 0.48``, ``ratio = 0.75``. Note that ``tanh + 1`` runs
  from ~0 to ~2, so the code's weight climbs to almost ``2 * ceiling`` just
  before ``p = ratio`` and then drops to ``ceiling`` (reproduced exactly by
  default). ``smooth=True`` halves the tanh ramp,
  ``ceiling * (tanh(6 p / ratio - 3) + 1) / 2``, which rises monotonically to
  99.75% of the ceiling at ``p = ratio`` (then the ceiling), as the paper
  describes.

  Args:
    total_steps: total training steps (progress 1.0), > 0.
    ceiling: the weight after the ramp.
    ratio: progress at which the ramp ends, in (0, 1].
    smooth: use the halved, monotone ramp instead of the code's.

  Returns:
    A schedule ``step -> weight``.

  >>> code = mojitalk_kl_anneal(1000)
  >>> print(round(float(code(375)), 4), round(float(code(749)), 4), code(750))
  0.48 0.9576 0.48
  >>> paper = mojitalk_kl_anneal(1000, smooth=True)
  >>> print(round(float(paper(375)), 4), round(float(paper(749)), 4), paper(750))
  0.24 0.4788 0.48
  """
  _positive("total_steps", total_steps)
  _non_negative("ceiling", ceiling)
  if not (_is_real(ratio) and 0 < ratio <= 1):
    raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
  scale = 0.5 if smooth else 1.0

  def schedule(step):
    s = _step(step)
    ramp = scale * (jnp.tanh(6.0 * s / (ratio * total_steps) - 3.0) + 1.0)
    return jnp.float32(ceiling) * jnp.where(s < ratio * total_steps, ramp, 1.0)

  return jax.jit(schedule)


# --------------------------------------------------------------------------
# scheduled sampling


def linear_keep_rate(k: float, minimum: float = 0.0) -> Schedule:
  """Scheduled-sampling keep rate ``p = max(1 - i / k, minimum)``.

  Implements collaborative VED Eq. 7: the probability of feeding the decoder
  the encoder's ground-truth code ``z~`` rather than the CVAE's sample ``z``
  at (AE-phase) step ``i``; ``k = 2500`` (DailyDialog) or 5000
  (Switchboard). Linear decay of Bengio et al. (2015).

  Args:
    k: steps until the rate reaches 0 (> 0).
    minimum: floor of the rate (the paper: 0).

  Returns:
    A schedule ``step -> keep probability``.

  >>> sched = linear_keep_rate(2500)
  >>> print(sched(0), sched(1250), sched(2500), sched(9999))
  1.0 0.5 0.0 0.0
  """
  _positive("k", k)
  _non_negative("minimum", minimum)

  def schedule(step):
    # (k - i) / k is exactly 0 at i = k (1 - i / k may not be once compiled).
    return jnp.maximum((k - _step(step)) / k, jnp.float32(minimum))

  return jax.jit(schedule)


def exponential_keep_rate(decay: float, minimum: float = 0.0) -> Schedule:
  """Scheduled-sampling keep rate ``p = max(decay ** i, minimum)``.

  The exponential decay that collaborative VED names as an alternative to
  Eq. 7 ("Other decaying functions are also applicable like exponential
  decay"), from Bengio et al. (2015): ``epsilon_i = k^i`` with ``k < 1``.

  Args:
    decay: per-step factor in (0, 1).
    minimum: floor of the rate.

  Returns:
    A schedule ``step -> keep probability``.

  >>> sched = exponential_keep_rate(0.5)
  >>> print(sched(0), sched(1), sched(3))
  1.0 0.5 0.125
  """
  if not (_is_real(decay) and 0 < decay < 1):
    raise ValueError(f"decay must be in (0, 1), got {decay!r}")
  _non_negative("minimum", minimum)
  log_decay = math.log(decay)

  def schedule(step):
    return jnp.maximum(jnp.exp(_step(step) * log_decay), jnp.float32(minimum))

  return jax.jit(schedule)


def inverse_sigmoid_keep_rate(k: float, minimum: float = 0.0) -> Schedule:
  """Scheduled-sampling keep rate ``p = k / (k + exp(i / k))``.

  The inverse-sigmoid decay that collaborative VED names as an alternative to
  Eq. 7, from Bengio et al. (2015), with ``k >= 1`` controlling the speed:
  the rate is ``k / (k + 1)`` at step 0 and 1/2 at step ``k log k``.

  Args:
    k: speed constant, >= 1.
    minimum: floor of the rate.

  Returns:
    A schedule ``step -> keep probability``.

  >>> import math
  >>> sched = inverse_sigmoid_keep_rate(100.0)
  >>> print(round(float(sched(0)), 4), round(float(sched(100 * math.log(100))), 4))
  0.9901 0.5
  """
  if not (_is_real(k) and k >= 1):
    raise ValueError(f"k must be a finite number >= 1, got {k!r}")
  _non_negative("minimum", minimum)
  log_k = math.log(k)

  def schedule(step):
    # k / (k + exp(i/k)) == sigmoid(log k - i/k), which cannot overflow.
    p = jax.nn.sigmoid(jnp.float32(log_k) - _step(step) / k)
    return jnp.maximum(p, jnp.float32(minimum))

  return jax.jit(schedule)


# --------------------------------------------------------------------------
# temperatures


def exponential_temperature(initial: float, minimum: float,
                            rate: float) -> Schedule:
  """Temperature ``max(minimum, initial * exp(-rate * step))``.

  The Gumbel-softmax annealing of Jang et al. (2017, Sec. 4): start soft and
  cool towards (near) one-hot samples, for ``tau_1`` of latent-space GAN
  Eq. 2 (which itself trains at a fixed 0.1) or a sampling temperature.

  Args:
    initial: temperature at step 0 (> 0).
    minimum: floor (> 0, Gumbel-softmax needs a positive temperature).
    rate: decay rate per step (>= 0).

  Returns:
    A schedule ``step -> temperature``.

  >>> sched = exponential_temperature(1.0, 0.1, rate=1e-3)
  >>> print(sched(0), round(float(sched(1000)), 4), sched(10**6))
  1.0 0.3679 0.1
  """
  _positive("initial", initial)
  _positive("minimum", minimum)
  _non_negative("rate", rate)

  def schedule(step):
    t = jnp.float32(initial) * jnp.exp(-jnp.float32(rate) * _step(step))
    return jnp.maximum(t, jnp.float32(minimum))

  return jax.jit(schedule)


def linear_temperature(initial: float, final: float,
                       transition_steps: int) -> Schedule:
  """Temperature moving linearly from ``initial`` to ``final``, then constant.

  A linear counterpart of :func:`exponential_temperature` for the
  Gumbel-softmax temperature ``tau_1`` (latent-space GAN Eq. 2) or a sampling
  temperature (HappyBot Eq. 5's ``tau``).

  Args:
    initial: temperature at step 0 (> 0).
    final: temperature from ``transition_steps`` on (> 0).
    transition_steps: length of the ramp (> 0).

  Returns:
    A schedule ``step -> temperature``.

  >>> sched = linear_temperature(1.0, 0.5, 100)
  >>> print(sched(0), sched(50), sched(100), sched(200))
  1.0 0.75 0.5 0.5
  """
  _positive("initial", initial)
  _positive("final", final)
  _positive("transition_steps", transition_steps)

  def schedule(step):
    s = _step(step)
    t = initial + (final - initial) * (s / transition_steps)
    return jnp.where(s >= transition_steps, jnp.float32(final), t)

  return jax.jit(schedule)
