"""vedgan.plan: stages on the global step axis, cycles, phase counts, stage ends."""
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from vedgan import configlib
from vedgan.errors import ConfigError
from vedgan.plan import Plan


def _config(**stages):
  c = ml_collections.ConfigDict()
  c.stages = ml_collections.ConfigDict()
  for name, (step, n) in stages.items():
    c.stages[name] = configlib.stage(step, n, 1e-3)
  c.stage_order = tuple(stages)
  return c


def test_spans_and_step_names():
  plan = Plan.from_config(_config(pre=("mle", 3), adv=("refill*1,dstep*2,gadv*1", 8)))
  assert plan.total_steps == 11
  assert [(s.name, s.start, s.end) for s in plan.spans] == [("pre", 0, 3), ("adv", 3, 11)]
  assert [plan.step_name(t) for t in range(11)] == (
      ["mle"] * 3 + ["refill", "dstep", "dstep", "gadv"] * 2)
  assert plan.span_at(99).name == "adv"  # past the end: the last stage
  assert plan.step_names == ("mle", "refill", "dstep", "gadv")


def test_phase_steps_before_counts_on_ints_and_traced_arrays():
  plan = Plan.from_config(_config(warm=("mle", 10), co=("ae*100,cvae*100", 1000)))
  co = plan.spans[1]
  # global step 260 is stage step 250: ae ran 100 (first period) + 50.
  assert int(co.phase_steps_before(260, "ae")) == 150
  assert int(co.phase_steps_before(260, "cvae")) == 100
  assert int(co.phase_steps_before(10, "ae")) == 0
  assert int(co.phase_steps_before(260, "joint")) == 0
  traced = jax.jit(lambda t: co.phase_steps_before(t, "ae"))
  for t in (10, 11, 109, 110, 111, 209, 210, 260, 1009):
    assert int(traced(jnp.int32(t))) == int(co.phase_steps_before(t, "ae"))
    # by brute force over the cycle
    assert int(co.phase_steps_before(t, "ae")) == sum(
        plan.step_name(s) == "ae" for s in range(co.start, t))


def test_stage_ends_first_step_and_order():
  plan = Plan.from_config(_config(base=("base", 4), cvae=("cvae", 0), clf=("classifier", 2),
                                  rl=("rl", 3)))
  assert plan.stage_ends(("rl", "cvae", "base")) == [("base", "base", 4), ("rl", "rl", 9)]
  assert plan.stage_ends() == [("base", "base", 4), ("clf", "classifier", 6), ("rl", "rl", 9)]
  assert plan.first_step("cvae") is None  # a 0-step stage never runs
  assert plan.first_step("classifier") == 4
  assert plan.is_ordered("base", "rl") and not plan.is_ordered("rl", "base")
  assert plan.is_ordered("rl", "cvae")  # no cvae step: nothing to order
  assert [s.name for s in plan.spans_using(["rl", "cvae"])] == ["rl"]


def test_bad_recipes_are_one_line_errors():
  with pytest.raises(ConfigError, match="stage_order is empty"):
    Plan.from_config(_config())
  c = _config(a=("x*0", 3))
  with pytest.raises(ConfigError, match="malformed"):
    Plan.from_config(c)
