"""Every numeric config field has a range (vedgan/config_ranges.py), checked before a run
writes anything: every field of every variant of every config file is named by a rule, the
shipped variants are in range, and every rule refuses its out-of-range example with one line
naming the field."""
import fnmatch
import glob
import importlib.util
import math
import os
import re

import pytest

from conftest import REPO, make_config
from fakes import FakeTokenizer
from vedgan import config_ranges, configlib
from vedgan.errors import ConfigError
from vedgan.objective import get_objective_class


def _variants():
  """``(file, variant, config)`` of every variant that a config file's text names."""
  out = []
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    if path.endswith("__init__.py"):
      continue
    spec = importlib.util.spec_from_file_location("_config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = set(re.findall(r'"([a-z0-9_.,]+)"', open(path, encoding="utf-8").read()))
    for name in sorted(names):
      try:
        out.append((os.path.basename(path), name, module.get_config(name)))
      except (ConfigError, ValueError, KeyError):
        continue
  return out


VARIANTS = _variants()


def test_every_variant_is_found_and_every_numeric_field_has_a_range():
  files = {f for f, _, _ in VARIANTS}
  assert len(files) == len(glob.glob(os.path.join(REPO, "configs", "*.py"))) - 1, files
  assert len(VARIANTS) > 40
  for file, name, config in VARIANTS:
    assert config_ranges.unruled(config) == [], (file, name)
    configlib.validate(config, get_objective_class(config.objective).STEPS)


def _pattern(path):
  key = config_ranges._pattern_path(path)  # pylint: disable=protected-access
  return next(p for p, _ in config_ranges.RULES if fnmatch.fnmatchcase(key, p))


def _examples():
  """One ``(variant, path)`` per pattern of the table that restricts something: the first
  field it governs."""
  seen = {}
  for file, name, config in VARIANTS:
    for path in config_ranges.numeric_fields(config):
      if config_ranges.rule_for(path) is not config_ranges.ANY:
        seen.setdefault(_pattern(path), (f"{file}:{name}", path))
  return sorted(seen.values(), key=lambda e: e[1])


EXAMPLES = _examples()


def _set(config, path, value):
  section = config
  *parents, leaf = path.split(".")
  for p in parents:
    section = section[p]
  old = section[leaf]
  if isinstance(old, (tuple, list)):
    value = (type(old[0])(value),) + tuple(old[1:])
  elif isinstance(old, int):
    value = int(value)
  with section.ignore_type():
    section[leaf] = value
  return value


def _config(variant):
  file, name = variant.split(":")
  return next(c for f, n, c in VARIANTS if f == file and n == name)


def test_only_seeds_and_offsets_take_any_value():
  """A rule weakened to ANY would drop its field from the examples below: pinned here."""
  free = {p for _, _, c in VARIANTS for p in config_ranges.numeric_fields(c)
          if config_ranges.rule_for(p) is config_ranges.ANY}
  assert free == {"seed", "data.oracle_seed", "data.oracle_data_seed", "model.forget_bias",
                  "data.lexicon_threshold", "data.lexicon_edges"}
  patterns = {p for p, r in config_ranges.RULES if r is not config_ranges.ANY}
  assert {_pattern(p) for _, p in EXAMPLES} == patterns   # every pattern governs a field


@pytest.mark.parametrize("variant,path", EXAMPLES, ids=[p for _, p in EXAMPLES])
def test_each_rule_refuses_its_out_of_range_example(variant, path):
  config = _config(variant).copy_and_resolve_references()
  rule = config_ranges.rule_for(path)
  bad = _set(config, path, rule.bad)
  with pytest.raises(ConfigError) as exc:
    configlib.validate(config, get_objective_class(config.objective).STEPS)
  message = str(exc.value)
  assert "\n" not in message and f"config.{path}=" in message, message
  if f"config.{path}={bad!r} is out of range" in message:   # the table's own wording
    assert f"({rule.why})" in message and f"set --config.{path} to" in message, message


@pytest.mark.parametrize("path", ["model.recon_weight", "decode.temperature", "seed"])
def test_non_finite_numbers_are_refused_everywhere(path):
  config = _config("latent_gan.py:demo").copy_and_resolve_references()
  for value in (math.nan, math.inf):
    if path == "seed":   # an int field: the table still sees the float it was given
      with config.ignore_type():
        config.seed = value
    else:
      _set(config, path, value)
    with pytest.raises(ConfigError, match=re.escape(f"config.{path}=") + ".*must be a finite "
                       "number"):
      configlib.validate(config, get_objective_class(config.objective).STEPS)


def test_a_new_numeric_field_without_a_rule_is_reported():
  config = _config("seq2seq.py:demo").copy_and_resolve_references()
  config.brand_new = configlib.ml_collections.ConfigDict({"size": 3})
  assert config_ranges.unruled(config) == ["brand_new.size"]


@pytest.mark.parametrize("config_file,variant,field,message", [
    # refused after training had started (at the first CVAE step or evaluation) or never
    ("configs/mojitalk.py", "demo", "stages__cvae__kl_schedule",
     "config.stages.cvae.kl_schedule='cosine' must be one of ('linear', 'tanh', "),
    ("configs/collaborative_ved.py", "co,demo", "ved__free_bits_mode",
     "config.ved.free_bits_mode='cosine' must be one of ('per_dim', 'total')"),
    ("configs/seq2seq.py", "demo", "model__attention",
     "model.attention='cosine' must be one of ('dot', 'general', 'scaled_dot')"),
    ("configs/mojitalk.py", "demo", "stages__rl__rl_latent",
     "config.stages.rl.rl_latent='cosine' must be one of ('prior', 'posterior')"),
    ("configs/mojitalk.py", "demo", "stages__rl__rl_decode",
     "config.stages.rl.rl_decode='cosine' must be one of ('greedy', 'sample')"),
    ("configs/happybot.py", "demo", "stages__rl__reward", "unknown reward 'cosine'; use one of"),
    ("configs/happybot.py", "demo", "stages__rl__baseline",
     "config.stages.rl.baseline='cosine' must be 'learned' or 'none'"),
])
def test_choice_fields_are_refused_when_the_objective_is_built(config_file, variant, field,
                                                               message):
  """The objective's constructor runs before anything is written (tests/test_bad_inputs.py
  checks that through the CLI); it now checks these choices instead of a later step."""
  config = make_config(config_file, variant, **{field: "cosine"})
  with pytest.raises(ConfigError, match=re.escape(message)):
    get_objective_class(config.objective)(config, FakeTokenizer(vocab_size=64))
