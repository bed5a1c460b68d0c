"""The per-test compile report (tests/compile_report.py) counts what JAX compiles."""
import json

import jax
import jax.numpy as jnp

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
