"""Shared config defaults and checks for ``configs/*.py``.

Every config is an ``ml_collections.ConfigDict`` with these sections:

* ``objective``: registry name (see :mod:`vedgan.papers`);
* ``seed``;
* ``data``: dataset, context handling, lengths and buckets;
* ``tokenizer``: kind and vocabulary size;
* ``model``: network sizes (objective specific);
* ``optimizer``: Adam and clipping (the learning rate lives in each stage);
* ``train``: batch sizes, evaluation, checkpoint and logging cadence;
* ``decode``: decoding settings for samples and evaluation;
* ``stages`` + ``stage_order``: the training recipe as data. Each stage has
  ``step`` (a step-function name, or a cycle such as ``"disc*5,gen*1"``),
  ``num_steps``, ``learning_rate``, ``warmup_steps``, ``lr_decay``,
  ``lr_decay_every`` and ``reset_optimizer`` (fresh optimizer states for the
  networks the stage trains, at its first step); see :func:`stage`.
"""
from __future__ import annotations

import ml_collections

from vedgan import config_ranges, host_malloc
from vedgan.errors import ConfigError  # noqa: F401  (re-exported for configs)

# Sections whose change makes an existing workdir unusable (the networks, the
# vocabulary or the data the tokenizer was trained on would differ).
STRUCTURAL_SECTIONS = ("objective", "model", "tokenizer", "data")
MACHINE_LOCAL_DATA_FIELDS = ("data_dir", "manual_dir", "path",
                             "tokenizer_file")  # a resumed run reads WORKDIR/tokenizer
