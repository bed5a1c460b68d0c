"""MojiTalk wiring: what each step returns against a reference composed from the paper.

Unit-size models (the ``small`` objective of ``test_mojitalk``), no training loop. The
step losses run through a one-device ``vmap`` over the data axis (``ctx.salted_key`` and
``ctx.global_sum`` read it), so a step's keys are ``fold_in(state.step_key(salt), 0)``.

* the CVAE step's ``L'`` (Eq. 2) with the annealed KL weight and the BoW term;
* the Reinforced CVAE's ``L'' = L' - lambda J'`` (Algorithm 1, lines 6-12): its value and
  generator gradient against a hand-built generation, rewards and policy term; the
  classifier gets no gradient; the policy term waits for ``policy_start_epochs``;
* generation (supplement "Generation"): every candidate its own ``z ~ p(z|c)``, the
  classifier's favourite kept;
* evaluation: the prior perplexity scores the reference under ``z ~ p(z|c)``.
"""
import copy
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import make_config
from test_mojitalk import TINY, TOK, T, _batch

from vedgan import parallel, steps
from vedgan.decode import DecodeOptions
from vedgan.papers.mojitalk import algorithm as mojitalk
from vedgan.papers.mojitalk.networks import mle_terms, response_tokens
from vedgan.plan import Plan

POLICY_WEIGHT = 0.3      # lambda != 1, so that L' and -J' cannot trade places unnoticed


@pytest.fixture(scope="module")
def small():
  config = make_config("configs/mojitalk.py", "demo", **TINY)
  obj = mojitalk.MojiTalkObjective(config, TOK)
  obj.steps_per_epoch = 10               # KL ramp: 60 steps; the policy term after 20
  batch = _batch()
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  return obj, state, batch


def _span(obj, name, **overrides):
  plan = Plan.from_config(obj.config)
  span = next(s for s in plan.spans if s.name == name)
  if overrides:
    stage = ml_collections.ConfigDict(span.config.to_dict())
    stage.update(overrides)
    span = dataclasses.replace(span, config=stage)
  return plan, span


def _value(w):
  """A ``Weighted`` of the one-device vmap as its global value."""
  return jnp.sum(w.total) / jnp.sum(w.count)


def _step_loss(obj, name, span, plan):
  """``f(state, params, batch) -> (loss, metrics)`` of step ``name`` at ``state.step``
  (traceable in ``state``: one compilation for every step; one device)."""
  fn = obj.steps()[name].loss

  def per_device(state, params, batch):
    return fn(params, batch, steps.StepContext(state, span, plan, name))

  def run(state, params, batch):
    loss, metrics = jax.vmap(per_device, in_axes=(None, None, 0), axis_name=parallel.AXIS)(
        state, params, jax.tree.map(lambda x: x[None], batch))
    metrics = {k: _value(v) if isinstance(v, steps.Weighted) else v[0]
               for k, v in metrics.items()}
    return _value(loss), metrics

  return run


def _key(state, salt):
  return jax.random.fold_in(state.step_key(salt), 0)     # ctx.salted_key on device 0


# -----------------------------------------------------------------------------
# CVAE step (Eq. 2)


@pytest.fixture(scope="module")
def cvae_step(small):
  """The cvae step's ``(loss, metrics)`` and the Eq. 2 terms under its keys, at a state."""
  obj, _, batch = small
  plan, span = _span(obj, "cvae")
  step = _step_loss(obj, "cvae", span, plan)
  terms = lambda st: obj.net.cvae_terms(st.params, batch, _key(st, mojitalk._Z), True,
                                        _key(st, mojitalk._DROPOUT))
  return span, jax.jit(lambda st: (step(st, st.params, batch), terms(st)))


