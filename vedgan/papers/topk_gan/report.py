r"""Section 5 of the top-k softmax dialogue GAN (López Zorrilla et al.) as evaluation suites.

Train with ``python -m vedgan.main`` (the GAN and, for the comparison, its MLE
baseline), then evaluate the run directory::

  python -m vedgan.main --config configs/topk_gan.py:demo --workdir /tmp/topk
  python -m vedgan.main --config configs/topk_gan.py:mle_demo --workdir /tmp/topk-mle
  python -m vedgan.evaluate --workdir /tmp/topk --compare_workdirs /tmp/topk-mle \
      --suite topk_gan_fig3,topk_gan_table1,topk_gan_diversity

Suites (``eval/<suite>.json``):

* ``topk_gan_fig3``: Fig. 3, how often ``W[y_t]`` is the word vector nearest to the
  top-k approximation ``ũ_t`` (with and without repetitions, k in ``gan.nn_check_ks``),
  on the greedy responses to the first ``gan.report_inputs`` distinct contexts of the
  split, for models A and D, next to the same check with a random ``W`` of the same
  shape (seed :data:`CONTROL_SEED`; ~100% at k = 2 for any logits, so the model's number
  means something only below it); plots ``eval/topk_check_{A,D}.png``.
* ``topk_gan_table1``: Table 1, greedy responses of models A, B, C, D to
  ``gan.table_inputs``.
* ``topk_gan_diversity``: distinct-1/2, mean length (words, :func:`vedgan.metrics.text.words`)
  and distinct responses of models A and D on the same contexts: the automatic stand-in
  for Section 5's human comparison of variety.

The models (:func:`report_points`): A, the pretrained generator (start of the
adversarial stage); B, after the MLE block of global iteration ``gan.table_iteration``;
C, after the adversarial block that follows; D, the end of training. A run without an
adversarial stage (the MLE baseline, ``configs/topk_gan.py:mle_demo``) has one model,
``final`` (its latest checkpoint). Every suite also evaluates the models of each
``--compare_workdirs`` run, named ``<its folder>/<model>`` (``topk-mle/final``), on the
same contexts (re-encoded if its tokenizer differs).

A model whose checkpoint was not kept is rebuilt exactly: the suite restores the latest
kept checkpoint before it (state and data position) and re-runs the driver's own step
functions up to it, in memory (the same states the run went through; nothing in the run
directory changes). The run must keep a checkpoint at or before A: ``configs/topk_gan.py``
keeps 10 (``train.max_checkpoints``), which keeps A (a stage end, always saved).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import jax
import numpy as np

from vedgan import eval_suites, metrics, parallel
from vedgan.errors import CheckpointError, ConfigError
from vedgan.eval_suites import EvalRun, SuiteOutput, register_suite
from vedgan.plan import Plan

FINAL = "final"
#: seed of the random-``W`` control of the nearest-neighbour check
#: (:func:`vedgan.metrics.topk_check.random_table`).
CONTROL_SEED = 0


def report_points(config) -> dict[str, int]:
  """Global steps after which the generators A, B, C, D of Table 1 exist.

  A: the pretrained generator (the start of the adversarial stage, the last
  stage whose cycle has ``gadv``); B: after the last ``gmle`` block of global
  iteration ``gan.table_iteration`` (1-based); C: after the first ``gadv``
  block of the next iteration; D: the end of training.
  """
  plan = Plan.from_config(config)
  adversarial = plan.spans_using(["gadv"])
  if not adversarial:
    raise ConfigError("no stage of config.stage_order cycles through 'gadv'; the report needs "
                      "the adversarial stage")
  adv = adversarial[-1]
  iterations = (adv.end - adv.start) // adv.period
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
  return {"A": adv.start, "B": adv.start + (i - 1) * adv.period + last_mle,
          "C": adv.start + i * adv.period + first_adv, "D": plan.total_steps}


def topk_check(objective, params, contexts: np.ndarray, ks=tuple(range(2, 11)),
               batch_size: int = 64, control_seed: int = CONTROL_SEED) -> dict[str, Any]:
  """The nearest-neighbour check of Section 5 / Fig. 3 on greedy responses to ``contexts``.

  Args:
    objective: the :class:`TopKGANObjective`; ``params`` its parameters.
    contexts: ``[N, S]`` int32 input tokens.
    ks, batch_size: the values of k; rows per decoding call (the last call is padded).
    control_seed: seed of the random-``W`` control (same shape as ``params["words"]``).

  Returns :func:`vedgan.metrics.topk_approximation_check`'s dict (fractions
  with and without repetitions for each k, and ``random_table_control``, the same
  fractions with a random ``W``) plus ``num_inputs``.
  """
  logits, tokens = [], []
  for start in range(0, len(contexts), batch_size):
    chunk = np.asarray(contexts[start:start + batch_size])
    rows = len(chunk)
    if rows < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - rows, axis=0)])
    out = objective.free_run_logits(params, jax.numpy.asarray(chunk))
    keep = np.asarray(out["emitted"])[:rows]
    logits.append(np.asarray(out["logits"])[:rows][keep])
    tokens.append(np.asarray(out["tokens"])[:rows][keep])
  result = metrics.topk_approximation_check(np.concatenate(logits), np.asarray(params["words"]),
                                            tokens=np.concatenate(tokens), ks=tuple(ks),
                                            control_seed=int(control_seed))
  result["num_inputs"] = int(len(contexts))
  return result


# -- the models of a run ------------------------------------------------------------------


def model_points(run: EvalRun, labels: str) -> dict[str, int]:
  """``{label: step}`` of the models ``labels`` (a subset of "ABCD") of a GAN run, or
  ``{"final": latest step}`` for a run without an adversarial stage."""
  if run.config.objective != "topk_gan":
    raise ConfigError(f"the topk_gan suites evaluate topk_gan runs; {run.workdir} is a "
                      f"{run.config.objective!r} run")
  if not run.trainer.plan.spans_using(["gadv"]):
    return {FINAL: run.step}
  points = report_points(run.config)
  return {label: points[label] for label in labels}


def model_states(run: EvalRun, points: dict[str, int]) -> Iterator[tuple[str, int, Any]]:
  """``(label, step, state)`` for each model the run has reached, in step order.

  The latest checkpoint is the run's state; an earlier model is its kept checkpoint, or
  the latest kept checkpoint before it run forward by the driver's step functions on the
  restored data position. Use each state before asking for the next (the next is
  stepped from it in place).
  """
  trainer = run.trainer
  kept = sorted(trainer.checkpointer.manager.all_steps())
  current = None  # (step, state) being run forward
  streams = trainer.inputs.get_state()
  try:
    for label, step in sorted(points.items(), key=lambda item: item[1]):
      if step > run.step:
        continue
      if step == run.step:
        yield label, step, trainer.state
        continue
      start = max((s for s in kept if s <= step), default=None)
      if current is None or current[0] > step or (start is not None and start > current[0]):
        if start is None:
          raise CheckpointError(
              f"model {label} (step {step}) needs a checkpoint at or before step {step}, but "
              f"{run.workdir}/checkpoints keeps only steps {kept}; train with a larger "
              "--config.train.max_checkpoints")
        state, meta = trainer.checkpointer.restore(start, trainer.state)
        trainer.inputs.set_state(meta["data_state"])
        current = (start, state)
      current = (step, run_forward(trainer, current[1], current[0], step))
      yield label, step, current[1]
  finally:
    trainer.inputs.set_state(streams)


def run_forward(trainer, state, start: int, end: int):
  """Steps ``[start, end)`` of the plan as the driver runs them (one step per call)."""
  for step in range(start, end):
    span = trainer.plan.span_at(step)
    name = span.step_name(step)
    batch = next(trainer.inputs.streams[trainer.specs[name].stream])
    state, _ = trainer.step_fn(span, name)(state, parallel.shard_batch(batch, trainer.mesh))
  return state


def report_contexts(run: EvalRun) -> np.ndarray:
  """The first ``gan.report_inputs`` (``--num_samples`` if given) distinct contexts of the
  split, in its order: ``[N, max_context_len]`` int32."""
  want = int(run.options.num_samples) or int(run.config.gan.report_inputs)
  seen, rows = set(), []
  batches = run.trainer.inputs.validation_batches(run.config, 0, run.objective.EVAL_STREAM)
  for batch in batches:
    for row, weight in zip(np.asarray(batch["context"]), np.asarray(batch["weight"])):
      key = tuple(row[row != 0].tolist())
      if weight > 0 and key and key not in seen:
        seen.add(key)
        rows.append(key)
    if len(rows) >= want:
      break
  ids = np.zeros((min(len(rows), want), int(run.config.data.max_context_len)), np.int32)
  for i, key in enumerate(rows[:want]):
    key = key[-ids.shape[1]:]
    ids[i, :len(key)] = key
  return ids


def greedy_texts(run: EvalRun, state, contexts: np.ndarray) -> list[str]:
  """Greedy responses (Eq. 3) of ``state`` to ``contexts [N, S]``, as text (fixed batch
  shape: the last batch is padded with copies of its first row)."""
  objective = run.objective
  options = objective.decode_options(mode="greedy")
  bsz = int(run.generation["batch_size"])
  out = []
  for start in range(0, len(contexts), bsz):
    chunk = contexts[start:start + bsz]
    rows = len(chunk)
    chunk = np.concatenate([chunk, np.repeat(chunk[:1], bsz - rows, axis=0)])
    batch = parallel.shard_batch({"context": chunk}, run.trainer.mesh)
    generation = objective.generate(state, batch, jax.random.key(0), options)
    out.extend(objective.texts(generation)[:rows])
  return out


def _contexts_for(run: EvalRun, other: EvalRun, contexts: np.ndarray) -> np.ndarray:
  """``contexts`` (token ids of ``run``) for ``other``: the same ids under the same tokenizer,
  else the decoded texts encoded by ``other``'s tokenizer."""
  if other.tokenizer.fingerprint == run.tokenizer.fingerprint:
    return contexts
  texts = [run.tokenizer.decode(r[r != 0].tolist()) for r in contexts]
  return other.trainer.inputs.encode_contexts(other.config, texts)


