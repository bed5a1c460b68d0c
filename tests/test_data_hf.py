"""config.data.format = "hf": Hugging Face datasets written here (save_to_disk, Parquet,
Arrow) read as the records of the other custom formats, with their skip counts and errors."""
import json
import sys

import numpy as np
import pytest

from conftest import make_config
from vedgan.data import custom, hf_format, inputs, sources
from vedgan.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets.disable_progress_bars()


def _records(records, *fields):
  return [tuple(r[f] for f in fields) for r in records]


DIALOGUE = ("dialogue_id", "turn", "history", "response")


# -- dialogues -----------------------------------------------------------------------------


def test_save_to_disk_dialogues_splits_string_labels_and_counts(tmp_path):
  train = datasets.Dataset.from_dict({
      "turns": [["hi", "hello", "how are you?"],   # 2 records
                ["alone"],                         # too few turns
                None,                              # missing turns
                ["x", None, "  ", "y"],            # None and blank turns dropped: x -> y
                ["a", "b"],                        # no label: missing_label
                ["\u200b", "only one"]],           # invisible turn: too few
      "mood": ["happy", "sad", "sad", "calm", None, "calm"]})
  validation = datasets.Dataset.from_dict({"turns": [["q", "r"], ["s", "t"]],
                                           "mood": ["happy", "angry"]})
  test = datasets.Dataset.from_dict({"turns": [["u", "v"]], "mood": ["calm"]})
  path = str(tmp_path / "dd")
  datasets.DatasetDict(train=train, validation=validation, test=test).save_to_disk(path)
  cfg = {"format": "hf", "path": path, "label_field": "mood"}
  got = sources.load_split(cfg, "train")
  assert _records(got, *DIALOGUE, "label") == [
      ("00000000", 1, ["hi"], "hello", 1),
      ("00000000", 2, ["hi", "hello"], "how are you?", 1),
      ("00000003", 1, ["x"], "y", 0)]
  assert got.label_names == ["calm", "happy"]   # the training split's kept labels, sorted
  assert got.counts == {"missing_label": 1, "missing_turns": 1, "rows": 6,
                        "too_few_turns": 2, "records": 3}
  val = sources.load_split(cfg, "validation")   # the dataset's own split: nothing hashed
  assert _records(val, "response", "label") == [("r", 1), ("t", -1)]  # unseen: -1
  assert val.label_names == ["calm", "happy"]
  assert _records(sources.load_split(cfg, "test"), "response", "label") == [("v", 0)]
  unlabelled = sources.load_split(dict(cfg, label_field=""), "train")
  assert "label" not in unlabelled[0] and unlabelled.label_names is None
  assert len(unlabelled) == 4                    # the unlabelled dialogue is kept now


def test_labels_per_turn_integers_and_label_count_mismatch(tmp_path):
  ds = datasets.Dataset.from_dict({
      "dialog": [["a", "b", "c"], ["d", "", "e"], ["f", "g"]],
      "act": [[0, 1, 2], [3, 4, 5], [6]]})
  path = str(tmp_path / "d.parquet")
  ds.to_parquet(path)
  cfg = {"format": "hf", "path": path, "turns_field": "dialog", "label_field": "act",
         "validation_percent": 0}
  got = sources.load_split(cfg, "train")
  # the empty turn and its label are dropped together: "e" keeps label 5
  assert _records(got, "history", "response", "label") == [
      (["a"], "b", 1), (["a", "b"], "c", 2), (["d"], "e", 5)]
  assert got.label_names is None
  assert got.counts == {"label_count_mismatch": 1, "rows": 3, "records": 3}
  texts, labels = sources.labelled_texts(got, "label")
  assert (texts, labels) == (["b", "c", "e"], [1, 2, 5])


