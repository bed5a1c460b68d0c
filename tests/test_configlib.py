"""Which config changes make a workdir unresumable (configlib.structural_diff)."""
from vedgan import configlib


def _saved():
  return {"objective": "seq2seq", "model": {"hidden": 32, "dtype": "float32", "unroll": 1},
          "data": {"name": "chatterbot_corpus", "data_dir": "/a"}, "train": {"batch_size": 8},
          "tokenizer": {"vocab_size": 300}}


def test_model_size_change_is_structural():
  current = _saved()
  current["model"] = dict(current["model"], hidden=64)
  assert configlib.structural_diff(_saved(), current) == ["model.hidden: 32 -> 64"]


def test_training_and_machine_local_fields_are_not_structural():
  current = _saved()
  current["train"] = dict(current["train"], eval_batch_size=64, log_every=7)
  current["data"] = dict(current["data"], data_dir="/b")
  assert configlib.structural_diff(_saved(), current) == []


def test_the_batch_size_is_fixed_for_a_resumed_run():
  """The data position and the random streams count batches (RESUME_FIXED_FIELDS)."""
  current = _saved()
  current["train"] = dict(current["train"], batch_size=16)
  assert configlib.structural_diff(_saved(), current) == ["train.batch_size: 8 -> 16"]


def test_compute_only_model_fields_may_change_on_resume():
  current = _saved()
  current["model"] = dict(current["model"], dtype="bfloat16", unroll=4, remat=True, loss_chunk=256)
  assert configlib.structural_diff(_saved(), current) == []


def test_fields_added_after_the_run_started_are_not_differences():
  current = _saved()
  current["model"] = dict(current["model"], new_field=3)
  current["data"] = dict(current["data"], new_data_field="x")
  assert configlib.structural_diff(_saved(), current) == []
  # ...but a field the current config dropped is.
  dropped = _saved()
  del dropped["model"]["hidden"]
  assert configlib.structural_diff(_saved(), dropped) == ["model.hidden: 32 -> '<missing>'"]
