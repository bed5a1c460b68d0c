"""Installed use: the shipped configs by name or path, the ``vedgan`` command, the metadata."""
import ast
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO

from vedgan import cli, config_files

SHIPPED = ("collaborative_ved", "happybot", "latent_gan", "mojitalk", "oracle", "seq2seq",
           "topk_gan")


def _outside(tmp_path, code=None, args=None, env_extra=None, timeout=300):
  """Runs python (``-c code`` or ``args``) from a folder that is not a checkout, so
  ``import vedgan`` finds the installed package (editable or not), never the checkout."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  env.pop("PYTHONPATH", None)
  argv = [sys.executable] + (["-c", code] if code is not None else args)
  return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_shipped_configs_are_found_in_a_checkout():
  assert config_files.shipped_configs() == SHIPPED
  assert os.path.samefile(config_files.config_dir(), os.path.join(REPO, "configs"))


@pytest.mark.parametrize("spec, expected", [
    ("seq2seq:demo", "seq2seq.py:demo"),
    ("seq2seq.py:demo", "seq2seq.py:demo"),
    ("mojitalk", "mojitalk.py"),
    ("configs/topk_gan.py:medium", "topk_gan.py:medium"),         # the README's form, elsewhere
    ("/nowhere/configs/latent_gan.py:paper", "latent_gan.py:paper"),
])
def test_a_shipped_name_or_configs_path_resolves_to_the_shipped_file(tmp_path, monkeypatch,
                                                                     spec, expected):
  monkeypatch.chdir(tmp_path)  # no configs/ folder here
  resolved = config_files.resolve(spec)
  assert resolved == os.path.join(config_files.config_dir(), expected)
  assert os.path.isfile(resolved.split(":")[0])


def test_existing_files_and_unknown_names_are_left_alone(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  own = tmp_path / "seq2seq.py"
  own.write_text("")   # a user's own file wins over the shipped config of that name
  assert config_files.resolve("seq2seq.py:demo") == "seq2seq.py:demo"
  assert config_files.resolve("nope:demo") == "nope:demo"
  assert config_files.resolve("elsewhere/mojitalk.py") == "elsewhere/mojitalk.py"
  assert config_files.resolve_argv(
      ["prog", "--config", "mojitalk:demo", "--config.seed=3", "--config=nope"]) == [
          "prog", "--config", os.path.join(config_files.config_dir(), "mojitalk.py:demo"),
          "--config.seed=3", "--config=nope"]
  assert config_files.resolve_argv(["p", "--config=topk_gan"]) == [
      "p", "--config=" + os.path.join(config_files.config_dir(), "topk_gan.py")]
  message = config_files.unknown_message("nope.py")
  assert "seq2seq" in message and "--config seq2seq:demo" in message and "\n" not in message
  assert "did you mean" not in message
  assert "did you mean mojitalk? " in config_files.unknown_message("configs/mojitalks.py:demo")


def test_the_installed_package_holds_the_configs_and_no_top_level_configs(tmp_path):
  """Whatever the install (a wheel in CI, editable here): ``vedgan.configs`` imports
  outside a checkout and holds every config; nothing named ``configs`` is installed; the
  builders' ``checksums.tsv`` files are installed with them."""
  code = ("import importlib.util, json, os, vedgan.configs, vedgan.data, vedgan.config_files as c\n"
          "print(json.dumps({'dir': os.path.realpath(c.config_dir()), 'names': c.shipped_configs(),"
          " 'pkg': [os.path.realpath(p) for p in vedgan.configs.__path__],"
          " 'top': importlib.util.find_spec('configs') is not None,"
          " 'sums': sorted(d for d in os.listdir(os.path.dirname(vedgan.data.__file__))"
          "   if os.path.isfile(os.path.join(os.path.dirname(vedgan.data.__file__), d,"
          "                                  'checksums.tsv')))}))")
  proc = _outside(tmp_path, code)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert tuple(out["names"]) == SHIPPED
  assert out["dir"] in out["pkg"]
  assert not out["top"], "a top-level 'configs' package is installed"
  # the builders' registered download checksums are package data
  assert {"daily_dialog", "sst2", "persona_chat", "empathetic_dialogues"} <= set(out["sums"])


def test_metadata_declares_what_vedgan_imports():
  meta = tomllib.loads(open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8").read())
  project = meta["project"]
  assert project["requires-python"] == ">=3.11"
  names = {d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
           for d in project["dependencies"]}
  # etils (epath) is imported by the data code; torch must never be a runtime dependency
  assert {"jax", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "etils",
          "sentencepiece", "ml_collections"} <= names
  assert "torch" not in names
  assert project["scripts"]["vedgan"] == "vedgan.cli:run"
  # ml_dtypes 0.7.0 adds about a second to every process that imports jax
  assert "ml_dtypes!=0.7.0" in project["dependencies"]
  assert {"test", "bench", "tensorboard", "docs", "hf", "stream", "export"} <= set(
      project["optional-dependencies"])


def test_cli_lists_commands_and_rejects_unknown_ones(capsys):
  assert cli.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert all(name in out for name in ("train", "evaluate", "sample", "chat", "export", "prepare"))
  assert cli.main([]) == 2
  assert cli.main(["trian"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["vedgan: error: unknown command 'trian'; use one of train, evaluate, sample, "
                 "chat, export, prepare (vedgan --help)"]
  # each entry exists (found statically: the absl modules cannot share one process's flags)
  for name, (module, entry, _) in cli.COMMANDS.items():
    spec = importlib.util.find_spec(module)
    assert spec is not None, name
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    assert entry in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name


@pytest.mark.slow
def test_vedgan_command_trains_a_shipped_config_by_name_outside_a_checkout(tmp_path):
  """The console script (beside this interpreter) with ``--config seq2seq:demo`` from a
  folder without configs/; then an unknown name gives one line and exit status 2."""
  script = os.path.join(os.path.dirname(sys.executable), "vedgan")
  assert os.path.isfile(script), "the vedgan console command is not installed"
  work = tmp_path / "run"
  flags = ["--config.stages.mle.num_steps=2", "--config.train.eval_every=1000",
           "--config.tokenizer.vocab_size=300", "--config.model.hidden=16",
           "--config.model.embed_dim=8", "--config.train.eval_batches=1",
           "--config.train.num_samples=1", "--config.train.progress=False"]
  proc = subprocess.run([script, "train", "--config", "seq2seq:demo", "--workdir", str(work)]
                        + flags, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '"step": 2' in proc.stdout
  saved = json.loads((work / "config.json").read_text())
  assert saved["objective"] == "seq2seq"
  proc = subprocess.run([script, "train", "--config", "seq2sek:demo", "--workdir",
                         str(tmp_path / "x")], cwd=tmp_path, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith("vedgan: error: --config seq2sek:demo: no such config file")
  assert not (tmp_path / "x").exists()


def test_the_installed_ml_dtypes_is_not_the_slow_importing_one():
  """What pip resolved honours the exclusion above (0.7.0's import: about 1 s per process)."""
  assert importlib.metadata.version("ml_dtypes") != "0.7.0"
