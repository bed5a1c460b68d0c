"""The Colab notebooks in ``colab/``: structure, cleared outputs, and a smoke run of each.

Each notebook is executed top to bottom with nbclient in a fresh kernel with
``VEDGAN_SMOKE=1`` (the ``demo`` configs shrunk to a few steps per stage and
tiny networks, :mod:`vedgan.notebook`), its runs in a temporary folder and
``VEDGAN_DATA_DIR`` inherited from ``tests/conftest.py``; an exception in any
cell fails the test. Time budget: 180 s for the six smoke runs together on an
idle 2-core machine (``-n 2``); they take about 290 s of CPU time, most of it XLA
compiling each objective's step functions. The per-cell timeout only catches hangs.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

COLAB = os.path.join(REPO, "colab")
NOTEBOOKS = ("quickstart", "mojitalk", "happybot", "collaborative_ved", "latent_gan",
             "topk_gan")
ROLES = ("install", "devices", "config", "train", "sample", "evaluate")
BADGE_URL = "https://colab.research.google.com/github/vedgan/vedgan/blob/main/colab/{}.ipynb"


def _load(name):
  with open(os.path.join(COLAB, f"{name}.ipynb"), encoding="utf-8") as f:
    return json.load(f)


def _cells_with(nb, tag):
  return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def _source(cell):
  return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_notebook_is_there_and_nothing_else():
  found = sorted(f[:-6] for f in os.listdir(COLAB) if f.endswith(".ipynb"))
  assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_structure_and_cleared_outputs(name):
  nb = _load(name)
  assert nb["nbformat"] == 4
  for cell in nb["cells"]:
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [] and cell["execution_count"] is None, (
          f"{name}.ipynb is committed with outputs; run python colab/build_notebooks.py")
  first = _source(nb["cells"][0])
  assert BADGE_URL.format(name) in first and "colab-badge.svg" in first
  for role in ROLES:
    assert len(_cells_with(nb, role)) == 1, f"{name}.ipynb needs one cell tagged {role!r}"
  install = _source(_cells_with(nb, "install")[0])
  # the source is one variable the reader can point at a fork, a wheel or a Drive folder
  assert 'VEDGAN_SOURCE = "git+https://github.com/vedgan/vedgan"' in install
  assert '"install", "-q", VEDGAN_SOURCE]' in install
  assert install.count('"git+https://github.com/vedgan/vedgan"') == 1
  assert 'find_spec("vedgan") is None' in install   # skipped where vedgan is importable
  devices = _source(_cells_with(nb, "devices")[0])
  assert "notebook.show_devices()" in devices and "colab_tpu" not in devices
  config = _source(_cells_with(nb, "config")[0])
  assert "notebook.smoke_mode()" in config and "notebook.load_config(" in config
  train = _source(_cells_with(nb, "train")[0])
  assert "train.run(" in train
  if "MANUAL_DIR" in config:   # paper data on Drive: mounted before the config reads it
    assert config.index("drive.mount(") < config.index("notebook.load_config(")
    assert "notebook.in_colab()" in config


def test_notebooks_match_their_generator():
  out = subprocess.run([sys.executable, os.path.join(COLAB, "build_notebooks.py"), "--check"],
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_config_cell_builds_the_paper_size_run(name, tmp_path, monkeypatch, capsys):
  """Without VEDGAN_SMOKE the config cell picks the paper-size variant (the quick start: its
  demo, which finishes in minutes; its full-size variant was 50,000 steps of a 512-unit model
  on the demo dialogues): every override it names exists there and the plan (train.dry_run)
  is valid; no data is read."""
  monkeypatch.delenv("VEDGAN_SMOKE", raising=False)
  monkeypatch.setenv("VEDGAN_NOTEBOOK_RUNS", str(tmp_path / "runs"))
  nb = _load(name)
  scope = {}
  exec(compile(_source(_cells_with(nb, "devices")[0]), f"{name}-devices", "exec"), scope)
  exec(compile(_source(_cells_with(nb, "config")[0]), f"{name}-config", "exec"), scope)
  assert scope["SMOKE"] is False
  plan = capsys.readouterr().out
  assert "objective " in plan and " steps on " in plan
  steps = int(plan.split("objective ")[-1].split(":")[1].split()[0])
  if name == "quickstart":
    assert steps == 500 and "stage mle" in plan, plan
  else:
    assert steps >= 10_000, f"{name}: {steps} steps is not a paper-size run"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  nbformat = pytest.importorskip("nbformat")
  pytest.importorskip("ipykernel")
  monkeypatch.setenv("VEDGAN_SMOKE", "1")
  monkeypatch.setenv("VEDGAN_NOTEBOOK_RUNS", str(tmp_path / "runs"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # Compilation dominates a smoke run: the kernel inherits conftest's cheap compilation
  # (JAX_DISABLE_MOST_OPTIMIZATIONS) and the session's cache (JAX_COMPILATION_CACHE_DIR).
  monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(COLAB, f"{name}.ipynb"), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError (with the traceback) if a cell fails
  text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs)
  assert "backend cpu" in text                    # the device cell ran
  images = [out for cell in _cells_with(nb, "evaluate") for out in cell.outputs
            if "image/png" in out.get("data", {})]
  assert images, f"{name}.ipynb's evaluation showed no plot"
