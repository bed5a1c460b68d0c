"""The one update rule (vedgan.steps.build_update): what it differentiates, how it
normalises, which state it touches; checked on a toy objective with known gradients."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vedgan import configlib, parallel, steps
from vedgan.plan import Plan
from vedgan.steps import Step, Weighted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(stage_step="fit", reset=False, lr=0.1, num_steps=4):
  c = ml_collections.ConfigDict()
  c.optimizer = configlib.base_config().optimizer
  c.optimizer.grad_clip_norm = 0.0
  c.stages = ml_collections.ConfigDict()
  c.stages.first = configlib.stage(stage_step, num_steps, lr, reset_optimizer=reset)
  c.stages.second = configlib.stage(stage_step, num_steps, lr, reset_optimizer=reset)
  c.stage_order = ("first", "second")
  return c


def _state(config, params, extra=None):
  tx = steps.make_optimizer(config.optimizer)
  return steps.TrainState(step=jnp.zeros((), jnp.int32),
                          rng=jax.random.key_data(jax.random.key(0)), params=params,
                          opt_state={k: tx.init(v) for k, v in params.items()}, extra=extra)


def _quadratic(params, batch, ctx):
  """Sum over rows of ||w - x||^2 (+ the same for v, so both networks get gradients);
  normalised by the rows' weights: the global mean of the per-row loss."""
  del ctx
  w = batch["weight"]
  per_row = (jnp.sum(jnp.square(params["a"]["w"] - batch["x"]), -1)
             + jnp.sum(jnp.square(params["b"]["v"] - batch["x"]), -1))
  return Weighted((per_row * w).sum(), w.sum()), {
      "mean_x0": Weighted((batch["x"][:, 0] * w).sum(), w.sum())}


def _build(spec, config, name="fit", span_index=0):
  plan = Plan.from_config(config)
  networks = {"a": ("a",), "b": ("b",)}
  tx = steps.make_optimizer(config.optimizer)
  fn = steps.build_update(spec, name, plan.spans[span_index], plan, networks,
                          {"a": tx, "b": tx})
  return parallel.data_parallel(fn, parallel.make_mesh(jax.devices()[:1]), donate_state=False)


def _batch(n=6, d=3, seed=0):
  r = np.random.RandomState(seed)
  return {"x": r.randn(n, d).astype(np.float32), "weight": np.ones((n,), np.float32)}


def _params():
  return {"a": {"w": jnp.ones((3,))}, "b": {"v": -jnp.ones((3,))}}


def test_only_the_trained_networks_and_their_optimizer_states_change():
  config = _config()
  state = _state(config, _params())
  fn = _build(Step(trains=("a",), loss=_quadratic), config)
  new, metrics = fn(state, _batch())
  # Only a's parameters are differentiated: the gradient norm is that of a alone.
  np.testing.assert_allclose(metrics["grad_norm"],
                             np.linalg.norm(2 * (1.0 - _batch()["x"].mean(0))), rtol=1e-6)
  assert not np.allclose(new.params["a"]["w"], state.params["a"]["w"])
  np.testing.assert_array_equal(new.params["b"]["v"], state.params["b"]["v"])
  for old, now in zip(jax.tree.leaves(state.opt_state["b"]), jax.tree.leaves(new.opt_state["b"])):
    np.testing.assert_array_equal(old, now)
  assert any(not np.array_equal(o, n) for o, n in zip(jax.tree.leaves(state.opt_state["a"]),
                                                      jax.tree.leaves(new.opt_state["a"])))
  assert int(new.step) == 1


def test_gradient_is_that_of_the_global_mean_and_metrics_are_reduced():
  config = _config()
  state = _state(config, _params())
  batch = _batch()
  fn = _build(Step(trains=("a", "b"), loss=_quadratic), config)
  _, metrics = fn(state, batch)
  x = batch["x"]
  w, v = np.ones(3), -np.ones(3)
  expected_loss = np.mean(np.sum((w - x) ** 2, -1) + np.sum((v - x) ** 2, -1))
  grad = np.concatenate([2 * (w - x.mean(0)), 2 * (v - x.mean(0))])
  np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(grad), rtol=1e-6)
  np.testing.assert_allclose(metrics["mean_x0"], x[:, 0].mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["learning_rate"], 0.1)


def test_padding_rows_weigh_nothing():
  config = _config()
  fn = _build(Step(trains=("a",), loss=_quadratic), config)
  batch = _batch()
  padded = {"x": np.concatenate([batch["x"], 100 * np.ones((2, 3), np.float32)]),
            "weight": np.concatenate([batch["weight"], np.zeros(2, np.float32)])}
  _, m1 = fn(_state(config, _params()), batch)
  _, m2 = fn(_state(config, _params()), padded)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-6)


