"""``python -m vedgan.main`` as a user runs it: errors, SIGTERM, 8 simulated devices."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO, restore_numpy_state, tiny_overrides


def _flag(key, value):
  if isinstance(value, tuple):
    value = "(" + ",".join(str(v) for v in value) + ",)"
  return f"--config.{key}={value}"


def cli_args(workdir, devices=None, **extra):
  values = tiny_overrides()
  values.update({k.replace("__", "."): v for k, v in extra.items()})
  args = [sys.executable, "-m", "vedgan.main", "--config", "configs/seq2seq.py:demo",
          "--workdir", str(workdir)] + [_flag(k, v) for k, v in values.items()]
  env = dict(os.environ)
  if devices:
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return args, env


def run_cli(workdir, devices=None, **extra):
  args, env = cli_args(workdir, devices, **extra)
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  return lines[-1] if lines else ""


def test_bad_inputs_on_the_command_line(tmp_path):
  # A typo'd override: absl/ml_collections reject it before anything runs.
  proc = run_cli(tmp_path / "a", **{"train.batchsize": 3})
  assert proc.returncode != 0
  assert "batchsize" in proc.stderr
  assert not (tmp_path / "a").exists()
  # Unknown objective: one line naming the known ones, exit code 2, nothing written.
  proc = run_cli(tmp_path / "b", objective="nope")
  assert proc.returncode == 2
  assert _error_line(proc).startswith("vedgan: error: unknown objective 'nope'")
  assert not (tmp_path / "b").exists()
  # A batch that 8 devices cannot split.
  proc = run_cli(tmp_path / "c", devices=8, **{"train.batch_size": 12})
  assert proc.returncode == 2
  assert "train.batch_size=12 is not divisible by the 8 devices" in _error_line(proc)
  assert not (tmp_path / "c").exists()
  # An unwritable workdir.
  proc = run_cli("/proc/vedgan-test/run")
  assert proc.returncode == 2 and "not writable" in _error_line(proc)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_checkpoints_and_the_same_command_resumes(tmp_path, sig, code):
  """SIGTERM (preemption) and SIGINT (Ctrl-C) both save and stop; exit 0 and 130."""
  args, env = cli_args(tmp_path, **{"stages.mle.num_steps": 100000, "train.log_every": 1})
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline:
    if metrics.exists() and '"split": "train"' in metrics.read_text():
      break
    time.sleep(0.5)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert f"{sig.name}: checkpoint saved" in out
  assert json.loads(out.strip().splitlines()[-1][len("final: "):])["signal"] == sig.name
  steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 100000
  # The same command (with a reachable end) resumes from that step.
  proc = run_cli(tmp_path, **{"stages.mle.num_steps": steps[0] + 2, "train.log_every": 1})
  assert proc.returncode == 0, proc.stderr
  final = json.loads(proc.stdout.strip().splitlines()[-1][len("final: "):])
  assert final["step"] == steps[0] + 2
  rows = [json.loads(l) for l in open(metrics)]
  assert [r["step"] for r in rows if r["split"] == "train"][-2:] == [steps[0] + 1, steps[0] + 2]


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_training(tmp_path):
  common = {"stages.mle.num_steps": 4, "train.batch_size": 16}
  for devices in (1, 8):
    proc = run_cli(tmp_path / f"d{devices}", devices=devices, **common)
    assert proc.returncode == 0, proc.stderr[-2000:]
  step1, s1 = restore_numpy_state(tmp_path / "d1")
  step8, s8 = restore_numpy_state(tmp_path / "d8")
  assert step1 == step8 == 4
  leaves1, leaves8 = jax.tree.leaves(s1["params"]), jax.tree.leaves(s8["params"])
  assert len(leaves1) == len(leaves8) > 0
  for a, b in zip(leaves1, leaves8):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  # Validation metrics (summed over devices) agree as well.
  def val(d):
    rows = [json.loads(l) for l in open(tmp_path / d / "metrics.jsonl")]
    return [r["nll"] for r in rows if r["split"] == "validation"]
  np.testing.assert_allclose(val("d1"), val("d8"), rtol=1e-4)
  # Elastic resume: the 1-device run continued on 8 devices says it is no longer bit-exact.
  assert "warning: resumed on" not in run_cli(tmp_path / "d1", devices=1,
                                             **dict(common, **{"stages.mle.num_steps": 5})).stdout
  proc = run_cli(tmp_path / "d1", devices=8, **dict(common, **{"stages.mle.num_steps": 6}))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert ("warning: resumed on 8 device(s) from a checkpoint written on 1: training continues "
          "with the same global batch and data order, but is no longer bit-identical") in proc.stdout
