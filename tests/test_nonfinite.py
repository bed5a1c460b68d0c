"""The non-finite guard of the training step (``train.nonfinite``, ``train.max_consecutive_skips``).

Non-finite values are injected deterministically: a wrapped step builder turns the loss or one
network's new parameters into NaN at chosen steps; the end-to-end case uses an absurd learning
rate with clipping off. Time budget (with tests/test_steps_per_call.py): 45 s on an idle
2-core machine.
"""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config, restore_numpy_state, tiny_overrides

import killharness as kh

from vedgan import parallel, train
from vedgan.errors import VedganError
from vedgan.steps import TrainState
from vedgan.papers.latent_gan.algorithm import LatentGAN
from vedgan.papers.seq2seq.algorithm import Seq2SeqObjective

#: The latent GAN demo shrunk to seconds: two networks updated by alternating steps.
GAN_TINY = dict(tokenizer__vocab_size=300, model__embed_dim=8, model__gen_hidden=16,
                model__disc_hidden=8, model__rec_hidden=16, model__latent_dim=4,
                model__position_features=4, train__batch_size=8, train__eval_batch_size=16,
                train__eval_batches=1, train__num_samples=0, train__eval_every=10_000,
                train__checkpoint_every=10_000, train__log_every=4, train__progress=False,
                stages__gan__num_steps=8)


def _poison(monkeypatch, cls, name, at_steps, what):
  """Makes step function ``name`` of objective ``cls`` return a NaN ``what`` when the
  incoming ``state.step`` is in ``at_steps`` (the 1-based step ``s + 1`` of the logs):
  ``what`` is ``"loss"`` or ``"params:<network>"``."""
  del cls  # every objective's steps are built by train.per_device_step
  original = train.per_device_step
  bad_steps = jnp.asarray(sorted(at_steps), jnp.int32)

  def patched(objective, step_name, span, plan, params, specs=None):
    step = original(objective, step_name, span, plan, params, specs)
    if step_name != name:
      return step

    def poisoned(state, batch):
      new, metrics = step(state, batch)
      bad = jnp.any(state.step == bad_steps)
      if what == "loss":
        metrics = dict(metrics, loss=jnp.where(bad, jnp.nan, metrics["loss"]))
      else:
        net = what.split(":")[1]
        params = dict(new.params)
        params[net] = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), params[net])
        new = new.replace(params=params)
      return new, metrics

    return poisoned

  monkeypatch.setattr(train, "per_device_step", patched)


def _rows(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def test_guard_step_keeps_the_old_state_and_names_the_groups():
  mesh = parallel.make_mesh()

  def step(state, batch):
    factor = batch["x"].mean()  # [B] -> scalar: NaN when the batch holds a NaN
    params = {"a": state.params["a"] * 2.0, "b": state.params["b"] * factor}
    metrics = {"loss": parallel.pmean(factor), "count": jnp.int32(3)}
    return state.replace(step=state.step + 1, params=params,
                         extra={"seen": state.extra["seen"] + 1}), metrics

  fn = parallel.data_parallel(train.guard_step(step), mesh, donate_state=False)
  state = TrainState(step=jnp.int32(7), rng=jnp.zeros(2, jnp.uint32),
                     params={"a": jnp.ones(2), "b": jnp.full(3, 2.0)},
                     opt_state={"a": jnp.zeros(2), "b": jnp.zeros(3)},
                     extra={"seen": jnp.int32(0)})
  names = [n for n, _ in train.guard_groups(state)]
  assert names == ["params of a", "params of b", "optimizer state of a",
                   "optimizer state of b", "extra state seen"]
  good, (metrics, guard) = fn(state, {"x": jnp.full(8, 3.0)})
  assert bool(guard["ok"]) and np.all(guard["finite"])
  np.testing.assert_array_equal(good.params["b"], [6.0, 6.0, 6.0])
  assert int(good.step) == 8 and int(good.extra["seen"]) == 1
  bad, (metrics, guard) = fn(state, {"x": jnp.array([1.0] * 7 + [np.nan])})
  assert not bool(guard["ok"]) and np.isnan(float(metrics["loss"]))
  np.testing.assert_array_equal(guard["finite"], [True, False, True, True, True])
  # Nothing of the step is applied, except the step count.
  assert int(bad.step) == 8 and int(bad.extra["seen"]) == 0
  np.testing.assert_array_equal(bad.params["a"], [1.0, 1.0])
  np.testing.assert_array_equal(bad.params["b"], [2.0, 2.0, 2.0])


def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _poison(monkeypatch, Seq2SeqObjective, "mle", {4}, "loss")  # step 5
  config = make_config(stages__mle__num_steps=12, train__log_every=4,
                       train__checkpoint_every=2)
  with pytest.raises(VedganError) as info:
    train.run(config, str(tmp_path))
  message = str(info.value)
  assert "\n" not in message
  assert re.search(r"^non-finite loss at step 5 of stage 'mle'; the update was not applied "
                   r"and the run stopped; the last good checkpoint \(step 4\) is kept", message)
  # Step 6 (a checkpoint step) was never saved: the check runs before every save.
  assert _checkpoint_steps(tmp_path) == [2, 4]
  step, state = restore_numpy_state(tmp_path)
  assert step == 4 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state)
                           if np.issubdtype(np.asarray(x).dtype, np.floating))
  assert [r["step"] for r in _rows(tmp_path)] == [4]


