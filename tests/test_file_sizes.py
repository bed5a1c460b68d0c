"""The layout rule of docs/architecture.md: no module under ``vedgan/`` above 600 lines
(split a growing module by what it holds rather than letting it collect jobs)."""
import os

from conftest import REPO

LIMIT = 600


def test_no_module_under_vedgan_is_above_the_limit():
  long = {}
  for root, _, files in os.walk(os.path.join(REPO, "vedgan")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
          n = sum(1 for _ in f)
        if n > LIMIT:
          long[os.path.relpath(path, REPO)] = n
  assert not long, f"modules above {LIMIT} lines: {long}"
