"""Sequence rewards for RL fine-tuning, and how to plug in your own scorer.

A reward scores a batch of generated responses inside the jitted RL step::

    R = reward(params, batch, response)        # [B] float32, higher is better

* ``params``: the whole ``TrainState.params`` dict (a reward built on an
  in-project network reads its own entry, e.g. ``params["predictor"]``);
* ``batch``: the step's batch; rewards that look at the dialogue read
  ``batch["last_turn"]`` (``[B, U]`` int32, the user's last utterance
  ``u_{i+1}`` of the context, right-padded with 0);
* ``response``: ``[B, T]`` int32 generated tokens after BOS, EOS included,
  PAD (0) after EOS (the :mod:`vedgan.decode` convention).

The value is treated as data: the RL loss stops its gradient. HappyBot's ``rl``
step (:mod:`vedgan.papers.happybot.algorithm`) builds ``config.stages.rl.reward``
once with :func:`get` and calls it on each step's rollouts; its evaluation scores
greedy responses with ``lookahead`` and ``current``.

Built-in rewards (names for ``config.stages.rl.reward``):

==============  ==============================================================
``lookahead``   HappyBot's look-ahead sentiment: the in-project predictor on
                ``[u_{i+1}; <eou>; response]``, ``sigmoid`` output (Sec. 2.2)
``current``     "RL Current": the in-project sentiment classifier on the
                response itself (Sec. 3.2)
``lexicon``     the offline VADER-lexicon score of the response text
                (:mod:`vedgan.data.lexicon`), through the host-callback path
==============  ==============================================================

Plugging in another scorer, e.g. a pretrained BERT on a connected machine::

    from transformers import pipeline
    from vedgan import rewards, train

    bert = pipeline("sentiment-analysis",
                    model="distilbert-base-uncased-finetuned-sst-2-english")

    def bert_current(contexts, responses):        # lists of str -> [B] floats
      out = bert(list(responses), truncation=True)
      return [o["score"] if o["label"] == "POSITIVE" else 1 - o["score"] for o in out]

    rewards.register_text_scorer("bert_current", bert_current, look_ahead=False)
    config.stages.rl.reward = "bert_current"      # before config.lock()
    train.run(config, workdir)

A text scorer runs on the host through ``jax.pure_callback``: token ids are
decoded with the run's tokenizer and ``score_fn(contexts, responses)`` gets
the user's last turn (``look_ahead=True``; ``None`` entries otherwise) and the
response as strings. For scorers that are JAX functions (a Flax BERT whose
weights you load into the state, say), subclass :class:`Reward` and register a
factory with :func:`register`. From the command line, a reward can also be
named ``"package.module:factory"``: the factory is imported and called with
the objective.
"""
from __future__ import annotations

import abc

import importlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vedgan.errors import ConfigError

Array = jax.Array


# ----------------------------------------------------------------------------
# Token helpers (pure, jit-safe).


def strip_eos(tokens: Array, eos_id: int) -> Array:
  """``tokens`` with EOS replaced by PAD (0): a decoded response as a plain utterance."""
  return jnp.where(tokens == eos_id, 0, tokens)


def join_turns(first: Array, second: Array, sep_id: int) -> Array:
  """Flattens two turns into one left-aligned sequence ``[first; sep; second]``.

  The non-pad tokens of each row are packed in order (interior padding is
  squeezed out), so ``[[5, 6, 0]]`` and ``[[7, 0]]`` with ``sep_id=4`` give
  ``[[5, 6, 4, 7, 0, 0]]``.

  Args:
    first: ``[B, L1]`` int tokens, pad = 0.
    second: ``[B, L2]`` int tokens, pad = 0.
    sep_id: the separator (``<eou>``).

  Returns:
    ``[B, L1 + 1 + L2]`` int32.

  >>> import jax.numpy as jnp
  >>> join_turns(jnp.array([[5, 6, 0]]), jnp.array([[7, 0]]), 4)
  Array([[5, 6, 4, 7, 0, 0]], dtype=int32)
  """
  first = jnp.asarray(first, jnp.int32)
  second = jnp.asarray(second, jnp.int32)
  b, l1 = first.shape
  width = l1 + 1 + second.shape[1]
  m1, m2 = first != 0, second != 0
  n1 = m1.sum(axis=1)
  pos1 = jnp.where(m1, jnp.cumsum(m1, axis=1) - 1, width)            # width = dropped
  pos2 = jnp.where(m2, n1[:, None] + jnp.cumsum(m2, axis=1), width)
  rows = jnp.arange(b)[:, None]
  out = jnp.zeros((b, width), jnp.int32)
  out = out.at[rows, pos1].set(first, mode="drop")
  out = out.at[rows, pos2].set(second, mode="drop")
  return out.at[jnp.arange(b), n1].set(sep_id)


# ----------------------------------------------------------------------------
# Rewards.


class Reward(abc.ABC):
  """Base class: ``__call__(params, batch, response) -> [B]`` (see the module docstring)."""

  name = "reward"

  @abc.abstractmethod
  def __call__(self, params: Any, batch: dict, response: Array) -> Array:
    """Rewards ``[B]`` of ``response[B, T]`` for ``batch``."""


