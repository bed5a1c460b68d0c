"""For every objective and every step spec: exactly the networks the spec trains change.

Each objective's smoke config (tiny networks on the embedded corpus) is set up as
a run would be; then every step function runs once, from the same initial state,
on a batch of the stream it names, as the driver builds it. Every network in
``Step.trains`` must change (some of its parameter groups, and its optimizer
state); every other parameter group and optimizer state must stay bit-identical. Gradient-free steps may
change only the extra state.
"""
import jax
import numpy as np
import pytest

from vedgan import notebook, parallel, train

# (config file, variant): every objective, and the variants whose steps train other networks.
CASES = [("seq2seq", "demo"), ("mojitalk", "demo"), ("happybot", "demo"),
         ("collaborative_ved", "demo"), ("collaborative_ved", "co_ss_joint,demo"),
         ("collaborative_ved", "hred,demo"), ("latent_gan", "demo"),
         ("latent_gan", "mle_demo"), ("topk_gan", "demo")]


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def _host(tree):
  return jax.tree.map(lambda x: np.array(x), jax.device_get(tree))


@pytest.mark.parametrize("config_name, variant", CASES)
def test_each_step_changes_exactly_the_networks_it_trains(config_name, variant, tmp_path):
  config = notebook.load_config(config_name, variant, smoke=True)
  trainer = train.Trainer(config, str(tmp_path))
  trainer.setup(write=False)
  try:
    objective, plan = trainer.objective, trainer.plan
    start = _host(trainer.state)
    networks = objective.networks(start.params)
    assert set(networks) == set(start.opt_state), "one optimizer state per network"
    specs = objective.steps()
    assert set(specs) == set(objective.STEPS)
    checked = 0
    for name, spec in specs.items():
      spans = plan.spans_using([name])
      if not spans:
        continue  # the variant never runs this step
      span = spans[0]
      stream = trainer.inputs.streams[spec.stream]
      batch = parallel.shard_batch(next(stream), trainer.mesh)
      fn = parallel.data_parallel(
          train.per_device_step(objective, name, span, plan, start.params, specs),
          trainer.mesh, donate_state=False)
      state = jax.tree.map(lambda x: x, trainer.state)
      state = state.replace(step=np.int32(span.start))
      new, metrics = fn(state, batch)
      new = _host(new)
      assert int(new.step) == span.start + 1
      assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(metrics)), name
      trains = spec.networks(span.config)
      trained_groups = {g for n in trains for g in networks[n]}
      changed = {g for g in start.params
                 if not _leaves_equal(start.params[g], new.params[g])}
      assert changed <= trained_groups, (
          f"{config_name}:{variant} step {name!r} changed untrained {changed - trained_groups}")
      for net in trains:  # a group shared by networks may stay (e.g. frozen word vectors)
        assert changed & set(networks[net]), (
            f"{config_name}:{variant} step {name!r} left network {net!r} unchanged")
      for net in start.opt_state:
        same = _leaves_equal(start.opt_state[net], new.opt_state[net])
        assert same == (net not in trains), (
            f"{config_name}:{variant} step {name!r}: optimizer state of {net!r} "
            f"{'unchanged' if same else 'changed'}")
      if spec.update is not None:
        assert not _leaves_equal(start.extra, new.extra), f"{name!r} changed no extra state"
      checked += 1
    assert checked, "no step of this variant was checked"
  finally:
    trainer.close()