@contextlib.contextmanager
def _runs(run: EvalRun):
  """``[(prefix, run)]``: ``run`` (prefix "") and each ``--compare_workdirs`` run (prefix
  "<folder>/", e.g. the MLE baseline), opened read-only and closed on exit."""
  with contextlib.ExitStack() as stack:
    out = [("", run)]
    for workdir in run.options.compare_workdirs:
      other = eval_suites.open_run(workdir, run.options)
      stack.callback(other.trainer.close)
      out.append((f"{os.path.basename(other.workdir)}/", other))
    yield out


def _models(run: EvalRun, labels: str, contexts: np.ndarray | None = None):
  """``(name, step, state, contexts)`` of every model of ``run`` and the compared runs (see
  :func:`model_points`), ``contexts`` re-encoded for each run; plus ``{name: step}`` of the
  models not reached yet (filled as the iteration goes)."""
  missing: dict[str, int] = {}

  def generate():
    with _runs(run) as runs:
      for prefix, r in runs:
        points = model_points(r, labels)
        missing.update({prefix + k: v for k, v in points.items() if v > r.step})
        ids = None if contexts is None else _contexts_for(run, r, contexts)
        for label, step, state in model_states(r, points):
          yield prefix + label, r, step, state, ids

  return generate(), missing


def _models_line(points: dict[str, int]) -> str:
  return ", ".join(f"{label} (step {step})" for label, step in points.items())


