"""Evaluation suites of a trained run: the logic behind ``python -m vedgan.evaluate``.

:func:`run_suites` opens a run directory read-only (its ``config.json``,
tokenizer and latest, best or chosen checkpoint), runs the requested suites and writes one
JSON file per suite, plus plots, into ``WORKDIR/eval/``::

    from vedgan import eval_suites
    out = eval_suites.run_suites("/tmp/run", ["likelihood", "bleu", "sweep"],
                                 num_samples=500, temperatures=(0.0, 0.5, 1.0))
    out["bleu"]["values"]          # {"corpus_bleu": ..., "bleu": ...}

Generic suites (:mod:`vedgan.dialogue_suites`; each paper registers its tables and
figures in ``vedgan/papers/<paper>/report.py``; more with :func:`register_suite`):

* ``likelihood``: the objective's validation statistics (token NLL,
  perplexity, ...) over the whole split, from summed statistics;
* ``bleu``: responses decoded for the split's contexts, scored with corpus
  BLEU (each hypothesis against its own reference, sacrebleu's definition)
  and Texygen BLEU (each hypothesis against the whole reference set);
* ``diversity``: distinct-1/2, average length and Self-BLEU of the responses;
* ``embedding``: Average / Greedy / Extrema embedding similarity of each
  response to its reference (the model's own input embeddings on token ids,
  or a word-vector file on words);
* ``sweep``: a quality-diversity curve (negative BLEU vs Self-BLEU) over
  sampling temperatures (0 = greedy), JSON + PNG.

Every file records the checkpoint step, the split, how responses were
generated, and each metric's comparability settings (n-gram order,
smoothing, tokenisation, number of samples, reference-set hash; see
:class:`vedgan.metrics.MetricResult`).

Errors the user can fix (unknown suite, missing workdir or config, no
checkpoint) are one-line :class:`vedgan.errors.VedganError` raised before
anything is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from vedgan import configlib, metrics, parallel, selection, workdir_checks
from vedgan.data.tokenizer import content_ids
from vedgan.metrics import text as text_lib
from vedgan.errors import CheckpointError, ConfigError, DataError, VedganError

DEFAULT_SUITES = ("likelihood", "bleu", "diversity")
GENERIC_SUITES = ("likelihood", "bleu", "diversity", "embedding", "sweep")
DECODE_MODES = ("greedy", "sample", "beam")

TOKENIZATIONS = text_lib.TOKENIZATIONS


# ----------------------------------------------------------------------------
# Options and the suite registry
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What :func:`run_suites` accepts besides the workdir and the suites.

  Decoding options left at ``None`` take the run's ``config.decode`` value.

  Attributes:
    split: dataset split to evaluate on.
    num_samples: contexts decoded (the split's first N); 0 = the whole split.
    decode_mode: greedy | sample | beam.
    temperature, top_k, beam_width, length_penalty: decoding settings.
    temperatures: the sweep's temperatures (0.0 = greedy).
    word_vectors: word-vector file for the embedding suite; None = the model's
      own input embedding table (``Objective.word_embeddings``) on token ids.
    max_n: BLEU / Self-BLEU order.
    tokenization: how texts become tokens for BLEU and diversity
      (a key of :data:`TOKENIZATIONS`).
    seed: decoding RNG seed (sampling).
    batch_size: decoding batch; 0 = ``config.train.eval_batch_size``.
    plot_context: collaborative_ved_fig3: the validation example whose context is
      plotted; -1 = the context with the most distinct responses.
    compare_workdirs: further run directories that multi-run suites (latent_gan_fig3,
      latent_gan_fig4, latent_gan_table2) compare with ``workdir``.
    checkpoint: the weights evaluated, in every run opened: ``"latest"``, ``"best"``
      (``checkpoints/best``, kept by ``train.select_by``) or a step number.
    iw_samples: K of the importance-weighted bounds; 0 = ``config.likelihood.iw_samples``.
    likelihood_batches: validation batches the likelihoods read; 0 = the whole split.
  """
  split: str = "validation"
  num_samples: int = 0
  decode_mode: str | None = None
  temperature: float | None = None
  top_k: int | None = None
  beam_width: int | None = None
  length_penalty: float | None = None
  temperatures: tuple[float, ...] = metrics.KOJIMA_TEMPERATURES
  word_vectors: str | None = None
  max_n: int = 4
  tokenization: str = "word"
  seed: int = 0
  batch_size: int = 0
  plot_context: int = -1
  compare_workdirs: tuple[str, ...] = ()
  checkpoint: str = "latest"
  iw_samples: int = 0
  likelihood_batches: int = 0