def test_chat_messages_and_id_column(tmp_path):
  ds = datasets.Dataset.from_dict({
      "id": ["c1", "c2", "c3"],
      "messages": [
          [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
           {"role": "assistant", "content": "hello"},
           {"role": "assistant", "content": "there"}],
          [{"role": "user", "content": "one"}, {"role": "assistant", "content": None}],
          [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]})
  path = str(tmp_path / "chat")
  ds.save_to_disk(path)
  got = sources.load_split({"format": "hf", "path": path, "validation_percent": 0}, "train")
  assert _records(got, *DIALOGUE) == [("c1", 1, ["hi"], "hello there"),
                                      ("c3", 1, ["q"], "a")]
  assert got.counts == {"missing_turns": 1, "rows": 3, "records": 2}


# -- pairs ----------------------------------------------------------------------------------


def test_pairs_from_parquet_split_pattern_with_renamed_splits(tmp_path):
  train = datasets.Dataset.from_dict({
      "prompt": ["how are you? <eou> fine, you?", "hi", "  ", "yo", None],
      "reply": ["great", "hello", "empty context", None, "no context"],
      "score": [1, 0, 1, 1, 0]})
  train.to_parquet(str(tmp_path / "train.parquet"))
  datasets.Dataset.from_dict({"prompt": ["bye"], "reply": ["see you"], "score": [1]}
                             ).to_parquet(str(tmp_path / "dev.parquet"))
  cfg = {"format": "hf", "path": str(tmp_path / "{split}.parquet"), "context_field": "prompt",
         "response_field": "reply", "label_field": "score",
         "hf_splits": {"validation": "dev"}}
  got = sources.load_split(cfg, "train")
  assert _records(got, *DIALOGUE, "label") == [
      ("00000000", 1, ["how are you?", "fine, you?"], "great", 1),
      ("00000001", 1, ["hi"], "hello", 0)]
  assert got.counts == {"bad_pairs": 1, "empty_pairs": 2, "rows": 5, "records": 2}
  assert _records(sources.load_split(cfg, "validation"), "history", "response") == [
      (["bye"], "see you")]
  assert sources.dialogue_pairs(got, 2, "<eou>")[0] == ("how are you? <eou> fine, you?",
                                                        "great")
  with pytest.raises(DataError, match="test.parquet does not exist"):
    sources.load_split(cfg, "test")


def test_pairs_with_a_list_context_and_default_column_names(tmp_path):
  ds = datasets.Dataset.from_dict({"context": [["a", "b"], ["c", None]],
                                   "response": ["r1", "r2"]})
  path = str(tmp_path / "p")
  ds.save_to_disk(path)
  got = sources.load_split({"format": "hf", "path": path, "validation_percent": 0}, "train")
  assert _records(got, "history", "response") == [(["a", "b"], "r1"), (["c"], "r2")]
  bad = datasets.Dataset.from_dict({"context": [1, 2], "response": ["x", "y"]})
  bad.save_to_disk(str(tmp_path / "bad"))
  got = sources.load_split({"format": "hf", "path": str(tmp_path / "bad"),
                            "validation_percent": 0}, "train")
  assert len(got) == 0 and got.counts["bad_pairs"] == 2   # a number is not a context


# -- sentences ------------------------------------------------------------------------------


def _sentences_table(datasets_module):
  ds = datasets_module.Dataset.from_dict(
      {"sentence": ["a good film", "", None, "a bad film", "\x00 meh \x07"],
       "label": [1, 0, 1, 0, 1], "n": [1, 2, 3, 4, 5]},
      features=datasets_module.Features({
          "sentence": datasets_module.Value("string"),
          "label": datasets_module.ClassLabel(names=["neg", "pos"]),
          "n": datasets_module.Value("int64")}))
  return ds


def test_sentences_from_arrow_stream_and_file_formats_and_globs(tmp_path):
  table = _sentences_table(datasets).data.table
  with pa.OSFile(str(tmp_path / "part-0.arrow"), "wb") as sink:     # stream format
    with pa.ipc.new_stream(sink, table.schema) as writer:
      writer.write_table(table.slice(0, 3))
  with pa.OSFile(str(tmp_path / "part-1.arrow"), "wb") as sink:     # file format
    with pa.ipc.new_file(sink, table.schema) as writer:
      writer.write_table(table.slice(3))
  cfg = {"format": "hf", "path": str(tmp_path / "part-*.arrow"), "text_field": "sentence",
         "label_field": "label", "validation_percent": 0}
  got = sources.load_split(cfg, "train")
  assert list(got) == [{"text": "a good film", "label": 1}, {"text": "a bad film", "label": 0},
                       {"text": "meh", "label": 1}]       # control characters are spaces
  assert got.label_names == ["neg", "pos"]                 # the ClassLabel's names
  assert got.counts == {"empty_texts": 2, "rows": 5, "records": 3}
  assert sources.labelled_texts(got, "label") == (["a good film", "a bad film", "meh"],
                                                  [1, 0, 1])
  assert sources.sentences(got) == ["a good film", "a bad film", "meh"]
  wrong = sources.load_split(dict(cfg, text_field="n", label_field=""), "train")
  assert len(wrong) == 0 and wrong.counts["bad_texts"] == 5
  # columns are read by their own names: a label column called "text" is no sentence
  datasets.Dataset.from_dict({"sentence": ["s1", "s2"], "text": ["b", "a"]}).save_to_disk(
      str(tmp_path / "swap"))
  got = sources.load_split({"format": "hf", "path": str(tmp_path / "swap"), "text_field":
                            "sentence", "label_field": "text", "validation_percent": 0}, "train")
  assert list(got) == [{"text": "s1", "label": 1}, {"text": "s2", "label": 0}]


def test_one_table_is_hash_split_like_the_custom_formats(tmp_path):
  texts = [f"sentence number {k}" for k in range(60)]
  datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "s"))
  (tmp_path / "s.txt").write_text("\n".join(texts) + "\n")
  for split in ("train", "validation"):
    hf = sources.load_split({"format": "hf", "path": str(tmp_path / "s"),
                             "validation_percent": 25}, split)
    lines = sources.load_split({"format": "text_lines", "path": str(tmp_path / "s.txt"),
                                "validation_percent": 25}, split)
    assert list(hf) == list(lines) and 0 < len(hf) < 60
  with pytest.raises(ConfigError, match="one table without splits.*train and validation"):
    sources.load_split({"format": "hf", "path": str(tmp_path / "s")}, "test")


