"""The objective interface, its registry, the training state and optimizer plumbing.

An objective (in the spirit of t5x's ``BaseModel``) is built from the config and
the tokenizer. It owns its networks and exposes:

* ``init(rng, batch) -> TrainState``;
* ``step_builders``: ``{name: build(stage_config, stage_start) -> per_device_step}``,
  where ``stage_start`` is the global step at which the stage begins and
  ``per_device_step(state, batch) -> (state, metrics)`` is pure and pmap-style
  (it averages over the ``"data"`` axis itself, see :mod:`vedgan.parallel`);
* ``eval_step(state, batch) -> per-device sums`` and ``summarize(sums) -> scalars``;
* ``generate(state, batch, rng, **options) -> tokens[B, L]``;
* ``make_inputs(config, workdir)`` (class method): the run's tokenizer and
  batch iterators; the default builds (context, response) dialogue pairs;
* ``sample_texts(state, inputs, step)``: ``[(prompt, text)]`` logged at each
  evaluation; the default decodes a few validation contexts with ``config.decode``.

Which step function runs when is data in ``config.stages`` (see :mod:`vedgan.train`).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from vedgan import parallel
from vedgan.errors import ConfigError

Array = jax.Array
_REGISTRY: dict[str, type] = {}


def register(name: str):
  """Class decorator adding an objective to the registry under ``name``."""

  def wrap(cls):
    _REGISTRY[name] = cls
    cls.name = name
    return cls

  return wrap


def get_objective_class(name: str) -> type:
  """Looks ``config.objective`` up; unknown names are a one-line :class:`ConfigError`."""
  import vedgan.objectives  # noqa: F401  (registers the built-in objectives)

  if name not in _REGISTRY:
    raise ConfigError(f"unknown objective {name!r}; config.objective must be one of "
                      f"{sorted(_REGISTRY)}")
  return _REGISTRY[name]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. Checkpointed whole.

  Attributes:
    step: int32 scalar, global step over all stages.
    rng: uint32 key data of the run's root key (``jax.random.key_data``);
      steps derive their keys with ``fold_in(root, step)``.
    params: ``{network name: params}``.
    opt_state: ``{network name: optax state}``.
    extra: objective-specific state (baselines, replay corpora, counters...).
  """
  step: Array
  rng: Array
  params: Any
  opt_state: Any
  extra: Any = None

  def step_key(self, salt: int = 0) -> Array:
    """The typed key for this step (same across devices): ``fold_in(fold_in(root, step), salt)``."""
    key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
    return jax.random.fold_in(key, salt)


def make_optimizer(opt_config) -> optax.GradientTransformation:
  """Clipping + Adam (+ weight decay), *without* the learning rate.

  The learning rate belongs to the stage and is applied by :func:`apply_updates`,
  so the optimizer state has one structure across stages.

  Config fields: ``grad_clip_norm`` (0 = off), ``grad_clip_value`` (0 = off),
  ``b1``, ``b2``, ``eps``, ``weight_decay``.
  """
  parts = []
  if opt_config.get("grad_clip_norm", 0.0):
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  if opt_config.get("grad_clip_value", 0.0):
    parts.append(optax.clip(opt_config.grad_clip_value))
  parts.append(optax.scale_by_adam(b1=opt_config.get("b1", 0.9), b2=opt_config.get("b2", 0.999),
                                   eps=opt_config.get("eps", 1e-8)))
  if opt_config.get("weight_decay", 0.0):
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))
  return optax.chain(*parts)


def learning_rate_fn(stage) -> Callable[[Array], Array]:
  """Learning rate as a function of the step within the stage.

  ``stage.learning_rate`` times linear warm-up over ``stage.warmup_steps`` and
  ``stage.lr_decay ** (stage_step // stage.lr_decay_every)``.
  """
  base = float(stage.learning_rate)
  warmup = int(stage.get("warmup_steps", 0))
  decay = float(stage.get("lr_decay", 1.0))
  every = max(int(stage.get("lr_decay_every", 1)), 1)

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


