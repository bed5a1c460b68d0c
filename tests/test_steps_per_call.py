"""``train.steps_per_call=K``: K steps per jitted call (``lax.scan``) train exactly as one step
per call: the same final parameters (to 1e-6) and the same logged rows.

Time budget (with tests/test_nonfinite.py): 45 s on an idle 2-core machine.
"""
import json
import os

import jax
import numpy as np
import pytest
from conftest import make_config

from vedgan import train
from vedgan.errors import ConfigError

GAN_TINY = dict(tokenizer__vocab_size=300, model__embed_dim=8, model__gen_hidden=16,
                model__disc_hidden=8, model__rec_hidden=16, model__latent_dim=4,
                model__position_features=4, train__batch_size=8, train__eval_batch_size=16,
                train__eval_batches=1, train__num_samples=0, train__eval_every=10_000,
                train__checkpoint_every=10_000, train__progress=False)


def _train(config, workdir):
  """Trains; returns (final params as numpy, logged rows without timings, step-fn keys)."""
  trainer = train.Trainer(config, str(workdir))
  trainer.setup()
  try:
    trainer.train()
    params = jax.device_get(trainer.state.params)
    keys = sorted(trainer.step_fns)
  finally:
    trainer.close()
  with open(os.path.join(str(workdir), "metrics.jsonl"), encoding="utf-8") as f:
    rows = [{k: v for k, v in json.loads(line).items() if k not in ("tokens_per_sec", "wall_time")} for line in f]
  return params, rows, keys


def _same(a_rows, b_rows, a_params, b_params, params_atol=1e-6):
  """Same logged rows (1e-6) and parameters (``params_atol``: Adam divides each update by
  the root of its running squared gradient, so a parameter whose gradients are all near
  zero moves by ``lr * g / |g|`` and carries the round-off of ``g`` at the scale of
  ``lr``)."""
  assert [(r["step"], r["split"]) for r in a_rows] == [(r["step"], r["split"]) for r in b_rows]
  for ra, rb in zip(a_rows, b_rows):
    assert ra.keys() == rb.keys()
    for k in ra:
      if isinstance(ra[k], float):
        np.testing.assert_allclose(ra[k], rb[k], rtol=1e-6, atol=1e-6, err_msg=k)
      else:
        assert ra[k] == rb[k], k
  for a, b in zip(jax.tree.leaves(a_params), jax.tree.leaves(b_params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=params_atol)


@pytest.mark.slow
@pytest.mark.default_codegen  # one step per call vs four, at float32 round-off
def test_seq2seq_four_steps_per_call_match_one(tmp_path):
  common = dict(stages__mle__num_steps=11, train__log_every=5, model__dropout=0.1,
                data__buckets=(16,))
  p1, rows1, keys1 = _train(make_config(**common), tmp_path / "k1")
  p4, rows4, keys4 = _train(make_config(train__steps_per_call=4, **common), tmp_path / "k4")
  # Calls of 4, then 1 up to each log row (steps 5, 10) and the stage end (11).
  assert keys1 == [("mle", "mle", 1)] and keys4 == [("mle", "mle", 1), ("mle", "mle", 4)]
  assert [r["step"] for r in rows4 if r["split"] == "train"] == [5, 10, 11]
  _same(rows1, rows4, p1, p4)


@pytest.mark.slow
@pytest.mark.default_codegen  # one step per call vs four, at float32 round-off
def test_gan_cycle_two_disc_one_gen_matches_single_steps(tmp_path):
  common = dict(GAN_TINY, stages__gan__step="disc*2,gen*1", stages__gan__num_steps=12,
                train__log_every=6)
  p1, rows1, _ = _train(make_config("configs/latent_gan.py", "demo", **common), tmp_path / "k1")
  p4, rows4, keys4 = _train(make_config("configs/latent_gan.py", "demo",
                                        train__steps_per_call=4, **common), tmp_path / "k4")
  # A call never crosses the cycle: two "disc" steps per call, one "gen" step.
  assert keys4 == [("gan", "disc", 2), ("gan", "gen", 1)]
  # 1e-5: with the rollout noise drawn row by row (relax.gumbel_noise) a few output biases
  # with near-zero gradients differ by up to 5e-6 after 12 Adam steps (lr 1e-3) between a
  # scan of steps and single steps (drawn as one array, they matched at 1e-6: float32
  # round-off of differently compiled programs, amplified by Adam); a step fed the wrong
  # batch or key moves parameters by ~lr, 100x more.
  _same(rows1, rows4, p1, p4, params_atol=1e-5)


def test_call_lengths_stop_at_every_boundary():
  config = make_config(stages__mle__num_steps=20, train__log_every=6, train__eval_every=8,
                       train__checkpoint_every=9, train__steps_per_call=4)
  trainer = train.Trainer(config, "/nonexistent-vedgan-workdir")
  span = trainer.spans[0]
  lengths, trainer.step = [], 0
  while trainer.step < span.end:
    n = trainer._call_length(span, "mle", 4)  # pylint: disable=protected-access
    lengths.append(n)
    trainer.step += n
  # Boundaries after steps 6, 8, 9, 12, 16, 18 and the end (20).
  assert lengths == [4, 2, 2, 1, 3, 4, 2, 2]


def test_steps_per_call_must_be_positive(tmp_path):
  with pytest.raises(ConfigError, match=r"train.steps_per_call=0 is out of range"):
    train.run(make_config(train__steps_per_call=0), str(tmp_path))