# Model fields that change how the same parameters are computed, not what they are:
# a run may be resumed with other values (e.g. bf16 compute on a TPU after a CPU start).
COMPUTE_ONLY_MODEL_FIELDS = ("dtype", "unroll", "remat", "loss_chunk")
# Fields outside those sections that a run cannot be resumed with other values of: the
# data position and the random streams are counted in batches of this size, so another
# size would silently continue a different run.
RESUME_FIXED_FIELDS = ("train.batch_size",)


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all objectives; each config file overrides what it needs."""
  c = ml_collections.ConfigDict()
  c.objective = "seq2seq"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.format = "tfds"              # tfds (builder data.name) | text_lines | tsv_pairs | jsonl_dialogues | hf
  c.data.name = "chatterbot_corpus"   # TFDS builder, "name" or "name/config" (see vedgan.data.sources)
  c.data.data_dir = ""                # "" = $VEDGAN_DATA_DIR, $TFDS_DATA_DIR or ~/.cache/vedgan/tfds
  c.data.manual_dir = ""              # manually downloaded files ("" = DATA_DIR/downloads/manual); docs/data.md
  c.data.path = ""                    # custom formats: the file, or a pattern with {split} ("data/{split}.tsv")
  c.data.validation_percent = 10      # custom single-file formats: % of items hashed into validation
  c.data.turns_field = "turns"        # jsonl_dialogues, hf: the field holding the list of turns
  c.data.label_field = ""             # jsonl_dialogues, hf: optional label field (scalar or one per turn)
  c.data.context_field = ""           # hf: context column ("" = "context" if present); with response_field
  c.data.response_field = ""          # hf: response column ("" = "response" if present)
  c.data.text_field = ""              # hf: sentence column ("" = "text" if present)
  c.data.hf_config = ""               # hf: the dataset's configuration name (load_dataset's 2nd argument)
  c.data.hf_splits = ml_collections.ConfigDict(  # hf: vedgan's split -> the dataset's split name
      {"train": "train", "validation": "validation", "test": "test"})
  c.data.validation_split = "validation"  # split used for evaluation (e.g. "test" where none exists)
  c.data.context_turns = 1            # previous turns joined into the context
  c.data.eou = "<eou>"                # joins context turns
  c.data.tokenizer_file = ""          # tokenizer.kind="file": a tokenizer.json (HF) or SentencePiece .model
  c.data.max_context_len = 32         # tokens; longer contexts keep their end
  c.data.max_response_len = 24        # tokens incl. EOS; longer responses are cut
  c.data.too_long = "truncate"        # over-long items: "truncate" or "skip" (both counted)
  c.data.input = "memory"             # "memory": encode the training split before step 0; "stream":
                                      # read and tokenise it lazily (grain; docs/data.md#streaming)
  c.data.buckets = (8, 16, 32)        # padded lengths (static shapes for jit)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.kind = "sentencepiece"  # "sentencepiece" | "word" (most-frequent-N words + <unk>)
                                      # | "file" (data.tokenizer_file, made elsewhere)
  c.tokenizer.model_type = "unigram"  # sentencepiece: "unigram" or "bpe"
  c.tokenizer.vocab_size = 2000       # total ids incl. the 6 specials (word: at most this many)
  c.tokenizer.lowercase = True        # word: lower-case before counting / encoding
  c.tokenizer.min_count = 1           # word: rarer words map to <unk>
  # kind "file" (data.tokenizer_file; vedgan.data.outside_tokenizer): each role's token by
  # name ("" = the file's own / the default: <pad> <unk> <s> </s>, data.eou, <blank>)
  c.tokenizer.special_tokens = ml_collections.ConfigDict(
      {"pad": "", "unk": "", "bos": "", "eos": "", "eou": "", "blank": ""})
  c.tokenizer.add_roles = ("pad", "eou", "blank")  # file: roles given a new id when their
                                                    # default token is not in the vocabulary

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.grad_clip_norm = 5.0
  c.optimizer.grad_clip_value = 0.0
  c.optimizer.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64             # global, split over all devices
  c.train.eval_batch_size = 64
  c.train.eval_every = 500            # steps; evaluation also runs at step 0 and at the end
  c.train.eval_batches = 0            # 0 = the whole validation split
  c.train.checkpoint_every = 1000
  c.train.max_checkpoints = 2
  c.train.log_every = 50
  c.train.num_samples = 4             # validation contexts decoded at each evaluation
  c.train.progress = True             # progress bar on stderr
  c.train.eval_plots = True           # stage-end evaluation PNGs (run the model)
  c.train.curve_plots = True          # stage-end training_curves.png and group plots (read
                                      # metrics.jsonl; False: none, draw them later with
                                      # vedgan.plots.training_curves(workdir))
  c.train.distributed = False         # call jax.distributed.initialize() (multi-host)
  c.train.nonfinite = "stop"          # a step with a NaN/inf metric or update is never applied;
                                      # "stop": end the run with an error at the next log point,
                                      # "skip": drop the step (data and schedules move on)
  c.train.max_consecutive_skips = 20  # "skip": stop after this many non-finite steps in a row
  c.train.steps_per_call = 1          # train steps per jitted call (lax.scan over K batches)
  c.train.select_by = ""              # validation metric that picks checkpoints/best ("" = off)
  c.train.select_mode = "min"         # "min": lower select_by is better; "max": higher
  c.train.patience = 0                # stop after N evaluations without improvement; 0 = never
  c.train.compilation_cache = "auto"  # JAX's persistent cache: "auto" (~/.cache/vedgan/...),
                                      # "off" or a folder; $VEDGAN_COMPILATION_CACHE overrides
  c.train.host_malloc = "steady"      # glibc keeps freed step buffers for the next step (no
                                      # page faults per step; vedgan/host_malloc.py) or
                                      # "system"; $VEDGAN_HOST_MALLOC overrides

  c.decode = ml_collections.ConfigDict()
  c.decode.mode = "greedy"            # greedy | sample | beam
  c.decode.temperature = 1.0
  c.decode.top_k = 0
  c.decode.top_p = 1.0                # nucleus sampling (1 = off)
  c.decode.repetition_penalty = 1.0   # CTRL's penalty on repeated tokens (1 = off)
  c.decode.no_repeat_ngram = 0        # forbid repeating any n-gram of this size (0 = off)
  c.decode.min_len = 0                # no end-of-sequence before this many tokens
  c.decode.beam_width = 4
  c.decode.length_penalty = 0.0
  c.decode.forbid_unk = True

  c.stages = ml_collections.ConfigDict()
  c.stage_order = ()
  return c


def stage(step: str, num_steps: int, learning_rate: float, **extra) -> ml_collections.ConfigDict:
  """One entry of ``config.stages``."""
  fields = dict(step=step, num_steps=num_steps, learning_rate=learning_rate, warmup_steps=0,
                lr_decay=1.0, lr_decay_every=1, reset_optimizer=False)
  fields.update(extra)
  return ml_collections.ConfigDict(fields)


def sibling_config(config_file: str, name: str, variant: str) -> ml_collections.ConfigDict:
  """``get_config(variant)`` of the config file ``name``.py in ``config_file``'s folder.

  A config that reuses another paper's settings (``configs/oracle.py`` takes the latent GAN's
  model from ``configs/latent_gan.py``) reads them from that file instead of repeating them,
  so a field added there reaches it too. Loaded by path: the config folder need not be an
  importable package.
  """
  import importlib.util
  import os

  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_vedgan_sibling_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved ``config.json`` as a ConfigDict, with the shared fields it lacks (added to
  vedgan after the run started) taken from :func:`base_config` and :func:`stage`."""
  config = base_config().to_dict()

  def merge(base, new):
    for k, v in new.items():
      base[k] = merge(dict(base.get(k, {})), v) if isinstance(v, dict) else v
    return base

  config = merge(config, saved)
  defaults = stage("", 0, 0.0).to_dict()
  for name, fields in config.get("stages", {}).items():
    config["stages"][name] = {**defaults, **fields}
  return ml_collections.ConfigDict(config)


