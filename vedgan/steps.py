"""Step specs and the one update rule that turns them into training steps.

An objective declares each step function as data::

    Step(trains=("generator", "reconstructor"), loss=self.gen_loss, stream="train")

where ``loss(params, batch, ctx) -> (Weighted(total, count), metrics)`` is pure.
``params`` holds every network (``{name: tree}``); only those named in
``trains`` are differentiated. ``total`` is this device's *sum* of the loss
over its rows and ``count`` what that sum is normalised by (tokens, rows...).
:func:`build_update` is the only code in vedgan that takes gradients and applies
optimizer updates. Per device, it:

1. derives the step's keys (``ctx.key``, ``ctx.keys``: ``fold_in(root, step)``,
   then the device index, so a resumed run draws the same numbers);
2. takes ``jax.grad`` of ``total / psum(count)`` over exactly the parameters of
   the networks in ``trains`` (the count is summed over devices and held
   constant), and ``psum`` s the gradients: the gradient of the global mean,
   whatever the number of devices (t5x's ``loss_normalizing_factor`` /
   ``weight_sum`` convention);
3. updates each trained network with its own optimizer state at the stage's
   learning rate (``Step.learning_rate`` can give one per network), resetting
   that state at the stage's first step when ``stage.reset_optimizer`` is set;
4. runs ``Step.after`` on the extra state (counters), increments ``step``;
5. reduces the metrics: a :class:`Weighted` metric becomes its global mean, a
   plain scalar the mean over devices (schedules, already-global values);
   ``loss``, ``grad_norm`` and ``learning_rate`` are added (named with
   ``Step.prefix``).

A gradient-free step (the top-k GAN's replay refill) gives ``update(state,
batch, ctx) -> (extra, metrics)`` instead of a loss.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, NamedTuple, Optional, Union

import flax.struct
import jax
import jax.numpy as jnp
import optax

from vedgan import parallel

Array = jax.Array


class Weighted(NamedTuple):
  """A per-device sum and what it is normalised by; its global value is
  ``psum(total) / psum(count)``. Both are float scalars."""
  total: Array
  count: Array

  @classmethod
  def of_shares(cls, value: Array) -> "Weighted":
    """``value`` is already this device's share of a global quantity (the shares sum to
    it over devices, e.g. a sum of :meth:`StepContext.share` terms with different
    normalisers): the count sums to 1 over devices, so the global value is the sum of
    the shares and the gradient is theirs."""
    return cls(value, 1.0 / parallel.psum(jnp.float32(1.0)))


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. Checkpointed whole.

  Attributes:
    step: int32 scalar, global step over all stages.
    rng: uint32 key data of the run's root key (``jax.random.key_data``).
    params: ``{parameter group: tree}``.
    opt_state: ``{network: optax state}`` (a network is one or more groups,
      see :meth:`vedgan.objective.Objective.networks`).
    extra: objective-specific state (replay corpora, counters ...), or None.
  """
  step: Array
  rng: Array
  params: Any
  opt_state: Any
  extra: Any = None

  def step_key(self, salt: int = 0) -> Array:
    """The typed key of this step (same on all devices): ``fold_in(fold_in(root, step), salt)``."""
    key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
    return jax.random.fold_in(key, salt)


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a loss may read besides parameters and batch (built by the driver, per device).

  Attributes:
    state: the state before the step (read-only: extra state, frozen networks).
    span: the running stage (``span.config`` is the stage config).
    plan: the whole :class:`vedgan.plan.Plan`.
    name: the step function's name.
  """
  state: TrainState
  span: Any
  plan: Any
  name: str

  @property
  def stage(self):
    """The stage config (``config.stages.<name>``)."""
    return self.span.config

  @property
  def step(self) -> Array:
    """Global step (int32 scalar)."""
    return self.state.step

  @property
  def stage_step(self) -> Array:
    """Steps since the stage began."""
    return self.state.step - self.span.start

  def phase_step(self, name: Optional[str] = None) -> Array:
    """Steps of phase ``name`` (default: this step) run earlier in this stage."""
    return self.span.phase_steps_before(self.state.step, name or self.name)

  @property
  def rng(self) -> Array:
    """This step's key, distinct per device: ``fold_in(step_key, device index)``."""
    return parallel.device_rng(self.state.step_key())

  def salted_key(self, salt: int) -> Array:
    """``fold_in(state.step_key(salt), device index)``: a step key by an integer salt
    (:attr:`rng` is salt 0)."""
    return parallel.device_rng(self.state.step_key(salt))

  def key(self, name: str) -> Array:
    """A key for ``name`` (``fold_in(rng, crc32(name))``): independent of other names."""
    return jax.random.fold_in(self.rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)

  def keys(self, *names: str) -> dict[str, Array]:
    """``{name: key}`` from one split of :attr:`rng`, in the order given."""
    return dict(zip(names, jax.random.split(self.rng, len(names))))

  @property
  def learning_rate(self) -> Array:
    """The stage's scheduled learning rate at this step (:func:`learning_rate_fn`)."""
    return learning_rate_fn(self.stage)(self.stage_step)

  @staticmethod
  def global_sum(x):
    """``x`` summed over devices."""
    return parallel.psum(x)

  @staticmethod
  def share(total: Array, count: Array) -> Array:
    """This device's share of the global mean ``psum(total) / max(psum(count), 1)``."""
    return total / jnp.maximum(parallel.psum(count), 1.0)


