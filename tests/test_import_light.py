"""vedgan.losses / relax / schedules import only jax and numpy.

Users import these modules into their own JAX code, so importing them must not
pull in Flax models, the data stack (tensorflow_datasets, TensorFlow) or the
training driver.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIGHT_MODULES = ("vedgan.losses", "vedgan.relax", "vedgan.schedules")
# Top-level packages (or vedgan subpackages) that must not be imported.
HEAVY = ("flax", "tensorflow", "tensorflow_datasets", "optax", "orbax",
         "sentencepiece", "ml_collections", "array_record", "vedgan.nn",
         "vedgan.data", "vedgan.papers", "vedgan.objective", "vedgan.steps", "vedgan.train",
         "vedgan.metrics",
         "vedgan.parallel", "vedgan.main")
ALLOWED_IMPORTS = {"__future__", "contextlib", "functools", "math", "numbers", "typing", "jax",
                   "numpy"}


def _is_heavy(name):
  return any(name == h or name.startswith(h + ".") for h in HEAVY)


def test_importing_the_light_modules_in_a_fresh_interpreter():
  """One subprocess imports all three: if none of flax.linen, TFDS, ... is in
  sys.modules afterwards, none of the three imports them."""
  code = ("import json, sys\n"
          f"import {', '.join(LIGHT_MODULES)}\n"
          "print(json.dumps(sorted(sys.modules)))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  modules = json.loads(proc.stdout.strip().splitlines()[-1])
  # The listing is real: it contains what was imported and jax itself.
  assert set(LIGHT_MODULES) <= set(modules) and "jax" in modules
  assert not [m for m in modules if _is_heavy(m)]
  assert "flax.linen" not in modules and "tensorflow_datasets" not in modules


def test_the_light_modules_import_only_jax_numpy_and_the_stdlib():
  """Static check of every import statement, nested ones included (a package: each of
  its files; imports of the light modules themselves are allowed)."""
  for module in LIGHT_MODULES:
    path = ROOT / module.replace(".", "/")
    files = sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    imported = set()
    for file in files:
      for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
          imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
          assert node.level == 0, f"{file}: relative import"
          if not any(node.module == m or node.module.startswith(m + ".")
                     for m in LIGHT_MODULES):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, (module, imported - ALLOWED_IMPORTS)
    assert "jax" in imported