def parse_cycle(step: str) -> list[tuple[str, int]]:
  """``"disc*5,gen*1"`` -> ``[("disc", 5), ("gen", 1)]``; ``"mle"`` -> ``[("mle", 1)]``."""
  cycle = []
  for part in str(step).split(","):
    name, _, count = part.strip().partition("*")
    try:
      n = int(count) if count else 1
    except ValueError:
      n = 0
    if not name or n <= 0:
      raise ConfigError(f"stage step {step!r} is malformed; write 'name' or 'name*count,name*count'")
    cycle.append((name, n))
  return cycle


def ordered_stages(config) -> list[tuple[str, ml_collections.ConfigDict]]:
  """``[(name, stage)]`` in ``config.stage_order``, after checking the recipe."""
  order = tuple(config.stage_order)
  if not order:
    raise ConfigError("config.stage_order is empty; list at least one stage of config.stages")
  unknown = [n for n in order if n not in config.stages]
  if unknown:
    raise ConfigError(f"config.stage_order names unknown stage(s) {unknown}; "
                      f"config.stages has {sorted(config.stages.keys())}")
  if len(set(order)) != len(order):
    raise ConfigError(f"config.stage_order {order} repeats a stage name")
  out = []
  for name in order:
    s = config.stages[name]
    if int(s.num_steps) < 0:
      raise ConfigError(f"config.stages.{name}.num_steps={s.num_steps} must be >= 0; set "
                        f"--config.stages.{name}.num_steps to the steps the stage should run")
    if not float(s.learning_rate) >= 0:
      raise ConfigError(f"config.stages.{name}.learning_rate={s.learning_rate} must be >= 0; "
                        f"set --config.stages.{name}.learning_rate=1e-3 for example")
    parse_cycle(s.step)
    out.append((name, s))
  return out