def test_a_dataset_without_validation_split_hashes_its_train_split(tmp_path):
  texts = [f"line {k}" for k in range(40)]
  dd = datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": texts}),
                            test=datasets.Dataset.from_dict({"text": ["t"]}))
  dd.save_to_disk(str(tmp_path / "dd"))
  cfg = {"format": "hf", "path": str(tmp_path / "dd"), "validation_percent": 30}
  train, val = (sources.load_split(cfg, s) for s in ("train", "validation"))
  assert sorted(r["text"] for r in list(train) + list(val)) == sorted(texts)
  assert 0 < len(val) < len(train)
  assert [r["text"] for r in val] == [t for t in texts if custom._in_validation(t, 30)]
  assert [r["text"] for r in sources.load_split(cfg, "test")] == ["t"]


# -- errors ---------------------------------------------------------------------------------


def test_errors_are_one_line_and_name_what_exists(tmp_path, monkeypatch):
  dd = datasets.DatasetDict(train=datasets.Dataset.from_dict({"turns": [["a", "b"]],
                                                              "x": [1]}))
  path = str(tmp_path / "dd")
  dd.save_to_disk(path)
  base = {"format": "hf", "path": path}

  def fails(cfg, split="train"):
    with pytest.raises((ConfigError, DataError)) as e:
      sources.load_split(cfg, split)
    assert "\n" not in str(e.value)
    return str(e.value)

  assert "columns: ['turns', 'x']" in fails(dict(base, turns_field="dialog"))
  assert "config.data.label_field='mood'" in fails(dict(base, label_field="mood"))
  assert "it has ['train']" in fails(base, "test")
  assert "hf_splits.test" in fails(base, "test")
  assert "split 'trn'" in fails(dict(base, hf_splits={"train": "trn"}))
  assert "hf_splits.validation=''" in fails(dict(base, hf_splits={"validation": ""}))
  # a validation split named in the config must exist (only the default name falls back)
  assert fails(dict(base, hf_splits={"validation": "dev"})) == (
      "config.data.hf_splits.validation='dev': dataset " + repr(path) + " has no split 'dev' "
      "(it has ['train']); set it to one of the dataset's splits")
  pattern = str(tmp_path / "{split}.parquet")
  datasets.Dataset.from_dict({"text": ["a"]}).to_parquet(str(tmp_path / "train.parquet"))
  assert "dev.parquet does not exist" in fails(
      {"format": "hf", "path": pattern, "hf_splits": {"validation": "dev"}}, "validation")
  assert len(sources.load_split({"format": "hf", "path": pattern, "validation_percent": 0},
                                "train")) == 1     # the default name: hashed from train
  assert "needs config.data.path" in fails({"format": "hf", "path": ""})
  assert "slices" in fails(base, "train[:10%]")
  assert "does not exist" in fails(dict(base, path=str(tmp_path / "nope.parquet")))
  (tmp_path / "x.csv").write_text("a\n")
  assert "neither .parquet nor .arrow" in fails(dict(base, path=str(tmp_path / "x.csv")))
  (tmp_path / "broken.parquet").write_bytes(b"not parquet")
  assert "not a readable .parquet" in fails(dict(base, path=str(tmp_path / "broken.parquet")))
  assert "go together" in fails(dict(base, context_field="x"))
  assert "several record shapes" in fails(dict(base, turns_field="x", text_field="x"))
  assert "validation_percent" in fails(dict(base, validation_percent=120))
  datasets.Dataset.from_dict({"a": ["b"]}).save_to_disk(str(tmp_path / "odd"))
  message = fails(dict(base, path=str(tmp_path / "odd")))
  assert "none of the columns" in message and "columns: ['a']" in message
  monkeypatch.setitem(sys.modules, "datasets", None)    # not installed
  assert 'pip install "vedgan[hf]"' in fails(base)


