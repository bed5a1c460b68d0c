"""Model selection (issue 20): ``train.select_by`` / ``select_mode`` / ``patience``, the best
checkpoint beside the latest ones, early stopping, resume, and ``--checkpoint best|latest|STEP``
in evaluate, sample and chat.

Most runs replace ``Trainer.evaluate`` by a scripted sequence of validation values keyed by
step, so which evaluation is best and when the run stops are known exactly; the weights are
still trained for real. Time budget: about 60 s on an idle 2-core machine (the ``slow``
subprocess kill test about 60 s more). Every run trains the same tiny model (``_config``,
dropout 0.1), so the programs are compiled once for the module.
"""
import io
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, jax_tree_map, make_config

from vedgan import chat, eval_suites, sample, selection, train
from vedgan.errors import CheckpointError, ConfigError

# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _scripted(monkeypatch, values):
  """``Trainer.evaluate`` returns ``{"nll": values[step], "perplexity": exp(...)}``."""
  def evaluate(self):
    return {"nll": values[self.step], "perplexity": math.exp(values[self.step])}
  monkeypatch.setattr(train.Trainer, "evaluate", evaluate)


#: Every run of this module trains the same tiny seq2seq model with dropout (so that resuming
#: must also restore the dropout keys): one set of compiled programs for all of them.
DROPOUT = 0.1


def _config(**overrides):
  base = dict(train__num_samples=0, train__eval_every=2, train__log_every=2,
              train__select_by="nll", model__dropout=DROPOUT)
  base.update(overrides)
  return make_config(**base)


def _rows(workdir, split=None):
  with open(os.path.join(str(workdir), "metrics.jsonl"), encoding="utf-8") as f:
    rows = [{k: v for k, v in json.loads(line).items() if "per_sec" not in k and k != "wall_time"} for line in f]
  return [r for r in rows if split is None or r["split"] == split]


def _arrays(path):
  """The ``state`` item of the orbax checkpoint at ``path`` as numpy leaves."""
  path = os.path.join(str(path), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    # orbax >= 0.12: StepMetadata; 0.11: the TreeMetadata itself
    tree = (meta.item_metadata.tree if hasattr(meta, "item_metadata")
            else getattr(meta, "tree", meta))
    args = jax_tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return jax.tree.leaves(ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args)))


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                  for x, y in zip(a, b))


def _meta(path):
  with open(os.path.join(str(path), "meta", "metadata"), encoding="utf-8") as f:
    return json.load(f)


def _snapshot(root, skip=("eval",)):
  out = []
  for base, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(base, d), root) not in skip]
    for f in files:
      st = os.stat(os.path.join(base, f))
      out.append((os.path.relpath(os.path.join(base, f), root), st.st_size, st.st_mtime_ns))
  return sorted(out)


def _one_line(capsys, rc, message):
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert rc == 2 and len(err) == 1 and err[0].startswith("vedgan: error: "), err
  assert message in err[0], err


# ----------------------------------------------------------------------------
# The selection rule (no training)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode,values,improved,best,stop_after", [
    # min, patience 2: 5 -> 4 -> 4 (equal: no) -> 4.5 (no): stops at the 4th evaluation.
    ("min", [5.0, 4.0, 4.0, 4.5], [True, True, False, False], (4.0, 10), 3),
    # max: higher is better; NaN never improves and counts as an evaluation without one.
    ("max", [1.0, 3.0, float("nan"), 2.0], [True, True, False, False], (3.0, 10), 3),
    # a first non-finite value is no best: the first finite one is.
    ("min", [float("inf"), 7.0, 6.0, 8.0], [False, True, True, False], (6.0, 20), None),
])
def test_improvement_is_strict_and_patience_counts_evaluations(mode, values, improved, best,
                                                               stop_after):
  sel = selection.Selection("nll", mode, patience=2)
  got, stops = [], []
  for i, v in enumerate(values):
    got.append(sel.update(10 * i, {"nll": v, "other": 0.0}))
    stops.append(sel.should_stop)
  assert got == improved
  assert (sel.best_value, sel.best_step) == best
  assert sel.evaluations == len(values)
  first_stop = stops.index(True) if True in stops else None
  assert first_stop == stop_after
  assert not selection.Selection("nll", mode, patience=0).should_stop


