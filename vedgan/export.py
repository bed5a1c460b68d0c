r"""Exports a trained run as a self-contained folder, and loads such a folder back.

  python -m vedgan.export --workdir DIR --out OUT [--checkpoint latest|best|STEP] [--overwrite]
  vedgan export --workdir DIR --out OUT ...                    (the same)

``OUT`` gets

* ``model.safetensors``: every array of the checkpoint's ``state.params`` (what
  generation reads), named by its path in the parameter tree joined by ``/``
  (``"model/embed/embedding"``), dtypes kept; the header's metadata says
  the objective, the step and the tokenizer's fingerprint;
* ``tokenizer/``: the run's tokenizer (what ``Tokenizer.save`` writes);
* ``config.json``: the run's config, as the run saved it;
* ``README.md``: a model card (objective, paper, data, the metrics logged at the
  exported step, how to load it).

:func:`load_exported` (also ``vedgan.load_exported``) rebuilds the model from ``OUT``
alone (neither the run's workdir, its data nor orbax is needed; ``safetensors`` is:
``pip install "vedgan[export]"``) and returns an :class:`ExportedModel`, a
:class:`vedgan.sample.Generator`: the objective is built from ``config.json`` and the
tokenizer exactly as training built it, and decoding goes through the same
``respond`` / ``sample_sentences`` code as ``python -m vedgan.sample``.

Bad input is refused with one line before anything is written: an ``OUT`` that
exists and is not empty (``--overwrite`` replaces it), a workdir without a
checkpoint, an unknown ``--checkpoint``. ``OUT`` is written as a hidden temporary
folder next to it and renamed into place, so an interrupted export leaves no half
folder (and, with ``--overwrite``, the previous folder intact).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Mapping, Sequence

from vedgan import selection
from vedgan.errors import CheckpointError, ConfigError, VedganError
from vedgan.sample import Generator, OneLineParser, report_error, resolve_settings

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
TOKENIZER = "tokenizer"
#: ``metadata["format"]`` of the weights file
FORMAT = "vedgan-export-1"
#: separates the keys of a parameter path in the flat names
SEP = "/"
EXTRA_HINT = 'pip install "vedgan[export]"'


# ----------------------------------------------------------------------------
# Parameter trees <-> flat names
# ----------------------------------------------------------------------------


def flatten_params(params: Mapping) -> tuple[dict[str, Any], list[str]]:
  """``({"a/b/c": array}, [paths of empty sub-trees])`` of a nested dict of arrays.

  Raises:
    CheckpointError: a key holds ``/`` or is not a string, or a node is neither a
      mapping nor an array (a list or tuple: the flat names could not rebuild it).
  """
  flat: dict[str, Any] = {}
  empty: list[str] = []

  def walk(node, path):
    if isinstance(node, Mapping):
      if not node and path:
        empty.append(SEP.join(path))
      for key, value in node.items():
        if not isinstance(key, str) or SEP in key or not key:
          raise CheckpointError(f"parameter {SEP.join(path + [str(key)])!r}: a key that is "
                                f"not a non-empty string without {SEP!r} cannot be exported")
        walk(value, path + [key])
    elif isinstance(node, (list, tuple)) or not hasattr(node, "shape"):
      raise CheckpointError(f"parameter {SEP.join(path)!r} is a {type(node).__name__}, not "
                            "an array or a dict of arrays; it cannot be exported")
    else:
      flat[SEP.join(path)] = node

  walk(params, [])
  return flat, empty


def unflatten_params(flat: Mapping[str, Any], empty: Sequence[str] = ()) -> dict:
  """The nested dict of :func:`flatten_params`' output (its inverse)."""
  tree: dict = {}
  for name in sorted(flat) + sorted(empty):
    *parents, leaf = name.split(SEP)
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = flat[name] if name in flat else {}
  return tree


def _safetensors():
  """The ``safetensors`` package, or a one-line error naming the extra."""
  try:
    import safetensors  # pylint: disable=import-outside-toplevel
    import safetensors.flax  # noqa: F401  pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError(f"exported models are stored with safetensors, which is not installed; "
                      f"{EXTRA_HINT}") from None
  return safetensors