def test_a_dataset_name_goes_through_load_dataset(tmp_path, monkeypatch):
  local = datasets.DatasetDict(
      train=datasets.Dataset.from_dict({"context": ["hi"], "response": ["hello"]}),
      validation=datasets.Dataset.from_dict({"context": ["bye"], "response": ["ciao"]}))
  calls = []

  def fake_load_dataset(name, subset=None, **kwargs):
    calls.append((name, subset, kwargs))
    if name == "org/missing":
      raise FileNotFoundError("Couldn't find a dataset script\nor any data file")
    return local

  monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
  cfg = {"format": "hf", "path": "org/chat", "hf_config": "en"}
  got = sources.load_split(cfg, "validation")
  assert _records(got, "history", "response") == [(["bye"], "ciao")]
  assert calls == [("org/chat", "en", {})]
  with pytest.raises(DataError, match=r"^config.data.path='org/missing': datasets.load_dataset "
                                      r"failed \(FileNotFoundError: Couldn't find a dataset "
                                      r"script or any data file\)$"):
    sources.load_split(dict(cfg, path="org/missing"), "train")
  # a local folder of data files (not save_to_disk) goes to load_dataset too
  (tmp_path / "files").mkdir()
  assert len(sources.load_split(dict(cfg, path=str(tmp_path / "files")), "train")) == 1
  assert calls[-1][0] == str(tmp_path / "files")


# -- the same corpus as jsonl_dialogues and as hf: the same records and batches ---------------


def _corpus():
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
  dialogues = []
  for k in range(80):
    turns = [" ".join(rng.choice(words, 3 + (k + t) % 4)) + f" {k}" for t in range(2 + k % 3)]
    if k % 9 == 1:
      turns[1] = "   "                    # a blank turn of 3, dropped (and its label)
    if k % 13 == 0:
      turns = turns[:1]                   # too few turns
    dialogues.append({"turns": turns, "mood": ["calm", "happy", "sad"][k % 3]})
  return dialogues


def test_jsonl_and_hf_give_the_same_records_and_batches(tmp_path):
  dialogues = _corpus()
  jsonl = tmp_path / "d.jsonl"
  jsonl.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
  datasets.Dataset.from_list(dialogues).save_to_disk(str(tmp_path / "d"))
  common = dict(tokenizer__kind="word", tokenizer__vocab_size=60,
                data__validation_percent=20, data__label_field="mood")
  configs = {fmt: make_config(data__format=fmt, data__path=path, **common)
             for fmt, path in (("jsonl_dialogues", str(jsonl)), ("hf", str(tmp_path / "d")))}
  for split in ("train", "validation"):
    a, b = (sources.load_split(c.data, split) for c in configs.values())
    assert list(a) == list(b) and len(a) > 10
    assert a.label_names == b.label_names == ["calm", "happy", "sad"]
    assert a.counts == {k: v for k, v in b.counts.items() if k != "rows"}
    assert b.counts["too_few_turns"] == 7
  made = {fmt: inputs.make_inputs(c, str(tmp_path / fmt))[0] for fmt, c in configs.items()}
  a, b = made.values()
  assert a.tokenizer.fingerprint == b.tokenizer.fingerprint
  assert a.counts == b.counts
  for _ in range(3):
    batch_a, batch_b = next(a.streams["train"]), next(b.streams["train"])
    assert batch_a.keys() == batch_b.keys()
    for key in batch_a:
      np.testing.assert_array_equal(batch_a[key], batch_b[key])
  val_a, val_b = (next(iter(m.validation_batches(configs["hf"]))) for m in (a, b))
  for key in val_a:
    np.testing.assert_array_equal(val_a[key], val_b[key])


def test_split_names_default_to_vedgan_names():
  assert hf_format.split_names({}) == {"train": "train", "validation": "validation",
                                       "test": "test"}
  assert hf_format.split_names({"hf_splits": {"validation": "dev"}})["validation"] == "dev"
  assert make_config().data.hf_splits.to_dict() == hf_format.split_names(make_config().data)


def test_a_sentence_dataset_with_a_dialogue_objective_is_a_config_error(tmp_path):
  """A table of single sentences read by a dialogue objective: one line naming the fix,
  not a KeyError on 'history' (flat pairs and hierarchical turns alike)."""
  path = str(tmp_path / "sentences")
  datasets.Dataset.from_dict({"text": ["a first sentence", "a second one"]}).save_to_disk(path)
  records = sources.load_split({"format": "hf", "path": path, "validation_percent": 0}, "train")
  assert len(records) == 2 and set(records[0]) == {"text"}
  for read in (lambda: sources.dialogue_pairs(records, 1, "<eou>"),
               lambda: sources.dialogue_examples(records, 2)):
    with pytest.raises(ConfigError, match=r"single sentences .*data\.context_field"):
      read()
