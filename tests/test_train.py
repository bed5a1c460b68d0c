"""The driver end to end on tiny versions of the demo config (CPU, seconds per run)."""
import json
import time
import os
import signal

import jax
import numpy as np
import pytest
from conftest import make_config, restore_numpy_state, tiny_overrides

from vedgan import train
from vedgan.errors import CheckpointError, ConfigError
from vedgan.plan import Plan, StageSpan
from vedgan.steps import TrainState


def _tree_snapshot(workdir):
  """(relative path, size, mtime) of every file below ``workdir``."""
  out = []
  for root, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(root, f)
      st = os.stat(p)
      out.append((os.path.relpath(p, workdir), st.st_size, st.st_mtime_ns))
  return sorted(out)


def test_full_loop_writes_everything(tmp_path):
  config = make_config(stages__mle__num_steps=6, train__eval_every=3, train__curve_plots=True)
  result = train.run(config, str(tmp_path))
  assert result["step"] == 6 and not result["stopped"]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if r["split"] == "train"]
  val_rows = [r for r in rows if r["split"] == "validation"]
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  assert [r["step"] for r in val_rows] == [0, 3, 6]
  assert all(np.isfinite(r["loss"]) and r["tokens_per_sec"] > 0 for r in train_rows)
  assert all(r["perplexity"] > 1 for r in val_rows)
  samples = [json.loads(l) for l in open(tmp_path / "samples.jsonl")]
  assert len(samples) == 3 * 2 and all(isinstance(s["response"], str) for s in samples)
  # when each row was written; the sample's reference response and how it was decoded
  times = [r["wall_time"] for r in rows]
  assert times == sorted(times) and time.time() - 600 < times[0] <= times[-1] <= time.time()
  references = dict(train.inputs_lib.load_pairs(config.data, "validation"))
  assert all(s["reference"] == references[s["context"]] for s in samples)
  assert all(s["decoding"]["mode"] == "greedy" and s["decoding"]["no_repeat_ngram"] == 0
             for s in samples)
  assert (tmp_path / "tokenizer" / "tokenizer.model").exists()
  assert json.load(open(tmp_path / "config.json"))["objective"] == "seq2seq"
  assert (tmp_path / "plots" / "training_curves.png").stat().st_size > 1000
  assert os.listdir(tmp_path / "tensorboard")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6"]


def test_resume_continues_and_matches_uninterrupted_run(tmp_path):
  full = make_config(stages__mle__num_steps=8, model__dropout=0.2)
  train.run(full, str(tmp_path / "a"))
  # The same run, stopped after 4 steps (checkpoint at the stage end) and restarted.
  first = make_config(stages__mle__num_steps=4, model__dropout=0.2)
  assert train.run(first, str(tmp_path / "b"))["step"] == 4
  assert train.run(full, str(tmp_path / "b"))["step"] == 8
  step_a, state_a = restore_numpy_state(tmp_path / "a")
  step_b, state_b = restore_numpy_state(tmp_path / "b")
  assert step_a == step_b == 8
  for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  steps = [json.loads(l)["step"] for l in open(tmp_path / "b" / "metrics.jsonl")
           if json.loads(l)["split"] == "train"]
  assert steps == [2, 4, 6, 8]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_setup_stops_at_once_and_the_run_starts_later(tmp_path, monkeypatch,
                                                                     capsys, sig):
  """A signal while the run sets up (data preparation, tokenizer, compilation: minutes, or a
  hang) interrupts the setup at once, not after it: nothing is trained or checkpointed, one
  line says so, and the handlers installed before the run are back. The same run later
  trains normally."""
  setup = train.Trainer.setup
  reached = []

  def setup_with_signal(self, *args, **kwargs):
    signal.raise_signal(sig)          # as if it arrived while the data were being prepared
    reached.append(True)              # not reached: the handler interrupts setup here
    return setup(self, *args, **kwargs)

  before = signal.getsignal(sig)
  with monkeypatch.context() as m:
    m.setattr(train.Trainer, "setup", setup_with_signal)
    result = train.run(make_config(stages__mle__num_steps=4), str(tmp_path))
  assert not reached
  assert result == {"step": 0, "stopped": True, "signal": sig.name, "validation": {}}
  assert f"{sig.name} during setup: stopped before training" in capsys.readouterr().out
  assert not (tmp_path / "checkpoints").exists()
  assert signal.getsignal(sig) is before
  assert train.run(make_config(stages__mle__num_steps=4), str(tmp_path))["step"] == 4
  # config.train.curve_plots = False (the tests' default): the stage end draws nothing
  assert not (tmp_path / "plots").exists()


