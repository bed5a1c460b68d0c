r"""Reproduction of Section 5 of the top-k softmax dialogue GAN (López Zorrilla et al.).

Trains a ``topk_gan`` config through the driver, pausing at the generators of
Table 1 (A: pretrained by MLE, B: after an MLE block of a global iteration, C:
after the next adversarial block, D: final) and records

* their greedy responses to the same inputs (Table 1, ``gan.table_inputs``);
* for A and D, the nearest-neighbour check of Fig. 3 (how often ``W[y_t]`` is
  the word vector nearest to the top-k approximation ``ũ_t``, with and without
  repetitions, k in ``gan.nn_check_ks``) on ``gan.report_inputs`` validation
  inputs, and distinct-1/2 and mean length of their responses to those inputs;
* optionally the same diversity numbers for an MLE-only baseline
  (``configs/topk_gan.py:mle_demo`` / ``mle_paper``) trained in its own workdir::

  python -m vedgan.objectives.topk_gan_report --config configs/topk_gan.py:demo \
      --workdir /tmp/topk --baseline_config configs/topk_gan.py:mle_demo \
      --baseline_workdir /tmp/topk-mle

The GAN run is the same run (same checkpoints, logs and final state) as
``python -m vedgan.main --config ... --workdir ...``; the record is
``WORKDIR/topk_gan_report.json`` and the plots ``WORKDIR/plots/topk_check_{A,D}.png``.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vedgan.errors import ConfigError

REPORT_FILE = "topk_gan_report.json"
_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def report_words(text: str) -> list[str]:
  """Lower-cased words and punctuation of a response (the unit of distinct-n and length)."""
  return _WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())


def diversity(texts: list[str]) -> dict[str, float]:
  """distinct-1, distinct-2 (corpus level) and mean length in words of ``texts``."""
  from vedgan import metrics  # pylint: disable=import-outside-toplevel

  words = [report_words(t) for t in texts]
  return {"distinct_1": metrics.distinct_n(words, 1), "distinct_2": metrics.distinct_n(words, 2),
          "mean_length": metrics.average_length(words), "num_responses": len(words),
          "distinct_responses": len(set(texts))}


def report_points(config) -> dict[str, int]:
  """Global steps after which the generators A, B, C, D of Table 1 exist.

  A: the pretrained generator (the start of the adversarial stage, the last
  stage whose cycle has ``gadv``); B: after the last ``gmle`` block of global
  iteration ``gan.table_iteration`` (1-based); C: after the first ``gadv``
  block of the next iteration; D: the end of training.
  """
  from vedgan import train  # pylint: disable=import-outside-toplevel

  spans = train.plan_stages(config)
  adversarial = [s for s in spans if any(n == "gadv" for n, _ in s.cycle)]
  if not adversarial:
    raise ConfigError("no stage of config.stage_order cycles through 'gadv'; the report needs "
                      "the adversarial stage")
  adv = adversarial[-1]
  period = sum(n for _, n in adv.cycle)
  iterations = (adv.end - adv.start) // period
  pos, last_mle, first_adv = 0, None, None
  for name, n in adv.cycle:
    pos += n
    if name == "gmle":
      last_mle = pos
    if name == "gadv" and first_adv is None:
      first_adv = pos
  i = int(config.gan.table_iteration)
  if last_mle is None or not 1 <= i < iterations:
    raise ConfigError(f"gan.table_iteration={i} must be in [1, {iterations - 1}] (the "
                      f"adversarial stage has {iterations} global iterations) and its cycle "
                      "must contain 'gmle'")
  return {"A": adv.start, "B": adv.start + (i - 1) * period + last_mle,
          "C": adv.start + i * period + first_adv, "D": spans[-1].end}


def _responses(objective, state, inputs, config, ids: np.ndarray) -> list[str]:
  """Greedy responses (Eq. 3) to the contexts ``ids [N, max_context_len]``, as text."""
  bsz = int(config.train.eval_batch_size)
  out = []
  for start in range(0, len(ids), bsz):
    chunk = ids[start:start + bsz]
    rows = len(chunk)
    if rows < bsz:  # one shape: one compilation
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], bsz - rows, axis=0)])
    tokens = np.asarray(jax.device_get(objective.generate(state, jnp.asarray(chunk)).tokens))
    out.extend(inputs.tokenizer.decode(row.tolist()) for row in tokens[:rows])
  return out


def _report_contexts(trainer, config) -> tuple[np.ndarray, list[str]]:
  """The first ``gan.report_inputs`` distinct validation contexts: ``(ids, texts)``.

  Read from the run's encoded validation split (one pass, no shuffling);
  ``texts`` are the decoded ids, for a baseline run with another tokenizer.
  """
  want = int(config.gan.report_inputs)
  tok = trainer.inputs.tokenizer
  seen, rows, texts = set(), [], []
  for batch in trainer.inputs.validation_batches(config):
    for row, weight in zip(np.asarray(batch["context"]), np.asarray(batch["weight"])):
      key = tuple(row[row != 0].tolist())
      if weight > 0 and key and key not in seen:
        seen.add(key)
        rows.append(key)
        texts.append(tok.decode(list(key)))
    if len(rows) >= want:
      break
  rows, texts = rows[:want], texts[:want]
  ids = np.zeros((len(rows), int(config.data.max_context_len)), np.int32)
  for i, key in enumerate(rows):
    key = key[-ids.shape[1]:]
    ids[i, :len(key)] = key
  return ids, texts


def _write_report(path: str, report: dict) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def reproduce(config, workdir: str, baseline_config=None, baseline_workdir: str | None = None,
              echo=print) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` and measures Section 5 along the way.

  The run goes through the driver (:class:`vedgan.train.Trainer`) in one
  process, paused at the steps of :func:`report_points` -- the same run as
  ``python -m vedgan.main`` with this config, with the same checkpoints and
  logs. At each point it records greedy responses to ``gan.table_inputs``
  (Table 1); at A (pretrained) and D (final) also the responses to the first
  ``gan.report_inputs`` validation contexts with :func:`diversity`, and the
  nearest-neighbour check of Fig. 3 (k in ``gan.nn_check_ks``, plotted to
  ``plots/topk_check_{A,D}.png``). With ``baseline_config`` (e.g. the
  ``mle_demo`` variant) and ``baseline_workdir``, the MLE baseline is trained
  (or resumed) there with :func:`vedgan.train.run` and its responses to the
  same contexts are scored the same way.

  The record is ``WORKDIR/topk_gan_report.json``, updated after each point; a
  rerun resumes training and skips recorded points (a point the restored
  checkpoint is already past cannot be recovered: use a new workdir).

  Returns:
    The report: ``points`` (label -> step), ``models`` (label -> step,
    ``table`` responses, and for A/D ``diversity``, ``topk_check``),
    ``table_inputs``, ``num_report_inputs`` and, with a baseline,
    ``baseline``. ``echo`` (None: silent) receives one summary line per model.
  """
  from vedgan import metrics, train  # pylint: disable=import-outside-toplevel
  from vedgan.errors import CheckpointError  # pylint: disable=import-outside-toplevel

  echo = echo or (lambda line: None)
  workdir = train.check_workdir(workdir)
  points = report_points(config)
  table = [str(t) for t in config.gan.table_inputs]
  ks = tuple(int(k) for k in config.gan.nn_check_ks)
  trainer = train.Trainer(config, workdir)
  trainer.setup()
  context_ids, contexts = _report_contexts(trainer, config)
  table_ids = trainer.inputs.encode_contexts(config, table)
  fingerprint = trainer.inputs.tokenizer.fingerprint
  path = os.path.join(workdir, REPORT_FILE)
  report = {"points": points, "models": {}}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      report = json.load(f)
  report.update(points=points, table_inputs=table, num_report_inputs=len(contexts))
  total = trainer.total_steps
  try:
    for label, end in points.items():
      if label in report["models"]:
        continue
      if trainer.step > end:
        raise CheckpointError(f"{workdir} was restored at step {trainer.step}, past model {label} "
                              f"(step {end}), which {REPORT_FILE} does not record; use a new "
                              "--workdir")
      trainer.total_steps = end
      result = trainer.train()
      if result["stopped"]:
        echo(f"stopped at step {trainer.step}; rerun the same command to resume")
        return report
      state, objective = trainer.state, trainer.objective
      record = {"step": int(trainer.step),
                "table": _responses(objective, state, trainer.inputs, config, table_ids)}
      if label in ("A", "D"):
        responses = _responses(objective, state, trainer.inputs, config, context_ids)
        record["diversity"] = diversity(responses)
        record["responses"] = responses[:20]
        record["inputs"] = contexts[:20]
        check = objective.topk_check(state, context_ids, ks=ks,
                                     batch_size=int(config.train.eval_batch_size))
        record["topk_check"] = check
        if trainer.is_chief:
          metrics.plot_topk_check(check, os.path.join(workdir, "plots", f"topk_check_{label}.png"),
                                  title=f"top-k approximation, model {label} (step {end})")
        echo(f"model {label} (step {end}): nearest-neighbour k={ks[0]}: "
             f"{check['with_repetitions'][0]:.3f} (without repetitions "
             f"{check['without_repetitions'][0]:.3f}); distinct-1 "
             f"{record['diversity']['distinct_1']:.4f} distinct-2 "
             f"{record['diversity']['distinct_2']:.4f} mean length "
             f"{record['diversity']['mean_length']:.2f}")
      report["models"][label] = record
      if trainer.is_chief:
        _write_report(path, report)
  finally:
    trainer.total_steps = total
    trainer.close()
  if baseline_config is not None and baseline_workdir:
    train.run(baseline_config, baseline_workdir)
    base_trainer = train.Trainer(baseline_config, train.check_workdir(baseline_workdir))
    base_trainer.setup(write=False)
    try:
      b_inputs = base_trainer.inputs
      same = b_inputs.tokenizer.fingerprint == fingerprint
      b_ids = (context_ids if same else b_inputs.encode_contexts(baseline_config, contexts))
      responses = _responses(base_trainer.objective, base_trainer.state, b_inputs,
                             baseline_config, b_ids)
      b_table = b_inputs.encode_contexts(baseline_config, table)
      report["baseline"] = {"workdir": base_trainer.workdir, "step": int(base_trainer.step),
                            "same_tokenizer": same,
                            "diversity": diversity(responses), "responses": responses[:20],
                            "table": _responses(base_trainer.objective, base_trainer.state,
                                                b_inputs, baseline_config, b_table)}
    finally:
      base_trainer.close()
    d = report["baseline"]["diversity"]
    echo(f"MLE baseline (step {report['baseline']['step']}): distinct-1 {d['distinct_1']:.4f} "
         f"distinct-2 {d['distinct_2']:.4f} mean length {d['mean_length']:.2f}")
    if jax.process_index() == 0:
      _write_report(path, report)
  for text, *rows in zip(table, *(report["models"][m]["table"] for m in points)):
    echo(f"{text!r}: " + " | ".join(f"{m}: {r!r}" for m, r in zip(points, rows)))
  return report