@pytest.mark.parametrize("stage_step", [0, 30])
def test_cvae_step_is_eq2_with_the_annealed_kl_weight_and_the_bow_loss(small, cvae_step,
                                                                      stage_step):
  _, state, _ = small
  span, run = cvae_step
  (loss, metrics), t = run(state.replace(step=jnp.asarray(span.start + stage_step, jnp.int32)))
  # The paper's schedule: KL weight 0 -> 0.5 linearly by the end of epoch 6 (60 steps).
  w_kl = 0.5 * min(1.0, stage_step / 60.0)
  want = np.mean(t["rec"] + w_kl * t["kl"] + 1.0 * t["bow"])  # BoW weight 1 (Eq. 2)
  assert float(np.mean(t["bow"])) > 1.0 and float(np.mean(t["kl"])) > 0.0
  np.testing.assert_allclose(metrics["kl_weight"], w_kl, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for k in ("rec", "kl", "bow"):
    np.testing.assert_allclose(metrics[k], np.mean(t[k]), rtol=1e-5)


# -----------------------------------------------------------------------------
# Reinforced CVAE (Algorithm 1)


def _reference_rl(obj, state, batch, lam, on):
  """``L'' = L' + lambda on (-J')`` built by hand (Algorithm 1), and its pieces."""
  net, label = obj.net, batch["label"]

  def loss(params):
    frozen = jax.lax.stop_gradient(params)
    # Line 6: G, greedy from z = mu_p + sigma_p eps (the prior of the frozen generator).
    memory, cond, e = net.condition(frozen, batch["context"], label)
    mean, logvar = net.prior(frozen, cond)
    eps = jax.random.normal(_key(state, mojitalk._GEN_Z), mean.shape)
    z = mean + jnp.exp(0.5 * logvar) * eps
    out = net.decode(frozen, memory, net.initial_state(frozen, memory, e, z),
                     _key(state, mojitalk._GEN),
                     DecodeOptions(mode="greedy", temperature=1.0, beam_width=1,
                                   forbid_unk=True), batch["response_out"].shape[1])
    mask = (jnp.arange(out.tokens.shape[1])[None] < out.lengths[:, None]).astype(jnp.float32)
    # Lines 9-10: R on G and r on the targets T, alpha from R's rank (Eq. 3).
    p_gen = jax.nn.softmax(net.classify(frozen, out.tokens))
    p_gold = jax.nn.softmax(net.classify(frozen, response_tokens(batch)))
    big_r = p_gen[jnp.arange(label.shape[0]), label]
    small_r = p_gold[jnp.arange(label.shape[0]), label]
    rank = 1 + jnp.sum(p_gen > big_r[:, None], axis=-1)
    alpha = jnp.where(rank == 1, 0.0, jnp.where(rank <= 5, 0.5, 1.0))
    # Line 7: log P(G_t) with gradient; line 11: J' = alpha (R - r) sum_t log P(G_t).
    logp = net.sequence_log_probs(params, batch["context"], label, eps, out.tokens)
    j = jax.lax.stop_gradient(alpha * (big_r - small_r)) * jnp.sum(logp * mask, -1)
    # Line 8: L' on the targets (the RL stage's constant KL weight 0.5, BoW weight 1).
    t = net.cvae_terms(params, batch, _key(state, mojitalk._Z), True,
                       _key(state, mojitalk._DROPOUT), 0.5, 1.0)
    total = jnp.mean(t["loss"] - lam * on * j)                # line 12
    return total, {"cvae_loss": jnp.mean(t["loss"]), "policy": jnp.mean(-j),
                   "reward_gen": jnp.mean(big_r), "reward_gold": jnp.mean(small_r),
                   "alpha": jnp.mean(alpha)}

  return loss


@pytest.fixture(scope="module")
def rl_runs(small):
  """The rl step's loss, metrics and gradient against the hand-built reference, before
  (stage step 0) and after (25) the policy term joins (``policy_start_epochs`` = 2)."""
  obj, state, batch = small
  params = jax.tree.map(jnp.asarray, state.params)          # an opinionated classifier:
  params["classifier"]["out"]["kernel"] = 50.0 * params["classifier"]["out"]["kernel"]
  state = state.replace(params=params)                      # R - r far from 0
  plan, span = _span(obj, "rl", policy_weight=POLICY_WEIGHT)
  assert obj.epochs_to_steps(float(span.config.policy_start_epochs), "") == 20
  step = _step_loss(obj, "rl", span, plan)

  @jax.jit
  def run(st, on):
    ref = _reference_rl(obj, st, batch, POLICY_WEIGHT, on)
    return (jax.value_and_grad(lambda q: step(st, q, batch), has_aux=True)(st.params),
            jax.value_and_grad(ref, has_aux=True)(st.params))

  return {stage_step: run(state.replace(step=jnp.asarray(span.start + stage_step, jnp.int32)),
                          jnp.float32(on)) for stage_step, on in ((0, 0.0), (25, 1.0))}


def test_rl_step_is_algorithm1_hybrid_loss_with_lambda(rl_runs):
  for stage_step, on in ((0, 0.0), (25, 1.0)):
    ((loss, metrics), _), ((want, parts), _) = rl_runs[stage_step]
    assert float(metrics["policy_on"]) == on
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    for k, v in parts.items():
      np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    # L'' = L' + lambda on (-J') with lambda = 0.3, the policy term off before epoch 2.
    np.testing.assert_allclose(loss, metrics["cvae_loss"] + POLICY_WEIGHT * on *
                               metrics["policy"], rtol=1e-5, atol=1e-6)
  parts = rl_runs[25][1][0][1]
  assert abs(float(parts["policy"])) > 0.01            # the policy term is not trivially 0
  assert float(parts["alpha"]) > 0.0


def test_rl_step_gradient_is_the_references_and_skips_the_classifier(rl_runs):
  for stage_step in (0, 25):
    (_, grads), (_, want) = rl_runs[stage_step]
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6)
    # The frozen classifier gets no gradient from L'' (Algorithm 1: it only rewards).
    assert all(np.all(np.asarray(l) == 0) for l in jax.tree.leaves(grads["classifier"]))
  # The policy term moves the decoder: the gradients before/after it joins differ.
  before, after = rl_runs[0][0][1], rl_runs[25][0][1]
  assert not np.allclose(before["model"]["decoder"]["w_hidden"],
                         after["model"]["decoder"]["w_hidden"])


# -----------------------------------------------------------------------------
# Generation: pick the best of n prior samples


