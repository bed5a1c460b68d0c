"""The benchmark harness's bookkeeping (issue 24, items 4 and 5), with fake rows and timers.

Nothing here times anything: one-core/two-core twins and the ratio they may carry, the
load average recorded per row, the markdown tables, the pinned subprocess (a child
pinned to one core while the harness keeps its affinity), the compile table's 20 s
target and the resume measurement's reading of ``metrics.jsonl``. The only JAX work is
loading one config to list its step functions.
"""
import json
import os
import sys

import pytest

from bench_modules import load as _load


twins = _load("twins")


def _twin(vedgan_times, torch_times=None, load=(1.0, 2.0), cores=(1,)):
  """A worker's result as run_twin returns it; step_s is the median of three times."""
  out = {"cores": list(cores), "load_before": [load[0], 0.5, 0.5],
         "load_after": [load[1], 0.5, 0.5],
         "vedgan": {"step_s": sorted(vedgan_times)[1], "times_s": list(vedgan_times)}}
  if torch_times:
    out["torch"] = {"step_s": sorted(torch_times)[1], "times_s": list(torch_times)}
  return out


def _row(**twin_map):
  return {"name": "seq2seq/mle", "size": "small", "sizes": {"B": 4},
          "twins": {k.lstrip("t"): v for k, v in twin_map.items()}}


def test_ratios_need_the_one_core_twin():
  # one-core: vedgan 0.1 s, PyTorch 0.2 s (medians) -> 2.0x; two cores: 0.1 vs 0.12 -> 1.2x
  both = twins.finish_row(_row(t1=_twin([0.1, 0.1, 0.2], [0.2, 0.2, 0.3]),
                               t2=_twin([0.1, 0.1, 0.1], [0.12, 0.12, 0.12], (2.0, 3.0), (0, 1))),
                          target=1.3)
  one, two = both["twins"]["1"], both["twins"]["2"]
  assert one["ratio"] == pytest.approx(2.0) and two["ratio"] == pytest.approx(1.2)
  assert one["ratio_per_repetition"] == [2.0, 2.0, 1.5]
  assert (one["met"], two["met"]) == (True, False) and "ratio_withheld" not in both
  assert [t["met"] for t in twins.side_by_side_targets([both])] == [True, False]
  # no one-core twin: no ratio anywhere, a marker instead, no target row
  lone = twins.finish_row(dict(_row(t2=_twin([0.1, 0.1, 0.1], [0.12, 0.12, 0.12])),
                               ratio_tokens_per_s=1.2), target=1.3)   # a pre-twins ratio
  assert "ratio" not in lone["twins"]["2"] and "met" not in lone["twins"]["2"]
  assert "ratio_tokens_per_s" not in lone
  assert lone["ratio_withheld"] == twins.WITHHELD == "ratio withheld: no one-core twin"
  assert twins.side_by_side_targets([lone]) == []
  # a one-core twin that failed, or ran without PyTorch, is no twin either
  for bad in ({"error": "worker exited 1", "cores": [1]}, _twin([0.1, 0.1, 0.1])):
    row = twins.finish_row(_row(t1=bad, t2=_twin([0.1, 0.1, 0.1], [0.2, 0.2, 0.2])), 1.3)
    assert row["ratio_withheld"] == twins.WITHHELD and "ratio" not in row["twins"]["2"]
  # finishing again after the one-core twin is dropped removes the stale ratio
  del both["twins"]["1"]
  twins.finish_row(both, 1.3)
  assert "ratio" not in both["twins"]["2"] and both["ratio_withheld"] == twins.WITHHELD