@pytest.mark.slow
def test_skip_on_a_gan_counts_steps_and_stops_after_consecutive_skips(tmp_path, monkeypatch):
  # The generator's update of step 4 (the 2nd "gen" step of "disc*1,gen*1") is dropped.
  _poison(monkeypatch, LatentGAN, "gen", {3}, "params:generator")
  config = make_config("configs/latent_gan.py", "demo", train__nonfinite="skip", **GAN_TINY)
  assert train.run(config, str(tmp_path / "a"))["step"] == 8
  rows = _rows(tmp_path / "a")
  # One train row per step function of each logging window: the skip is the gen step's.
  assert sorted((r["step"], r["step_name"], r["skipped_nonfinite"]) for r in rows) == [
      (4, "disc", 0.0), (4, "gen", 1.0), (8, "disc", 0.0), (8, "gen", 0.0)]
  assert all(np.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
  _, state = restore_numpy_state(tmp_path / "a")
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def test_skip_stops_after_max_consecutive_skips(tmp_path, monkeypatch):
  # Every step from step 3 on is non-finite: the third in a row (step 5) stops the run.
  _poison(monkeypatch, Seq2SeqObjective, "mle", set(range(2, 12)), "params:model")
  config = make_config(stages__mle__num_steps=12, train__log_every=4, train__nonfinite="skip",
                       train__max_consecutive_skips=3)
  with pytest.raises(VedganError, match=r"^3 consecutive non-finite steps \(train.max_consecu"
                     r"tive_skips\) up to step 5 of stage 'mle', the last with non-finite params "
                     r"of model; the update was not applied and the run stopped; no "
                     r"checkpoint was written"):
    train.run(config, str(tmp_path))


@pytest.mark.slow  # a whole training run / subprocess: the slow tier
def test_an_absurd_learning_rate_stops_the_cli_with_one_line(tmp_path):
  workdir = tmp_path / "run"
  values = dict(tiny_overrides(), **{"stages.mle.num_steps": 6, "stages.mle.learning_rate": 1e38,
                                     "optimizer.grad_clip_norm": 0.0,
                                     "train.checkpoint_every": 1, "train.eval_batches": 1})
  proc = kh.Process(kh.command("configs/seq2seq.py:demo", workdir, values), str(tmp_path / "cli"))
  assert proc.wait() == 2
  err = [line for line in proc.stderr().splitlines() if line.strip()]
  match = re.match(r"vedgan: error: non-finite (.*) at step (\d) of stage 'mle'; ", err[-1])
  assert match, err[-1]
  # Step 1 moves every weight by ~1e38 (Adam's first step is lr * sign(g)); the next
  # forward pass overflows.
  assert "loss" in match.group(1).split(", ") and match.group(2) == "2"
  # Every step before the first non-finite one was checkpointed; nothing after it.
  assert _checkpoint_steps(workdir) == [1]
  _, state = restore_numpy_state(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))