def run_cli(argv=None):
  """``python -m vedgan.objectives.topk_gan_report --config FILE[:VARIANT] --workdir DIR
  [--baseline_config FILE[:VARIANT] --baseline_workdir DIR]``."""
  import sys  # pylint: disable=import-outside-toplevel

  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  from vedgan.errors import VedganError  # pylint: disable=import-outside-toplevel

  fl = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "GAN config, optionally with ':variant'.",
                                  lock_config=True)
  config_flags.DEFINE_config_file("baseline_config", None,
                                  "Optional MLE baseline config, e.g. "
                                  "configs/topk_gan.py:mle_demo.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory of the GAN.")
  flags.DEFINE_string("baseline_workdir", None, "Run directory of the MLE baseline.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(args):
    if len(args) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(args[1:])}")
    logging.set_verbosity(logging.WARNING)
    if (fl.baseline_config is None) != (fl.baseline_workdir is None):
      print("vedgan: error: --baseline_config and --baseline_workdir go together", file=sys.stderr)
      sys.exit(2)
    try:
      reproduce(fl.config, fl.workdir, fl.baseline_config, fl.baseline_workdir,
                echo=lambda line: print(line, flush=True))
    except (VedganError, FileNotFoundError, PermissionError) as e:
      print(f"vedgan: error: {e}", file=sys.stderr)
      sys.exit(2)

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run_cli()