def test_rows_after_a_resume_between_log_steps_match_an_uninterrupted_run(tmp_path,
                                                                          monkeypatch):
  """With log_every=4, a run stopped (SIGTERM) and saved at step 1 resumes with the rows of
  its unfinished window: its rows at steps 4 and 8 average the same steps, to the same
  values, as an uninterrupted run's."""
  config = make_config(stages__mle__num_steps=8, train__log_every=4, model__dropout=0.2)
  train.run(config, str(tmp_path / "a"))
  run_steps = train.Trainer._run_steps  # pylint: disable=protected-access

  def steps_then_sigterm(self, *args, **kwargs):
    out = run_steps(self, *args, **kwargs)
    signal.raise_signal(signal.SIGTERM)   # after the first step: a preemption mid-window
    return out

  with monkeypatch.context() as m:
    m.setattr(train.Trainer, "_run_steps", steps_then_sigterm)
    assert train.run(config, str(tmp_path / "b"))["step"] == 1
  assert train.run(config, str(tmp_path / "b"))["step"] == 8

  def rows(d):
    return [{k: v for k, v in json.loads(l).items() if "per_sec" not in k and k != "wall_time"}
            for l in open(tmp_path / d / "metrics.jsonl")]
  assert [r["step"] for r in rows("b") if r["split"] == "train"] == [4, 8]
  assert rows("a") == rows("b")


def test_resuming_with_another_batch_size_is_refused(tmp_path):
  """The data position and random streams count batches: a resumed run with another batch
  size would not continue the same run, so it is a one-line error before anything is
  written; evaluation batch sizes may change."""
  train.run(make_config(stages__mle__num_steps=2), str(tmp_path))
  before = sorted(os.listdir(tmp_path)), open(tmp_path / "metrics.jsonl").read()
  with pytest.raises(CheckpointError, match=r"train\.batch_size: 8 -> 16.*original settings"):
    train.run(make_config(stages__mle__num_steps=4, train__batch_size=16), str(tmp_path))
  assert (sorted(os.listdir(tmp_path)), open(tmp_path / "metrics.jsonl").read()) == before
  result = train.run(make_config(stages__mle__num_steps=4, train__eval_batch_size=8),
                     str(tmp_path))
  assert result["step"] == 4


def test_incompatible_config_is_refused_without_touching_workdir(tmp_path):
  train.run(make_config(stages__mle__num_steps=2), str(tmp_path))
  before = _tree_snapshot(tmp_path)
  with pytest.raises(CheckpointError, match=r"model.hidden: 32 -> 48"):
    train.run(make_config(stages__mle__num_steps=4, model__hidden=48), str(tmp_path))
  assert _tree_snapshot(tmp_path) == before


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path):
  """Even if config.json is lost, restoring onto another model fails cleanly."""
  train.run(make_config(stages__mle__num_steps=2), str(tmp_path))
  os.remove(tmp_path / "config.json")
  with pytest.raises(CheckpointError, match="does not fit the model|holds an array of shape"):
    train.run(make_config(stages__mle__num_steps=4, model__hidden=48), str(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    ({"objective": "nope"}, r"unknown objective 'nope'; config.objective must be one of"),
    ({"train__batch_size": 0}, r"train.batch_size=0"),
    ({"stages__mle__step": "mle,gan"}, r"unknown step function 'gan'"),
    ({"stage_order": ("mle", "rl")}, r"unknown stage\(s\) \['rl'\]"),
    ({"data__buckets": (8, 4)}, r"data.buckets"),
    ({"data__name": "no_such_corpus"}, r"no_such_corpus"),
])
def test_bad_config_values_are_one_line_errors(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message) as info:
    train.run(make_config(**overrides), str(workdir))
  assert "\n" not in str(info.value)
  assert not workdir.exists() or not os.listdir(workdir)


