"""One-core / two-core twins of the side-by-side rows, pinned subprocesses, compile and
resume tables (issue 24, item 5 and the measuring part of item 4). Standard library only.

Why subprocesses: ``os.sched_setaffinity(0, cores)`` pins the *calling thread* only.
Once JAX has started its CPU client, XLA's Eigen pool (one thread per core of the
affinity at start-up) and its other threads keep the old affinity: pinning the main
process to one core afterwards leaves 16 of 17 threads on both cores and 2 Eigen
threads sharing one core's work (checked with ``/proc/self/task/*/status``). So every
pinned measurement is a fresh process that sets its affinity and then execs the
command (:func:`pinned_command`, what ``taskset`` does; not ``preexec_fn``, which forks
the multithreaded harness): every thread the command ever starts inherits the affinity,
XLA sizes its pool to it, and the harness's own affinity never changes.

A side-by-side row (vedgan and PyTorch timed round-robin in one process) runs twice:
twin ``"1"`` on one core, twin ``"2"`` on two. :func:`finish_row` gives ratios
(PyTorch step time / vedgan step time) only when the one-core twin has one: a row
without it records and prints :data:`WITHHELD` instead of any ratio.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

#: what a row without its one-core twin shows instead of a ratio
WITHHELD = "ratio withheld: no one-core twin"
#: compile-time target of issue 24 (wall seconds per step function)
COMPILE_TARGET_S = 20.0
#: the resumed demo run's target: process start to its first step (seconds)
RESUME_TARGET_S = 5.0


def load_average() -> list[float]:
  """``os.getloadavg()`` rounded to 2 decimals (``[]`` where the OS has none)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def core_sets(available, core: int | None = None) -> dict[str, tuple[int, ...]]:
  """``{"1": (c,), "2": (c, d)}``: the one-core twin's core ``c`` (default: the highest of
  ``available``; a background job often holds core 0) and the two-core twin's cores, ``c``
  and the highest other available core. ``"2"`` is absent with one available core."""
  cores = sorted(set(available))
  if not cores:
    raise ValueError("no cores available")
  c = cores[-1] if core is None else int(core)
  if c not in cores:
    raise ValueError(f"core {c} is not in this process's affinity {cores}")
  out = {"1": (c,)}
  others = [x for x in cores if x != c]
  if others:
    out["2"] = tuple(sorted((c, others[-1])))
  return out


def last_json(stdout: str) -> dict | None:
  """The last line of ``stdout`` that parses as a JSON object (a worker's result)."""
  for line in reversed(stdout.splitlines()):
    line = line.strip()
    if line.startswith("{"):
      try:
        return json.loads(line)
      except ValueError:
        continue
  return None


#: ``python -c PIN CORES PROGRAM ARGS...``: pin, then become PROGRAM (affinity survives exec)
PIN = ("import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
       "os.execvp(sys.argv[2], sys.argv[2:])")