def write_weights(path: str, params: Mapping, metadata: Mapping[str, str]) -> dict[str, Any]:
  """Writes the parameter tree ``params`` (nested dicts of arrays, on the host) to the
  safetensors file ``path`` under its flat names, dtypes kept (bfloat16 included), with
  ``metadata`` (strings) and the empty sub-trees in the header; returns the flat arrays."""
  st = _safetensors()
  flat, empty = flatten_params(params)
  meta = {**metadata, "empty_subtrees": json.dumps(empty)}
  st.flax.save_file(dict(flat), path, metadata=meta)
  return flat


def read_weights(path: str) -> tuple[dict, dict[str, str]]:
  """``(parameter tree of jax arrays, header metadata)`` of a file of :func:`write_weights`.

  Raises:
    CheckpointError: the file is unreadable (one line).
  """
  st = _safetensors()
  try:
    with st.safe_open(path, framework="flax") as f:
      meta = dict(f.metadata() or {})
    flat = st.flax.load_file(path)
  except Exception as e:  # pylint: disable=broad-except  (safetensors' own error types)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise CheckpointError(f"{path} is unreadable ({first})") from None
  return unflatten_params(flat, json.loads(meta.get("empty_subtrees", "[]"))), meta


# ----------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------


def check_request(workdir: str, out: str, checkpoint: str = "latest",
                  overwrite: bool = False) -> tuple[str, str, str]:
  """``(absolute workdir, absolute out, --checkpoint normalised)``; every one-line error
  an export can give without loading the run (nothing is read but directory listings and
  ``config.json``)."""
  from vedgan import eval_suites  # pylint: disable=import-outside-toplevel

  choice = selection.check_choice(checkpoint)
  out = os.path.abspath(os.path.expanduser(str(out)))
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConfigError(f"--out {out} exists and is not a folder; give a new folder")
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite to replace it "
                      "or give a new folder")
  workdir, _ = eval_suites.load_run_config(workdir)
  if out == workdir or workdir.startswith(out + os.sep) or out == os.path.dirname(out):
    raise ConfigError(f"--out {out} holds the run itself (--workdir {workdir}); give a "
                      "folder outside it")
  if not eval_suites.has_checkpoint(workdir):
    raise CheckpointError(f"no checkpoint in {workdir}/checkpoints to export; train first "
                          f"with python -m vedgan.main --config CONFIG --workdir {workdir}")
  selection.resolve_checkpoint(workdir, choice)  # unknown steps, no best checkpoint
  return workdir, out, choice


def export(workdir: str, out: str, checkpoint: str = "latest", overwrite: bool = False,
           echo=print) -> str:
  """Writes the ``checkpoint`` (latest, best or a step) of run ``workdir`` to folder ``out``
  (see the module docstring); returns ``out``'s absolute path.

  Raises:
    VedganError: one line, before anything is written (see :func:`check_request`).
  """
  from vedgan.sample import open_generator  # pylint: disable=import-outside-toplevel

  workdir, out, choice = check_request(workdir, out, checkpoint, overwrite)
  _safetensors()
  gen = open_generator(workdir, choice)
  try:
    params = _host(gen.state.params)
    flat, _ = flatten_params(params)
    meta = {"format": FORMAT, "objective": gen.objective_name, "step": str(gen.step),
            "state_step": str(int(_host(gen.state.step))), "checkpoint": choice,
            "tokenizer_fingerprint": str(gen.tokenizer.fingerprint),
            "vedgan_version": _version()}
    with open(os.path.join(workdir, CONFIG), encoding="utf-8") as f:
      config_text = f.read()
    card = model_card(gen, flat, choice, read_metrics(workdir, gen.step),
                      os.path.basename(out))
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.export-{os.getpid()}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
      os.makedirs(tmp)
      write_weights(os.path.join(tmp, WEIGHTS), params, meta)
      gen.tokenizer.save(os.path.join(tmp, TOKENIZER))
      _write_text(os.path.join(tmp, CONFIG), config_text)
      _write_text(os.path.join(tmp, CARD), card)
      _move_into_place(tmp, out)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  finally:
    gen.close()
  if echo is not None:
    echo(f"exported {gen.objective_name} at step {gen.step} ({len(flat)} arrays) to {out}")
  return out


