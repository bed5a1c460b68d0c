"""The training plan: ``config.stages`` placed on the global step axis.

A run is a sequence of stages (``config.stage_order``), each running
``num_steps`` steps whose step function follows the stage's cycle (``"mle"``, or
``"disc*5,gen*1"``). :class:`Plan` is the one place that walks the stages: the
driver asks it which stage and step function run at a global step, papers ask
it how many steps of a phase came before (Eq. 7 of the collaborative VED), where
the stages that use a step end (reports), or when a step first runs.

    plan = Plan.from_config(config)
    span = plan.span_at(step)                 # StageSpan("adversarial", ...)
    plan.step_name(step)                      # "dstep"
    span.phase_steps_before(step, "ae")       # ints or traced arrays
    plan.stage_ends(("cvae", "rl"))           # [(stage, step kind, end step)]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import jax.numpy as jnp

from vedgan import configlib


@dataclasses.dataclass(frozen=True)
class StageSpan:
  """A stage placed on the global step axis: steps ``[start, end)``.

  Attributes:
    name: the stage's key in ``config.stages``.
    config: the stage's config (``step``, ``num_steps``, ``learning_rate`` ...).
    start, end: global steps; the stage runs ``start <= step < end``.
    cycle: ``((step name, count), ...)`` parsed from ``config.step``.
  """
  name: str
  config: Any
  start: int
  end: int
  cycle: tuple[tuple[str, int], ...]

  @property
  def period(self) -> int:
    return sum(n for _, n in self.cycle)

  @property
  def step_names(self) -> tuple[str, ...]:
    """The distinct step functions of the cycle, in cycle order."""
    return tuple(dict.fromkeys(name for name, _ in self.cycle))

  def step_name(self, step: int) -> str:
    """The step function the cycle prescribes at global ``step`` (a Python int)."""
    pos = (step - self.start) % self.period
    for name, n in self.cycle:
      if pos < n:
        return name
      pos -= n
    raise AssertionError("unreachable: pos < period")

  def phase_steps_before(self, step, name: str):
    """Steps of ``name`` this stage ran before global ``step`` (ints or traced arrays).

    ``cycle = (("ae", 100), ("cvae", 100))``, ``start = 0``: 150 ``ae`` steps come
    before step 250. A name the cycle lacks gives 0.
    """
    per_period = sum(n for s, n in self.cycle if s == name)
    pos = jnp.asarray(step) - self.start
    count = (pos // self.period) * per_period
    rem = pos % self.period
    offset = 0
    for s, n in self.cycle:
      if s == name:
        count = count + jnp.clip(rem - offset, 0, n)
      offset += n
    return count

  def first_step(self, name: str) -> int | None:
    """The first global step of this stage that runs ``name`` (None if none does)."""
    offset = 0
    for s, n in self.cycle:
      if s == name:
        return self.start + offset if self.start + offset < self.end else None
      offset += n
    return None


@dataclasses.dataclass(frozen=True)
class Plan:
  """All stages of a run in order; see the module docstring."""
  spans: tuple[StageSpan, ...]

  @classmethod
  def from_config(cls, config) -> "Plan":
    """Checks ``config.stages``/``stage_order`` (one-line ConfigErrors) and places them."""
    spans, start = [], 0
    for name, stage in configlib.ordered_stages(config):
      end = start + int(stage.num_steps)
      spans.append(StageSpan(name, stage, start, end, tuple(configlib.parse_cycle(stage.step))))
      start = end
    return cls(tuple(spans))

  @property
  def total_steps(self) -> int:
    return self.spans[-1].end

  @property
  def step_names(self) -> tuple[str, ...]:
    """Every step function some stage uses (stages of 0 steps included), in order."""
    return tuple(dict.fromkeys(n for span in self.spans for n in span.step_names))

  def span_at(self, step: int) -> StageSpan:
    """The stage running at global ``step`` (the last one at or after the end)."""
    for span in self.spans:
      if span.start <= step < span.end:
        return span
    return self.spans[-1]

  def step_name(self, step: int) -> str:
    return self.span_at(step).step_name(step)

  def spans_using(self, names: Iterable[str]) -> list[StageSpan]:
    """The stages with at least one step whose cycle uses one of ``names``."""
    names = set(names)
    return [s for s in self.spans if s.end > s.start and names & set(s.step_names)]

  def stage_ends(self, kinds: Iterable[str] = ()) -> list[tuple[str, str, int]]:
    """``[(stage name, kind, end step)]``: for each stage that runs steps, the first of
    ``kinds`` its cycle uses (all stages with their first step name when ``kinds`` is
    empty). Reports evaluate the checkpoints at these steps."""
    kinds = tuple(kinds)
    out = []
    for span in self.spans:
      if span.end <= span.start:
        continue
      names = span.step_names
      kind = next((k for k in kinds if k in names), None) if kinds else names[0]
      if kind is not None:
        out.append((span.name, kind, span.end))
    return out

  def first_step(self, name: str) -> int | None:
    """The first global step that runs ``name`` anywhere in the plan (None if never)."""
    for span in self.spans:
      first = span.first_step(name)
      if first is not None:
        return first
    return None

  def is_ordered(self, before: str, after: str) -> bool:
    """Whether some ``before`` step runs before the first ``after`` step (True if no
    ``after`` step runs)."""
    first_after = self.first_step(after)
    if first_after is None:
      return True
    first_before = self.first_step(before)
    return first_before is not None and first_before < first_after
