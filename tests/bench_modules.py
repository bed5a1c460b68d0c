"""The scripts of ``benchmarks/`` imported as modules by the benchmark tests."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")


def load(name: str):
  """``benchmarks/<name>.py`` as a fresh module (``benchmarks/`` on ``sys.path`` for the
  scripts' own imports of each other)."""
  if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
  spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
