"""Where a resumed run's start-up goes: import, ``Trainer.setup``, the first step.

Starts the seq2seq demo in ``--workdir`` if it has no checkpoint yet and stops it with
SIGTERM (which checkpoints) after ``--steps`` steps, then resumes it ``--repeats`` times,
each in a fresh process pinned to ``--core`` from its first instruction, with the
compilation cache (``WORKDIR-cache``) the first start filled; each resumed
process prints seconds since its start when ``vedgan.train`` is imported, when
``Trainer.setup`` returns and when its first call of the step loop returns, then exits.

  python benchmarks/resume_phases.py --workdir /tmp/vedgan-resume --core 1 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import twins  # pylint: disable=wrong-import-position

CONFIG = "seq2seq"
VARIANT = "demo"


def resumed_start(workdir: str) -> dict:
  """In the measured process: the three timestamps of one resumed start."""
  t0 = time.perf_counter()
  from vedgan import notebook, train  # pylint: disable=import-outside-toplevel
  marks = {"import_s": time.perf_counter() - t0}
  config = notebook.load_config(CONFIG, VARIANT, {"train.progress": False})
  trainer = train.Trainer(config, workdir)
  trainer.setup()
  marks["setup_s"] = time.perf_counter() - t0
  marks["resumed_from"] = trainer.step
  run_steps = train.Trainer._run_steps  # pylint: disable=protected-access

  def first_call_then_exit(self, *args, **kwargs):
    run_steps(self, *args, **kwargs)
    marks["first_steps_s"] = time.perf_counter() - t0
    print(json.dumps({k: round(v, 3) for k, v in marks.items()}), flush=True)
    os._exit(0)  # pylint: disable=protected-access  (no checkpoint, no further step)

  train.Trainer._run_steps = first_call_then_exit  # pylint: disable=protected-access
  trainer.train()
  raise SystemExit("the step loop never ran: the run was already finished")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--core", type=int, default=0)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--steps", type=int, default=8, help="steps of the first start")
  p.add_argument("--resumed", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.resumed:
    resumed_start(args.workdir)
    return
  env = twins.worker_env()
  env["VEDGAN_COMPILATION_CACHE"] = args.workdir.rstrip("/") + "-cache"  # filled by the first
  pin = lambda cmd: twins.pinned_command(cmd, [args.core])
  if not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
    metrics = os.path.join(args.workdir, "metrics.jsonl")
    first = subprocess.Popen(  # pylint: disable=consider-using-with
        pin([sys.executable, "-m", "vedgan.main", "--config", f"{CONFIG}:{VARIANT}",
             "--workdir", args.workdir, "--config.train.log_every=1",
             "--config.train.progress=False"]), env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while first.poll() is None and twins.last_step(metrics) < args.steps:
      time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    if first.wait(timeout=600) != 0:
      raise SystemExit(f"the first start failed (exit {first.returncode})")
  for _ in range(args.repeats):
    load = twins.load_average()[:1]
    out = subprocess.run(pin([sys.executable, os.path.abspath(__file__), "--resumed",
                              "--workdir", args.workdir]), env=env, cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(json.dumps({**json.loads(out), "load_before": load}), flush=True)


if __name__ == "__main__":
  main()
