"""The objective interface and its registry.

An objective (in the spirit of t5x's ``BaseModel``) is built from the config and
the tokenizer and holds no training loop. It declares:

* :meth:`Objective.init` ``(rng, batch) -> TrainState``: every network, its
  optimizer state (:meth:`Objective.new_state`) and extra state;
* :meth:`Objective.steps` ``-> {name: Step}``: the step functions as data
  (:class:`vedgan.steps.Step`); the driver builds the updates;
* :meth:`Objective.eval_step` ``(state, batch) -> per-device sums`` and
  :meth:`Objective.summarize` ``(sums) -> scalars``;
* :meth:`Objective.generate` ``(state, batch, rng, options) -> Generation``, the
  same call for conditional models (``batch`` holds the prompts) and
  unconditional ones (``batch`` is None, ``options.num_samples`` sentences);
* ``make_inputs(config, workdir)`` (class method): the run's
  :class:`vedgan.data.inputs.Inputs`; the default builds dialogue pairs.

Which step runs when is data in ``config.stages`` (:mod:`vedgan.plan`).
"""
from __future__ import annotations

import abc
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import optax

from vedgan import steps as steps_lib
from vedgan.decode import DecodeOptions
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
  import vedgan.papers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  if name not in _REGISTRY:
    raise ConfigError(f"unknown objective {name!r}; config.objective must be one of "
                      f"{sorted(_REGISTRY)}")
  return _REGISTRY[name]


#: XLA options for compiling :meth:`Objective.init` on CPU. Initialisation runs once per
#: run, so its speed does not matter, but its compile time is part of every fresh start:
#: XLA:CPU's default (LLVM -O3) takes 3.9-17.5 s per objective at demo and paper sizes on
#: one quiet core, of which -O1 saves 17-47% (``benchmarks/init_compile.py``,
#: docs/benchmarks.md), with bit-identical parameters for every objective at every size
#: measured (tests/test_init_compile.py checks it; -O0 changes their last bits).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_init(objective: "Objective", **jit_kwargs):
  """``jax.jit(objective.init, **jit_kwargs)``, compiled with :data:`INIT_COMPILER_OPTIONS`
  on CPU. Left to JAX's choice elsewhere (the options were measured on CPU only) and when
  ``jax_disable_most_optimizations`` asks for cheaper compilation still."""
  cpu = jax.default_backend() == "cpu"
  if cpu and not jax.config.read("jax_disable_most_optimizations"):
    jit_kwargs = {"compiler_options": INIT_COMPILER_OPTIONS, **jit_kwargs}
  return jax.jit(objective.init, **jit_kwargs)


class Generation(NamedTuple):
  """What :meth:`Objective.generate` returns, for every objective.

  Attributes:
    tokens: ``[B, L]`` int32, EOS included, PAD after it.
    lengths: ``[B]`` int32 tokens up to and including EOS (``L`` without EOS).
    scores: ``[B]`` float32 sequence scores (sum of log-probabilities, or the
      beam score; 0 where an objective has none).
    info: objective-specific extras (e.g. MojiTalk's chosen candidate).
  """
  tokens: Array
  lengths: Array
  scores: Array
  info: dict = {}