Trains = Union[tuple[str, ...], Callable[[Any], tuple[str, ...]]]


@dataclasses.dataclass(frozen=True)
class Step:
  """One step function of an objective, as data; see the module docstring.

  Attributes:
    trains: the networks whose parameters the loss differentiates and the
      driver updates, or ``stage_config -> networks``.
    loss: ``(params, batch, ctx) -> (Weighted, metrics)``; None with ``update``.
    stream: the input stream whose batches the step reads.
    update: gradient-free step ``(state, batch, ctx) -> (extra, metrics)``.
    learning_rate: ``(ctx, network) -> lr``; default ``ctx.learning_rate``.
    after: ``(extra, ctx) -> extra`` after a gradient update (e.g. a counter).
    prefix: prefix of the ``loss``/``grad_norm``/``learning_rate`` metrics.
  """
  trains: Trains = ()
  loss: Optional[Callable] = None
  stream: str = "train"
  update: Optional[Callable] = None
  learning_rate: Optional[Callable] = None
  after: Optional[Callable] = None
  prefix: str = ""

  def __post_init__(self):
    if (self.loss is None) == (self.update is None):
      raise ValueError("a Step has either a loss (gradient step) or an update (gradient-free)")
    if self.update is not None and self.trains:
      raise ValueError("a gradient-free Step trains no network")

  def networks(self, stage_config) -> tuple[str, ...]:
    return tuple(self.trains(stage_config) if callable(self.trains) else self.trains)


def make_optimizer(opt_config) -> optax.GradientTransformation:
  """Clipping + Adam (+ weight decay), *without* the learning rate.

  The learning rate belongs to the stage and is applied by :func:`apply_updates`,
  so the optimizer state has one structure across stages.

  Config fields: ``grad_clip_norm`` (0 = off), ``grad_clip_value`` (0 = off),
  ``b1``, ``b2``, ``eps``, ``weight_decay``.
  """
  parts = []
  if opt_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  if opt_config.grad_clip_value:
    parts.append(optax.clip(opt_config.grad_clip_value))
  parts.append(optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps))
  if opt_config.weight_decay:
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))
  return optax.chain(*parts)


def learning_rate_fn(stage) -> Callable[[Array], Array]:
  """Learning rate as a function of the step within the stage.

  ``stage.learning_rate`` times linear warm-up over ``stage.warmup_steps`` and
  ``stage.lr_decay ** (stage_step // stage.lr_decay_every)``.
  """
  base = float(stage.learning_rate)
  warmup = int(stage.warmup_steps)
  decay = float(stage.lr_decay)
  every = max(int(stage.lr_decay_every), 1)

  def lr(stage_step):
    stage_step = jnp.asarray(stage_step, jnp.float32)
    value = base * decay ** jnp.floor(stage_step / every)
    if warmup > 0:
      value = value * jnp.minimum(1.0, (stage_step + 1.0) / warmup)
    return value

  return lr