@dataclasses.dataclass
class SuiteOutput:
  """What a suite function returns; :func:`run_suites` adds the common fields.

  Attributes:
    values: the headline numbers, ``{name: float}``.
    results: ``{name: MetricResult}`` (value + settings + details).
    summary: the one-line summary printed for the suite (without its prefix).
    generation: how the scored responses were produced (None: nothing decoded).
    extra: further top-level JSON fields (e.g. a sweep's points).
    plots: PNG paths written.
  """
  values: dict[str, float]
  results: dict[str, metrics.MetricResult]
  summary: str
  generation: dict[str, Any] | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  plots: list[str] = dataclasses.field(default_factory=list)


SuiteFn = Callable[["EvalRun"], SuiteOutput]
_SUITES: dict[str, SuiteFn] = {}
_DECODING: set[str] = set()


def register_suite(name: str, decodes: bool = True):
  """Decorator adding ``fn(run: EvalRun) -> SuiteOutput`` under ``name``.

  ``decodes``: the suite generates responses (it needs a dialogue objective).
  """

  def wrap(fn):
    _SUITES[name] = fn
    if decodes:
      _DECODING.add(name)
    else:
      _DECODING.discard(name)
    return fn

  return wrap


def _load_suites() -> None:
  """Imports the modules that register suites: :mod:`vedgan.dialogue_suites` (the generic
  ones), :mod:`vedgan.papers` (each paper's ``report.py``) and :mod:`vedgan.oracle_suite`."""
  for module in ("vedgan.dialogue_suites", "vedgan.papers", "vedgan.oracle_suite"):
    importlib.import_module(module)


def known_suites() -> tuple[str, ...]:
  """Every registered suite: the generic ones (:data:`GENERIC_SUITES`) first, then the
  papers' in alphabetical order (the same order whatever was imported first)."""
  _load_suites()
  generic = [n for n in GENERIC_SUITES if n in _SUITES]
  return tuple(generic + sorted(n for n in _SUITES if n not in GENERIC_SUITES))


def parse_suites(suites: str | Iterable[str]) -> tuple[str, ...]:
  """``"a,b"`` or ``["a", "b"]`` -> validated, de-duplicated names, in order."""
  _load_suites()
  if isinstance(suites, str):
    suites = suites.split(",")
  names = []
  for s in suites:
    s = s.strip()
    if s and s not in names:
      names.append(s)
  unknown = [s for s in names if s not in _SUITES]
  if unknown:
    raise ConfigError(f"unknown suite{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(map(repr, unknown))}; --suite takes a comma list of "
                      f"{', '.join(known_suites())}")
  if not names:
    raise ConfigError(f"--suite is empty; choose from {', '.join(known_suites())}")
  return tuple(names)


