"""HappyBot's results as evaluation suites (``python -m vedgan.evaluate --workdir W --suite S``).

* ``happybot_table2``: Table 2's automatic column (BLEU with greedy decoding) on the
  validation contexts, with distinct-1/2, the mean predicted look-ahead and current
  sentiment of the greedy responses (how positive the user's next turn / the
  response itself is predicted to be) and their mean length in words;
* ``happybot_variance``: what the learned baseline of Eq. 7-8 buys: the total
  variance of the REINFORCE gradient (Eq. 9) over rollouts on the first
  validation batch, with the trained ``R^_t``, without a baseline and with the
  baseline at its initialisation.

Both read the run's own ``dialogue`` validation split (``--split validation``).
Words for BLEU and distinct-n come from ``--tokenization`` (default
:func:`vedgan.metrics.text.words`, the one normalisation of every text metric).
:func:`reward_distribution` is the cheap stage-end plot of the training run.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from vedgan import eval_suites, metrics
from vedgan.errors import ConfigError, DataError
from vedgan.metrics import text
from vedgan.objective import jit_init

#: Rollouts per context of ``happybot_variance``.
VARIANCE_ROLLOUTS = 32


@functools.lru_cache(maxsize=8)
def _jitted_generation(objective):

  @jax.jit
  def fn(params, batch):
    tokens = objective.greedy(params["policy"], batch["context"], batch["response_out"].shape[1])
    return (tokens, objective.lookahead(params, batch, tokens),
            objective.current(params, batch, tokens))

  return fn


def _greedy_rewards(objective, state, inputs, max_batches: int):
  """``(batch, tokens, r_lookahead, r_current, keep)`` per validation batch (numpy; ``keep``:
  the real rows), greedy responses of the policy."""
  fn = _jitted_generation(objective)
  for batch in inputs.validation_batches(objective.config, max_batches, objective.EVAL_STREAM):
    tokens, look, cur = jax.device_get(fn(state.params, {k: jnp.asarray(v)
                                                         for k, v in batch.items()}))
    yield batch, np.asarray(tokens), np.asarray(look), np.asarray(cur), \
        np.asarray(batch["weight"]) > 0


def evaluate_generation(objective, state, inputs, max_batches: int = 0, max_examples: int = 0,
                        words=text.words) -> dict:
  """Table 2's automatic part on the validation split, greedy decoding.

  Returns ``bleu`` (corpus BLEU-4 x 100, sacrebleu's definition, on ``words``),
  ``distinct_1``/``distinct_2``, ``reward_lookahead`` (mean predicted look-ahead
  sentiment of the responses), ``reward_current``, ``length`` (mean words) and
  ``examples`` (the first ``max_examples`` contexts; 0 = all).
  """
  hyps, refs, look, cur = [], [], [], []
  tok = objective.tokenizer
  for batch, tokens, r_look, r_cur, keep in _greedy_rewards(objective, state, inputs,
                                                            max_batches):
    for row, gold, ok, a, b in zip(tokens, np.asarray(batch["response_out"]), keep, r_look,
                                   r_cur):
      if ok and not (max_examples and len(hyps) >= max_examples):
        hyps.append(words(tok.decode(row.tolist())))
        refs.append([words(tok.decode(gold.tolist()))])
        look.append(float(a))
        cur.append(float(b))
  if not hyps:
    raise DataError("the validation split yields no batch; lower train.eval_batch_size")
  return {"bleu": 100.0 * metrics.corpus_bleu(hyps, refs),
          "distinct_1": metrics.distinct_n(hyps, 1), "distinct_2": metrics.distinct_n(hyps, 2),
          "reward_lookahead": float(np.mean(look)), "reward_current": float(np.mean(cur)),
          "length": float(np.mean([len(h) for h in hyps])), "examples": len(hyps)}


def reward_distribution(objective, state, inputs, stage: str, out_dir: str) -> list[str]:
  """``reward_distribution.png``: histograms of the look-ahead and current sentiment rewards
  of greedy responses to ``train.eval_batches`` validation batches. Returns the PNG paths."""
  look, cur = [], []
  for _, _, r_look, r_cur, keep in _greedy_rewards(objective, state, inputs,
                                                   int(objective.config.train.eval_batches)):
    look.extend(r_look[keep].tolist())
    cur.extend(r_cur[keep].tolist())
  if not look:
    return []
  from vedgan import plots  # pylint: disable=import-outside-toplevel
  fig, axes = plots.new_figure((5.5, 3.6))
  ax = axes[0, 0]
  lo, hi = min(min(look), min(cur)), max(max(look), max(cur))
  bins = np.linspace(lo, max(hi, lo + 1e-3), 21)
  ax.hist(look, bins, alpha=0.6, label=f"look-ahead (mean {np.mean(look):.3f})")
  ax.hist(cur, bins, alpha=0.6, label=f"current (mean {np.mean(cur):.3f})")
  ax.set_xlabel("reward of the greedy response")
  ax.set_ylabel("validation contexts")
  ax.set_title(f"sentiment reward after stage {stage} ({len(look)} contexts)")
  ax.legend(fontsize=8)
  return [plots.save_figure(fig, os.path.join(out_dir, "reward_distribution.png"))]


# ----------------------------------------------------------------------------
# Variance of the policy gradient with and without the baseline.


def policy_gradient_variance(objective, state, batch, key, num_rollouts: int, stage,
                             baseline_params=None) -> dict:
  """Variance of the REINFORCE gradient (Eq. 9) with and without the learned baseline.

  On the fixed contexts of ``batch``, draws ``num_rollouts`` independent
  rollouts; for each computes ``grad_policy L_RL`` twice on the same sample:
  with ``R^_t`` from ``baseline_params`` (default: the state's baseline) and
  with no baseline. Returns the total variance (trace of the covariance over
  rollouts, summed over all policy parameters) of each, their ``ratio`` (with /
  without) and the mean squared gradient norms. (A measurement: the gradients
  are not applied.)
  """
  params = dict(state.params)
  if baseline_params is not None:
    params["baseline"] = baseline_params
  fn = _jitted_variance(objective, int(num_rollouts), float(stage.temperature),
                        str(stage.reward))
  out = fn(params, {k: jnp.asarray(v) for k, v in batch.items()}, key)
  return {k: float(v) for k, v in out.items()}


@functools.lru_cache(maxsize=8)
def _jitted_variance(objective, num_rollouts: int, temperature: float, reward_name: str):
  from vedgan.papers.happybot.algorithm import rl_loss  # pylint: disable=import-outside-toplevel

  reward_fn = objective.reward(reward_name)

  @jax.jit
  def fn(params, batch, key):
    w = batch["weight"]
    rows = jnp.maximum(w.sum(), 1.0)

    def one(k):
      rollout = objective.sample_rollout(params["policy"], batch, k, temperature)
      reward = jax.lax.stop_gradient(reward_fn(params, batch, rollout.tokens))

      def l_rl(policy, use_baseline):
        logp, states = objective.score_rollout(policy, batch, rollout, temperature)
        b_hat = objective.baseline_values(params["baseline"], states) if use_baseline else None
        return (rl_loss(logp, reward, b_hat, rollout.mask) * w).sum() / rows

      flat = lambda g: jax.flatten_util.ravel_pytree(g)[0]
      return (flat(jax.grad(l_rl)(params["policy"], True)),
              flat(jax.grad(l_rl)(params["policy"], False)))

    with_b, without_b = jax.lax.map(one, jax.random.split(key, num_rollouts))
    var_with = jnp.var(with_b, axis=0).sum()
    var_without = jnp.var(without_b, axis=0).sum()
    return {"variance_with_baseline": var_with, "variance_without_baseline": var_without,
            "ratio": var_with / var_without,
            "sq_norm_with_baseline": jnp.mean(jnp.sum(with_b ** 2, axis=1)),
            "sq_norm_without_baseline": jnp.mean(jnp.sum(without_b ** 2, axis=1))}

  return fn


# ----------------------------------------------------------------------------
# The suites.


def _check_split(run) -> None:
  if run.split != "validation":
    raise ConfigError(f"the happybot suites evaluate the run's own validation split "
                      f"(data.dialogue_sources); drop --split {run.split}")


@eval_suites.register_suite("happybot_table2", decodes=False)
def table2_suite(run) -> eval_suites.SuiteOutput:
  """Table 2's automatic column: BLEU of greedy responses, distinct-n, predicted sentiment."""
  _check_split(run)
  r = evaluate_generation(run.objective, run.trainer.state, run.trainer.inputs,
                          max_examples=int(run.options.num_samples), words=run.words)
  values = {k: float(v) for k, v in r.items()}
  summary = (f"BLEU {r['bleu']:.2f} distinct-1 {r['distinct_1']:.3f} distinct-2 "
             f"{r['distinct_2']:.3f} look-ahead sentiment {r['reward_lookahead']:.3f} current "
             f"sentiment {r['reward_current']:.3f} length {r['length']:.1f} words "
             f"({r['examples']} greedy responses; words: {run.options.tokenization})")
  generation = {"mode": "greedy", "min_len": 1, "forbid_unk": True,
                "max_len": "the reference's bucket", "num_contexts": r["examples"]}
  return eval_suites.SuiteOutput(values, {}, summary, generation=generation,
                                 extra={"tokenization": run.tokenization_label})


@eval_suites.register_suite("happybot_variance", decodes=False)
def variance_suite(run) -> eval_suites.SuiteOutput:
  """Total variance of ``grad_policy L_RL`` over rollouts: trained / no / untrained baseline."""
  _check_split(run)
  objective, state, config = run.objective, run.trainer.state, run.config
  batch = next(run.trainer.inputs.validation_batches(config, 1, objective.EVAL_STREAM))
  key = jax.random.key(int(run.options.seed))
  stage = config.stages.rl
  trained = policy_gradient_variance(objective, state, batch, key, VARIANCE_ROLLOUTS, stage)
  initial = jit_init(objective)(jax.random.key(int(config.seed))).params["baseline"]
  untrained = policy_gradient_variance(objective, state, batch, key, VARIANCE_ROLLOUTS, stage,
                                       baseline_params=initial)
  values = {"variance_without_baseline": trained["variance_without_baseline"],
            "variance_with_baseline": trained["variance_with_baseline"],
            "ratio": trained["ratio"],
            "variance_untrained_baseline": untrained["variance_with_baseline"],
            "ratio_untrained": untrained["ratio"]}
  contexts = int(np.sum(np.asarray(batch["weight"]) > 0))
  summary = (f"total variance of grad L_RL over {VARIANCE_ROLLOUTS} rollouts on {contexts} "
             f"contexts: no baseline {values['variance_without_baseline']:.4g}, learned "
             f"R^_t {values['variance_with_baseline']:.4g} (ratio {values['ratio']:.3f}), "
             f"R^_t at initialisation {values['variance_untrained_baseline']:.4g} (ratio "
             f"{values['ratio_untrained']:.3f})")
  return eval_suites.SuiteOutput(values, {}, summary, extra={
      "rollouts": VARIANCE_ROLLOUTS, "contexts": contexts, "seed": int(run.options.seed),
      "temperature": float(stage.temperature), "reward": str(stage.reward)})
