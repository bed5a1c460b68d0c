"""Two processes joined by ``jax.distributed`` on 127.0.0.1 train like one process.

Each CLI process has one CPU device and feeds its own half of every global
batch; the cross-process gradient mean runs on JAX's gloo CPU collectives. The
reference is one process with two simulated devices and the same global batch
(8 rows), so the device mesh, the per-device rows and the per-device RNG are
the same in both runs. The two-process run is stopped after 4 of 6 steps and
restarted (both processes), and must end where the uninterrupted reference ends.

Time budget: 60 s on an idle 2-core machine (5 short CLI processes).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, jax_tree_map, tiny_overrides

from vedgan import parallel
from vedgan.errors import ConfigError

STEPS = 6
STOP_AT = 4  # a multiple of train.log_every=2, so both runs log the same windows
# Gradients are averaged over 2 devices either way (one gloo all-reduce across
# processes vs. an in-process all-reduce); a sum of two numbers does not depend on
# the order, so the runs agree to float32 rounding. Measured: bit-identical.
ATOL = 1e-6
TIMEOUT_S = 400


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, num_steps, *extra):
  values = tiny_overrides()
  values.update({"stages.mle.num_steps": num_steps, "train.checkpoint_every": STOP_AT,
                 "train.num_samples": 1})
  flags = []
  for key, value in values.items():
    if isinstance(value, tuple):
      value = "(" + ",".join(str(v) for v in value) + ",)"
    flags.append(f"--config.{key}={value}")
  return [sys.executable, "-m", "vedgan.main", "--config", "configs/seq2seq.py:demo",
          "--workdir", str(workdir), *flags, *extra]


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
  return env


def _start_one_process(workdir, num_steps):
  """The reference: one process, two simulated CPU devices."""
  return [subprocess.Popen(_command(workdir, num_steps), cwd=REPO, env=_env(2),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]


def _start_two_processes(workdir, num_steps):
  """Processes 0 and 1 of a 2-process job, one CPU device each, on a free port.

  Process 0 is told where it stands by flags, process 1 by environment variables.
  """
  address = f"127.0.0.1:{_free_port()}"
  flag_cmd = _command(workdir, num_steps, "--config.train.distributed=True",
                      f"--coordinator_address={address}", "--num_processes=2", "--process_id=0")
  env_cmd = _command(workdir, num_steps, "--config.train.distributed=True")
  env1 = dict(_env(1), JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
  return [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for cmd, env in ((flag_cmd, _env(1)), (env_cmd, env1))]


def _finish(procs):
  """Waits for every process; kills all of them if one fails or they overrun."""
  deadline = time.monotonic() + TIMEOUT_S
  outs = [None] * len(procs)
  while any(o is None for o in outs):
    for i, p in enumerate(procs):
      if outs[i] is None and p.poll() is not None:
        outs[i] = p.communicate()
        if p.returncode != 0:
          for q in procs:
            if q.poll() is None:
              q.send_signal(signal.SIGKILL)
          errs = [(q.communicate()[1] if outs[j] is None else outs[j][1]) for j, q in
                  enumerate(procs)]
          logs = "\n".join(f"--- process {j} rc={q.returncode}\n{err[-3000:]}"
                           for j, (q, err) in enumerate(zip(procs, errs)))
          pytest.fail(f"process {i} exited with {p.returncode}:\n{logs}")
    if time.monotonic() > deadline:
      for q in procs:
        q.send_signal(signal.SIGKILL)
      pytest.fail(f"processes did not finish in {TIMEOUT_S} s")
    time.sleep(0.1)
  return [o[0] for o in outs]


def _final(stdout: str) -> dict:
  lines = [line for line in stdout.splitlines() if line.startswith("final: ")]
  assert len(lines) == 1, stdout[-2000:]
  return json.loads(lines[0][len("final: "):])


def _state_at(workdir, step):
  """The checkpointed state at ``step`` as numpy arrays (no devices, no template)."""
  path = os.path.join(str(workdir), "checkpoints", str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    args = jax_tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _assert_states_close(a, b, what):
  flat_a = dict(_flatten(a))
  flat_b = dict(_flatten(b))
  assert flat_a.keys() == flat_b.keys(), what
  worst = max(float(np.max(np.abs(np.asarray(flat_a[k], np.float64) -
                                  np.asarray(flat_b[k], np.float64)), initial=0.0))
              for k in flat_a if np.asarray(flat_a[k]).dtype.kind in "fiu")
  assert worst <= ATOL, f"{what}: max |difference| {worst:g} > {ATOL:g}"
  return worst


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f"{prefix}/{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, f"{prefix}/{i}")
  else:
    yield prefix, tree


def _rows(workdir, split):
  with open(os.path.join(str(workdir), "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [r for r in rows if r["split"] == split]
  for r in rows:
    r.pop("tokens_per_sec", None)
    r.pop("wall_time", None)
  return rows


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path):
  one, two = tmp_path / "one_process", tmp_path / "two_processes"
  # The reference and the first half of the two-process run, side by side.
  procs = _start_one_process(one, STEPS) + _start_two_processes(two, STOP_AT)
  out_one, out_p0, out_p1 = _finish(procs)
  assert _final(out_one)["step"] == STEPS
  assert _final(out_p0)["step"] == _final(out_p1)["step"] == STOP_AT
  assert sorted(os.listdir(two / "checkpoints")) == [str(STOP_AT)]
  # Only process 0 prints (and writes) results; each process holds 4 of the 8 rows.
  assert "validation:" in out_p0 and "validation:" not in out_p1
  _assert_states_close(_state_at(two, STOP_AT), _state_at(one, STOP_AT),
                       f"step {STOP_AT}: 2 processes vs 1 process")

  # Restart both processes with the full schedule: they resume from step 4.
  out_p0, out_p1 = _finish(_start_two_processes(two, STEPS))
  final_two, final_one = _final(out_p0), _final(out_one)
  assert final_two["step"] == _final(out_p1)["step"] == STEPS
  assert final_one["step"] == STEPS
  worst = _assert_states_close(_state_at(two, STEPS), _state_at(one, STEPS),
                               f"step {STEPS}: resumed 2 processes vs 1 process")
  print(f"max |param difference| at step {STEPS}: {worst:g}")
  # The same validation metrics (step 0 and the end) and training losses, logged once.
  for split in ("validation", "train"):
    rows_two, rows_one = _rows(two, split), _rows(one, split)
    steps_two = [r["step"] for r in rows_two]
    assert len(steps_two) == len(set(steps_two)), f"{split} rows written twice: {steps_two}"
    rows_two = [r for r in rows_two if r["step"] in {x["step"] for x in rows_one}]
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    for a, b in zip(rows_two, rows_one):
      for key, value in b.items():
        if isinstance(value, float):
          np.testing.assert_allclose(a[key], value, rtol=1e-5, err_msg=f"{split} {key}")
  np.testing.assert_allclose(final_two["validation"]["nll"], final_one["validation"]["nll"],
                             rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0), "is not 'host:port'"),
    (dict(coordinator_address="localhost:99999", num_processes=2, process_id=0),
     "is not 'host:port'"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
     "process_id=2 must be in [0, num_processes=2)"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=0, process_id=0),
     "num_processes=0 must be at least 1"),
])
def test_bad_distributed_settings_are_one_line_errors(kwargs, message):
  with pytest.raises(ConfigError, match=r"^[^\n]*$") as e:
    parallel.initialize_distributed(**kwargs)
  assert message in str(e.value)


def test_process_settings_from_the_environment(monkeypatch):
  from vedgan import main  # pylint: disable=import-outside-toplevel
  from conftest import make_config  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("JAX_PROCESS_ID", "one")
  with pytest.raises(ConfigError, match=r"^\$JAX_PROCESS_ID='one' is not a non-negative integer;"):
    main._initialize_distributed(make_config(**{"train.distributed": True}))
  # Not distributed and no process flag: nothing is joined (and the variable is not read).
  main._initialize_distributed(make_config())
  # The variables reach the checks; --dry_run (join=False) checks without joining.
  distributed = make_config(**{"train.distributed": True})
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  with pytest.raises(ConfigError, match=r"^process_id=2 must be in \[0, num_processes=2\)$"):
    main._initialize_distributed(distributed, join=False)
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
  main._initialize_distributed(distributed, join=False)
  assert not jax.distributed.is_initialized()


def test_process_flags_need_distributed(monkeypatch):
  from vedgan import main  # pylint: disable=import-outside-toplevel
  from conftest import make_config  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(main.FLAGS["num_processes"], "present", 1)  # as if given on the command line
  with pytest.raises(ConfigError, match=r"^--coordinator_address/--num_processes/--process_id need "
                     r"--config.train.distributed=True$"):
    main._initialize_distributed(make_config())
