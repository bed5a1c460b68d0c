"""Where the suite's time goes: JAX tracing, lowering and XLA compilation per test.

``VEDGAN_TEST_COMPILE_REPORT=FILE python -m pytest ...`` makes ``tests/conftest.py``
register ``Recorder``: for each test (setup, call and teardown together) it sums JAX's own
monitoring events in the test process (jaxpr tracing, lowering to MLIR, the backend compile,
persistent-cache hits and misses, and each compiled program's name, compile time and
whether the persistent cache held it) and appends one JSON line per test to FILE (each
xdist worker appends its own lines). Subprocesses and notebook kernels a test starts are not
counted: their time shows only in the test's wall time.

``python tests/compile_report.py FILE [--top N]`` prints the totals and the modules ranked
by wall time with the share spent tracing and compiling; ``--programs`` ranks the programs
by name instead (how often each was compiled, in how many modules, and what it cost): a
name compiled in many modules and rarely found in the cache is a program the tests could
share.
"""
import argparse
import collections
import json
import os
import time

_DURATIONS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "compile_s",     # includes cache reads
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read_s",
}
_EVENTS = {"/jax/compilation_cache/cache_hits": "cache_hits",
           "/jax/compilation_cache/cache_misses": "cache_misses"}


class Recorder:
  """A pytest plugin: one JSON line per test with its wall time and JAX compile totals."""

  def __init__(self, path: str):
    self.path = path
    self.current = None
    from jax import monitoring  # pylint: disable=import-outside-toplevel
    monitoring.register_event_duration_secs_listener(self._duration)
    monitoring.register_event_listener(self._event)

  def _duration(self, event, seconds, fun_name="", **_):
    if self.current is not None and event in _DURATIONS:
      self.current[_DURATIONS[event]] += seconds
      if _DURATIONS[event] == "compile_s":   # programs by compile time: what a cache saves
        bucket = "under_0.1s" if seconds < 0.1 else "0.1_to_1s" if seconds < 1 else "over_1s"
        self.current["n_" + bucket] += 1
        self.current["s_" + bucket] += seconds
        # [name, seconds, 1 if the persistent cache held it]; the cache event of a program
        # comes inside its compile duration, so it is the last one seen
        self.programs.append([fun_name, round(seconds, 4), int(self.hit)])
        self.hit = False

  def _event(self, event, **_):
    if self.current is not None and event in _EVENTS:
      self.current[_EVENTS[event]] += 1
      self.hit = event == "/jax/compilation_cache/cache_hits"

  def pytest_runtest_protocol(self, item, nextitem):
    del item, nextitem
    self.current, self.start = collections.Counter(), time.perf_counter()
    self.programs, self.hit = [], False

  def pytest_runtest_logfinish(self, nodeid, location):
    del location
    if self.current is None:
      return
    row = {k: round(v, 3) for k, v in self.current.items()}
    row.update(nodeid=nodeid, wall_s=round(time.perf_counter() - self.start, 3),
               programs=self.programs)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    self.current = None


def summarise(path: str, top: int = 25) -> str:
  """The totals and the ``top`` modules by wall time, as a text table."""
  modules = collections.defaultdict(collections.Counter)
  with open(path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      row.pop("programs", None)
      module = row.pop("nodeid").split("::")[0]
      modules[module].update({k: v for k, v in row.items()})
      modules[module]["tests"] += 1
  total = sum(modules.values(), collections.Counter())
  cols = ("tests", "wall_s", "trace_s", "lower_s", "compile_s", "cache_read_s",
          "cache_hits", "cache_misses") + tuple(
              p + b for b in ("under_0.1s", "0.1_to_1s", "over_1s") for p in ("n_", "s_"))
  lines = ["module " + " ".join(cols)]
  for name, row in [("ALL", total)] + sorted(modules.items(), key=lambda kv: -kv[1]["wall_s"])[:top]:
    lines.append(os.path.basename(name) + " " + " ".join(
        f"{row[c]:.0f}" if c in ("tests", "cache_hits", "cache_misses") or c[:2] == "n_" else f"{row[c]:.1f}"
        for c in cols))
  return "\n".join(lines)


def summarise_programs(path: str, top: int = 25) -> str:
  """The ``top`` program names by total compile time: compiles, cache hits, tests and
  modules that compiled one, seconds in all and the largest single compile."""
  names = collections.defaultdict(lambda: {"compiles": 0, "hits": 0, "s": 0.0, "max_s": 0.0,
                                           "tests": set(), "modules": set()})
  with open(path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      for name, seconds, hit in row.get("programs", ()):
        n = names[name]
        n["compiles"] += 1
        n["hits"] += hit
        n["s"] += seconds
        n["max_s"] = max(n["max_s"], seconds)
        n["tests"].add(row["nodeid"])
        n["modules"].add(row["nodeid"].split("::")[0])
  lines = ["program compiles cache_hits tests modules compile_s max_s"]
  for name, n in sorted(names.items(), key=lambda kv: -kv[1]["s"])[:top]:
    lines.append(f"{name.replace(' ', '_')} {n['compiles']} {n['hits']} {len(n['tests'])} "
                 f"{len(n['modules'])} {n['s']:.1f} {n['max_s']:.2f}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("path")
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--programs", action="store_true",
                      help="rank the programs by name instead of the modules")
  args = parser.parse_args()
  print((summarise_programs if args.programs else summarise)(args.path, args.top))


if __name__ == "__main__":
  main()