def apply_updates(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any,
                  learning_rate: Array) -> tuple[Any, Any]:
  """One optimizer update: ``params - lr * tx(grads)``. Returns ``(params, opt_state)``."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = jax.tree.map(lambda p, u: p - learning_rate * u.astype(p.dtype), params, updates)
  return params, opt_state


def global_norm(tree: Any) -> Array:
  return optax.tree.norm(tree)


def network_params(params: dict, groups: tuple[str, ...]) -> Any:
  """The tree a network's optimizer sees: ``params[g]`` for a one-group network,
  ``{g: params[g]}`` for a network of several groups."""
  return params[groups[0]] if len(groups) == 1 else {g: params[g] for g in groups}


def _merge_network(params: dict, groups: tuple[str, ...], tree: Any) -> dict:
  if len(groups) == 1:
    return {**params, groups[0]: tree}
  return {**params, **tree}


def reduce_metrics(metrics: dict) -> dict:
  """Global values of per-device metrics: :class:`Weighted` -> global mean, scalars ->
  mean over devices."""
  out = {}
  for k, v in metrics.items():
    if isinstance(v, Weighted):
      total, count = parallel.psum((v.total, v.count))
      out[k] = total / jnp.maximum(count, 1e-12)
    else:
      out[k] = parallel.pmean(jnp.asarray(v, jnp.float32))
  return out


def build_update(spec: Step, name: str, span, plan, networks: dict[str, tuple[str, ...]],
                 optimizers: dict[str, optax.GradientTransformation]) -> Callable:
  """The per-device step ``(state, batch) -> (state, metrics)`` of ``spec`` in ``span``.

  Args:
    spec: the step spec; ``name`` its name in the objective's steps.
    span: the :class:`vedgan.plan.StageSpan` it runs in; ``plan`` the whole plan.
    networks: ``{network: parameter groups}`` of the objective.
    optimizers: ``{network: optax transformation}`` (no learning rate).
  """
  if spec.update is not None:
    def gradient_free(state: TrainState, batch):
      ctx = StepContext(state, span, plan, name)
      extra, metrics = spec.update(state, batch, ctx)
      return state.replace(step=state.step + 1, extra=extra), reduce_metrics(metrics)
    return gradient_free

  trains = spec.networks(span.config)
  unknown = [n for n in trains if n not in networks]
  if unknown:
    raise ValueError(f"step {name!r} trains unknown network(s) {unknown}; the objective has "
                     f"{sorted(networks)}")
  groups = tuple(dict.fromkeys(g for n in trains for g in networks[n]))
  reset = bool(span.config.reset_optimizer)
  p = spec.prefix

  def step(state: TrainState, batch):
    ctx = StepContext(state, span, plan, name)

    def loss_fn(trainable):
      weighted, metrics = spec.loss({**state.params, **trainable}, batch, ctx)
      count = jax.lax.stop_gradient(parallel.psum(weighted.count))
      return weighted.total / jnp.maximum(count, 1e-12), (weighted, metrics)

    grads, (weighted, metrics) = jax.grad(loss_fn, has_aux=True)(
        {g: state.params[g] for g in groups})
    grads = parallel.psum(grads)
    params, opt_state = dict(state.params), dict(state.opt_state)
    learning_rates = {}
    for net in trains:
      lr = (spec.learning_rate(ctx, net) if spec.learning_rate is not None
            else ctx.learning_rate)
      learning_rates[net] = lr
      own = network_params(params, networks[net])
      opt = opt_state[net]
      if reset:  # a fresh optimizer state at the stage's first step
        fresh = optimizers[net].init(own)
        opt = jax.tree.map(lambda f, o: jnp.where(ctx.stage_step == 0, f, o), fresh, opt)
      new, opt_state[net] = apply_updates(optimizers[net], network_params(grads, networks[net]),
                                          opt, own, lr)
      params = _merge_network(params, networks[net], new)
    extra = state.extra if spec.after is None else spec.after(state.extra, ctx)
    out = reduce_metrics({f"{p}loss": weighted, **metrics})
    out[f"{p}grad_norm"] = global_norm(grads)
    out[f"{p}learning_rate"] = jnp.asarray(learning_rates[trains[0]], jnp.float32)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         extra=extra), out

  return step


#: the field of a ``metrics.jsonl`` train row naming the step function that produced it.
STEP_NAME_FIELD = "step_name"


def rows_by_step(rows: list[dict], count_skipped: bool = False) -> list[tuple[str, dict]]:
  """One train row per step function: ``[(step name, scalars)]`` of a logging window.

  ``rows``: the driver's per-step host rows ``{"name", "metrics", "ok", ...}`` of one
  window, which in a cycle (``"ae*N,cvae*N"``, ``"disc*5,gen*1"``) mixes step
  functions. Each step function's applied (``ok``) steps are averaged on their own,
  so that a ``loss`` of one step is never averaged with another's; with
  ``count_skipped``, ``skipped_nonfinite`` counts that step function's skipped steps.
  Step functions in the order they first ran in the window.

  >>> rows = [{"name": "ae", "ok": True, "metrics": {"loss": 1.0}},
  ...         {"name": "cvae", "ok": True, "metrics": {"loss": 5.0}},
  ...         {"name": "ae", "ok": True, "metrics": {"loss": 3.0}}]
  >>> rows_by_step(rows)
  [('ae', {'loss': 2.0}), ('cvae', {'loss': 5.0})]
  """
  out = []
  for name in dict.fromkeys(r["name"] for r in rows):
    mine = [r for r in rows if r["name"] == name]
    good = [r["metrics"] for r in mine if r["ok"]]
    keys = sorted({k for m in good for k in m})
    scalars = {k: float(sum(m[k] for m in good if k in m) / sum(1 for m in good if k in m))
               for k in keys}
    if count_skipped:
      scalars["skipped_nonfinite"] = float(sum(not r["ok"] for r in mine))
    out.append((name, scalars))
  return out
