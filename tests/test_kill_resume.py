"""Kill anywhere, resume exactly: ``python -m vedgan.main`` SIGKILLed at seeded-random points
(mid-step, while a checkpoint is being written, during start-up) and restarted with the same
command ends bit-identical to an uninterrupted run: every leaf of the TrainState (all
networks, optimizer states, baselines, replay corpus, counters, RNG), the data position and
the logged rows (two steps per row, so that most kills and checkpoints fall inside a log
window, whose rows the checkpoint carries). One objective per family: the seq2seq baseline, a latent model (MojiTalk's
CVAE), an RL objective (HappyBot: REINFORCE with its learned baseline) and a GAN (top-k GAN:
two networks and the replay corpus, with a SIGTERM preemption as well).

Time budget: 150 s on an idle 2-core machine (each case runs its uninterrupted reference
beside the faulty chain; processes share a JAX compilation cache, see killharness.py).
"""
import json
import os
import random

import jax
import numpy as np
import pytest
from conftest import restore_numpy_state, tiny_overrides

import killharness as kh

_SHORT = {"train.eval_every": 100_000, "train.eval_batches": 1, "train.num_samples": 0,
          "train.progress": False, "train.log_every": 2, "train.eval_batch_size": 16,
          "train.batch_size": 8, "train.curve_plots": False}

CASES = {
    "seq2seq": ("configs/seq2seq.py:demo", dict(
        tiny_overrides(), **_SHORT, **{"stages.mle.num_steps": 12, "train.checkpoint_every": 3,
                                       "model.dropout": 0.1})),
    "mojitalk_cvae": ("configs/mojitalk.py:demo", dict(_SHORT, **{
        "tokenizer.vocab_size": 300, "model.embed_dim": 16, "model.hidden": 16,
        "model.latent_dim": 6, "model.recognition_hidden": (10, 10),
        "model.prior_hidden": (3, 4), "model.classifier.embed_dim": 8,
        "model.classifier.hidden": 8, "data.max_context_len": 12, "data.max_response_len": 10,
        "data.buckets": (12,), "stage_order": ("base", "cvae"), "stages.base.num_steps": 2,
        "stages.cvae.num_steps": 7, "train.checkpoint_every": 3})),
    "happybot_rl": ("configs/happybot.py:demo", dict(_SHORT, **{
        "tokenizer.vocab_size": 300, "model.embed_dim": 16, "model.hidden": 16,
        "model.classifier.embed_dim": 8, "model.classifier.hidden": 8,
        "data.buckets": (32,), "stages.classifier.num_steps": 2,
        "stages.predictor.num_steps": 2, "stages.mle.num_steps": 2, "stages.rl.num_steps": 5,
        "train.checkpoint_every": 3})),
    "topk_gan": ("configs/topk_gan.py:demo", dict(_SHORT, **{
        "tokenizer.vocab_size": 300, "model.word_dim": 16, "model.encoder_hidden": 16,
        "model.encoder_layers": 1, "model.decoder_hidden": 24, "model.decoder_layers": 2,
        "model.attention_hidden": 16, "model.output_hidden": 24, "model.disc_hidden": 8,
        "model.disc_layers": 1, "model.disc_mlp_hidden": 8, "model.dropout": 0.1,
        "data.max_context_len": 12, "data.max_response_len": 10, "data.buckets": (12,),
        "gan.replay_capacity": 64, "gan.replay_half_life": 4,
        "stages.mle_pretrain.num_steps": 2, "stages.fill.num_steps": 2,
        "stages.d_pretrain.num_steps": 2,
        "stages.adversarial.step": "gadv*1,refill*1,dstep*1,gmle*1,refill*1,dstep*1",
        "stages.adversarial.num_steps": 6, "stages.adversarial.lr_decay_every": 6,
        "train.checkpoint_every": 3})),
}


def _total(overrides):
  return sum(v for k, v in overrides.items() if k.startswith("stages.") and
             k.endswith(".num_steps") and (k.split(".")[1] in overrides.get("stage_order", ())
                                           or "stage_order" not in overrides))