class ClassifierReward(Reward):
  """``sigmoid`` of an in-project :class:`vedgan.nn.classifier.SentenceClassifier`.

  Attributes:
    module: the classifier module (architecture).
    params_key: its entry in ``TrainState.params``.
    eos_id, sep_id: token ids (``sep_id`` joins the turns when ``look_ahead``).
    look_ahead: score ``[last_turn; sep; response]`` (the look-ahead
      predictor, HappyBot Sec. 2.2) instead of the response alone.
  """

  def __init__(self, module, params_key: str, eos_id: int, sep_id: int, look_ahead: bool,
               name: str = ""):
    self.module = module
    self.params_key = params_key
    self.eos_id = int(eos_id)
    self.sep_id = int(sep_id)
    self.look_ahead = bool(look_ahead)
    self.name = name or ("lookahead" if look_ahead else "current")

  def inputs(self, batch: dict, response: Array) -> Array:
    """The classifier's input tokens for ``response`` (gold or generated)."""
    tokens = strip_eos(response, self.eos_id)
    if self.look_ahead:
      tokens = join_turns(batch["last_turn"], tokens, self.sep_id)
    return tokens

  def logits(self, params: Any, batch: dict, response: Array) -> Array:
    """``[B]`` log-odds of a positive (next-turn) sentiment."""
    tokens = self.inputs(batch, response)
    return self.module.apply({"params": params[self.params_key]}, tokens)[:, 0]

  def __call__(self, params, batch, response):
    return jax.nn.sigmoid(self.logits(params, batch, response))


class TextReward(Reward):
  """A host-side Python scorer on strings, called from jitted code via ``jax.pure_callback``.

  Args:
    score_fn: ``score_fn(contexts, responses) -> B floats``; ``contexts`` are
      the users' last turns (``look_ahead=True``) or ``None`` entries.
    tokenizer: has ``decode(ids) -> str`` (the run's tokenizer).
    look_ahead: pass the last user turn as context.
  """

  def __init__(self, score_fn: Callable[[Sequence, Sequence[str]], Any], tokenizer,
               look_ahead: bool = False, name: str = "text"):
    self.score_fn = score_fn
    self.tokenizer = tokenizer
    self.look_ahead = bool(look_ahead)
    self.name = name

  def _host(self, last_turn, response):
    last_turn, response = np.asarray(last_turn), np.asarray(response)
    responses = [self.tokenizer.decode(row.tolist()) for row in response]
    if self.look_ahead:
      contexts = [self.tokenizer.decode(row.tolist()) for row in last_turn]
    else:
      contexts = [None] * len(responses)
    scores = np.asarray(self.score_fn(contexts, responses), np.float32).reshape(-1)
    if scores.shape != (len(responses),):
      raise ValueError(f"reward {self.name!r} returned {scores.shape[0]} scores for "
                       f"{len(responses)} responses")
    return scores

  def __call__(self, params, batch, response):
    del params
    last_turn = batch["last_turn"] if self.look_ahead else jnp.zeros((response.shape[0], 1),
                                                                      jnp.int32)
    out = jax.ShapeDtypeStruct((response.shape[0],), jnp.float32)
    return jax.pure_callback(self._host, out, last_turn, response, vmap_method="sequential")


# ----------------------------------------------------------------------------
# Registry: name -> factory(objective) -> Reward.

RewardFactory = Callable[[Any], Reward]
_FACTORIES: dict[str, RewardFactory] = {}


def register(name: str):
  """Decorator registering ``factory(objective) -> Reward`` under ``name``."""

  def wrap(factory):
    _FACTORIES[name] = factory
    return factory

  return wrap


def register_text_scorer(name: str, score_fn, look_ahead: bool = False) -> None:
  """Registers a host Python scorer on strings (see :class:`TextReward`) under ``name``."""
  register(name)(lambda objective: TextReward(score_fn, objective.tokenizer, look_ahead, name))


def names() -> list[str]:
  return sorted(_FACTORIES)


def get(name: str, objective) -> Reward:
  """Builds the reward ``name`` (or ``"module:factory"``) for ``objective``.

  The objective provides what built-in rewards need: ``tokenizer`` and, for the
  in-project networks, ``reward_classifier`` (the module) and ``tokenizer``'s
  ``eos_id``/``eou_id``.
  """
  if name in _FACTORIES:
    return _FACTORIES[name](objective)
  if ":" in name:
    module_name, _, attr = name.partition(":")
    try:
      factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
      raise ConfigError(f"reward {name!r} cannot be imported ({e})") from None
    reward = factory(objective)
    if not isinstance(reward, Reward):
      raise ConfigError(f"reward factory {name!r} returned {type(reward).__name__}, "
                        "not a vedgan.rewards.Reward")
    return reward
  raise ConfigError(f"unknown reward {name!r}; use one of {names()} or 'module:factory'")


def _eou_id(tokenizer) -> int:
  return int(getattr(tokenizer, "eou_id", 4))


@register("lookahead")
def _lookahead(objective) -> Reward:
  t = objective.tokenizer
  return ClassifierReward(objective.reward_classifier, "predictor", t.eos_id, _eou_id(t),
                          look_ahead=True)


@register("current")
def _current(objective) -> Reward:
  t = objective.tokenizer
  return ClassifierReward(objective.reward_classifier, "classifier", t.eos_id, _eou_id(t),
                          look_ahead=False)


@register("lexicon")
def lexicon_reward(objective) -> Reward:
  """The offline VADER-lexicon score of the response text (a :class:`TextReward`)."""
  from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel

  lexicon = Lexicon.load()
  return TextReward(lambda contexts, responses: [lexicon.score(r) for r in responses],
                    objective.tokenizer, look_ahead=False, name="lexicon")
