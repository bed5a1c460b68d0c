"""The host allocator's "steady" setting (vedgan/host_malloc.py): what it asks glibc for,
that a freed large buffer then comes back without page faults, who turns it on, and the
one-line errors for a bad setting."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, make_config

from vedgan import configlib, host_malloc, parallel, train
from vedgan.errors import ConfigError


class FakeLibc:
  """Records ``mallopt(param, value)`` calls; glibc's answer is 1 (accepted)."""

  def __init__(self, answer=1):
    self.calls, self.answer = [], answer

  def mallopt(self, param, value):
    self.calls.append((param, value))
    return self.answer

  def gnu_get_libc_version(self):
    return b"2.99"


@pytest.fixture
def fresh(monkeypatch):
  """No setting applied yet in this process's view, no environment override."""
  monkeypatch.setattr(host_malloc, "_applied", {})
  monkeypatch.delenv(host_malloc.ENV, raising=False)


def test_steady_asks_glibc_for_no_mmap_no_trim_and_one_arena(fresh, monkeypatch):
  libc = FakeLibc()
  monkeypatch.setattr(host_malloc, "_glibc", lambda: libc)
  out = host_malloc.configure(make_config())
  # mallopt(3): M_MMAP_MAX = -4, M_TRIM_THRESHOLD = -1 (its largest value), M_ARENA_MAX = -8
  assert sorted(libc.calls) == [(-8, 1), (-4, 0), (-1, 2**31 - 1)]
  assert out["mode"] == "steady" and out["applied"] and "glibc 2.99" in out["detail"]
  assert host_malloc.configure(None) == out and len(libc.calls) == 3  # once per process
  later = host_malloc.configure(make_config(train__host_malloc="system"))  # cannot undo it
  assert later["mode"] == "steady" and later["applied"] and "new process" in later["detail"]
  assert len(libc.calls) == 3


def test_system_and_non_glibc_change_nothing(fresh, monkeypatch):
  libc = FakeLibc()
  monkeypatch.setattr(host_malloc, "_glibc", lambda: libc)
  out = host_malloc.configure(make_config(train__host_malloc="system"))
  assert out == {"mode": "system", "applied": False, "detail": "left as the system set it"}
  monkeypatch.setenv(host_malloc.ENV, "system")  # the environment overrides the config
  assert not host_malloc.configure(make_config())["applied"]
  assert libc.calls == []
  monkeypatch.delenv(host_malloc.ENV)
  monkeypatch.setattr(host_malloc, "_glibc", lambda: None)  # macOS, musl
  out = host_malloc.configure(None)
  assert not out["applied"] and "not glibc" in out["detail"]
  monkeypatch.setattr(host_malloc, "_glibc", lambda: FakeLibc(answer=0))
  assert not host_malloc.configure(None)["applied"]  # glibc refused: said, not hidden


def test_bad_settings_are_one_line_errors(fresh, monkeypatch):
  for bad in ("fast", ""):
    with pytest.raises(ConfigError, match=r"train.host_malloc=.* must be one of") as e:
      host_malloc.choose(bad)
    assert "\n" not in str(e.value)
  monkeypatch.setenv(host_malloc.ENV, "always")
  with pytest.raises(ConfigError, match=r"\$VEDGAN_HOST_MALLOC='always' must be one of"):
    host_malloc.choose("steady")
  monkeypatch.setenv(host_malloc.ENV, " Steady ")
  assert host_malloc.choose("system") == "steady"
  # The config check (configlib.validate, run before anything is written) names every mode.
  with pytest.raises(ConfigError, match=r"config.train.host_malloc='fast' is out of range") as e:
    configlib.validate(make_config(train__host_malloc="fast"), ("mle",))
  assert all(repr(mode) in str(e.value) for mode in host_malloc.MODES), str(e.value)


def test_trainer_sets_it_before_jax_starts_and_rejects_a_bad_value_before_writing(
    fresh, monkeypatch, tmp_path):
  order = []
  real_mesh = parallel.make_mesh
  monkeypatch.setattr(host_malloc, "configure",
                      lambda config: order.append(("malloc", config.train.host_malloc)) or {})
  monkeypatch.setattr(parallel, "make_mesh", lambda *a: order.append("mesh") or real_mesh(*a))
  train.Trainer(make_config(), str(tmp_path / "run"))
  assert order == [("malloc", "steady"), "mesh"]
  monkeypatch.undo()
  monkeypatch.setattr(host_malloc, "_applied", {})
  monkeypatch.delenv(host_malloc.ENV, raising=False)
  with pytest.raises(ConfigError, match=r"train.host_malloc='fast'") as e:
    train.Trainer(make_config(train__host_malloc="fast"), str(tmp_path / "bad"))
  assert "\n" not in str(e.value)
  assert not (tmp_path / "bad").exists()


_PROBE = r"""
import ctypes, json, resource, sys
from vedgan import host_malloc
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 2**20   # above glibc's largest mmap threshold (32 MiB)

def faults(n=4):
  # page faults of n rounds of: allocate SIZE bytes, write every byte, free
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(n):
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    libc.free(p)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
setting = host_malloc.configure(None)
faults()            # the heap grows to hold the buffer once
print(json.dumps({"default": default, "after": faults(), "setting": setting}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or host_malloc._glibc() is None,  # pylint: disable=protected-access
                    reason="glibc only")
@pytest.mark.parametrize("mode", ["steady", "system"])
def test_a_freed_large_buffer_comes_back_without_page_faults(mode):
  """In a fresh process: four rounds of malloc / write 64 MiB / free. glibc's default maps
  and unmaps each one (about 16,000 faults a round, fewer with transparent huge pages);
  after ``steady`` the freed buffer is reused from the heap (next to no faults)."""
  env = dict(os.environ, **{host_malloc.ENV: mode})
  proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120, check=True)
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["setting"]["applied"] == (mode == "steady")
  assert out["default"] >= 4 * 30  # every round faulted (at least its 2 MiB huge pages)
  if mode == "steady":
    assert out["after"] <= out["default"] // 20, out
  else:
    assert out["after"] >= out["default"] // 2, out