def _plan(name, overrides, seed):
  """Seeded-random faults: a checkpoint write killed before its rename, a kill at a random
  logged step, a kill during start-up; the GAN also gets a SIGTERM, and seq2seq a disk that
  fills while its second checkpoint is written."""
  rng = random.Random(seed)
  total, every = _total(overrides), overrides["train.checkpoint_every"]
  plan, first = [], 1
  if name == "topk_gan":  # first, so that the step it waits for is logged by this process
    plan.append(("sigterm", rng.randint(1, total // 3)))
    first = plan[0][1] + 1
  if name == "seq2seq":   # first, so that this checkpoint is not written earlier
    plan.append(("enospc", 2 * every))
    first = 2 * every + 1
  plan.append(("checkpoint", rng.choice(range(-(-first // every) * every, total, every))))
  plan += [("step", rng.randint(plan[-1][1] + 1, total - 1)),
           ("time", round(rng.uniform(1.0, 3.0), 2))]
  return plan


def _meta(workdir, step):
  with open(os.path.join(str(workdir), "checkpoints", str(step), "meta", "metadata"),
            encoding="utf-8") as f:
    return json.load(f)


def _rows(workdir):
  """Logged rows without wall-clock quantities."""
  with open(os.path.join(str(workdir), "metrics.jsonl"), encoding="utf-8") as f:
    return [{k: v for k, v in json.loads(line).items() if "per_sec" not in k and k != "wall_time"} for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_killed_anywhere_and_restarted_ends_bit_identical(tmp_path, name):
  config, overrides = CASES[name]
  total = _total(overrides)
  ref_dir, run_dir = tmp_path / "reference", tmp_path / "faulty"
  reference = kh.Process(kh.command(config, ref_dir, overrides), str(tmp_path / "reference"))
  # Start the faulty chain once the reference has prepared the data and trained a step.
  kh.wait_for(lambda: kh.trained_steps(ref_dir) >= 1, reference)
  plan = _plan(name, overrides, seed=sorted(CASES).index(name))
  events = kh.run_with_faults(kh.command(config, run_dir, overrides), run_dir, plan,
                              str(tmp_path / "faulty"))
  assert reference.wait() == 0, reference.stderr()[-3000:]

  described = [(e["kind"], e["arg"], e["code"]) for e in events]
  assert len(events) == len(plan) + 1, described
  for event, nxt in zip(events[:-1], events[1:]):
    kind, arg = event["kind"], event["arg"]
    if kind == "sigterm":
      assert event["code"] == 0, event["stderr"]
      saved = int(event["stdout"].split("SIGTERM: checkpoint saved at step ")[1].split(";")[0])
      assert saved in event["checkpoints"] and nxt["resumed_from"] == [saved]
    elif kind == "enospc":
      # The asynchronous write fails: one line naming that checkpoint and the one kept
      # (not the next save's step or an earlier one), exit 2; the next run resumes from it.
      kept = arg - overrides["train.checkpoint_every"]
      assert event["code"] == 2, (described, event["stderr"])
      assert event["stderr"].strip().splitlines()[-1] == (
          f"vedgan: error: writing checkpoint {run_dir}/checkpoints/{arg} failed (No space "
          f"left on device); the checkpoint of step {kept} is kept; free space or fix "
          "permissions and rerun the same command to resume"), event["stderr"]
      assert "Traceback" not in event["stderr"], event["stderr"]
      assert event["checkpoints"] == [kept] and nxt["resumed_from"] == [kept]
    else:
      assert event["code"] == -9, (described, event["stderr"])
    if kind == "checkpoint":
      # Killed after writing everything, before the rename: the unfinished directory is
      # left behind, is not taken as the latest checkpoint and is cleaned up on restart.
      assert f"{arg}.orbax-checkpoint-tmp" in " ".join(event["leftovers"]), event["leftovers"]
      assert arg not in event["checkpoints"] and nxt["resumed_from"] == event["checkpoints"][-1:]
  assert events[-1]["code"] == 0 and events[-1]["leftovers"] == [], events[-1]["stderr"]

  step_ref, state_ref = restore_numpy_state(ref_dir)
  step_run, state_run = restore_numpy_state(run_dir)
  assert step_ref == step_run == total
  leaves_ref, tree_ref = jax.tree.flatten(state_ref)
  leaves_run, tree_run = jax.tree.flatten(state_run)
  assert tree_ref == tree_run and len(leaves_ref) > 5
  for path, a, b in zip(jax.tree_util.tree_flatten_with_path(state_ref)[0], leaves_ref,
                        leaves_run):
    assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path[0])
  assert _meta(ref_dir, total) == _meta(run_dir, total)  # data position, tokenizer
  assert _rows(ref_dir) == _rows(run_dir)
