"""Every fenced code block of README.md and docs/*.md is exercised.

* ``python`` blocks run, in order, one namespace per page (a page's blocks
  build on each other as a reader would type them); a page may give a
  prelude in :data:`PRELUDES` for names it assumes (e.g. a trained ``config``).
* ``bash``/``sh`` blocks run under ``bash -e`` with ``python``, ``pip``, ``cp``,
  ``mkdir``, ``tensorboard`` and ``gcloud`` replaced by shims (``tests/docshim/``), so bash
  does the expansion (variables, loops) and every ``python ...`` command is
  recorded; ``tests/doccheck.py`` then parses each recorded command with its
  program's own argument parser and dry-runs every config it names
  (:func:`vedgan.train.dry_run`). Unknown flags, missing required flags,
  unknown variants, bad overrides and missing scripts fail the test.
* ``text`` blocks are prose (directory trees, tables, messages) and are skipped;
  an untagged block is an error, so nothing escapes by accident.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest

from conftest import REPO

SHIM = os.path.join(REPO, "tests", "docshim")
DOC_FILES = ["README.md"] + sorted(os.path.relpath(p, REPO)
                                   for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
CODE_LANGS = ("python", "bash", "sh")
BLOCK_RE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", flags=re.S | re.M)


def blocks(path: str) -> list[tuple[str, str]]:
  """``[(language, body)]`` of the fenced blocks of ``path`` (relative to the repo)."""
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    return [(m.group(1), m.group(2)) for m in BLOCK_RE.finditer(f.read())]


def test_every_block_has_a_known_language():
  untagged = [(path, body.splitlines()[0] if body else "") for path in DOC_FILES
              for lang, body in blocks(path) if lang not in CODE_LANGS + ("text",)]
  assert not untagged, f"tag these blocks python, bash or text: {untagged}"


def _fake_transformers():
  """A stand-in for ``transformers.pipeline`` (no weights can be downloaded here)."""
  module = types.ModuleType("transformers")

  def pipeline(task, model=None):
    del model
    assert task == "sentiment-analysis"
    return lambda texts, truncation=True: [
        {"label": "POSITIVE" if "good" in t else "NEGATIVE", "score": 0.9} for t in texts]

  module.pipeline = pipeline
  return module


def _happybot_prelude(namespace: dict, tmp_path) -> None:
  """``config`` (unlocked, tiny, RL stage only) and ``workdir`` for docs/happybot.md;
  ``train.run`` is replaced by a dry run plus a check that the reward resolves."""
  from conftest import make_config  # pylint: disable=import-outside-toplevel
  from fakes import FakeTokenizer  # pylint: disable=import-outside-toplevel
  from vedgan import rewards, train  # pylint: disable=import-outside-toplevel

  config = make_config("configs/happybot.py", "demo")
  config.unlock()
  namespace.update(config=config, workdir=str(tmp_path / "happybot"))
  sys.modules["transformers"] = _fake_transformers()

  def run(cfg, workdir):
    train.dry_run(cfg, workdir)
    tokenizer = FakeTokenizer(vocab=["a", "good", "bad", "day"])
    reward = rewards.get(cfg.stages.rl.reward, types.SimpleNamespace(tokenizer=tokenizer))
    responses = np.array([tokenizer.encode("a good day"), tokenizer.encode("a bad day")], np.int32)
    scores = reward._host(np.zeros((2, 1), np.int32), responses)  # pylint: disable=protected-access
    assert scores[0] > scores[1]

  namespace["__run__"] = run


def _trained_run_prelude(namespace: dict, tmp_path) -> None:
  """A tiny trained seq2seq run at ``runs/demo`` (the pages' example workdir)."""
  del namespace
  from conftest import make_config  # pylint: disable=import-outside-toplevel
  from vedgan import train  # pylint: disable=import-outside-toplevel

  train.run(make_config(stages__mle__num_steps=4), str(tmp_path / "runs" / "demo"))


PRELUDES = {"docs/happybot.md": _happybot_prelude, "docs/metrics.md": _trained_run_prelude}


@pytest.mark.parametrize("path", [p for p in DOC_FILES
                                  if any(lang == "python" for lang, _ in blocks(p))])
def test_python_blocks_run(path, tmp_path, monkeypatch):
  namespace: dict = {"__name__": "__doc__"}
  if path in PRELUDES:
    PRELUDES[path](namespace, tmp_path)
    if "__run__" in namespace:
      from vedgan import train  # pylint: disable=import-outside-toplevel
      monkeypatch.setattr(train, "run", namespace.pop("__run__"))
  monkeypatch.chdir(tmp_path)
  for i, (lang, body) in enumerate(blocks(path)):
    if lang == "python":
      exec(compile(body, f"{path} (python block {i})", "exec"), namespace)  # pylint: disable=exec-used
  monkeypatch.delitem(sys.modules, "transformers", raising=False)


def _recorded_commands() -> list[tuple[str, list[str]]]:
  """Runs every shell block under the shims; ``[(page, argv after 'python')]``."""
  commands = []
  env = dict(os.environ, PATH=SHIM + os.pathsep + os.environ.get("PATH", ""))
  for path in DOC_FILES:
    for i, (lang, body) in enumerate(blocks(path)):
      if lang not in ("bash", "sh"):
        continue
      with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "commands.log")
        open(log, "w", encoding="utf-8").close()
        proc = subprocess.run(["bash", "-e", "-c", body], cwd=tmp, capture_output=True, text=True,
                              env=dict(env, DOCSHIM_LOG=log), timeout=60, check=False)
        assert proc.returncode == 0, f"{path} shell block {i} fails under bash: {proc.stderr}"
        with open(log, encoding="utf-8") as f:
          for line in f.read().splitlines():
            argv = line.split("\x1f")[:-1]
            if argv[:2] != ["-m", "pytest"]:
              commands.append((path, argv))
  return commands


def test_shell_blocks_parse_and_dry_run(tmp_path):
  commands = _recorded_commands()
  assert len(commands) > 20  # every page's commands were found
  spec = tmp_path / "commands.json"
  spec.write_text(json.dumps([argv for _, argv in commands]))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "doccheck.py"), str(spec)],
                        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert len(results) == len(commands), proc.stderr[-3000:]
  failed = [f"{page}: python {' '.join(r['argv'])}: {r['error']}"
            for (page, _), r in zip(commands, results) if not r["ok"]]
  assert not failed, "\n".join(failed)
