"""JAX's persistent compilation cache: where it goes, how it is switched off, who turns it on."""
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import REPO, make_config

from vedgan import compile_cache
from vedgan.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  return tmp_path


def test_choose_follows_env_then_config(clean_env, monkeypatch):
  tmp = clean_env
  auto = str(tmp / "xdg" / "vedgan" / "jax-compilation-cache")
  assert compile_cache.default_dir() == auto
  assert compile_cache.choose("auto") == auto
  assert compile_cache.choose("off") is None
  assert compile_cache.choose(str(tmp / "mine")) == str(tmp / "mine")
  monkeypatch.setenv(compile_cache.ENV, "OFF")        # the environment overrides the config
  assert compile_cache.choose(str(tmp / "mine")) is None
  monkeypatch.setenv(compile_cache.ENV, str(tmp / "env"))
  assert compile_cache.choose("off") == str(tmp / "env")
  monkeypatch.setenv(compile_cache.ENV, "")
  with pytest.raises(ConfigError, match=r"\$VEDGAN_COMPILATION_CACHE is empty"):
    compile_cache.choose("auto")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.delenv(compile_cache.ENV)
  assert compile_cache.choose("auto") == os.path.join(os.path.expanduser("~"), ".cache",
                                                      "vedgan", "jax-compilation-cache")


_PROBE = """
import json, os, sys
import jax, jax.numpy as jnp
from vedgan import compile_cache
config = None
if len(sys.argv) > 1:
  import ml_collections
  config = ml_collections.ConfigDict({"train": {"compilation_cache": sys.argv[1]}})
folder = compile_cache.enable(config)
jax.jit(lambda x: jnp.tanh(x) * 3.0 + x)(jnp.arange(5.0)).block_until_ready()
entries = sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else []
print(json.dumps({"folder": folder, "jax": jax.config.jax_compilation_cache_dir,
                  "entries": len(entries)}))
"""


def _probe(tmp_path, *args, **env_extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", compile_cache.ENV)}
  env.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path / "xdg"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env_extra)
  proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_enable_writes_compiled_programs_to_the_default_folder_and_off_writes_none(tmp_path):
  out = _probe(tmp_path)
  assert out["folder"] == str(tmp_path / "xdg" / "vedgan" / "jax-compilation-cache")
  assert out["jax"] == out["folder"] and out["entries"] >= 1
  out = _probe(tmp_path / "b", "off")
  assert out == {"folder": None, "jax": None, "entries": 0}
  assert not (tmp_path / "b" / "xdg").exists()
  out = _probe(tmp_path / "c", "auto", VEDGAN_COMPILATION_CACHE="off")
  assert out["folder"] is None and not (tmp_path / "c" / "xdg").exists()
  # JAX's own setting is left alone
  out = _probe(tmp_path / "d", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "d" / "jaxown"))
  assert out["folder"] == out["jax"] == str(tmp_path / "d" / "jaxown") and out["entries"] >= 1
  assert not (tmp_path / "d" / "xdg").exists()


def test_an_unwritable_folder_is_a_one_line_config_error(tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, "/proc/vedgan-no/cache")
  updates = []
  fake_config = types.SimpleNamespace(jax_compilation_cache_dir=None,
                                      update=lambda *a: updates.append(a))
  monkeypatch.setattr(compile_cache, "jax", types.SimpleNamespace(config=fake_config))
  with pytest.raises(ConfigError, match=r"cannot be created .*VEDGAN_COMPILATION_CACHE=off"):
    compile_cache.enable(None)
  assert not updates


def test_every_run_opens_through_trainer_which_enables_the_cache(tmp_path, monkeypatch):
  """Training, evaluation, sampling and chat all build a Trainer: it calls enable with the
  run's config before anything compiles."""
  from vedgan import train  # pylint: disable=import-outside-toplevel
  seen = []
  monkeypatch.setattr(compile_cache, "enable", seen.append)
  config = make_config(**{"train.compilation_cache": "off"})
  train.Trainer(config, str(tmp_path / "w"))
  assert len(seen) == 1 and seen[0].train.compilation_cache == "off"