def test_state_round_trip_and_a_changed_metric_is_refused():
  sel = selection.Selection("nll", "min", 3)
  for step, v in ((0, 2.0), (5, 1.0), (10, 1.5)):
    sel.update(step, {"nll": v})
  saved = json.loads(json.dumps(sel.state()))  # as the checkpoint meta stores it
  assert saved == {"metric": "nll", "mode": "min", "best_value": 1.0, "best_step": 5,
                   "evaluations": 3, "since_best": 1}
  again = selection.Selection("nll", "min", 3)
  again.restore({"step": 10, "selection": saved}, "ckpt/10")
  assert again == sel
  fresh = selection.Selection("nll", "min", 3)
  fresh.restore({"step": 10}, "ckpt/10")  # a checkpoint written without selection
  assert fresh.best_step is None and fresh.evaluations == 0
  for other in (selection.Selection("perplexity", "min", 3), selection.Selection("nll", "max", 3)):
    with pytest.raises(ConfigError, match=r"ckpt/10 was selected by min 'nll'; resume with "
                       r"--config.train.select_by=nll --config.train.select_mode=min"):
      other.restore({"selection": saved}, "ckpt/10")
  unknown = selection.Selection("bleu", "max", 0)
  with pytest.raises(ConfigError, match=r"select_by='bleu' is not a validation metric of this "
                     r"run \(it logs nll, perplexity\)"):
    unknown.update(0, {"perplexity": 1.0, "nll": 2.0})
  assert unknown.evaluations == 0


def test_resolve_checkpoint_lists_directories_only(tmp_path):
  for d in ("checkpoints/6", "checkpoints/9", "checkpoints/9.orbax-checkpoint-tmp-1",
            "checkpoints/best/4"):
    (tmp_path / d).mkdir(parents=True)
  root, best = str(tmp_path / "checkpoints"), str(tmp_path / "checkpoints" / "best")
  w = str(tmp_path)
  assert selection.resolve_checkpoint(w, "latest") is None
  assert selection.resolve_checkpoint(w, " Best ") == (best, 4)
  assert selection.resolve_checkpoint(w, "6") == (root, 6)
  assert selection.resolve_checkpoint(w, "4") == (best, 4)  # only kept as the best one
  with pytest.raises(CheckpointError, match=r"^--checkpoint 7: .*checkpoints has no step 7 "
                     r"\(kept: 6, 9; best: 4\); use one of them, best or latest$"):
    selection.resolve_checkpoint(w, "7")
  with pytest.raises(ConfigError, match=r"^--checkpoint 'last' must be best, latest or a step"):
    selection.resolve_checkpoint(w, "last")
  shutil.rmtree(tmp_path / "checkpoints" / "best")
  with pytest.raises(CheckpointError, match=r"^--checkpoint best: .* has no best checkpoint"):
    selection.resolve_checkpoint(w, "best")


@pytest.mark.parametrize("overrides,message", [
    ({"train__select_mode": "lowest"}, "config.train.select_mode='lowest' is out of range "
                                       "(must be 'min' or 'max')"),
    ({"train__patience": -1}, "config.train.patience=-1 is out of range (must be >= 0"),
    ({"train__select_by": "", "train__patience": 3}, "config.train.patience=3 needs the "
                                                       "validation metric it watches"),
])
def test_bad_selection_config_is_one_line_before_any_write(tmp_path, overrides, message):
  with pytest.raises(ConfigError) as e:
    train.run(_config(**overrides), str(tmp_path / "run"))
  assert message in str(e.value) and "\n" not in str(e.value)
  assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------
# Training with selection
# ----------------------------------------------------------------------------

# nll per evaluation step: best at 4; 6 equals it (not an improvement); patience 3 runs out
# at step 10 although the stage has 20 steps.
STOPPING = {0: 5.0, 2: 4.0, 4: 3.0, 6: 3.0, 8: 3.2, 10: 3.1, 12: 1.0}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  """``(workdir, result, stdout, reference)``: a run that stops early at step 10 (best step
  4), with ``max_checkpoints=1`` and a checkpoint every 4 steps (and one at the stop);
  ``reference``: the same
  config trained for 4 steps without selection (the weights the best checkpoint must hold)."""
  root = tmp_path_factory.mktemp("selection")
  mp = pytest.MonkeyPatch()
  _scripted(mp, STOPPING)
  out = io.StringIO()
  mp.setattr(sys, "stdout", out)
  try:
    config = _config(stages__mle__num_steps=20, train__checkpoint_every=4,
                     train__max_checkpoints=1, train__patience=3)
    result = train.run(config, str(root / "run"))
  finally:
    mp.undo()
  ref = make_config(stages__mle__num_steps=4, train__num_samples=0, model__dropout=DROPOUT)
  assert train.run(ref, str(root / "reference"))["step"] == 4
  return root / "run", result, out.getvalue(), root / "reference"