def test_side_by_side_records_the_load_of_each_twin_and_row(monkeypatch):
  run = _load("run")
  loads = iter([[1.5, 1, 1], [2.5, 1, 1], [3.5, 1, 1], [4.5, 1, 1]])
  monkeypatch.setattr(twins, "load_average", lambda: next(loads))
  monkeypatch.setattr(run, "twins", twins)

  failing = []

  def fake_run_pinned(cmd, cores, env=None, timeout=None):
    if len(cores) in failing:
      return {"returncode": 1, "stdout": "", "stderr": "ValueError: x\n", "cores": list(cores),
              "wall_s": 1.0, "cpu_s": 0.5, "load_before": [0.0], "load_after": [0.0]}
    spec = json.loads(cmd[cmd.index("--spec") + 1])
    assert cmd[cmd.index("--worker") + 1] == "row" and spec["name"] == "seq2seq/mle"
    assert "JAX_COMPILATION_CACHE_DIR" not in env      # compile times, not cache reads
    before = twins.load_average()
    t = 0.1 * len(cores)
    result = {"sizes": {"B": 4}, "vedgan": {"step_s": t, "times_s": [t]},
              "torch": {"step_s": 0.3, "times_s": [0.3]}}
    return {"returncode": 0, "stdout": "noise\n" + json.dumps(result) + "\n", "stderr": "",
            "cores": list(cores), "wall_s": 1.0, "cpu_s": 0.5, "load_before": before,
            "load_after": twins.load_average()}

  monkeypatch.setattr(twins, "run_pinned", fake_run_pinned)
  monkeypatch.setattr(run.os, "sched_getaffinity", lambda _: {0, 1})
  args = run.parse_args(["--suite", "micro", "--only", "seq2seq/mle"])
  [row] = json.loads(json.dumps(run.side_by_side(run.SUITES["micro"], args)))
  one, two = row["twins"]["1"], row["twins"]["2"]
  assert (one["cores"], two["cores"]) == ([1], [0, 1])
  assert (one["load_before"], one["load_after"]) == ([1.5, 1, 1], [2.5, 1, 1])
  assert (two["load_before"], two["load_after"]) == ([3.5, 1, 1], [4.5, 1, 1])
  assert (row["load_before"], row["load_after"]) == ([1.5, 1, 1], [4.5, 1, 1])
  assert one["ratio"] == pytest.approx(3.0) and two["ratio"] == pytest.approx(1.5)
  assert row["sizes"] == {"B": 4} and "sizes" not in one
  # --cores 2: the two-core twin alone, its ratio withheld
  loads = iter([[1.0, 1, 1], [2.0, 1, 1]])
  args = run.parse_args(["--suite", "micro", "--only", "seq2seq/mle", "--cores", "2"])
  [row] = run.side_by_side(run.SUITES["micro"], args)
  assert list(row["twins"]) == ["2"] and row["ratio_withheld"] == twins.WITHHELD
  # the one-core worker fails: its error is recorded, the sizes come from the other twin
  loads = iter([[1.0, 1, 1], [2.0, 1, 1]])
  failing.append(1)
  args = run.parse_args(["--suite", "micro", "--only", "seq2seq/mle"])
  [row] = run.side_by_side(run.SUITES["micro"], args)
  assert row["twins"]["1"]["error"] == "worker exited 1: ValueError: x"
  assert row["sizes"] == {"B": 4} and row["ratio_withheld"] == twins.WITHHELD
  assert "ratio" not in row["twins"]["2"]


def test_a_failed_worker_is_a_one_line_error(monkeypatch):
  run = _load("run")
  monkeypatch.setattr(run, "twins", twins)
  stderr = ("Traceback (most recent call last):\n  File x\nKeyError: 'tokens_out'\n"
            "--------------------\nFor simplicity, JAX has removed its internal frames.\n")
  monkeypatch.setattr(twins, "run_pinned", lambda cmd, cores, env=None, timeout=None: {
      "returncode": 1, "stdout": "", "stderr": stderr, "cores": list(cores), "wall_s": 1.0,
      "cpu_s": 0.5, "load_before": [1.0], "load_after": [2.0]})
  twin = run.run_twin("objective", {}, (1,))
  assert twin == {"error": "worker exited 1: KeyError: 'tokens_out'", "cores": [1],
                  "wall_s": 1.0, "cpu_s": 0.5, "load_before": [1.0], "load_after": [2.0]}