def worker_env() -> dict:
  """The environment of a measuring subprocess: no persistent compilation cache (a cache
  hit would time a disk read, not a compile), ``benchmarks/`` and the repo importable."""
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ)
  for key in ("JAX_COMPILATION_CACHE_DIR", "VEDGAN_COMPILATION_CACHE"):
    env.pop(key, None)
  env["PYTHONPATH"] = os.pathsep.join([here, os.path.dirname(here)]
                                      + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def pinned_command(cmd: list[str], cores) -> list[str]:
  """``cmd`` prefixed so that it runs pinned to ``cores`` from its first instruction."""
  return [sys.executable, "-c", PIN, ",".join(str(c) for c in sorted(cores))] + list(cmd)


def _children_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def run_pinned(cmd: list[str], cores, env: dict | None = None,
               timeout: float | None = None) -> dict:
  """Runs ``cmd`` in a subprocess pinned to ``cores`` from its first instruction.

  Returns ``{"returncode", "stdout", "stderr", "cores", "wall_s", "cpu_s", "load_before",
  "load_after"}``: ``wall_s`` from spawn to exit, ``cpu_s`` the child's user + system
  time (its rusage, all its threads and waited-for children). Run one at a time: the CPU
  time is the change of this process's ``RUSAGE_CHILDREN``.
  """
  cores = tuple(sorted(cores))
  load_before, cpu0, t0 = load_average(), _children_cpu(), time.perf_counter()
  try:
    proc = subprocess.run(pinned_command(cmd, cores), env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
  except subprocess.TimeoutExpired as e:
    code, out, err = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(
        e.stdout, bytes) else (e.stdout or ""), f"timed out after {timeout} s"
  return {"returncode": code, "stdout": out, "stderr": err, "cores": list(cores),
          "wall_s": time.perf_counter() - t0, "cpu_s": _children_cpu() - cpu0,
          "load_before": load_before, "load_after": load_average()}


# -- side-by-side rows ----------------------------------------------------------------------


def twin_ratio(twin: dict) -> dict:
  """``{"ratio", "ratio_per_repetition"}`` of a twin with both steps timed, else ``{}``."""
  v, t = twin.get("vedgan"), twin.get("torch")
  if not v or not t or not v.get("step_s") or not t.get("step_s"):
    return {}
  per_rep = [a / b for a, b in zip(t.get("times_s", []), v.get("times_s", [])) if b]
  return {"ratio": t["step_s"] / v["step_s"],
          "ratio_per_repetition": [round(x, 3) for x in per_rep]}


def finish_row(row: dict, target: float | None = None) -> dict:
  """Adds ratios, targets and the row's load to ``row`` (with ``row["twins"]`` =
  ``{"1": twin, "2": twin}``, each ``{"cores", "load_before", "load_after", "vedgan",
  "torch", ...}``) and returns it.

  Ratios (and met/not met) are recorded only when the one-core twin has a ratio; else
  every twin's ratio is removed and ``row["ratio_withheld"]`` is :data:`WITHHELD`. A
  row-level ratio (result files older than the twins) is always removed.
  """
  twins = row.setdefault("twins", {})
  for twin in twins.values():
    for key in ("ratio", "ratio_per_repetition", "met", "target"):
      twin.pop(key, None)
  for key in ("ratio_withheld", "ratio_tokens_per_s", "ratio_per_repetition", "met"):
    row.pop(key, None)        # also the row-level ratio of files written before the twins
  one = twin_ratio(twins.get("1", {}))
  if not one:
    if any(twin_ratio(t) for t in twins.values()) or "1" not in twins:
      row["ratio_withheld"] = WITHHELD
  else:
    for twin in twins.values():
      r = twin_ratio(twin)
      if r:
        twin.update(r, target=target,
                    met=None if target is None else bool(r["ratio"] >= target))
  ordered = [twins[k] for k in sorted(twins)]
  if ordered:
    row["load_before"] = ordered[0].get("load_before", [])
    row["load_after"] = ordered[-1].get("load_after", [])
  return row


def side_by_side_targets(rows: list[dict]) -> list[dict]:
  """One target row per twin with a ratio and a target."""
  out = []
  for r in rows:
    for key, twin in sorted(r.get("twins", {}).items()):
      if "ratio" in twin and twin.get("target") is not None:
        cores = "1 core" if key == "1" else f"{key} cores"
        out.append({"target": f"{r['name']} [{r['size']}] on {cores} >= {twin['target']}x "
                              "PyTorch tokens/s", "value": round(twin["ratio"], 3),
                    "met": twin["met"]})
  return out


def _ms(x) -> str:
  return "—" if x is None else f"{x * 1e3:.1f} ms"


def _load1(twin: dict) -> str:
  b, a = twin.get("load_before") or [None], twin.get("load_after") or [None]
  return f"{b[0]} → {a[0]}"


def _twin_cells(row: dict, key: str) -> list[str]:
  twin = row.get("twins", {}).get(key)
  if twin is None:
    return ["not run", row.get("ratio_withheld", ""), ""]
  if "error" in twin:
    return [f"failed: {str(twin['error'])[:60]}", "", ""]
  v, t = twin.get("vedgan", {}), twin.get("torch", {})
  if "ratio" in twin:
    ratio = (f"**{twin['ratio']:.2f}x** ("
             + ", ".join(f"{x:.2f}" for x in twin.get("ratio_per_repetition", [])) + ")")
  elif row.get("ratio_withheld"):
    ratio = row["ratio_withheld"]
  else:
    ratio = "—"
  return [f"{_ms(v.get('step_s'))} / {_ms(t.get('step_s'))}", ratio, _load1(twin)]


def side_by_side_table(rows: list[dict], short=lambda sizes: "") -> list[str]:
  """Markdown lines: one line per row, the one-core and the two-core twin side by side
  (vedgan / PyTorch step time, ratio, 1-minute load before → after)."""
  lines = ["| step | size | 1 core: vedgan / PyTorch | 1 core: ratio | 1 core: load | "
           "2 cores: vedgan / PyTorch | 2 cores: ratio | 2 cores: load | target | "
           "met (1 core / 2 cores) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    twins = r.get("twins", {})
    met = " / ".join({True: "yes", False: "no"}.get(twins.get(k, {}).get("met"), "—")
                     for k in ("1", "2"))
    target = next((t["target"] for t in twins.values() if t.get("target") is not None),
                  r.get("target"))
    lines.append(f"| {r['name']} | {r['size']} {short(r.get('sizes') or {})} | "
                 + " | ".join(_twin_cells(r, "1") + _twin_cells(r, "2"))
                 + f" | {'—' if target is None else f'{target}x'} | {met} |")
  return lines


# -- compile table ---------------------------------------------------------------------------


def compile_met(row: dict) -> bool | None:
  """Whether a step function compiled within :data:`COMPILE_TARGET_S` wall seconds."""
  wall = row.get("compile_s")
  return None if wall is None else bool(wall <= COMPILE_TARGET_S)


def compile_table(rows: list[dict]) -> list[str]:
  """Markdown lines: compile wall and CPU time per step function and size, the worker
  process's wall and CPU time, the cores, the load, and the 20 s target met or not."""
  lines = [f"| objective | stage / step | size | compile wall | compile CPU | worker process "
           f"wall / CPU | cores | load before → after | <= {COMPILE_TARGET_S:.0f} s wall |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    proc = r.get("process", {})
    name = r.get("name", "?/?")
    where = (f"{r.get('objective') or name.split('/')[0]} | {r.get('stage', '?')} / "
             f"{r.get('step') or name.split('/')[-1]} | {r['size']}")
    if "compile_s" not in r:
      lines.append(f"| {where} | failed: {str(r.get('error', ''))[:80]} | | | | | |")
      continue
    cpu = r.get("compile_cpu_s")
    lines.append(
        f"| {where} | {r['compile_s']:.1f} s | {'—' if cpu is None else f'{cpu:.1f} s'} | "
        f"{proc.get('wall_s', float('nan')):.1f} s / {proc.get('cpu_s', float('nan')):.1f} s | "
        f"{','.join(str(c) for c in proc.get('cores', []))} | "
        f"{(proc.get('load_before') or [None])[0]} → {(proc.get('load_after') or [None])[0]} | "
        f"{'met' if compile_met(r) else 'not met'} |")
  return lines


# -- resumed run -----------------------------------------------------------------------------


def first_train_row(metrics_path: str, after_step: int) -> dict | None:
  """The first ``split == "train"`` row of a run's ``metrics.jsonl`` with ``step >
  after_step`` (``None`` if there is none yet)."""
  try:
    with open(metrics_path, encoding="utf-8") as f:
      lines = f.readlines()
  except OSError:
    return None
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue          # a line being written
    if row.get("split") == "train" and int(row.get("step", -1)) > after_step:
      return row
  return None


def last_step(metrics_path: str) -> int:
  """The largest train ``step`` in ``metrics.jsonl`` (0 when none)."""
  steps = [0]
  try:
    with open(metrics_path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if row.get("split") == "train":
          steps.append(int(row["step"]))
  except OSError:
    return 0  # no metrics.jsonl yet: the run has logged no step
  return max(steps)


def resume_table(rows: list[dict]) -> list[str]:
  """Markdown lines of the resume measurement: one line per start of the run."""
  lines = ["| start | compilation cache | resumed from step | process start → first step "
           f"| first step (step no.) | load before → after | < {RESUME_TARGET_S:.0f} s |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    t = r.get("first_step_s")
    met = "—" if t is None or not r.get("resumed_from") else (
        "met" if t < RESUME_TARGET_S else "not met")
    lines.append(f"| {r['start']} | {r['cache']} | {r.get('resumed_from')} | "
                 f"{'—' if t is None else f'{t:.2f} s'} | {r.get('first_step')} | "
                 f"{(r.get('load_before') or [None])[0]} → {(r.get('load_after') or [None])[0]}"
                 f" | {met} |")
  return lines
