"""Runs the ``>>>`` examples of vedgan.relax/losses/schedules and docs/losses.md.

Also checks that every public function documents its shapes (Args/Returns),
cites what it implements, and has a runnable example.

The examples run in one fresh interpreter whose XLA compiler skips LLVM
optimisations (``--xla_backend_optimization_level=0``): every example
compiles a tiny program once, compilation dominates their run time, and the
flag cannot be changed in the shared pytest process. The examples' values do
not depend on it.
"""
import doctest
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from vedgan import losses, relax, schedules
from vedgan.losses import gan, latent, rl, sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
# vedgan.losses is a package: its functions (and examples) live in one module per family.
MODULES = (relax, sequence, latent, rl, gan, schedules)
# Public names that are types rather than functions.
NOT_FUNCTIONS = {"TopKEmbedding", "Schedule"}
CITATION = re.compile(r"Eq\. ?\d|Fig\. ?\d|Algorithm \d|Sec\. ?\d|et al\.")

_RUNNER = r'''
import doctest, importlib, io, json, pathlib, re, sys, traceback

report = {}
for name in sys.argv[2:]:
  module = importlib.import_module(name)
  out = io.StringIO()
  runner = doctest.DocTestRunner(
      optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  for test in doctest.DocTestFinder().find(module):
    runner.run(test, out=out.write)
  result = runner.summarize(verbose=False)
  report[name] = {"failed": result.failed, "attempted": result.attempted,
                  "output": out.getvalue()}

text = pathlib.Path(sys.argv[1]).read_text()
blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
namespace = {"__name__": "docs_losses_md"}
docs = {"blocks": len(blocks), "error": None}
for i, block in enumerate(blocks):
  try:
    exec(compile(block, "docs/losses.md[block %d]" % i, "exec"), namespace)
  except Exception:
    docs["error"] = "block %d:\n%s\n%s" % (i, block, traceback.format_exc())
    break
report["docs"] = docs
print("REPORT " + json.dumps(report))
'''


@pytest.fixture(scope="module")
def example_report():
  flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""),
                               "--xla_backend_optimization_level=0") if f)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags,
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  proc = subprocess.run(
      [sys.executable, "-c", _RUNNER, str(ROOT / "docs" / "losses.md")]
      + [m.__name__ for m in MODULES],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")]
  assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
  return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(example_report, module):
  result = example_report[module.__name__]
  assert result["failed"] == 0, result["output"]
  # Every public function contributes examples.
  n_functions = len(set(module.__all__) - NOT_FUNCTIONS)
  assert result["attempted"] >= 2 * n_functions


def test_docs_losses_md_code_runs(example_report):
  """The ```python blocks of docs/losses.md run, in order, in one namespace."""
  docs = example_report["docs"]
  assert docs["error"] is None, docs["error"]
  assert docs["blocks"] >= 5


def test_the_losses_package_exports_every_family():
  assert sorted(losses.__all__) == sorted(
      name for m in (sequence, latent, rl, gan) for name in m.__all__)
  assert all(hasattr(losses, name) for name in losses.__all__)


def test_docs_losses_md_mentions_every_public_name():
  text = (ROOT / "docs" / "losses.md").read_text()
  for module in MODULES:
    for name in set(module.__all__) - {"Schedule"}:
      assert name in text, f"docs/losses.md does not mention {name}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_function_is_documented(module):
  for name in module.__all__:
    if name in NOT_FUNCTIONS:
      continue
    doc = getattr(module, name).__doc__ or ""
    assert ">>>" in doc, f"{module.__name__}.{name}: no example"
    assert "Args:" in doc and "Returns:" in doc, f"{name}: no Args/Returns"
    assert CITATION.search(doc), f"{module.__name__}.{name}: no citation"


def test_the_example_runner_reports_failures():
  """The runner really detects a failing example (guards against a vacuous
  pass): run it in-process on a docstring with a wrong expected output."""
  def broken():
    """
    >>> 1 + 1
    3
    """
  runner = doctest.DocTestRunner()
  for test in doctest.DocTestFinder().find(broken, "broken", globs={}):
    runner.run(test, out=lambda _: None)
  assert runner.summarize(verbose=False).failed == 1