def _host(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.device_get(tree)


def _version() -> str:
  from vedgan import __version__  # pylint: disable=import-outside-toplevel
  return __version__


def _write_text(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def _move_into_place(tmp: str, out: str) -> None:
  """Renames the finished ``tmp`` to ``out``; an existing ``out`` (empty, or replaced by
  ``--overwrite``) is moved aside first and deleted only once ``tmp`` is in place."""
  if not os.path.isdir(out):
    os.rename(tmp, out)
    return
  old = f"{tmp}.old"
  os.rename(out, old)
  try:
    os.rename(tmp, out)
  except BaseException:
    os.rename(old, out)
    raise
  shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------


def read_metrics(workdir: str, step: int) -> dict[str, dict[str, Any]]:
  """The numbers logged at ``step``: ``{"validation": row, "train/<step fn>": row,
  "eval/<suite>": values}`` from ``metrics.jsonl`` (the last row of each split and step
  function at ``step``; bookkeeping fields dropped) and ``eval/<suite>.json`` records of
  that step. Missing or unreadable files give nothing."""
  out: dict[str, dict[str, Any]] = {}
  skip = {"step", "stage", "split", "step_name", "wall_time"}
  try:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError:
    lines = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # a torn last line
    if not isinstance(row, dict) or row.get("step") != step:
      continue
    key = str(row.get("split"))
    if key == "train" and row.get("step_name"):
      key = f"train/{row['step_name']}"
    out[key] = {k: v for k, v in row.items() if k not in skip}
  eval_dir = os.path.join(workdir, "eval")
  for name in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
    if not name.endswith(".json"):
      continue
    try:
      with open(os.path.join(eval_dir, name), encoding="utf-8") as f:
        record = json.load(f)
    except (OSError, ValueError):
      continue
    if (isinstance(record, dict) and record.get("step") == step
        and isinstance(record.get("values"), dict) and record["values"]):
      split = record.get("split", "?")
      out[f"eval/{record.get('suite', name[:-5])} ({split})"] = dict(record["values"])
  return out


def _number(v: Any) -> str:
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return f"`{json.dumps(v)}`" if not isinstance(v, str) else v
  return f"{v:.6g}"


def paper_of(objective) -> str:
  """Which paper ``objective`` reimplements: the docstring of the package that defines it
  (e.g. ``vedgan/papers/latent_gan/__init__.py``) up to its first colon, "Latent-space
  language GAN (Kojima et al.)", and its page ``docs/<package>.md`` where there is one."""
  package = type(objective).__module__.rsplit(".", 1)[0]
  doc = (sys.modules.get(package).__doc__ or "") if package in sys.modules else ""
  first = " ".join(doc.strip().split("\n\n")[0].split()).split(": ")[0].rstrip(".")
  page = f"docs/{package.rsplit('.', 1)[-1]}.md"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if first and os.path.isfile(os.path.join(root, page)):
    first += f" (vedgan's `{page}`)"
  return first or f"vedgan objective {objective.name!r}"


def model_card(gen: Generator, flat: Mapping[str, Any], choice: str,
               metrics: Mapping[str, Mapping[str, Any]], folder: str) -> str:
  """The ``README.md`` of an export: a markdown model card."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vedgan.data.inputs import dataset_label  # pylint: disable=import-outside-toplevel

  config, tok = gen.config, gen.tokenizer
  dtypes = sorted({str(np.asarray(v).dtype) for v in flat.values()})
  count = sum(int(np.asarray(v).size) for v in flat.values())
  kind = ("dialogue model: answers a context" if gen.kind == "dialogue"
          else "unconditional: samples sentences")
  meta = tok.meta() if hasattr(tok, "meta") else {}
  lines = [
      f"# {gen.objective_name}: a vedgan model",
      "",
      f"Exported with `vedgan export` (vedgan {_version()}) on "
      f"{time.strftime('%Y-%m-%d', time.gmtime())} from the checkpoint at step {gen.step} "
      f"(`--checkpoint {choice}`).",
      "",
      "| | |",
      "|---|---|",
      f"| objective | `{gen.objective_name}` ({kind}) |",
      f"| paper | {paper_of(gen.objective)} |",
      f"| data | `{dataset_label(config.data)}` |",
      f"| tokenizer | {meta.get('kind', type(tok).__name__)}, {tok.vocab_size} ids |",
      f"| step | {gen.step} |",
      f"| parameters | {count:,} values in {len(flat)} arrays ({', '.join(dtypes)}) |",
      "",
      f"## Metrics at step {gen.step}",
      "",
  ]
  if not metrics:
    lines += ["The run logged no metrics at this step (no `metrics.jsonl` row, no "
              "`eval/*.json` of this step).", ""]
  order = lambda key: (not key == "validation", not key.startswith("eval/"), key)
  for source, values in sorted(metrics.items(), key=lambda kv: order(kv[0])):
    where = "metrics.jsonl" if not source.startswith("eval/") else source.split(" ")[0] + ".json"
    lines += [f"{source} (`{where}`):", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_number(v)} |" for k, v in values.items()]
    lines.append("")
  how = resolve_settings(config).describe()
  example = ('print(model.generate(["hi there", "how are you?"]))'
             f"  # [[response], [response]] ({how})" if gen.kind == "dialogue"
             else f"print(model.generate(num_samples=5))  # 5 sentences ({how})")
  lines += [
      "## Files",
      "",
      f"* `{WEIGHTS}`: the parameters, named by their path in the parameter tree "
      f"(`{next(iter(sorted(flat)), '')}`);",
      f"* `{TOKENIZER}/`: the tokenizer; `{CONFIG}`: the run's config; `{CARD}`: this card.",
      "",
      "## How to load",
      "",
      f"Needs vedgan and safetensors (`{EXTRA_HINT}`), not the run's folder nor orbax:",
      "",
      "```python",
      "import vedgan",
      "",
      f'model = vedgan.load_exported("{folder}")',
      example,
      "```",
      "",
      "`model.generate` takes the decoding options of `vedgan sample` as keywords (`mode`, "
      "`temperature`, `top_k`, `top_p`, `beam_width`, ...; the defaults are the run's "
      "`config.decode`), `num_samples` and `seed`.",
      "",
  ]
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Loaded:
  """What :class:`vedgan.sample.Generator` reads of an opened run (``run.trainer.*``)."""
  config: Any
  objective: Any
  inputs: Any
  state: Any
  step: int
  workdir: str

  @property
  def trainer(self):
    return self

  def close(self) -> None:
    """Nothing to release: no checkpoint manager or workdir lock was opened."""


class ExportedModel(Generator):
  """A model loaded by :func:`load_exported`: a :class:`vedgan.sample.Generator` whose
  decoding settings default to the run's ``config.decode``.

  ``kind`` is ``"dialogue"`` or ``"unconditional"``; ``step`` the exported step;
  ``workdir`` the export folder.
  """

  def settings(self, **decode):
    """:class:`vedgan.sample.DecodeSettings`: ``config.decode`` with ``decode`` (``mode``,
    ``temperature``, ``top_k``, ``beam_width``, ``length_penalty``, ``max_len``, ``top_p``,
    ``repetition_penalty``, ``no_repeat_ngram``, ``min_len``) replacing its values."""
    return resolve_settings(self.config, **decode)

  def respond(self, contexts, settings=None, num_samples=1, seed=0, label=None, salt=0):
    """:meth:`vedgan.sample.Generator.respond`; ``settings`` None: the run's decoding."""
    return super().respond(contexts, settings or self.settings(), num_samples, seed, label,
                           salt)

  def generate(self, contexts: Sequence[str] | None = None, num_samples: int | None = None,
               seed: int = 0, emoji: str | int | None = None, **decode):
    """Dialogue models: ``[len(contexts)][num_samples or 1]`` responses to ``contexts``;
    unconditional models: a list of ``num_samples`` (default 10) sentences.
    ``emoji``: MojiTalk's designated label; ``decode``: see :meth:`settings`."""
    settings = self.settings(**decode)
    if self.kind == "unconditional":
      if contexts:
        raise ConfigError(f"objective {self.objective_name!r} is unconditional: it takes no "
                          "contexts; use generate(num_samples=N)")
      return self.sample_sentences(10 if num_samples is None else num_samples, settings, seed)
    if contexts is None or isinstance(contexts, str):
      raise ConfigError(f"objective {self.objective_name!r} answers contexts: pass a list "
                        "of context strings, e.g. generate([\"hi there\"])")
    return self.respond(list(contexts), settings, num_samples or 1, seed,
                        self.label_id(emoji))


def load_exported(path) -> ExportedModel:
  """The model that ``vedgan export`` wrote to folder ``path``, ready to generate.

  Needs only that folder and ``safetensors`` (not the run's workdir, data or orbax).

  Raises:
    CheckpointError: one line when ``path`` is not a complete export, or its tokenizer
      does not match its weights.
    ConfigError: safetensors is missing (names the extra).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from vedgan import configlib  # pylint: disable=import-outside-toplevel
  from vedgan import steps as steps_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  from vedgan.objective import get_objective_class  # pylint: disable=import-outside-toplevel

  folder = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.isdir(folder):
    raise CheckpointError(f"{folder} is not a folder; give one written by vedgan export")
  missing = [n for n in (WEIGHTS, CONFIG, TOKENIZER)
             if not os.path.exists(os.path.join(folder, n))]
  if missing:
    raise CheckpointError(f"{folder} lacks {', '.join(missing)}; it is not a folder written by "
                          "vedgan export")
  weights = os.path.join(folder, WEIGHTS)
  params, meta = read_weights(weights)
  if meta.get("format") != FORMAT:
    raise CheckpointError(f"{weights} was not written by vedgan export (format "
                          f"{meta.get('format')!r}, expected {FORMAT!r})")
  try:
    with open(os.path.join(folder, CONFIG), encoding="utf-8") as f:
      saved = json.load(f)
    tok = load_tokenizer(os.path.join(folder, TOKENIZER))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{folder}: {str(e).splitlines()[0]}") from None
  if tok.fingerprint != meta.get("tokenizer_fingerprint"):
    raise CheckpointError(f"{folder}/{TOKENIZER} is not the tokenizer the weights were trained "
                          "with (fingerprints differ); export the run again")
  config = configlib.with_defaults(saved)
  objective = get_objective_class(str(config.objective))(config, tok)
  state = steps_lib.TrainState(
      step=jnp.asarray(int(meta.get("state_step", meta["step"])), jnp.int32),
      rng=jax.random.key_data(jax.random.key(int(config.seed))), params=params,
      opt_state=None, extra=None)
  inputs = inputs_lib.Inputs(tokenizer=tok, streams={}, validation={}, sample_pairs=[],
                             counts={})
  return ExportedModel(_Loaded(config=config, objective=objective, inputs=inputs,
                               state=state, step=int(meta["step"]), workdir=folder))


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  parser = OneLineParser(prog="python -m vedgan.export", allow_abbrev=False,
                         description="Write a trained run as a self-contained folder: "
                                     "safetensors weights, tokenizer, config, model card.")
  parser.add_argument("--workdir", required=True,
                      help="run directory written by python -m vedgan.main")
  parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
  parser.add_argument("--checkpoint", default="latest",
                      help="the weights: latest, best (kept by --config.train.select_by) or "
                           "a step number")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace --out if it exists and is not empty")
  parser.add_argument("--debug_errors", action="store_true",
                      help="show full tracebacks for user errors")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m vedgan.export``; returns the exit status (0, or 2 for a user error)."""
  from vedgan.sample import quiet_logs  # pylint: disable=import-outside-toplevel

  argv = sys.argv[1:] if argv is None else list(argv)
  debug = "--debug_errors" in argv
  try:
    args = build_parser().parse_args(argv)
    quiet_logs()
    export(args.workdir, args.out, args.checkpoint, args.overwrite)
  except (VedganError, FileNotFoundError, PermissionError) as e:
    if debug:
      raise
    return report_error(e)
  return 0


if __name__ == "__main__":
  sys.exit(main())
