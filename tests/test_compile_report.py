"""The per-test compile report (tests/compile_report.py) counts what JAX compiles."""
import json

import jax
import jax.numpy as jnp
import numpy as np

import compile_report


def test_recorder_counts_tracing_and_compiling_of_a_new_program(tmp_path):
  path = tmp_path / "report.jsonl"
  recorder = compile_report.Recorder(str(path))
  recorder.pytest_runtest_protocol(item=None, nextitem=None)
  # A program no other test compiles: traced, lowered and compiled once, inside the test.
  fresh = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.25, axis=0) - 0.125)
  fresh(jnp.arange(7.0)).block_until_ready()
  recorder.pytest_runtest_logfinish("tests/test_x.py::test_y", None)
  jax.jit(lambda x: x + 1.0)(1.0)          # after the test: not counted
  row = json.loads(path.read_text().strip())
  assert row["nodeid"] == "tests/test_x.py::test_y"
  assert row["trace_s"] > 0 and row["lower_s"] > 0 and row["compile_s"] > 0, row
  programs = sum(v for k, v in row.items() if k.startswith("n_"))
  assert programs >= 1 and row["wall_s"] >= row["compile_s"], row
  table = compile_report.summarise(str(path))
  assert table.splitlines()[0].startswith("module tests wall_s trace_s")
  assert table.splitlines()[2].startswith("test_x.py 1 ")


def test_programs_are_named_with_their_compile_time_and_cache_hits(tmp_path):
  path = tmp_path / "report.jsonl"
  recorder = compile_report.Recorder(str(path))

  def make():   # a new function object per call: nothing in memory is reused
    def scaled_tanh(x):
      return jnp.tanh(x * 1.8125) + 0.0625
    return scaled_tanh

  for test in ("tests/test_a.py::test_one", "tests/test_b.py::test_two"):
    recorder.pytest_runtest_protocol(item=None, nextitem=None)
    # traced and lowered again, the second time to the same program, which the session's
    # persistent cache (tests/conftest.py) then already holds
    jax.jit(make())(np.arange(5.0, dtype=np.float32)).block_until_ready()
    recorder.pytest_runtest_logfinish(test, None)
  first, second = (json.loads(line) for line in path.read_text().splitlines())
  assert [p[0] for p in first["programs"]] == ["jit(scaled_tanh)"], first
  assert first["programs"][0][1] > 0 and first["programs"][0][2] == 0, first
  assert [p[0] for p in second["programs"]] == ["jit(scaled_tanh)"], second
  assert second["programs"][0][2] == 1 and second["cache_hits"] == 1, second
  table = compile_report.summarise_programs(str(path)).splitlines()
  assert table[0] == "program compiles cache_hits tests modules compile_s max_s"
  assert table[1].startswith("jit(scaled_tanh) 2 1 2 2 "), table
  assert "programs" not in compile_report.summarise(str(path))