@pytest.fixture(scope="module")
def candidates(small):
  """``best_of`` on a generator whose decoder start leans on z (bridge rows of z x 20),
  recording the z each candidate was decoded from."""
  obj, state, batch = small
  params = jax.tree.map(jnp.asarray, state.params)
  kernel = params["model"]["bridge"]["kernel"]
  latent = obj.net.latent_dim
  params["model"]["bridge"]["kernel"] = kernel.at[-latent:].multiply(20.0)
  seen = []
  net = copy.copy(obj.net)
  original = obj.net.initial_state

  def initial_state(p, memory, e, z):
    seen.append(z)
    return original(p, memory, e, z)

  net.initial_state = initial_state
  options = DecodeOptions(mode="greedy", temperature=1.0, beam_width=1, forbid_unk=True)
  n = 5
  results = {}
  for latent_flag in (True, False):
    seen.clear()
    out, info = net.best_of(params, batch["context"], batch["label"], jax.random.key(9),
                            latent_flag, options, T, n)
    results[latent_flag] = (out, info, seen[0])
  return obj, params, batch, options, n, results


def test_best_of_draws_its_own_prior_z_for_every_candidate(candidates):
  obj, params, batch, _, n, results = candidates
  b = batch["context"].shape[0]
  z = np.asarray(results[True][2]).reshape(n, b, -1)
  _, cond, _ = obj.net.condition(params, batch["context"], batch["label"])
  mean, logvar = (np.asarray(x) for x in obj.net.prior(params, cond))
  eps = (z - mean[None]) / np.exp(0.5 * logvar)[None]          # z = mu + sigma eps
  for i in range(n):
    for j in range(i):
      assert np.abs(eps[i] - eps[j]).min() > 1e-6, (i, j)      # independent draws
  assert abs(eps.mean()) < 0.5 and 0.6 < eps.std() < 1.5       # eps ~ N(0, I)
  # Before any CVAE step the base model decodes its single z = 0.
  np.testing.assert_array_equal(results[False][2], 0.0)


def test_best_of_keeps_the_candidate_the_classifier_prefers(candidates):
  obj, params, batch, options, n, results = candidates
  out, info, z = results[True]
  b = batch["context"].shape[0]
  net, label = obj.net, np.asarray(batch["label"])
  # Decode each candidate alone from its z and score it for the designated emoji.
  memory, _, e = net.condition(params, batch["context"], batch["label"])
  probs, tokens = [], []
  for i in range(n):
    zi = z[i * b:(i + 1) * b]
    cand = net.decode(params, memory, net.initial_state(params, memory, e, zi),
                      jax.random.key(0), options, T)
    p = jax.nn.softmax(net.classify(params, cand.tokens))
    probs.append(np.asarray(p)[np.arange(b), label])
    tokens.append(np.asarray(cand.tokens))
  probs, tokens = np.stack(probs), np.stack(tokens)
  assert len({tokens[i].tobytes() for i in range(n)}) > 1      # z changes the responses
  best = probs.argmax(0)
  np.testing.assert_allclose(info["label_prob"], probs.max(0), rtol=1e-4)
  np.testing.assert_allclose(info["label_prob_first"], probs[0], rtol=1e-4)
  np.testing.assert_array_equal(out.tokens, tokens[best, np.arange(b)])
  assert np.any(probs.max(0) > probs[0] + 1e-6)                # picking the best matters


# -----------------------------------------------------------------------------
# Evaluation


def test_eval_prior_nll_scores_the_reference_under_a_prior_sample(small):
  obj, state, batch = small
  run = jax.vmap(obj.eval_step, in_axes=(None, 0), axis_name=parallel.AXIS)
  sums = jax.jit(run)(state, jax.tree.map(lambda x: x[None], batch))
  net = obj.net
  key = jax.random.fold_in(jax.random.key(int(obj.config.seed)), 0)
  k_q, k_p, _ = jax.random.split(key, 3)
  memory, cond, e = net.condition(state.params, batch["context"], batch["label"])
  mean_p, logvar_p = net.prior(state.params, cond)
  z_p = mean_p + jnp.exp(0.5 * logvar_p) * jax.random.normal(k_p, mean_p.shape)
  nll, count = mle_terms(net.decode_logits(state.params, memory,
                                           net.initial_state(state.params, memory, e, z_p),
                                           batch["response_in"]), batch)
  np.testing.assert_allclose(sums["prior_nll"][0], np.sum(nll), rtol=1e-5)
  t = net.cvae_terms(state.params, batch, k_q)                  # z ~ q(z|x,c)
  np.testing.assert_allclose(sums["rec"][0], np.sum(t["rec"]), rtol=1e-5)
  np.testing.assert_allclose(sums["kl"][0], np.sum(t["kl"]), rtol=1e-5)
  assert not np.allclose(sums["prior_nll"][0], sums["rec"][0])
  s = obj.summarize({k: v[0] for k, v in sums.items()})
  np.testing.assert_allclose(s["elbo_perplexity"],
                             np.exp((np.sum(t["rec"]) + np.sum(t["kl"])) / np.sum(count)),
                             rtol=1e-4)