def test_sign_of_the_update_descends_the_loss():
  config = _config()
  state = _state(config, _params())
  fn = _build(Step(trains=("a", "b"), loss=_quadratic), config)
  batch = _batch()
  losses = []
  for _ in range(5):
    state, metrics = fn(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]


def test_per_network_learning_rate_and_after_hook():
  config = _config()
  state = _state(config, _params(), extra={"count": jnp.zeros((), jnp.int32)})
  spec = Step(trains=("a", "b"), loss=_quadratic,
              learning_rate=lambda ctx, net: ctx.learning_rate * (0.0 if net == "b" else 1.0),
              after=lambda extra, ctx: {"count": extra["count"] + 1}, prefix="g_")
  new, metrics = _build(spec, config)(state, _batch())
  np.testing.assert_array_equal(new.params["b"]["v"], state.params["b"]["v"])  # lr 0
  assert not np.allclose(new.params["a"]["w"], state.params["a"]["w"])
  assert int(new.extra["count"]) == 1
  assert {"g_loss", "g_grad_norm", "g_learning_rate"} <= set(metrics)


def test_gradient_free_step_changes_only_extra_and_step():
  config = _config()
  state = _state(config, _params(), extra={"sum": jnp.zeros(())})

  def refill(state, batch, ctx):
    return {"sum": state.extra["sum"] + batch["x"].sum()}, {"added": batch["x"].sum()}

  new, metrics = _build(Step(update=refill), config)(state, _batch())
  np.testing.assert_allclose(new.extra["sum"], _batch()["x"].sum(), rtol=1e-6)
  np.testing.assert_array_equal(new.params["a"]["w"], state.params["a"]["w"])
  assert int(new.step) == 1 and "added" in metrics
  with pytest.raises(ValueError, match="either a loss"):
    Step(trains=("a",))
  with pytest.raises(ValueError, match="trains no network"):
    Step(trains=("a",), update=refill)


def test_unknown_network_is_refused():
  config = _config()
  with pytest.raises(ValueError, match="unknown network"):
    _build(Step(trains=("c",), loss=_quadratic), config)


def test_reset_optimizer_gives_a_fresh_state_at_the_stage_start_only():
  config = _config(reset=True, num_steps=2)
  spec = Step(trains=("a",), loss=_quadratic)
  state = _state(config, _params())
  first = _build(spec, config, span_index=0)
  second = _build(spec, config, span_index=1)
  batch = _batch()
  state, _ = first(state, batch)
  state, _ = first(state, batch)
  mu_before = np.asarray(state.opt_state["a"][0].mu["w"])
  assert np.any(mu_before != 0)
  # Step 2 is the first of stage "second": the update starts from a fresh Adam state,
  # so its first moment is (1 - b1) * g exactly, not b1 * mu + (1 - b1) * g.
  w = np.asarray(state.params["a"]["w"])
  g = 2 * (w - batch["x"].mean(0))
  state, _ = second(state, batch)
  np.testing.assert_allclose(state.opt_state["a"][0].mu["w"], 0.1 * g, rtol=1e-5)
  assert int(state.opt_state["a"][0].count) == 1
  state, _ = second(state, batch)  # not reset again within the stage
  assert int(state.opt_state["a"][0].count) == 2


def _fresh_adam_step(w, g, lr, eps):
  """``w`` after one Adam step from a fresh state: bias correction makes the first update
  ``g / (|g| + eps)`` whatever ``b1, b2`` (Kingma & Ba, Alg. 1)."""
  return w - lr * g / (np.abs(g) + eps)


