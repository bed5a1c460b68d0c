"""Mixed precision (``model.dtype="bfloat16"``) and fixed-shape free-running steps, per objective.

For one main train step of every objective (tiny sizes, the fixtures of each
objective's own test module):

* ``bfloat16``: the step runs, every floating parameter and optimizer-state
  leaf stays float32, the reported loss is finite and within a stated
  tolerance of the float32 step's loss from the same initial state (bf16 has an
  8-bit mantissa, ~3 significant digits: ``rtol = 0.05``, ``atol = 0.05``);
* the jitted step (float32), called on 3 different batches of the same shapes,
  is traced and compiled once (``_cache_size() == 1`` and a trace counter): the
  free-running decoders inside (RL rollouts, Gumbel-softmax and top-k
  generators) are single ``lax.scan``s over a static maximum length.

Time budget: about 25 s (one float32 and one bfloat16 compile per objective).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan import parallel, train
from vedgan.plan import Plan, StageSpan

RTOL = ATOL = 0.05


def _seq2seq(dtype, seed=0):
  import test_seq2seq as t  # pylint: disable=import-outside-toplevel
  obj, config = t._objective(model__dropout=0.0, model__dtype=dtype)
  batch = {k: jnp.asarray(v) for k, v in t._batch(seed).items()}
  return obj, obj.init(jax.random.key(0), batch), config.stages.mle, "mle", \
      lambda s: {k: jnp.asarray(v) for k, v in t._batch(s).items()}


def _happybot(dtype):
  import test_happybot as t  # pylint: disable=import-outside-toplevel
  obj, config, state = t._objective(model__dtype=dtype, model__dropout=0.0)
  return obj, state, config.stages.rl, "rl", t._jbatch


def _mojitalk(dtype):
  import test_mojitalk as t  # pylint: disable=import-outside-toplevel
  from conftest import make_config  # pylint: disable=import-outside-toplevel
  from vedgan.papers.mojitalk import algorithm  # pylint: disable=import-outside-toplevel
  config = make_config("configs/mojitalk.py", "demo", **t.TINY, model__dtype=dtype)
  obj = algorithm.MojiTalkObjective(config, t.TOK)
  obj.steps_per_epoch = 10
  state = jax.jit(obj.init)(jax.random.key(0), t._batch())
  # The CVAE step (Eq. 2: encoder, recognition/prior nets, decoder, BoW); the RL step runs
  # the same networks plus the classifier and compiles twice as long.
  return obj, state, config.stages.cvae, "cvae", t._batch


def _collaborative_ved(dtype):
  import test_collaborative_ved as t  # pylint: disable=import-outside-toplevel
  cfg, obj, state, _ = t._objective("co", model__dtype=dtype)

  def batch(seed):
    b = t._batch()
    rng = np.random.default_rng(seed)
    out = b["response_out"]
    b["response_out"] = np.where(out > 3, rng.integers(6, 25, out.shape), out).astype(np.int32)
    return {k: jnp.asarray(v) for k, v in b.items()}

  return obj, state, cfg.stages.co, "ae", batch


def _latent_gan(dtype):
  import test_latent_gan as t  # pylint: disable=import-outside-toplevel
  obj, state, batch = t._objective(**{"model.dtype": dtype})
  batches = lambda seed: {k: jnp.asarray(np.roll(v, seed, axis=0)) for k, v in batch.items()}
  return obj, state, obj.config.stages.gan, "gen", batches


def _topk_gan(dtype):
  import test_topk_gan as t  # pylint: disable=import-outside-toplevel
  obj, state = t._objective(model__dtype=dtype, model__decoder_layers=1)
  return obj, state, obj.config.stages.adversarial, "gadv", \
      lambda s: {k: jnp.asarray(v) for k, v in t._batch(s).items()}


OBJECTIVES = {"seq2seq": _seq2seq, "happybot": _happybot, "mojitalk": _mojitalk,
              "collaborative_ved": _collaborative_ved, "latent_gan": _latent_gan,
              "topk_gan": _topk_gan}


def _loss(metrics):
  for key in ("loss", "g_adv_loss", "g_loss", "total", "policy"):
    if key in metrics:
      return float(metrics[key])
  raise AssertionError(f"no loss metric among {sorted(metrics)}")


def _floating_dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)
          if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)}


def _run(name, dtype, num_steps):
  obj, state, stage, step_name, batch_fn = OBJECTIVES[name](dtype)
  traces = []

  def counted(state, batch):
    traces.append(1)
    # the driver's own update of the step spec, in a stage from step 0
    span = StageSpan(step_name, stage, 0, 1 << 30, ((step_name, 1),))
    return train.per_device_step(obj, step_name, span, Plan((span,)), state.params)(state, batch)

  mesh = parallel.make_mesh(jax.devices()[:1])
  step = parallel.data_parallel(counted, mesh, donate_state=False)
  out = []
  for i in range(num_steps):
    new_state, metrics = step(state, batch_fn(i))
    out.append((new_state, jax.device_get(metrics)))
  return step, len(traces), out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_bf16_step_and_no_recompilation(name):
  step32, traces32, runs32 = _run(name, "float32", 3)
  # Same shapes, different batches: one trace, one compiled executable.
  assert traces32 == 1 and step32._cache_size() == 1, (traces32, step32._cache_size())

  _, _, runs16 = _run(name, "bfloat16", 1)
  state16, metrics16 = runs16[0]
  assert _floating_dtypes(state16.params) == {"float32"}
  assert _floating_dtypes(state16.opt_state) <= {"float32"}
  loss16, loss32 = _loss(metrics16), _loss(runs32[0][1])
  assert np.isfinite(loss16)
  np.testing.assert_allclose(loss16, loss32, rtol=RTOL, atol=ATOL)