def test_unwritable_workdir_is_a_clear_error(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match="not writable|cannot be created"):
    train.check_workdir("/proc/vedgan-test/run")
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(ConfigError, match="is not a directory"):
    train.check_workdir(str(a_file / "run"))
  # An empty --workdir would train into the current directory (and trim a metrics.jsonl
  # another tool left there): refused before anything is written.
  monkeypatch.chdir(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"another": "tool"}\n')
  listing = sorted(os.listdir(tmp_path))
  for empty in ("", "  "):
    with pytest.raises(ConfigError, match=r"^--workdir is empty; give the run's folder"):
      train.run(make_config(), empty)
  assert sorted(os.listdir(tmp_path)) == listing
  assert (tmp_path / "metrics.jsonl").read_text() == '{"another": "tool"}\n'


def test_stage_cycles_follow_the_config(tiny_config):
  config = make_config(stages__mle__step="mle*2,mle*1")
  spans = Plan.from_config(config).spans
  assert [spans[0].step_name(s) for s in range(4)] == ["mle"] * 4
  cyc = StageSpan("gan", None, 10, 20, (("disc", 2), ("gen", 1)))
  assert [cyc.step_name(s) for s in range(10, 16)] == ["disc", "disc", "gen"] * 2


def test_state_is_a_pytree_with_step_and_rng():
  s = TrainState(step=np.int32(3), rng=np.zeros(2, np.uint32), params={}, opt_state={})
  assert len(jax.tree.leaves(s)) == 2


def test_swapped_tokenizer_is_refused_without_touching_workdir(tmp_path):
  from vedgan.data.tokenizer import train_sentencepiece  # pylint: disable=import-outside-toplevel

  train.run(make_config(stages__mle__num_steps=2), str(tmp_path))
  other = train_sentencepiece(["a different corpus entirely", "with other words"] * 50, 40,
                              model_type="bpe")
  other.save(str(tmp_path / "tokenizer"))
  before = _tree_snapshot(tmp_path)
  with pytest.raises(CheckpointError, match="tokenizer .* does not match"):
    train.run(make_config(stages__mle__num_steps=4), str(tmp_path))
  assert _tree_snapshot(tmp_path) == before


def test_trim_logs_drops_later_rows_and_a_torn_last_line(tmp_path):
  """A kill mid-write leaves a torn last line; resuming at step 3 keeps rows <= 3 only."""
  import types  # pylint: disable=import-outside-toplevel

  rows = [{"step": s, "stage": "mle", "split": "train", "loss": 1.0} for s in (1, 2, 3, 4)]
  text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "stage": "ml'
  (tmp_path / "metrics.jsonl").write_text(text)
  (tmp_path / "samples.jsonl").write_text('{"step": 3, "response": "hi"}')  # no newline
  fake = types.SimpleNamespace(is_chief=True, workdir=str(tmp_path))
  train.Trainer._trim_logs(fake, 3)  # pylint: disable=protected-access
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [1, 2, 3]
  assert (tmp_path / "samples.jsonl").read_text() == '{"step": 3, "response": "hi"}\n'
  train.Trainer._trim_logs(fake, -1)  # pylint: disable=protected-access
  assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_rerunning_a_finished_run_says_so_and_reports_its_last_validation(tmp_path, capsys):
  """It printed `final: {... "validation": {}}` and nothing else; a resumed run said nothing."""
  config = make_config(**tiny_overrides(), stages__mle__num_steps=2, train__checkpoint_every=1,
                       train__eval_every=2)
  workdir = str(tmp_path / "run")
  first = train.run(config, workdir)
  capsys.readouterr()
  again = train.run(config, workdir)
  out = capsys.readouterr().out
  assert f"the run in {workdir} is already complete (step 2 of 2); nothing to train" in out
  assert again["step"] == 2 and again["validation"] == pytest.approx(first["validation"])
  assert again["validation"]                                # was {}
  longer = make_config(**tiny_overrides(), stages__mle__num_steps=3, train__checkpoint_every=1,
                       train__eval_every=2)
  train.run(longer, workdir)
  assert f"resuming {workdir} from its checkpoint at step 2 of 3" in capsys.readouterr().out