def test_markdown_shows_both_twins_and_their_load():
  run = _load("run")
  rows = [twins.finish_row(_row(t1=_twin([0.1, 0.1, 0.2], [0.2, 0.2, 0.3], (1.25, 1.5)),
                                t2=_twin([0.05, 0.05, 0.05], [0.06, 0.06, 0.06], (1.75, 2.0))),
                           1.3),
          twins.finish_row(dict(_row(t2=_twin([0.05] * 3, [0.06] * 3)), name="latent_gan/gen"),
                           1.5)]
  result = {"machine": {"cpu_model": "x", "cpu_count": 2, "jax": "0", "jax_backend": "cpu"},
            "peak": {k: {"dtype": "float32", "n": 8, "best_flops_per_s": 1e9}
                     for k in ("start", "end")}, "side_by_side": rows}
  result["targets"] = run.targets(result, gpu=False)
  text = run.markdown(result)
  header = next(l for l in text.splitlines() if l.startswith("| step | size |"))
  assert "1 core: vedgan / PyTorch" in header and "2 cores: vedgan / PyTorch" in header
  line = next(l for l in text.splitlines() if l.startswith("| seq2seq/mle"))
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells[2:8] == ["100.0 ms / 200.0 ms", "**2.00x** (2.00, 2.00, 1.50)", "1.25 → 1.5",
                        "50.0 ms / 60.0 ms", "**1.20x** (1.20, 1.20, 1.20)", "1.75 → 2.0"]
  assert cells[8:] == ["1.3x", "yes / no"]
  gan = next(l for l in text.splitlines() if l.startswith("| latent_gan/gen"))
  assert "not run" in gan and twins.WITHHELD in gan and "x**" not in gan
  assert sum("PyTorch tokens/s" in l for l in text.splitlines()) == 2   # seq2seq's two twins


def test_core_sets_and_pinned_child_leave_the_harness_unpinned():
  assert twins.core_sets({0, 1}) == {"1": (1,), "2": (0, 1)}
  assert twins.core_sets({3}) == {"1": (3,)}
  assert twins.core_sets({0, 1, 2, 3}, core=0) == {"1": (0,), "2": (0, 3)}
  with pytest.raises(ValueError, match="not in this process's affinity"):
    twins.core_sets({0, 1}, core=5)
  mine = os.sched_getaffinity(0)
  core = max(mine)
  child = ("import os, time\nwhile time.process_time() < 0.2: pass\n"
           "print(sorted(os.sched_getaffinity(0)))")
  res = twins.run_pinned([sys.executable, "-c", child], [core])
  assert res["returncode"] == 0 and json.loads(res["stdout"]) == [core], res["stderr"]
  assert os.sched_getaffinity(0) == mine               # the harness itself was never pinned
  assert res["cpu_s"] >= 0.2 and res["wall_s"] > 0    # the child's own CPU time, from rusage
  assert len(res["load_before"]) == len(res["load_after"]) == 3


def test_last_json_takes_the_worker_result():
  out = 'warning: {not json\n{"a": 1}\nlog line\n{"b": 2}\n  \n'
  assert twins.last_json(out) == {"b": 2}
  assert twins.last_json("nothing\n") is None


def test_compile_table_marks_over_20_s_not_met():
  run = _load("run")
  proc = {"cores": [1], "wall_s": 30.0, "cpu_s": 25.0, "load_before": [1.0], "load_after": [2.0]}
  rows = [{"objective": "seq2seq", "name": "seq2seq/mle", "stage": "mle", "step": "mle",
           "size": "demo", "compile_s": 20.0, "compile_cpu_s": 8.0, "process": proc},
          {"objective": "topk_gan", "name": "topk_gan/gadv", "stage": "adversarial",
           "step": "gadv", "size": "paper", "compile_s": 20.5, "compile_cpu_s": 19.0,
           "process": proc},
          {"objective": "mojitalk", "name": "mojitalk/rl", "stage": "rl", "step": "rl",
           "size": "demo", "error": "RuntimeError('boom')", "process": proc}]
  lines = twins.compile_table(rows)
  assert "<= 20 s wall" in lines[0]
  assert lines[2].endswith("| met |") and "20.0 s | 8.0 s | 30.0 s / 25.0 s | 1 | 1.0 → 2.0" \
      in lines[2]
  assert lines[3].endswith("| not met |") and "paper" in lines[3]
  assert "failed: RuntimeError('boom')" in lines[4]
  met = [t["met"] for t in run.targets({"objectives": rows}, gpu=False)]
  assert met == [True, False]