def build_mle_step(tx: optax.GradientTransformation, network: str, nll_fn: Callable, stage,
                   start: int) -> Callable:
  """A per-device maximum-likelihood step for ``state.params[network]``.

  ``nll_fn(params, batch, rng) -> (nll[B], count[B])`` gives per-sequence NLL sums
  and target-token counts. The loss is ``sum NLL / global token count`` (the
  count is summed over devices), so the psum of the per-device gradients is the
  gradient of the global token mean, whatever the device count.
  """
  lr_fn = learning_rate_fn(stage)

  def step(state: TrainState, batch):
    rng = parallel.device_rng(state.step_key())

    def loss_fn(params):
      nll, count = nll_fn(params, batch, rng)
      total = jax.lax.stop_gradient(parallel.psum(count.sum()))
      return nll.sum() / jnp.maximum(total, 1.0), (nll.sum(), count.sum())

    grads, (nll, count) = jax.grad(loss_fn, has_aux=True)(state.params[network])
    grads = parallel.psum(grads)
    lr = lr_fn(state.step - start)
    params, opt_state = apply_updates(tx, grads, state.opt_state[network],
                                      state.params[network], lr)
    nll, count = parallel.psum((nll, count))
    metrics = {"loss": nll / jnp.maximum(count, 1.0), "tokens": count,
               "grad_norm": global_norm(grads), "learning_rate": lr}
    return state.replace(step=state.step + 1, params={**state.params, network: params},
                         opt_state={**state.opt_state, network: opt_state}), metrics

  return step


def global_norm(tree: Any) -> Array:
  return optax.tree.norm(tree)


class Objective:
  """Base class; subclasses define ``STEPS``, ``init``, ``step_builders``,
  ``eval_step``, ``summarize`` and ``generate``. ``name`` is set by :func:`register`."""

  name = "base"

  def __init__(self, config, tokenizer):
    self.config = config
    self.tokenizer = tokenizer

  #: names of the step functions, known before the objective is built (config checks).
  STEPS: tuple[str, ...] = ()
  step_builders: dict[str, Callable]
  #: ``{file stem: (vedgan.plots.Panel, ...)}``: the objective's training-curve figures,
  #: drawn from ``metrics.jsonl`` into ``plots/<stem>.png`` at each stage end.
  PLOT_GROUPS: dict[str, tuple] = {}

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """Cheap evaluation plots of the current model (< 2 s at demo size), written to
    ``out_dir`` at the end of ``stage``; returns the PNG paths. Default: none."""
    del state, inputs, stage, out_dir
    return []

  @classmethod
  def make_inputs(cls, config, workdir: str):
    """``(inputs, tokenizer_is_new)``; see :class:`vedgan.data.inputs.Inputs`."""
    from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
    return inputs_lib.make_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Called once the inputs exist (e.g. to turn epochs into steps); default: nothing."""
    del inputs

  def word_embeddings(self, state):
    """The model's input word-embedding table ``[V, D]`` (row = token id).

    Used by the embedding metrics of ``python -m vedgan.evaluate`` when no
    word-vector file is given. The default reads
    ``state.params["model"]["embed"]["embedding"]`` (the seq2seq layout);
    objectives that keep their table elsewhere override this.
    """
    try:
      return state.params["model"]["embed"]["embedding"]
    except (KeyError, TypeError):
      raise ConfigError(f"objective {self.name!r} keeps no input embedding table at "
                        "params['model']['embed']['embedding']; pass --word_vectors FILE "
                        "or override Objective.word_embeddings") from None

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """Responses to ``inputs.sample_pairs``' contexts, decoded as ``config.decode`` says."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    contexts = [c for c, _ in inputs.sample_pairs]
    if not contexts:
      return []
    d = self.config.decode
    out = self.generate(state, inputs.encode_contexts(self.config, contexts),
                        rng=jax.random.key(step), mode=d.mode, temperature=d.temperature,
                        top_k=d.top_k, beam_width=d.beam_width, length_penalty=d.length_penalty,
                        forbid_unk=d.forbid_unk)
    tokens = np.asarray(jax.device_get(out.tokens))
    return [(c, inputs.tokenizer.decode(t.tolist())) for c, t in zip(contexts, tokens)]
