"""Package-level checks: doctests, import hygiene, public names."""
import doctest
import importlib
import subprocess
import sys

import pytest

MODULES = ["bleu", "diversity", "collapse", "embedding", "likelihood",
           "classifier", "topk_check", "sweep", "result"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
  module = importlib.import_module(f"vedgan.metrics.{name}")
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0


def test_import_pulls_in_no_training_stack():
  code = ("import sys, vedgan.metrics; "
          "bad = [m for m in sys.modules if m.split('.')[0] in "
          "('flax', 'tensorflow', 'tensorflow_datasets', 'optax', 'orbax', "
          "'matplotlib', 'nltk', 'sacrebleu')]; print(bad)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_public_names():
  import vedgan.metrics as m
  for name in ("corpus_bleu", "bleu", "self_bleu", "distinct_n"):
    assert callable(getattr(m, name))
  assert set(m.__all__) <= set(dir(m))