def _check_options(opts: EvalOptions, suites: Sequence[str]) -> None:
  """One-line errors for option values no evaluation could use."""
  if not str(opts.split).strip():
    raise ConfigError("--split is empty; e.g. --split validation")
  selection.check_choice(opts.checkpoint)
  if int(opts.num_samples) < 0:
    raise ConfigError(f"--num_samples={opts.num_samples} must be >= 0 (0 = the whole split)")
  if opts.decode_mode is not None and opts.decode_mode not in DECODE_MODES:
    raise ConfigError(f"--decode_mode={opts.decode_mode!r} must be one of "
                      f"{', '.join(DECODE_MODES)}")
  if opts.temperature is not None and not float(opts.temperature) > 0:
    raise ConfigError(f"--temperature={opts.temperature} must be > 0")
  if opts.top_k is not None and int(opts.top_k) < 0:
    raise ConfigError(f"--top_k={opts.top_k} must be >= 0 (0 = no top-k)")
  if opts.beam_width is not None and int(opts.beam_width) < 1:
    raise ConfigError(f"--beam_width={opts.beam_width} must be >= 1")
  if int(opts.max_n) < 1:
    raise ConfigError(f"--max_n={opts.max_n} must be >= 1")
  if opts.tokenization not in TOKENIZATIONS:
    raise ConfigError(f"--tokenization={opts.tokenization!r} must be one of "
                      f"{', '.join(TOKENIZATIONS)}")
  for name in ("batch_size", "iw_samples", "likelihood_batches"):
    if int(getattr(opts, name)) < 0:
      raise ConfigError(f"--{name}={getattr(opts, name)} must be >= 0 (0 = the run's "
                        "config / the whole split)")
  if int(opts.num_samples) == 1 and ("diversity" in suites or "sweep" in suites):
    raise ConfigError("--num_samples=1: Self-BLEU (diversity, sweep) needs at least 2 responses")
  if "sweep" in suites:
    if not opts.temperatures:
      raise ConfigError("--temperatures is empty; e.g. --temperatures 0,0.5,1")
    bad = [t for t in opts.temperatures if not float(t) >= 0]
    if bad:
      raise ConfigError(f"--temperatures {bad} must be >= 0 (0 = greedy)")
  if opts.word_vectors is not None and not os.path.isfile(opts.word_vectors):
    raise ConfigError(f"--word_vectors {opts.word_vectors} is not a file")


# ----------------------------------------------------------------------------
# Opening a run read-only
# ----------------------------------------------------------------------------


def load_run_config(workdir: str):
  """``(absolute workdir, ConfigDict of WORKDIR/config.json)``; one-line errors."""
  workdir = os.path.abspath(os.path.expanduser(str(workdir)))
  if not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} does not exist or is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{path} not found; --workdir must be a run directory written by "
                      "python -m vedgan.main")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e})") from None
  if not isinstance(saved, dict) or "objective" not in saved:
    raise CheckpointError(f"{path} is not a vedgan run config (no 'objective' field)")
  return workdir, configlib.with_defaults(saved)


def has_checkpoint(workdir: str) -> bool:
  """True if ``WORKDIR/checkpoints`` holds a finished (step-named) checkpoint."""
  root = os.path.join(workdir, "checkpoints")
  try:
    names = os.listdir(root)
  except OSError:
    return False
  return any(n.isdigit() and os.path.isdir(os.path.join(root, n)) for n in names)


def _no_checkpoint(workdir: str) -> CheckpointError:
  return CheckpointError(f"no checkpoint in {workdir}/checkpoints; train first with "
                         f"python -m vedgan.main --config CONFIG --workdir {workdir}")