def test_the_update_uses_the_running_stage_learning_rate():
  """Each stage has its own scheduled rate: ``lr * decay ** (k // every) * min(1, (k+1) /
  warmup)`` at stage step ``k``; the update and the reported rate use it, not the first
  stage's rate nor the bare ``learning_rate`` field."""
  config = _config(num_steps=4)
  config.stages.second = configlib.stage("fit", 6, 0.02, warmup_steps=4, lr_decay=0.5,
                                         lr_decay_every=2)
  fn = _build(Step(trains=("a",), loss=_quadratic), config, span_index=1)
  batch = _batch()
  eps = float(config.optimizer.eps)
  for k in (0, 2, 5):
    state = _state(config, _params()).replace(step=jnp.int32(4 + k))  # fresh Adam state
    new, metrics = fn(state, batch)
    lr = 0.02 * 0.5 ** (k // 2) * min(1.0, (k + 1) / 4)
    np.testing.assert_allclose(metrics["learning_rate"], lr, rtol=1e-6)
    w = np.ones(3)
    g = 2 * (w - batch["x"].mean(0))
    np.testing.assert_allclose(new.params["a"]["w"], _fresh_adam_step(w, g, lr, eps),
                               rtol=1e-6, atol=1e-7)


def test_without_reset_the_optimizer_state_carries_over_stages():
  """``reset_optimizer=False``: the next stage's first step continues the Adam moments."""
  config = _config(reset=False, num_steps=2)
  spec = Step(trains=("a",), loss=_quadratic)
  state = _state(config, _params())
  first = _build(spec, config, span_index=0)
  second = _build(spec, config, span_index=1)
  batch = _batch()
  state, _ = first(state, batch)
  state, _ = first(state, batch)
  mu_before = np.asarray(state.opt_state["a"][0].mu["w"])
  g = 2 * (np.asarray(state.params["a"]["w"]) - batch["x"].mean(0))
  state, _ = second(state, batch)  # step 2: the first of stage "second"
  assert int(state.opt_state["a"][0].count) == 3
  np.testing.assert_allclose(state.opt_state["a"][0].mu["w"], 0.9 * mu_before + 0.1 * g,
                             rtol=1e-5)


def test_step_keys_are_fresh_every_step_and_device():
  """``ctx.rng = fold_in(fold_in(fold_in(root, step), 0), device)`` (the module docstring's
  derivation, so a resumed run draws the same numbers); keys differ from step to step."""
  config = _config()
  plan = Plan.from_config(config)
  mesh = parallel.make_mesh(jax.devices()[:1])

  def inspect(state, batch):
    del batch
    ctx = steps.StepContext(state, plan.spans[0], plan, "fit")
    return state, {"rng": jax.random.key_data(ctx.rng)}

  fn = parallel.data_parallel(inspect, mesh, donate_state=False)
  state = _state(config, _params())
  root = jax.random.key(0)
  got = {}
  for t in (3, 4):
    _, out = fn(state.replace(step=jnp.int32(t)), _batch())
    got[t] = np.asarray(out["rng"])
    want = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, t), 0), 0)
    np.testing.assert_array_equal(got[t], jax.random.key_data(want))
  assert not np.array_equal(got[3], got[4])


def test_keys_by_name_and_phase_steps():
  config = _config(stage_step="ae*2,cvae*1")
  plan = Plan.from_config(config)
  state = _state(config, _params())
  ctx_step = steps.StepContext(state.replace(step=jnp.int32(4)), plan.spans[0], plan, "ae")
  assert int(ctx_step.phase_step("ae")) == 3  # ae at 0, 1, 3 before step 4
  assert int(ctx_step.phase_step("cvae")) == 1
  mesh = parallel.make_mesh(jax.devices()[:1])

  def inspect(state, batch):
    ctx = steps.StepContext(state, plan.spans[0], plan, "ae")
    k1, k2 = jax.random.split(parallel.device_rng(state.step_key()))
    same_split = jnp.all(jax.random.key_data(ctx.keys("x", "y")["y"]) == jax.random.key_data(k2))
    distinct = jnp.any(jax.random.key_data(ctx.key("x")) != jax.random.key_data(ctx.key("y")))
    del k1
    return state, {"same_split": same_split, "distinct": distinct}

  _, out = parallel.data_parallel(inspect, mesh, donate_state=False)(state, _batch())
  assert bool(out["same_split"]) and bool(out["distinct"])


_MULTI = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    import test_steps as t
    from vedgan import parallel, steps
    from vedgan.plan import Plan
    config = t._config()
    plan = Plan.from_config(config)
    tx = steps.make_optimizer(config.optimizer)
    fn = steps.build_update(steps.Step(trains=("a", "b"), loss=t._quadratic), "fit",
                            plan.spans[0], plan, {{"a": ("a",), "b": ("b",)}},
                            {{"a": tx, "b": tx}})
    out = {{}}
    for n in (1, 8):
      mesh = parallel.make_mesh(jax.devices()[:n])
      step = parallel.data_parallel(fn, mesh, donate_state=False)
      state = t._state(config, t._params())
      batch = t._batch(n=16, seed=3)
      batch["weight"][-3:] = 0.0  # padding rows land on the last device
      for _ in range(3):
        state, m = step(state, parallel.shard_batch(batch, mesh))
      out[n] = {{"w": np.asarray(state.params["a"]["w"]).tolist(),
                "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"])}}
    print(json.dumps(out))
""")


def test_eight_devices_match_one_device():
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  code = _MULTI.format(tests=os.path.join(REPO, "tests"))
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300, check=False)
  assert res.returncode == 0, res.stderr[-2000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(out["8"]["w"], out["1"]["w"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["8"]["loss"], out["1"]["loss"], rtol=1e-5)
  np.testing.assert_allclose(out["8"]["grad_norm"], out["1"]["grad_norm"], rtol=1e-5)