def validate(config, step_names) -> None:
  """One-line :class:`ConfigError` for values no run could use."""
  checks = [
      ("train.nonfinite", config.train.nonfinite,
       lambda v: v in ("stop", "skip"), "must be 'stop' or 'skip'"),
      ("train.select_by", config.train.select_by, lambda v: isinstance(v, str),
       "must be a validation metric name, or '' for no model selection"),
      ("train.select_mode", config.train.select_mode, lambda v: v in ("min", "max"),
       "must be 'min' or 'max'"),
      ("train.host_malloc", config.train.get("host_malloc", "steady"),
       lambda v: str(v).strip().lower() in host_malloc.MODES,
       "must be " + " or ".join(repr(m) for m in host_malloc.MODES)),
  ]
  for name, value, ok, why in checks:
    if not ok(value):
      raise ConfigError(f"config.{name}={value!r} is out of range ({why}); "
                        f"set --config.{name} to a valid value")
  if int(config.train.patience) > 0 and not str(config.train.select_by).strip():
    raise ConfigError(f"config.train.patience={config.train.patience} needs the validation "
                      "metric it watches; set --config.train.select_by=nll for example")
  if config.data.get("input", "memory") not in ("memory", "stream"):
    raise ConfigError(f"config.data.input={config.data.input!r} is out of range (must be "
                      "'memory' or 'stream'); set --config.data.input to a valid value")
  buckets = tuple(config.data.buckets)
  if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
    raise ConfigError(f"config.data.buckets={buckets} must be increasing positive lengths")
  longest = max(int(config.data.max_context_len), int(config.data.max_response_len))
  if buckets[-1] < longest:
    raise ConfigError(f"config.data.buckets={buckets} must reach the longest sequence "
                      f"({longest}); add a bucket >= {longest}")
  for name, s in ordered_stages(config):
    for step, _ in parse_cycle(s.step):
      if step not in step_names:
        raise ConfigError(f"config.stages.{name}.step uses unknown step function {step!r}; "
                          f"objective {config.objective!r} has {sorted(step_names)}")
  if sum(int(s.num_steps) for _, s in ordered_stages(config)) == 0:
    raise ConfigError(f"the stages {list(config.stage_order)} train 0 steps in total; set "
                      "--config.stages.<name>.num_steps to a positive number")
  config_ranges.check(config)   # every other number: the table in vedgan/config_ranges.py


def structural_diff(saved: dict, current: dict) -> list[str]:
  """Dotted keys in :data:`STRUCTURAL_SECTIONS` (and :data:`RESUME_FIXED_FIELDS`) whose values
  differ between two config dicts.

  A key the saved config lacks (a field added to vedgan after the run started)
  is not a difference, nor are :data:`COMPUTE_ONLY_MODEL_FIELDS`; checkpoint
  restoring still checks every array's shape and dtype.
  """
  diffs = []

  def walk(a, b, prefix):
    if prefix.split(".")[-1] in COMPUTE_ONLY_MODEL_FIELDS and prefix.startswith("model."):
      return
    if isinstance(a, dict) and isinstance(b, dict):
      for k in sorted(set(a) | set(b)):
        walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}" if prefix else k)
    elif a != b and a != "<missing>":
      diffs.append(f"{prefix}: {a!r} -> {b!r}")

  for section in STRUCTURAL_SECTIONS:
    a, b = saved.get(section), current.get(section)
    if section == "data" and isinstance(a, dict) and isinstance(b, dict):
      # Where the files live may differ between machines; what they are may not.
      a = {k: v for k, v in a.items() if k not in MACHINE_LOCAL_DATA_FIELDS}
      b = {k: v for k, v in b.items() if k not in MACHINE_LOCAL_DATA_FIELDS}
    walk(a, b, section)
  for dotted in RESUME_FIXED_FIELDS:
    section, field = dotted.split(".")
    a, b = saved.get(section, {}).get(field, "<missing>"), current.get(section, {}).get(field)
    if a != b and a != "<missing>":
      diffs.append(f"{dotted}: {a!r} -> {b!r}")
  return diffs