@dataclasses.dataclass
class EvalRun:
  """An opened run plus the evaluation split; suites read what they need from it.

  Attributes:
    trainer: the :class:`vedgan.train.Trainer` after ``setup(write=False)``.
    options: the :class:`EvalOptions`.
    workdir: absolute run directory; ``eval_dir`` is ``workdir/eval``.
    step: the checkpoint's global step.
    pairs: the split's raw ``(context, response)`` texts that encode to tokens.
    context_ids: int32 ``[len(pairs), max_context_len]``, right-padded.
    generation: the effective decoding settings (``decode``).
  """
  trainer: Any
  options: EvalOptions
  workdir: str
  eval_dir: str
  step: int
  pairs: list[tuple[str, str]]
  context_ids: np.ndarray
  generation: dict[str, Any]
  _cache: dict = dataclasses.field(default_factory=dict)

  # -- conveniences --------------------------------------------------------------
  @property
  def config(self):
    return self.trainer.config

  @property
  def objective(self):
    return self.trainer.objective

  @property
  def tokenizer(self):
    return self.trainer.inputs.tokenizer

  @property
  def split(self) -> str:
    return self.options.split

  @property
  def num_samples(self) -> int:
    """How many contexts (the split's first N) the decoding suites use."""
    n = int(self.options.num_samples)
    return len(self.pairs) if n <= 0 else min(n, len(self.pairs))

  @property
  def tokenization_label(self) -> str:
    return TOKENIZATIONS[self.options.tokenization][1]

  def words(self, text: str) -> list[str]:
    return TOKENIZATIONS[self.options.tokenization][0](text)

  # -- references ----------------------------------------------------------------
  def reference_words(self) -> list[list[str]]:
    """Every reference response of the split, tokenised (the Texygen reference set)."""
    if "ref_words" not in self._cache:
      self._cache["ref_words"] = [self.words(r) for _, r in self.pairs]
    return self._cache["ref_words"]

  # -- decoding ------------------------------------------------------------------
  def decode_ids(self, mode: str, temperature: float, n: int | None = None,
                 seed: int | None = None) -> list[list[int]]:
    """Token ids (before EOS, no padding) of responses to the first ``n`` contexts.

    Batched with a fixed shape (``generation["batch_size"]`` rows of
    ``max_context_len``; the last batch is padded with copies of its first row),
    so one decoding mode compiles once. Batch ``b`` samples with
    ``fold_in(key(seed), b)``.
    """
    g = self.generation
    n = self.num_samples if n is None else n
    seed = int(self.options.seed) if seed is None else int(seed)
    key = (mode, float(temperature), n, seed)
    if key in self._cache:
      return self._cache[key]
    bsz = int(g["batch_size"])
    tok = self.tokenizer
    root = jax.random.key(seed)
    options = self.objective.decode_options(
        mode=mode, max_len=int(g["max_len"]), temperature=float(temperature),
        top_k=int(g["top_k"]), beam_width=int(g["beam_width"]),
        length_penalty=float(g["length_penalty"]), forbid_unk=bool(g["forbid_unk"]),
        top_p=float(g["top_p"]), repetition_penalty=float(g["repetition_penalty"]),
        no_repeat_ngram=int(g["no_repeat_ngram"]), min_len=int(g["min_len"]))
    contexts = [c for c, _ in self.pairs]
    out: list[list[int]] = []
    for b, start in enumerate(range(0, n, bsz)):
      chunk = contexts[start:min(start + bsz, n)]
      rows = len(chunk)
      chunk = chunk + [chunk[0]] * (bsz - rows)
      batch = parallel.shard_batch(self.objective.prompt_batch(self.trainer.inputs, chunk),
                                   self.trainer.mesh)
      res = self.objective.generate(self.trainer.state, batch, jax.random.fold_in(root, b),
                                    options)
      tokens = np.asarray(jax.device_get(res.tokens))[:rows]
      out.extend(content_ids(row, tok.vocab_size) for row in tokens)
    self._cache[key] = out
    return out

  def hypothesis_ids(self) -> list[list[int]]:
    """Responses decoded with the run's evaluation settings (``generation``)."""
    g = self.generation
    return self.decode_ids(g["mode"], g["temperature"])

  def hypothesis_texts(self) -> list[str]:
    return [self.tokenizer.decode(ids) for ids in self.hypothesis_ids()]

  def hypothesis_words(self) -> list[list[str]]:
    return [self.words(t) for t in self.hypothesis_texts()]

  def write_responses(self) -> str:
    """``eval/responses.jsonl``: context, reference and generated response per line."""
    path = os.path.join(self.eval_dir, "responses.jsonl")
    if "responses" not in self._cache:
      tmp = f"{path}.tmp-{os.getpid()}"
      with open(tmp, "w", encoding="utf-8") as f:
        for (context, reference), response in zip(self.pairs, self.hypothesis_texts()):
          f.write(json.dumps({"step": self.step, "split": self.split, "context": context,
                              "reference": reference, "response": response}) + "\n")
      os.replace(tmp, path)
      self._cache["responses"] = path
    return path

  def generation_record(self, **changes) -> dict[str, Any]:
    g = dict(self.generation, num_contexts=self.num_samples, **changes)
    g["contexts_hash"] = metrics.corpus_hash(
        [row[row != 0].tolist() for row in self.context_ids[:g["num_contexts"]]])
    return g