def test_early_stop_at_the_right_evaluation_and_best_survives_rotation(stopped_run):
  workdir, result, stdout, _ = stopped_run
  assert result["step"] == 10 and not result["stopped"]
  sel = result["selection"]
  assert (sel["best_step"], sel["best_value"], sel["evaluations"], sel["since_best"]) == \
      (4, 3.0, 6, 3)
  assert sel["stopped_early"] and sel["best_checkpoint"] == "checkpoints/best/4"
  assert ("early stop at step 10: nll did not improve on 3 (step 4) in 3 evaluations "
          "(train.patience=3); best weights: checkpoints/best/4") in stdout
  # Rotation (max_checkpoints=1) kept only the checkpoint saved at the stop (10 is no
  # multiple of checkpoint_every); the best one is apart.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "best"]
  assert os.listdir(workdir / "checkpoints" / "best") == ["4"]
  best_meta = _meta(workdir / "checkpoints" / "best" / "4")
  assert best_meta["step"] == 4 and best_meta["selection"]["best_step"] == 4
  assert _meta(workdir / "checkpoints" / "10")["selection"] == {
      "metric": "nll", "mode": "min", "best_value": 3.0, "best_step": 4, "evaluations": 6,
      "since_best": 3}
  rows = _rows(workdir, "selection")
  assert [(r["step"], r["best_step"], r["evaluations_since_best"], r["stopped_early"])
          for r in rows] == [(0, 0, 0, 0), (2, 2, 0, 0), (4, 4, 0, 0), (6, 4, 1, 0),
                             (8, 4, 2, 0), (10, 4, 3, 1)]
  assert _rows(workdir)[-1]["split"] == "selection"  # the final row says it stopped
  assert max(r["step"] for r in _rows(workdir, "train")) == 10
  summary = json.loads((workdir / "selection.json").read_text())
  assert summary == dict(sel, step=10)


def test_best_checkpoint_holds_the_weights_of_its_step(stopped_run):
  workdir, _, _, reference = stopped_run
  best = _arrays(workdir / "checkpoints" / "best" / "4")
  assert _same(best, _arrays(reference / "checkpoints" / "4"))
  assert not _same(best, _arrays(workdir / "checkpoints" / "10"))


