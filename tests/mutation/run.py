"""Runs the semantic mutants against the fast tests and reports killed / survived.

  python tests/mutation/run.py                      # every mutant, 2 at a time
  python tests/mutation/run.py --only latent_gan    # names containing "latent_gan"
  python tests/mutation/run.py --list

For each mutant: a private copy of the tracked tree gets the one edit, and only the tests
the mutant names run there (``pytest -x``, no xdist). A mutant is *killed* when those tests
fail, *survived* when they pass, *invalid* when its text no longer occurs exactly once (the
catalogue is stale: fix the mutant), *error* when pytest could not run them (exit status
2-5, or the timeout). The unmutated tree runs the same tests first; a failure
there stops the run, since a kill would mean nothing. One compilation cache and one prepared
data directory are shared by all runs, so unchanged programs compile once.
Writes a Markdown table and a JSON record to ``--out`` (default ``/tmp/vedgan-mutation``).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import json
import os
import pkgutil
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))   # tests/, for ``mutation.*``

from mutation import mutants as catalogue  # pylint: disable=wrong-import-position
from mutation.mutant import Mutant  # pylint: disable=wrong-import-position


def all_mutants() -> list[Mutant]:
  found = []
  for info in pkgutil.iter_modules(catalogue.__path__):
    module = importlib.import_module(f"mutation.mutants.{info.name}")
    found.extend(module.MUTANTS)
  names = [m.name for m in found]
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise SystemExit(f"error: mutant names used twice: {duplicated}; rename one of each")
  return found


def tracked_files() -> list[str]:
  out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                       cwd=REPO, check=True, capture_output=True, text=True).stdout
  return [p for p in out.splitlines() if os.path.isfile(os.path.join(REPO, p))]


def copy_tree(dest: str, files: list[str]) -> None:
  for rel in files:
    target = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(REPO, rel), target)


def run_tests(tree: str, tests: tuple[str, ...], env: dict, timeout: float,
              extra: tuple[str, ...] = ()) -> tuple[int, str]:
  cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", *extra, *tests]
  try:
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return 124, "timed out"
  lines = (proc.stdout + proc.stderr).strip().splitlines()
  failed = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
  return proc.returncode, "; ".join(failed + lines[-1:])


@dataclasses.dataclass
class Result:
  name: str
  status: str          # killed | survived | invalid | error
  seconds: float
  detail: str


def run_one(mutant: Mutant, files: list[str], workroot: str, env: dict, timeout: float,
            tests: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Result:
  start = time.time()
  tree = tempfile.mkdtemp(prefix="mutant-", dir=workroot)
  try:
    copy_tree(tree, files)
    path = os.path.join(tree, mutant.path)
    with open(path, encoding="utf-8") as f:
      text = f.read()
    try:
      text = mutant.apply(text)
    except ValueError as e:
      return Result(mutant.name, "invalid", time.time() - start, str(e))
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    env = dict(env, PYTHONPATH=tree)
    rc, tail = run_tests(tree, tests or mutant.tests, env, timeout, extra)
    # pytest exits 1 when a test failed; 2-5 (interrupted, internal or usage error, nothing
    # collected) and timeouts say nothing about the mutant.
    status = {0: "survived", 1: "killed"}.get(rc, "error")
    return Result(mutant.name, status, time.time() - start, tail)
  finally:
    shutil.rmtree(tree, ignore_errors=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", default="",
                      help="comma-separated; run mutants whose name contains any of these")
  parser.add_argument("--jobs", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
  parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "vedgan-mutation"))
  parser.add_argument("--list", action="store_true")
  parser.add_argument("--tests", default="",
                      help="comma-separated tests run for every mutant instead of its own "
                           "(e.g. a checkout's older test files, for a before/after report)")
  parser.add_argument("--pytest-args", default="",
                      help='extra pytest arguments, e.g. "-m \'not slow\'"')
  parser.add_argument("--skip-baseline", action="store_true",
                      help="do not first run the named tests on the unmutated tree")
  args = parser.parse_args(argv)
  wanted = [w for w in args.only.split(",") if w] or [""]
  mutants = [m for m in all_mutants() if any(w in m.name for w in wanted)]
  if args.list:
    for m in mutants:
      print(f"{m.name:45s} {m.path}\n    {m.why}")
    return 0
  if not mutants:
    raise SystemExit(f"error: no mutant name contains {args.only!r}; see --list")
  os.makedirs(args.out, exist_ok=True)
  workroot = tempfile.mkdtemp(prefix="vedgan-mutation-")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             VEDGAN_DATA_DIR=os.path.join(workroot, "data"),
             JAX_COMPILATION_CACHE_DIR=os.path.join(workroot, "xla-cache"))
  files = tracked_files()
  override = tuple(t for t in args.tests.split(",") if t)
  extra = tuple(shlex.split(args.pytest_args))
  start = time.time()
  if not args.skip_baseline:
    tests = override or tuple(sorted({t for m in mutants for t in m.tests}))
    print(f"baseline: {len(tests)} test ids on the unmutated tree ...", flush=True)
    rc, tail = run_tests(REPO, tests, dict(env, PYTHONPATH=REPO), args.timeout * 4, extra)
    if rc != 0:
      raise SystemExit(f"error: the named tests fail without any mutation ({tail}); "
                       "fix them before judging mutants")
    print(f"baseline passed in {time.time() - start:.0f} s", flush=True)
  results = []
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = [pool.submit(run_one, m, files, workroot, env, args.timeout, override, extra)
               for m in mutants]
    for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
      r = fut.result()
      results.append(r)
      print(f"[{i}/{len(mutants)}] {r.status:8s} {r.seconds:5.0f} s  {r.name}", flush=True)
  shutil.rmtree(workroot, ignore_errors=True)
  wall = time.time() - start
  order = {m.name: k for k, m in enumerate(mutants)}
  results.sort(key=lambda r: order[r.name])
  counts = {s: sum(r.status == s for r in results)
            for s in ("killed", "survived", "invalid", "error")}
  by_name = {m.name: m for m in mutants}
  lines = [f"# Mutation report: {len(results)} mutants, {counts['killed']} killed, "
           f"{counts['survived']} survived, {counts['invalid']} invalid, {counts['error']} error, "
           f"{wall:.0f} s wall",
           "", "| mutant | status | s | what it breaks |", "|---|---|---|---|"]
  cell = lambda text: text.replace("|", "\\|")      # a "|" would end the table cell
  lines += [f"| `{r.name}` | {r.status} | {r.seconds:.0f} | {cell(by_name[r.name].why)} |"
            for r in results]
  with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
    json.dump({"wall_s": wall, "counts": counts,
               "results": [dataclasses.asdict(r) for r in results]}, f, indent=1)
  print("\n".join(lines[:1]) + f"\nreport: {os.path.join(args.out, 'report.md')}")
  for r in results:
    if r.status != "killed":
      print(f"  {r.status}: {r.name} ({r.detail})")
  return 0 if counts["killed"] == len(results) else 1


if __name__ == "__main__":
  sys.exit(main())