def test_first_train_row_of_the_resumed_run(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert twins.first_train_row(str(path), 0) is None and twins.last_step(str(path)) == 0
  rows = [{"step": 0, "split": "validation", "wall_time": 10.0},
          {"step": 1, "split": "train", "wall_time": 11.0},
          {"step": 3, "split": "train", "wall_time": 13.0},
          {"step": 3, "split": "validation", "wall_time": 13.5},
          {"step": 4, "split": "validation", "wall_time": 19.0},  # not a train row
          {"step": 4, "split": "train", "wall_time": 20.0}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "spl')
  assert twins.first_train_row(str(path), 3)["wall_time"] == 20.0
  assert twins.first_train_row(str(path), 0)["step"] == 1
  assert twins.first_train_row(str(path), 4) is None and twins.last_step(str(path)) == 4
  lines = twins.resume_table([
      {"start": "first", "cache": "on (empty)", "resumed_from": 0, "first_step": 1,
       "first_step_s": 30.0},
      {"start": "resumed", "cache": "on", "resumed_from": 3, "first_step": 4,
       "first_step_s": 4.5},
      {"start": "resumed", "cache": "off", "resumed_from": 4, "first_step": 5,
       "first_step_s": 12.0}])
  assert [l.rsplit("|", 2)[1].strip() for l in lines[2:]] == ["—", "met", "not met"]


def test_step_functions_list_every_stage_and_step():
  run = _load("run")
  h = _load("harness")
  config = h.load_config("configs/topk_gan.py", "demo")
  assert run.step_functions(config) == [
      ("mle_pretrain", "gmle"), ("fill", "refill"), ("d_pretrain", "dstep"),
      ("adversarial", "gadv"), ("adversarial", "refill"), ("adversarial", "dstep"),
      ("adversarial", "gmle")]
  assert run.step_functions(h.load_config("configs/latent_gan.py", "demo")) == [
      ("gan", "disc"), ("gan", "gen")]


def test_parse_args_sizes_and_cores():
  run = _load("run")
  assert run.parse_args(["--sizes", "demo,paper"]).sizes == ["demo", "paper"]
  assert run.parse_args(["--sizes", "small", "paper"]).sizes == ["small", "paper"]
  assert run.parse_args([]).cores == "1,2"
  with pytest.raises(SystemExit):
    run.parse_args(["--cores", "3"])


def test_step_profile_exclusive_times_subtract_only_direct_children():
  profile = _load("step_profile")
  events = [  # while.1 [0, 100) holds fusion.2 [10, 40) which holds dot.3 [15, 35); dot.4 [50, 90)
      {"name": "while.1", "ts": 0, "dur": 100}, {"name": "fusion.2", "ts": 10, "dur": 30},
      {"name": "dot.3", "ts": 15, "dur": 20}, {"name": "dot.4", "ts": 50, "dur": 40},
      {"name": "dot.3", "ts": 200, "dur": 5}]          # after the loop, at top level
  times = profile.exclusive_times(events)
  assert dict(times) == {"while.1": 100 - 30 - 40, "fusion.2": 30 - 20, "dot.3": 25, "dot.4": 40}


def test_step_profile_groups_by_name_and_vocabulary_sized_shapes():
  profile = _load("step_profile")
  g = profile.group_of
  assert g("dot.23", "%dot.23 = f32[256,8000]{1,0} dot(%a, %b)", 8000) == "matmul, vocabulary-sized"
  assert g("ynn_fusion.2", "%ynn_fusion.2 = f32[64,256]{1,0} fusion(%a)", 8000) == "matmul, other"
  assert g("wrapped_exponential", "= f32[64,30,8000]{2,1,0} fusion(%x)", 8000) == \
      "softmax / cross-entropy (vocabulary-sized)"
  assert g("bitcast_dynamic-update-slice_fusion.3", "= f32[30,64,256] fusion()", 8000) == \
      "scan slicing / stacking"
  assert g("copy.4", "= f32[256,64] copy(%x)", 8000) == "copies / transposes"
  assert g("while.9", "= (s32[]) while(%t)", 8000) == "loop control"
  assert g("add_select_fusion", "= f32[64,256] fusion(%a)", 8000) == "elementwise fusions"
  # a vocabulary of 800 is not a dimension of 8000: whole dimensions are matched
  assert g("add_fusion", "= f32[64,8000] fusion(%a)", 800) == "elementwise fusions"
