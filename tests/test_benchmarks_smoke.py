"""Smoke test of the benchmark harness (benchmarks/run.py) at micro sizes; not a timed test.

Runs the seq2seq side-by-side row of the ``micro`` suite once (its one-core twin: one
worker process pinned to one core) and checks the JSON it writes; checks the analytic FLOP count and the growth fit against hand-
computed values, and the PyTorch latent-GAN steps at micro sizes.
Budget: <= 15 s on an idle 2-core CPU.
"""
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from bench_modules import load as _load


def _has_torch():
  return importlib.util.find_spec("torch") is not None


def test_micro_side_by_side_writes_the_json_fields(tmp_path):
  run = _load("run")
  out = tmp_path / "micro.json"
  # the one-core twin only: one pinned worker process (the two-core twin is the same code)
  argv = ["--suite", "micro", "--sections", "side_by_side", "--only", "seq2seq/mle",
          "--repeats", "1", "--cores", "1", "--out", str(out)]
  if not _has_torch():
    argv.append("--skip-torch")
  run.main(argv)
  result = json.loads(out.read_text())
  m = result["machine"]
  assert m["cpu_count"] >= 1 and m["jax"] and m["cpu_model"]
  assert m["host_malloc"]["mode"] in ("steady", "system")  # the allocator the steps ran with
  assert result["peak"]["start"]["best_flops_per_s"] > 0
  assert result["peak"]["end"]["dtype"] == "float32"
  [row] = result["side_by_side"]
  assert row["name"] == "seq2seq/mle" and row["size"] == "micro" and list(row["twins"]) == ["1"]
  assert row["sizes"] == {"B": 4, "S": 6, "T": 5, "E": 16, "H": 16, "V": 64, "tie": False,
                          "attention": "general", "dropout": 0.0, "dtype": "float32"}
  twin = row["twins"]["1"]
  assert "error" not in twin, twin.get("error")
  core = max(os.sched_getaffinity(0))
  assert twin["cores"] == twin["affinity"] == [core] and twin["threads"] == 1
  assert twin["xla_threads"] == 1       # pinned before JAX started: XLA's pool has one thread
  assert len(twin["load_before"]) == len(twin["load_after"]) == 3 and twin["cpu_s"] > 0
  v = twin["vedgan"]
  assert v["tokens_per_step"] == 4 * 5                 # full-length responses, no padding
  assert v["step_s"] > 0 and v["compile_s"] > 0 and v["xla_flops"] > 0
  assert math.isclose(v["tokens_per_s"], 20 / v["step_s"], rel_tol=1e-9)
  assert v["memory"]["peak_estimate_bytes"] > v["memory"]["temp_size_in_bytes"] >= 0
  assert np.isfinite(v["last_metrics"]["loss"])
  assert math.isclose(v["utilisation"],
                      v["model_flops"] / v["step_s"] / twin["peak"]["best_flops_per_s"])
  if _has_torch():
    t = twin["torch"]
    assert twin["torch_threads"] == 1
    assert math.isclose(twin["ratio"], t["step_s"] / v["step_s"])
    assert twin["target"] == 1.3 and twin["met"] == (twin["ratio"] >= 1.3)
    assert any(x["target"].startswith("seq2seq/mle [micro] on 1 core") for x in result["targets"])
  text = run.markdown(result)
  assert "| seq2seq/mle | micro (B=4 S=6 T=5 E=16 H=16 V=64)" in text


def test_seq2seq_flops_match_a_hand_count():
  h = _load("harness")
  # b=2 s=3 t=4 e=5 h=6 v=7: encoder 4752, memory+general 1296, bridge 288, decoder 3168,
  # attention 576, combine 1152, output 672 -> forward 11904 multiply-adds x2.
  f = h.seq2seq_flops(2, 3, 4, 5, 6, 7, tie=False, attention="general")
  assert f["model_flops"] == 3 * 11904
  assert f["output_share"] == pytest.approx(672 / 11904)
  tied = h.seq2seq_flops(2, 3, 4, 5, 6, 7, tie=True, attention="dot")
  assert tied["model_flops"] == 3 * (11904 - 432 - 672 + 2 * 2 * 4 * (6 * 5 + 5 * 7))


def test_growth_fit_recovers_a_power_law():
  h = _load("harness")
  fit = h.fit_growth([1, 2, 4, 8], [3.0, 12.0, 48.0, 192.0])
  assert fit["exponent"] == pytest.approx(2.0, abs=1e-6)
  assert fit["coefficient"] == pytest.approx(3.0, rel=1e-6)
  assert fit["r2"] == pytest.approx(1.0)


@pytest.mark.skipif(not _has_torch(), reason="PyTorch (the bench extra) is not installed")
def test_torch_latent_gan_steps_update_their_networks():
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(1)
  tm = _load("torch_models")
  step = tm.LatentGANStep(vocab_size=20, embed_dim=4, gen_hidden=8, disc_hidden=6, rec_hidden=6,
                          latent_dim=3, length=5, learning_rate=1e-2)
  real = np.full((3, 5), 5, np.int64)
  real[:, :2] = [[7, 8]]
  batch = step.batch({"real": real})
  g0 = step.gen.out.weight.detach().clone()
  d0 = step.disc.out.weight.detach().clone()
  loss_g = step.gen_step(batch)
  assert torch.isfinite(loss_g)
  assert not torch.equal(g0, step.gen.out.weight) and torch.equal(d0, step.disc.out.weight)
  loss_d = step.disc_step(batch)
  assert torch.isfinite(loss_d) and not torch.equal(d0, step.disc.out.weight)
  # the rollout obeys the blank rule: nothing but blanks after the first blank
  _, soft, hard, tokens = step.rollout(16)
  assert soft.shape == hard.shape == (16, 5, 20)
  for row in tokens.tolist():
    if 5 in row:
      assert set(row[row.index(5):]) == {5}
  np.testing.assert_array_equal(hard.detach().sum(-1).numpy(), np.ones((16, 5)))


def test_joint_step_ab_one_pass_equals_two_passes_after_a_step(capsys):
  """``benchmarks/joint_step_ab.py`` at demo size: CO+SS(joint)'s one-pass step and the
  earlier two-pass one give the same loss and, after one Adam step from the same state, the
  same parameters to float32 round-off (both are timed once)."""
  result = _load("joint_step_ab").main(["--variant", "co_ss_joint,demo", "--repeats", "1"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  a, b = result["loss"]["two passes"], result["loss"]["one pass"]
  assert math.isclose(a, b, rel_tol=1e-5) and a > 0
  assert result["max_abs_param_diff_after_one_step"] < 1e-5
  assert result["two_passes_ms"] > 0 and result["one_pass_ms"] > 0