class Objective(abc.ABC):
  """Base class of every objective; ``name`` is set by :func:`register`."""

  name = "base"
  #: names of the step functions, known before the objective is built (config checks);
  #: :meth:`steps` must return exactly these.
  STEPS: tuple[str, ...] = ()
  #: ``{network: parameter groups}`` when a network spans several groups of
  #: ``state.params`` or groups are shared (the top-k GAN's word vectors); None: each
  #: group of ``state.params`` is a network of its own.
  NETWORKS: Optional[dict[str, tuple[str, ...]]] = None
  #: ``{file stem: (vedgan.plots.Panel, ...)}``: the objective's training-curve figures,
  #: drawn from ``metrics.jsonl`` into ``plots/<stem>.png`` at each stage end.
  PLOT_GROUPS: dict[str, tuple] = {}
  #: the input stream whose validation split :meth:`eval_step` reads.
  EVAL_STREAM = "train"
  #: True: :meth:`generate` answers prompts (dialogue contexts); False: it samples
  #: ``options.num_samples`` sentences from nothing (``batch=None``).
  CONDITIONAL = True
  #: True: a prompt's turns are encoded one by one (hierarchical models), not as one
  #: string; :meth:`prompt_turns` says how many are kept.
  HIERARCHICAL = False

  def __init__(self, config, tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.steps_per_epoch: Optional[int] = None

  # -- what every objective defines ------------------------------------------------
  @abc.abstractmethod
  def init(self, rng: Array, batch) -> steps_lib.TrainState:
    """All networks, optimizer states and extra state (see :meth:`new_state`)."""

  @abc.abstractmethod
  def steps(self) -> dict[str, steps_lib.Step]:
    """``{step name: Step}`` for every name in :attr:`STEPS`."""

  @abc.abstractmethod
  def eval_step(self, state: steps_lib.TrainState, batch) -> dict[str, Array]:
    """Per-device sums over a validation batch (padding rows, ``weight`` 0, count 0)."""

  @abc.abstractmethod
  def summarize(self, sums: dict) -> dict[str, float]:
    """Validation scalars from the sums of :meth:`eval_step` over all batches."""

  @abc.abstractmethod
  def generate(self, state: steps_lib.TrainState, batch: Optional[dict], rng: Array,
               options: DecodeOptions) -> Generation:
    """Responses to ``batch``'s prompts (None for unconditional objectives)."""

  @abc.abstractmethod
  def prompt_batch(self, inputs, prompts: list[str], label=None) -> Optional[dict]:
    """The :meth:`generate` batch (numpy arrays, ``len(prompts)`` rows) for raw prompt
    texts, turns joined by ``config.data.eou``; ``label``: the designated label of every
    row (objectives with :meth:`label_names`). Unconditional objectives: None."""

  # -- generation conveniences (overridable) ------------------------------------------
  def prompt_turns(self) -> int:
    """How many previous turns a prompt holds (``config.data.context_turns``)."""
    return max(int(self.config.data.context_turns), 1)

  def label_names(self) -> tuple[str, ...]:
    """Names of the labels :meth:`generate` can be asked for (MojiTalk's emoji); () for
    objectives that take none."""
    return ()

  def texts(self, generation: Generation) -> list[str]:
    """The generated rows as text (up to EOS, specials dropped)."""
    tokens = np.asarray(jax.device_get(generation.tokens))
    return [self.tokenizer.decode(row.tolist()) for row in tokens]

  # -- shared machinery --------------------------------------------------------------
  def networks(self, params: dict) -> dict[str, tuple[str, ...]]:
    """``{network: parameter groups}`` (see :attr:`NETWORKS`)."""
    if self.NETWORKS is not None:
      return dict(self.NETWORKS)
    return {name: (name,) for name in params}

  def optimizer(self, network: str) -> optax.GradientTransformation:
    """The optimizer (without learning rate) of ``network``: ``config.optimizer``."""
    del network
    return steps_lib.make_optimizer(self.config.optimizer)

  def new_state(self, rng: Array, params: dict, extra: Any = None) -> steps_lib.TrainState:
    """A step-0 :class:`TrainState` with a fresh optimizer state per network; the run's
    root key is ``fold_in(rng, 1)``."""
    opt_state = {net: self.optimizer(net).init(steps_lib.network_params(params, groups))
                 for net, groups in self.networks(params).items()}
    return steps_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32),
                                rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                                params=params, opt_state=opt_state, extra=extra)

  @classmethod
  def make_inputs(cls, config, workdir: str):
    """``(inputs, tokenizer_is_new)``: (context, response) pairs on stream ``train``."""
    from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
    return inputs_lib.make_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Learns the epoch length of stream ``train`` (for schedules given in epochs)."""
    self.steps_per_epoch = int(inputs.streams["train"].num_batches_per_epoch)

  def epochs_to_steps(self, epochs: float, what: str) -> int:
    """``epochs`` of stream ``train`` in steps (needs :meth:`bind_inputs`)."""
    if float(epochs) <= 0:
      return 0
    if not self.steps_per_epoch:
      raise ConfigError(f"{what} is given in epochs but the epoch length is unknown; "
                        "call objective.bind_inputs(inputs) (the trainer does)")
    return max(1, int(round(float(epochs) * self.steps_per_epoch)))

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """Cheap evaluation plots (< 2 s at demo size) written to ``out_dir`` at the end of
    ``stage``; returns the PNG paths. Objectives without such plots return []."""
    del state, inputs, stage, out_dir
    return []

  def word_embeddings(self, state):
    """The model's input word-embedding table ``[V, D]`` (row = token id), used by the
    embedding metrics when no word-vector file is given; default
    ``state.params["model"]["embed"]["embedding"]``."""
    try:
      return state.params["model"]["embed"]["embedding"]
    except (KeyError, TypeError):
      raise ConfigError(f"objective {self.name!r} keeps no input embedding table at "
                        "params['model']['embed']['embedding']; pass --word_vectors FILE "
                        "or override Objective.word_embeddings") from None

  def decode_options(self, **overrides) -> DecodeOptions:
    """``config.decode`` as :class:`DecodeOptions`, with ``overrides``."""
    return DecodeOptions.from_config(self.config.decode, **overrides)

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """``[(prompt, text)]`` logged at each evaluation: responses to
    ``inputs.sample_pairs``' contexts decoded as ``config.decode`` says."""
    contexts = [c for c, _ in inputs.sample_pairs]
    if not contexts:
      return []
    out = self.generate(state, self.prompt_batch(inputs, contexts), jax.random.key(step),
                        self.decode_options())
    return list(zip(contexts, self.texts(out)))