def test_rerun_after_early_stop_trains_nothing(stopped_run, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(stopped_run[0], workdir)
  _scripted(monkeypatch, STOPPING)
  config = _config(stages__mle__num_steps=20, train__checkpoint_every=4,
                   train__max_checkpoints=1, train__patience=3)
  rows = _rows(workdir)
  result = train.run(config, str(workdir))
  assert result["step"] == 10 and result["selection"]["stopped_early"]
  assert _rows(workdir) == rows and sorted(os.listdir(workdir / "checkpoints")) == ["10", "best"]
  # Another metric than the run was selected by: one line, nothing written.
  before = _snapshot(workdir, skip=())
  with pytest.raises(ConfigError, match=r"was selected by min 'nll'"):
    train.run(_config(stages__mle__num_steps=20, train__select_by="perplexity"), str(workdir))
  assert _snapshot(workdir, skip=()) == before


def test_unknown_metric_is_one_line_at_the_first_evaluation(tmp_path):
  config = _config(stages__mle__num_steps=2, train__select_by="bleu")
  with pytest.raises(ConfigError, match=r"config.train.select_by='bleu' is not a validation "
                     r"metric of this run \(it logs .*nll.*perplexity.*\); set"):
    train.run(config, str(tmp_path))
  assert not (tmp_path / "checkpoints" / "best").exists()
  assert not (tmp_path / "selection.json").exists()
  assert not (tmp_path / "metrics.jsonl").exists()  # not even that evaluation's row


def test_unknown_metric_on_resume_is_one_line_before_training(stopped_run, tmp_path):
  """A run started without selection, resumed with an unknown metric: the logged validation
  rows tell before any step is trained or anything is written."""
  workdir = tmp_path / "run"
  shutil.copytree(stopped_run[3], workdir)
  before = _snapshot(workdir, skip=())
  with pytest.raises(ConfigError, match=r"select_by='bleu' is not a validation metric of this "
                     r"run \(it logs .*nll.*\)"):
    train.run(_config(stages__mle__num_steps=8, train__select_by="bleu"), str(workdir))
  assert _snapshot(workdir, skip=()) == before
  with open(workdir / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 9, "split": "valid')  # a torn last line is passed over
  assert "nll" in selection.logged_validation_names(str(workdir))
  assert selection.logged_validation_names(str(tmp_path / "none")) == []


# nll per evaluation: best at 2 until 10 improves on it.
RESUMED = {0: 3.0, 2: 2.0, 4: 2.5, 6: 2.2, 8: 2.3, 10: 1.5, 12: 1.7}


class _Killed(Exception):
  pass


@pytest.mark.slow  # a whole training run / subprocess: the slow tier
def test_best_is_kept_exactly_across_kills_between_evaluation_and_checkpoint(tmp_path,
                                                                             monkeypatch):
  """Killed at step 7 (after the non-improving evaluation of step 6; resumes from 4) and at
  step 11 (after step 10's new best was saved; resumes from 8): the same rows, best
  checkpoint, selection.json and final state as an uninterrupted run."""
  _scripted(monkeypatch, RESUMED)
  config = _config(stages__mle__num_steps=12, train__checkpoint_every=4)
  full = train.run(config, str(tmp_path / "a"))
  assert (full["selection"]["best_step"], full["selection"]["best_value"]) == (10, 1.5)
  run_steps = train.Trainer._run_steps  # pylint: disable=protected-access
  for kill_at in (7, 11):
    def dying(self, span, name, batches, kill_at=kill_at):
      if self.step == kill_at:
        raise _Killed()
      return run_steps(self, span, name, batches)
    monkeypatch.setattr(train.Trainer, "_run_steps", dying)
    with pytest.raises(_Killed):
      train.run(config, str(tmp_path / "b"))
  assert os.listdir(tmp_path / "b" / "checkpoints" / "best") == ["10"]  # written before the kill
  monkeypatch.setattr(train.Trainer, "_run_steps", run_steps)
  resumed = train.run(config, str(tmp_path / "b"))
  assert resumed["selection"] == full["selection"]
  assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
  for name in ("selection.json",):
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
  best = [tmp_path / w / "checkpoints" / "best" for w in ("a", "b")]
  assert os.listdir(best[0]) == os.listdir(best[1]) == ["10"]
  assert _same(_arrays(best[0] / "10"), _arrays(best[1] / "10"))
  assert _same(_arrays(tmp_path / "a" / "checkpoints" / "12"),
               _arrays(tmp_path / "b" / "checkpoints" / "12"))


# ----------------------------------------------------------------------------
# Readers: --checkpoint best|latest|STEP
# ----------------------------------------------------------------------------


def test_evaluate_picks_the_chosen_weights(stopped_run, tmp_path):
  workdir, _, _, reference = stopped_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  before = _snapshot(run)
  best = eval_suites.run_suites(run, "likelihood", echo=None, checkpoint="best")["likelihood"]
  ref = eval_suites.run_suites(reference, "likelihood", echo=None)["likelihood"]
  assert best["step"] == 4 and best["checkpoint"] == "best"
  assert best["values"] == ref["values"]  # the weights of step 4
  latest = eval_suites.run_suites(run, "likelihood", echo=None, checkpoint="10")["likelihood"]
  assert latest["step"] == 10 and latest["values"] != ref["values"]
  assert _snapshot(run) == before  # only eval/ was written


def test_sample_and_chat_pick_the_chosen_weights(stopped_run, capsys, monkeypatch):
  workdir, _, _, reference = stopped_run
  before = _snapshot(workdir)
  gen = sample.open_generator(str(workdir), "best")
  try:
    assert gen.step == 4
    params = jax.tree.leaves(gen.state.params)
  finally:
    gen.close()
  ref = sample.open_generator(str(reference))
  try:
    assert _same(params, jax.tree.leaves(ref.state.params))
  finally:
    ref.close()
  lines = []
  rc = chat.main(["--workdir", str(workdir), "--checkpoint", "best"], read=_eof,
                 write=lines.append)
  assert rc == 0 and "(step 4)" in lines[1], lines
  opened, real = [], sample.open_generator

  def spy(path, checkpoint="latest"):
    gen = real(path, checkpoint)
    opened.append(gen.step)
    return gen
  monkeypatch.setattr(sample, "open_generator", spy)
  out = io.StringIO()
  for choice in ("best", "10"):  # the command line's --checkpoint reaches the loader
    assert sample.main(["--workdir", str(workdir), "--input", "hi", "--checkpoint", choice],
                       out=out) == 0
  assert opened == [4, 10] and out.getvalue().count("> hi") == 2
  assert _snapshot(workdir) == before
  capsys.readouterr()


def _eof(prompt):
  del prompt
  raise EOFError


def test_reader_errors_are_one_line(stopped_run, tmp_path, capsys):
  workdir, _, _, reference = stopped_run
  capsys.readouterr()
  rc = sample.main(["--workdir", str(reference), "--input", "hi", "--checkpoint", "best"])
  _one_line(capsys, rc, f"--checkpoint best: {reference} has no best checkpoint")
  rc = sample.main(["--workdir", str(workdir), "--input", "hi", "--checkpoint", "8"])
  _one_line(capsys, rc, "--checkpoint 8: ")
  with pytest.raises(CheckpointError, match=r"\(kept: 10; best: 4\)"):
    selection.resolve_checkpoint(str(workdir), "8")
  rc = sample.main(["--workdir", str(tmp_path / "nope"), "--input", "hi", "--checkpoint", "x"])
  _one_line(capsys, rc, "--checkpoint 'x' must be best, latest or a step number")
  rc = chat.main(["--workdir", str(reference), "--checkpoint", "best"], read=_eof,
                 write=lambda _: None)
  _one_line(capsys, rc, "has no best checkpoint")
  with pytest.raises(ConfigError, match="--checkpoint 'x' must be"):
    eval_suites.run_suites(workdir, "likelihood", checkpoint="x")
  before = _snapshot(reference, skip=())
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "vedgan.evaluate", "--workdir", str(reference),
                         "--checkpoint", "best"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  err = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(err) == 1, proc.stderr
  assert err[0].startswith(f"vedgan: error: --checkpoint best: {reference} has no best")
  assert _snapshot(reference, skip=()) == before


@pytest.mark.slow
def test_sigkill_with_selection_resumes_bit_identical(tmp_path):
  """The real CLI, SIGKILLed while finalizing step 8's checkpoint (the best one first, when
  step 8 improved) and after logging step 10, then rerun: the same final state, rows,
  selection.json and best checkpoint as an uninterrupted run."""
  import killharness as kh  # pylint: disable=import-outside-toplevel
  from conftest import restore_numpy_state, tiny_overrides  # pylint: disable=import-outside-toplevel

  overrides = dict(tiny_overrides(), **{
      "train.eval_every": 2, "train.checkpoint_every": 4, "train.log_every": 1,
      "train.num_samples": 0, "train.eval_batches": 1, "stages.mle.num_steps": 12,
      "model.dropout": 0.1, "train.select_by": "nll"})
  config = "configs/seq2seq.py:demo"
  ref_dir, run_dir = tmp_path / "reference", tmp_path / "faulty"
  reference = kh.Process(kh.command(config, ref_dir, overrides), str(ref_dir))
  events = kh.run_with_faults(kh.command(config, run_dir, overrides), run_dir,
                              [("checkpoint", 8), ("step", 10)], str(run_dir))
  assert reference.wait() == 0, reference.stderr()[-3000:]
  assert [e["code"] for e in events] == [-9, -9, 0], [e["stderr"] for e in events]
  step_ref, state_ref = restore_numpy_state(ref_dir)
  step_run, state_run = restore_numpy_state(run_dir)
  assert step_ref == step_run == 12
  assert _same(jax.tree.leaves(state_ref), jax.tree.leaves(state_run))
  assert _rows(ref_dir) == _rows(run_dir)
  assert (ref_dir / "selection.json").read_text() == (run_dir / "selection.json").read_text()
  best = [sorted(n for n in os.listdir(d / "checkpoints" / "best") if n.isdigit())
          for d in (ref_dir, run_dir)]
  assert best[0] == best[1] and len(best[0]) == 1
  assert _same(_arrays(ref_dir / "checkpoints" / "best" / best[0][0]),
               _arrays(run_dir / "checkpoints" / "best" / best[0][0]))
