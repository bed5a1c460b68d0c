"""Initialisation compiled at XLA's -O1 (``vedgan.objective.jit_init``) gives the parameters
the default -O3 compile gives, bit for bit, for every objective.

The option only shortens compilation (docs/benchmarks.md); a run's initial state, and so
every number of a run, must not depend on it. Marked ``optimised``: the library applies the
option only when JAX is not already asked for cheap compilation, as in a user's process.
The check can fail: -O0 gives different parameters (measured at demo and smoke sizes).
"""
import jax
import numpy as np
import pytest

from vedgan import notebook, parallel, train

CASES = [("seq2seq", "demo"), ("mojitalk", "demo"), ("happybot", "demo"),
         ("collaborative_ved", "demo"), ("latent_gan", "demo"), ("topk_gan", "demo")]
DEFAULT = {"xla_backend_optimization_level": 3}


@pytest.mark.slow  # six smoke set-ups, each compiling its initialiser twice, fully optimised
@pytest.mark.optimised
@pytest.mark.parametrize("config_name, variant", CASES)
def test_init_at_o1_is_bit_identical_to_the_default_compile(config_name, variant, tmp_path):
  assert jax.default_backend() == "cpu" and not jax.config.read("jax_disable_most_optimizations")
  trainer = train.Trainer(notebook.load_config(config_name, variant, smoke=True), str(tmp_path))
  trainer.setup(write=False)  # initialises through objective.jit_init, as every run does
  try:
    obj, mesh = trainer.objective, trainer.mesh
    example = parallel.shard_batch(trainer._peek_batch(trainer.plan.step_name(0)), mesh)
    rng = jax.random.key(int(trainer.config.seed))
    default = jax.jit(obj.init, out_shardings=parallel.replicated(mesh),
                      compiler_options=DEFAULT)(rng, example)
    assert jax.tree.structure(trainer.state) == jax.tree.structure(default)
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(default),
                                 jax.tree.leaves(trainer.state)):
      assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (
          f"{config_name}: {jax.tree_util.keystr(path)} differs from the default compile")
  finally:
    trainer.close()