def _not_reached_line(missing: dict[str, int]) -> str:
  return f"; not reached: {_models_line(missing)}" if missing else ""


# -- the suites ---------------------------------------------------------------------------


@register_suite("topk_gan_table1")
def table1_suite(run: EvalRun) -> SuiteOutput:
  """Table 1: greedy responses of models A, B, C, D (and of the compared runs' models) to
  ``gan.table_inputs``."""
  inputs = [str(t) for t in run.config.gan.table_inputs]
  contexts = run.trainer.inputs.encode_contexts(run.config, inputs)
  models = {}
  iterator, missing = _models(run, "ABCD", contexts)
  for name, r, step, state, ids in iterator:
    models[name] = {"step": step, "responses": greedy_texts(r, state, ids)}
  lines = ["| input | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
  lines += [f"| {text} | " + " | ".join(m["responses"][i] for m in models.values()) + " |"
            for i, text in enumerate(inputs)]
  summary = (f"responses of {_models_line({k: m['step'] for k, m in models.items()})} to "
             f"{len(inputs)} inputs; {inputs[0]!r} -> "
             + " | ".join(f"{k}: {m['responses'][0]!r}" for k, m in models.items())
             + _not_reached_line(missing))
  return SuiteOutput({}, {}, summary,
                     generation={"mode": "greedy",
                                 "max_len": int(run.config.data.max_response_len)},
                     extra={"table_inputs": inputs, "models": models, "not_reached": missing,
                            "markdown": "\n".join(lines)})


def fig3_values(name: str, check: dict[str, Any]) -> dict[str, float]:
  """The suite's values of one model's :func:`topk_check`: ``<name>/k<k>`` (all tokens),
  ``<name>/k<k>_without_repetitions``, and the random-``W`` control of each,
  ``<name>/k<k>_random_w`` and ``<name>/k<k>_random_w_without_repetitions``."""
  control = check["random_table_control"]
  values = {}
  for i, k in enumerate(check["k"]):
    values[f"{name}/k{k}"] = float(check["with_repetitions"][i])
    values[f"{name}/k{k}_without_repetitions"] = float(check["without_repetitions"][i])
    values[f"{name}/k{k}_random_w"] = float(control["with_repetitions"][i])
    values[f"{name}/k{k}_random_w_without_repetitions"] = float(
        control["without_repetitions"][i])
  return values


def fig3_line(name: str, step: int, check: dict[str, Any]) -> str:
  """One model's part of the suite's summary: the first k's fractions and, next to
  them, the random-``W`` control's."""
  control = check["random_table_control"]
  return (f"model {name} (step {step}): k={check['k'][0]} {check['with_repetitions'][0]:.3f} "
          f"(without repetitions {check['without_repetitions'][0]:.3f}; random-W control "
          f"{control['with_repetitions'][0]:.3f} / {control['without_repetitions'][0]:.3f}, "
          f"seed {control['seed']}; {check['num_tokens']} tokens)")


@register_suite("topk_gan_fig3")
def fig3_suite(run: EvalRun) -> SuiteOutput:
  """Fig. 3: the nearest-neighbour check of the top-k approximations, models A and D,
  each next to its random-``W`` control."""
  contexts = report_contexts(run)
  ks = tuple(int(k) for k in run.config.gan.nn_check_ks)
  values, results, plots, models, parts = {}, {}, [], {}, []
  iterator, missing = _models(run, "AD", contexts)
  for name, r, step, state, ids in iterator:
    check = topk_check(r.objective, state.params, ids, ks, int(r.generation["batch_size"]))
    models[name] = {"step": step, "topk_check": check}
    values.update(fig3_values(name, check))
    settings = {"metric": "topk_nn_check", "model": name, "step": step, "ks": list(ks),
                "num_inputs": len(ids), "split": run.split, "decode": "greedy",
                "control": f"random W of shape {check['random_table_control']['shape']}, "
                           f"seed {check['random_table_control']['seed']}",
                "contexts_hash": metrics.corpus_hash([c[c != 0].tolist() for c in ids])}
    results[f"topk_check_{name}"] = metrics.MetricResult(
        "topk_nn_check", float(check["with_repetitions"][0]), settings, check)
    plots.append(metrics.plot_topk_check(
        check, os.path.join(run.eval_dir, f"topk_check_{name.replace('/', '_')}.png"),
        title=f"top-k approximation, model {name} (step {step})"))
    parts.append(fig3_line(name, step, check))
  summary = "; ".join(parts) + f" on {len(contexts)} contexts" + _not_reached_line(missing)
  return SuiteOutput(values, results, summary, plots=plots,
                     extra={"models": models, "not_reached": missing})


@register_suite("topk_gan_diversity")
def diversity_suite(run: EvalRun) -> SuiteOutput:
  """distinct-1/2, mean length and distinct responses of models A and D, and of the
  compared runs' models (``--compare_workdirs``: the MLE baseline), on the same contexts."""
  contexts = report_contexts(run)
  inputs = [run.tokenizer.decode(c[c != 0].tolist()) for c in contexts]
  values, results, models, parts = {}, {}, {}, []
  iterator, missing = _models(run, "AD", contexts)
  for name, r, step, state, ids in iterator:
    texts = greedy_texts(r, state, ids)
    report = metrics.diversity_report([run.words(t) for t in texts], orders=(1, 2),
                                      tokenization=run.tokenization_label)
    d = report.details
    row = {"distinct_1": float(d["distinct_1"]), "distinct_2": float(d["distinct_2"]),
           "mean_length": float(d["average_length"]),
           "distinct_responses": float(len(set(texts)))}
    values.update({f"{name}/{k}": v for k, v in row.items()})
    results[f"diversity_{name}"] = report
    models[name] = {"step": step, **row, "responses": texts[:20]}
    parts.append(f"model {name} (step {step}): distinct-1 {row['distinct_1']:.4f} distinct-2 "
                 f"{row['distinct_2']:.4f} mean length {row['mean_length']:.2f} "
                 f"({int(row['distinct_responses'])} distinct)")
  summary = "; ".join(parts) + f" on {len(contexts)} contexts" + _not_reached_line(missing)
  return SuiteOutput(values, results, summary,
                     generation={"mode": "greedy", "num_contexts": len(contexts),
                                 "contexts_hash": metrics.corpus_hash(
                                     [c[c != 0].tolist() for c in contexts])},
                     extra={"models": models, "inputs": inputs[:20], "not_reached": missing})
