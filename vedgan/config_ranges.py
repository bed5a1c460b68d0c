"""The range of every numeric config field, checked before a run writes anything.

:func:`check` walks a config and applies to each number (an ``int`` or ``float``, not a
``bool``), and to each element of a tuple of numbers, the first rule of :data:`RULES` whose
pattern (``fnmatch`` on the dotted path, ``stages.<name>.`` written ``stages.*.``) matches.
A value out of range is a one-line :class:`ConfigError`::

  config.model.gen_hidden=0 is out of range (must be an integer >= 1); set
  --config.model.gen_hidden to a valid value

A float that is NaN or infinite is out of range everywhere. :func:`unruled` lists the numeric
fields no rule names; ``tests/test_config_ranges.py`` requires it to be empty for every variant
of every config file, so a new field gets its range when it is added.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Callable, NamedTuple

from vedgan.errors import ConfigError


class Rule(NamedTuple):
  """``ok(value) -> bool`` for one number; ``why`` ends the error; ``bad`` breaks it (tests)."""
  ok: Callable[[Any], bool]
  why: str
  bad: Any


def _int(v) -> bool:
  return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


POSITIVE = Rule(lambda v: _int(v) and v >= 1, "must be an integer >= 1", 0)
NON_NEGATIVE_INT = Rule(lambda v: _int(v) and v >= 0, "must be an integer >= 0", -1)
POSITIVE_REAL = Rule(lambda v: v > 0, "must be > 0", 0.0)
NON_NEGATIVE = Rule(lambda v: v >= 0, "must be >= 0", -1.0)
PROBABILITY = Rule(lambda v: 0 <= v < 1, "must be in [0, 1)", 1.0)
DROP_PROBABILITY = Rule(lambda v: 0 <= v < 1, "a drop probability must be in [0, 1)", 1.0)
FRACTION = Rule(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.0)
ANY = Rule(lambda v: True, "any finite number", None)

#: ``(pattern, rule)``, first match wins. Choice (string) fields are checked by the objective
#: that reads them, also before anything is written.
RULES: tuple[tuple[str, Rule], ...] = (
    # seeds and offsets: any value
    ("seed", ANY), ("data.oracle_seed", ANY), ("data.oracle_data_seed", ANY),
    ("model.forget_bias", ANY), ("data.lexicon_threshold", ANY), ("data.lexicon_edges", ANY),
    # training loop
    ("train.batch_size", Rule(lambda v: v > 0, "must be > 0", -8)),
    ("train.eval_batch_size", Rule(lambda v: v > 0, "must be > 0", 0)),
    ("train.eval_every", Rule(lambda v: v > 0, "must be > 0", 0)),
    ("train.checkpoint_every", Rule(lambda v: v > 0, "must be > 0", 0)),
    ("train.log_every", Rule(lambda v: v > 0, "must be > 0", 0)),
    ("train.eval_batches", Rule(lambda v: v >= 0, "must be >= 0", -1)),
    ("train.num_samples", Rule(lambda v: v >= 0, "must be >= 0", -1)),
    ("train.max_checkpoints", Rule(lambda v: v >= 1, "must be >= 1", 0)),
    ("train.max_consecutive_skips", Rule(lambda v: v >= 1, "must be >= 1", 0)),
    ("train.steps_per_call", Rule(lambda v: v >= 1,
                                  "must be >= 1; 1 runs one step per jitted call", 0)),
    ("train.patience", Rule(lambda v: v >= 0, "must be >= 0; 0 never stops early", -1)),
    ("tokenizer.vocab_size", Rule(lambda v: v >= 16,
                                  "must be >= 16: 6 ids are special tokens", 4)),
    ("tokenizer.min_count", POSITIVE),
    # data
    ("data.max_context_len", Rule(lambda v: v >= 1, "must be >= 1", 0)),
    ("data.max_response_len", Rule(lambda v: v >= 2,
                                   "must be >= 2: it counts the end-of-sequence token", 1)),
    ("data.context_turns", Rule(lambda v: v >= 1, "must be >= 1", 0)),
    ("data.validation_percent", Rule(lambda v: 0 <= v <= 100, "must be in [0, 100]", 101)),
    ("data.*", POSITIVE),    # max_len, max_turn_len, max_turns, num_labels, buckets, oracle_*
    # decoding and evaluation
    ("decode.top_k", Rule(lambda v: _int(v) and v >= 0, "must be an integer >= 0; 0 samples "
                          "from the whole vocabulary", -1)),
    ("decode.length_penalty", NON_NEGATIVE),
    ("decode.top_p", FRACTION),
    ("decode.repetition_penalty", POSITIVE_REAL),
    ("decode.no_repeat_ngram", NON_NEGATIVE_INT),
    ("decode.min_len", NON_NEGATIVE_INT),
    ("decode.temperature", POSITIVE_REAL),
    ("decode.*", POSITIVE),  # beam_width, latent_samples
    ("gan.*", POSITIVE),     # topk, replay_capacity, replay_half_life, report sizes, ks
    ("likelihood.*", POSITIVE),
    ("sweep.temperatures", NON_NEGATIVE),
    ("sweep.*", POSITIVE),   # num_samples, orders, plot_order
    # models
    ("model.*dropout*", DROP_PROBABILITY),
    ("model.*temperature", POSITIVE_REAL),
    ("model.*weight*", NON_NEGATIVE),  # recon_weight, disc_weight_decay
    ("model.leaky_relu_slope", PROBABILITY),
    ("model.classifier.embed_scale", POSITIVE_REAL),
    ("model.loss_chunk", Rule(lambda v: _int(v) and v >= 0, "must be an integer >= 0; 0 "
                              "computes the output layer in one piece", -1)),
    ("model.position_features", NON_NEGATIVE_INT),
    ("model.*", POSITIVE),   # sizes, layers, unroll
    # optimisation
    ("optimizer.b1", PROBABILITY), ("optimizer.b2", PROBABILITY),
    ("optimizer.eps", POSITIVE_REAL),
    ("optimizer.*", NON_NEGATIVE),     # clipping (0 = off), weight decay
    ("stages.*.learning_rate", NON_NEGATIVE),
    ("stages.*.num_steps", NON_NEGATIVE_INT),
    ("stages.*.warmup_steps", NON_NEGATIVE_INT),
    ("stages.*.rl_max_len", Rule(lambda v: _int(v) and v >= 0, "must be an integer >= 0; 0 "
                                 "uses data.max_response_len", -1)),
    ("stages.*.lr_decay_every", POSITIVE),
    ("stages.*.lr_decay", POSITIVE_REAL),
    ("stages.*.temperature", POSITIVE_REAL),
    ("stages.*.kl_tanh_ratio", FRACTION),
    ("stages.*", NON_NEGATIVE),        # loss weights, lr scales, epochs, KL ceilings
    # collaborative VED
    ("ved.word_dropout", DROP_PROBABILITY),
    ("ved.kl_anneal_steps", NON_NEGATIVE_INT),
    ("ved.steps_per_epoch", POSITIVE),
    ("ved.*", NON_NEGATIVE),           # alpha, free bits, ss_k, bow weight
)


def _pattern_path(path: str) -> str:
  parts = path.split(".")
  if parts[0] == "stages" and len(parts) > 2:
    parts[1] = "*"
  return ".".join(parts)


def rule_for(path: str) -> Rule | None:
  """The rule of the dotted field ``path`` (``stages.mle.num_steps``), or None."""
  key = _pattern_path(path)
  for pattern, rule in RULES:
    if fnmatch.fnmatchcase(key, pattern):
      return rule
  return None


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def numeric_fields(config) -> dict[str, Any]:
  """``{dotted path: value}`` of every number or tuple of numbers in ``config``."""
  out = {}

  def walk(section, prefix):
    for key, value in section.items():
      path = f"{prefix}.{key}" if prefix else key
      if hasattr(value, "items"):
        walk(value, path)
      elif _is_number(value) or (isinstance(value, (tuple, list)) and value
                                 and all(_is_number(v) for v in value)):
        out[path] = value
  walk(config, "")
  return out


def unruled(config) -> list[str]:
  """Numeric fields of ``config`` that no rule names."""
  return [p for p in numeric_fields(config) if rule_for(p) is None]


def check(config) -> None:
  """A one-line :class:`ConfigError` for the first numeric field out of its range."""
  for path, value in numeric_fields(config).items():
    rule = rule_for(path)
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, float) and not math.isfinite(v):
        why = "must be a finite number"
      elif rule is not None and not _ok(rule, v):
        why = rule.why
      else:
        continue
      raise ConfigError(f"config.{path}={value!r} is out of range ({why}); "
                        f"set --config.{path} to a valid value")


def _ok(rule: Rule, value) -> bool:
  try:
    return bool(rule.ok(value))
  except (TypeError, ValueError):
    return False