@contextlib.contextmanager
def compared_runs(run: EvalRun):
  """Yields ``[run, *--compare_workdirs runs]`` (the others opened read-only without
  decoding settings, closed on exit); a bad workdir is a one-line error naming it."""
  with contextlib.ExitStack() as stack:
    opened = [run]
    for workdir in run.options.compare_workdirs:
      try:
        other = open_run(workdir, run.options, decoding=False)
      except VedganError as e:
        raise type(e)(f"--compare_workdirs {workdir}: {e}") from None
      stack.callback(other.trainer.close)
      opened.append(other)
    yield opened


def _is_dialogue_run(trainer) -> bool:
  """True for objectives that read (context, response) pairs and decode responses."""
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  stream = trainer.objective.EVAL_STREAM
  return (trainer.objective.CONDITIONAL
          and isinstance(trainer.inputs.validation.get(stream), pipeline.EncodedPairs))


def open_run(workdir: str, options: EvalOptions, decoding: bool = True) -> EvalRun:
  """Loads config, tokenizer, data and the checkpoint ``options.checkpoint`` names
  (latest, best or a step) without writing anything.

  ``decoding=False`` (only the likelihood suite) skips what decoding needs, so
  the likelihood of any objective can be evaluated.
  """
  workdir, config = load_run_config(workdir)
  if not has_checkpoint(workdir):
    raise _no_checkpoint(workdir)
  chosen = selection.resolve_checkpoint(workdir, options.checkpoint)  # None: the latest
  # Imported here so that the argument checks above answer without loading the stack.
  from vedgan import train  # pylint: disable=import-outside-toplevel
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  config.train.eval_batches = int(options.likelihood_batches)  # 0: the whole split
  if options.iw_samples and "likelihood" not in config:
    raise ConfigError(f"--iw_samples applies to the latent models; objective "
                      f"{config.objective!r} has no importance-weighted bound")
  if options.iw_samples:  # K; the chunk must divide it
    config.likelihood.iw_chunk = math.gcd(int(options.iw_samples), int(config.likelihood.iw_chunk))
    config.likelihood.iw_samples = int(options.iw_samples)
  trainer = train.Trainer(config, workdir)
  trainer.setup(write=False, restore=chosen)
  try:
    if trainer.checkpointer.latest_step() is None:
      raise _no_checkpoint(workdir)
    split = options.split
    run = EvalRun(trainer=trainer, options=options, workdir=workdir,
                  eval_dir=os.path.join(workdir, "eval"), step=int(trainer.step), pairs=[],
                  context_ids=np.zeros((0, 1), np.int32), generation={})
    if not decoding and split == "validation":
      return run
    if not _is_dialogue_run(trainer):
      raise ConfigError(f"objective {config.objective!r} does not decode responses to dialogue "
                        "contexts; for it vedgan.evaluate runs only --suite likelihood on "
                        "--split validation")
    try:
      raw = inputs_lib.load_pairs(config.data, split)
    except VedganError:
      raise
    except (ValueError, KeyError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise DataError(f"--split {split!r} cannot be read from dataset {config.data.name!r} "
                      f"({first})") from None
    tok = trainer.inputs.tokenizer
    max_c = int(config.data.max_context_len)
    if split != "validation":  # the likelihood suite evaluates trainer.inputs.validation
      trainer.inputs.validation[trainer.objective.EVAL_STREAM] = pipeline.encode_pairs(
          raw, tok, max_c, int(config.data.max_response_len))
    pairs, rows = [], []
    for context, response in raw:  # the pairs encode_pairs keeps
      c = tok.encode(context)
      if not c or not tok.encode(response):
        continue
      pairs.append((context, response))
      rows.append(c[-max_c:])
    context_ids = np.zeros((len(rows), max_c), np.int32)
    for i, c in enumerate(rows):
      context_ids[i, :len(c)] = c
    d = config.decode
    o = options

    def pick(value, default):
      return default if value is None else value

    batch_size = int(o.batch_size) or int(config.train.eval_batch_size)
    parallel.check_batch_size(batch_size, trainer.mesh, "--batch_size")
    generation = {
        "mode": pick(o.decode_mode, d.mode),
        "temperature": float(pick(o.temperature, d.temperature)),
        "top_k": int(pick(o.top_k, d.top_k)),
        "beam_width": int(pick(o.beam_width, d.beam_width)),
        "length_penalty": float(pick(o.length_penalty, d.length_penalty)),
        "forbid_unk": bool(d.forbid_unk),
        # the run's repetition / nucleus / length rules, recorded with every decoded metric
        "top_p": float(d.get("top_p", 1.0)),
        "repetition_penalty": float(d.get("repetition_penalty", 1.0)),
        "no_repeat_ngram": int(d.get("no_repeat_ngram", 0)),
        "min_len": int(d.get("min_len", 0)),
        "max_len": int(config.data.max_response_len),
        "seed": int(o.seed), "batch_size": batch_size,
    }
    if generation["mode"] not in DECODE_MODES:
      raise ConfigError(f"decode mode {generation['mode']!r} must be one of "
                        f"{', '.join(DECODE_MODES)}")
    if generation["mode"] == "sample" and not generation["temperature"] > 0:
      raise ConfigError(f"sampling temperature {generation['temperature']} must be > 0")
    return dataclasses.replace(run, pairs=pairs, context_ids=context_ids, generation=generation)
  except BaseException:
    trainer.close()
    raise


# ----------------------------------------------------------------------------
# Running them
# ----------------------------------------------------------------------------


def _json_default(x: Any) -> Any:
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _write_json(path: str, obj: Any) -> None:
  """Writes through a temporary file and a rename (a reader never sees half a file)."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True, default=_json_default)
  os.replace(tmp, path)


def run_suites(workdir: str, suites: str | Iterable[str] = DEFAULT_SUITES,
               echo: Callable[[str], Any] | None = print, **options) -> dict[str, dict]:
  """Evaluates a checkpoint of ``workdir`` (``checkpoint=``: latest, best or a step); writes
  ``workdir/eval/<suite>.json``.

  Args:
    workdir: a run directory written by ``python -m vedgan.main``.
    suites: names (or a comma-separated string) from :func:`known_suites`.
    echo: called with one summary line per suite (None: silent).
    **options: fields of :class:`EvalOptions` (split, num_samples, decode_mode,
      temperature, top_k, beam_width, length_penalty, temperatures, word_vectors,
      max_n, tokenization, seed, batch_size).
  Returns:
    ``{suite: record}``, each record the JSON written: ``suite``, ``step``,
    ``split``, ``values`` (headline numbers), ``results`` (each metric's
    ``value``, ``settings``, ``details``), ``generation`` (for decoding
    suites), ``summary``, ``plots`` and, for the sweep, ``name``,
    ``settings`` and ``points``.
  Raises:
    VedganError: one line, before anything is written, for unknown suites or
      options, a missing workdir/config, or a workdir without a checkpoint.
  """
  fields = {f.name for f in dataclasses.fields(EvalOptions)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise TypeError(f"run_suites() got unknown option(s) {unknown}; known: {sorted(fields)}")
  if "temperatures" in options:
    options["temperatures"] = tuple(float(t) for t in options["temperatures"])
  opts = EvalOptions(**options)
  names = parse_suites(suites)
  _check_options(opts, names)
  run = open_run(workdir, opts, decoding=any(n in _DECODING for n in names))
  out: dict[str, dict] = {}
  try:
    workdir_checks.check_written_paths(run.workdir)  # eval/ and plots only inside the workdir
    os.makedirs(run.eval_dir, exist_ok=True)
    for name in names:
      t0 = time.perf_counter()
      res = _SUITES[name](run)
      summary = f"{name} [{run.split}, step {run.step}]: {res.summary}"
      record = {"suite": name, "step": run.step, "split": run.split,
                "checkpoint": selection.check_choice(opts.checkpoint),
                "objective": run.config.objective, "workdir": run.workdir,
                "values": res.values,
                "results": {k: r.to_dict() for k, r in res.results.items()},
                "summary": summary,
                "plots": [os.path.relpath(p, run.workdir) for p in res.plots],
                "seconds": time.perf_counter() - t0,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
      if res.generation is not None:
        record["generation"] = res.generation
      record.update(res.extra)
      _write_json(os.path.join(run.eval_dir, f"{name}.json"), record)
      out[name] = record
      if echo is not None:
        echo(summary)
  finally:
    run.trainer.close()
  return out
