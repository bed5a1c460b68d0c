"""Tests for the chatterbot_corpus TFDS builder and vedgan.data.sources."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vedgan.data import sources
from vedgan.data.chatterbot_corpus import chatterbot_corpus as cc

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# health.yml has a single 9-turn conversation (checked by hand in the YAML).
HEALTH_TURNS = [
    "How is your health?",
    "I'm not feeling well",
    "why?",
    "I have a fever",
    "Did you take medicine?",
    "Yes.",
    "When?",
    "In the morning",
    "Get well soon dear",
]


def _s(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def splits(data_dir):
  config = {"name": "chatterbot_corpus", "data_dir": data_dir}
  return {split: sources.load_split(config, split)
          for split in ("train", "validation")}


@pytest.fixture(scope="module")
def records(splits):
  return {split: list(ds) for split, ds in splits.items()}


def test_both_splits_nonempty_and_disjoint(records):
  train_ids = {_s(r["dialogue_id"]) for r in records["train"]}
  valid_ids = {_s(r["dialogue_id"]) for r in records["validation"]}
  assert len(records["train"]) > 1000
  assert len(records["validation"]) > 50
  assert not train_ids & valid_ids
  # ~10% of the conversations go to validation.
  fraction = len(valid_ids) / (len(train_ids) + len(valid_ids))
  assert 0.05 < fraction < 0.15


def test_every_turn_of_every_distinct_conversation_is_an_example(records):
  expected, seen, split_of = {}, set(), {}
  for dialogue_id, category, turns in cc.read_conversations():
    if tuple(turns) in seen:  # exact duplicates are kept once
      continue
    seen.add(tuple(turns))
    split_of[dialogue_id] = cc.is_validation(cc.split_key(turns))
    for t in range(1, len(turns)):
      expected[(dialogue_id, t)] = (category, turns[:t], turns[t])
  got = {}
  for split, rows in records.items():
    for r in rows:
      key = (_s(r["dialogue_id"]), int(r["turn"]))
      assert key not in got
      got[key] = (_s(r["category"]), [_s(h) for h in r["history"]],
                  _s(r["response"]))
      assert split_of[key[0]] == (split == "validation")
  assert got == expected


def test_no_opening_turn_is_shared_between_splits(records):
  openings = {split: {" ".join(_s(r["history"][0]).lower().split()) for r in rows}
              for split, rows in records.items()}
  assert not openings["train"] & openings["validation"]


def test_hand_checked_conversation(records):
  rows = [r for split in records.values() for r in split
          if _s(r["dialogue_id"]) == "health/0000"]
  rows.sort(key=lambda r: int(r["turn"]))
  assert [int(r["turn"]) for r in rows] == list(range(1, 9))
  for r in rows:
    t = int(r["turn"])
    assert [_s(h) for h in r["history"]] == HEALTH_TURNS[:t]
    assert _s(r["response"]) == HEALTH_TURNS[t]
    assert _s(r["category"]) == "health"


def test_split_hash_is_stable():
  # sha256-based, hence identical in every process / Python version.
  for key in ("hello", "what is ai?", "tell me a joke"):
    digest = hashlib.sha256(key.encode()).digest()
    want = int.from_bytes(digest[:8], "big") % 100 < 10
    assert cc.is_validation(key) == want
  assert cc.split_key(["  What  is AI? ", "x"]) == "what is ai?"


def test_turns_are_coerced_and_empty_ones_dropped(tmp_path):
  (tmp_path / "misc.yml").write_text(textwrap.dedent("""\
      categories: [misc]
      conversations:
      - - yes
        - 1.10
        - ''
        - ~
        - '  spaced  '
      - - lonely turn
      - just a string, not a list
      """))
  convs = list(cc.read_conversations(str(tmp_path)))
  # BaseLoader keeps the YAML text: "yes" stays "yes", 1.10 stays "1.10".
  assert convs == [("misc/0000", "misc", ["yes", "1.10", "~", "spaced"])]


def test_builder_metadata(data_dir, splits):
  del splits  # built
  builder = cc.ChatterbotCorpus(data_dir=data_dir)
  assert builder.name == "chatterbot_corpus"
  assert str(builder.version) == "1.1.0"
  assert "1.1.0" in builder.RELEASE_NOTES
  assert set(builder.info.splits.keys()) == {"train", "validation"}
  assert set(builder.info.features.keys()) == {
      "dialogue_id", "turn", "history", "response", "category"}
  files = os.listdir(builder.data_dir)
  assert any(".array_record" in f for f in files)


def test_second_load_reuses_prepared_data(data_dir, splits):
  info = os.path.join(data_dir, "chatterbot_corpus", "1.1.0",
                      "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  again = sources.load_split({"name": "chatterbot_corpus",
                              "data_dir": data_dir}, "validation")
  assert len(again) == len(splits["validation"])
  assert os.stat(info).st_mtime_ns == before


def test_split_slicing(data_dir, splits):
  part = sources.load_split({"name": "chatterbot_corpus", "data_dir": data_dir},
                            "train[:10]")
  assert len(part) == 10
  assert _s(part[3]["response"]) == _s(splits["train"][3]["response"])


def test_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match="known: .*chatterbot_corpus") as e:
    sources.load_split({"name": "no_such_corpus"}, "train")
  assert "\n" not in str(e.value)


def test_config_object_and_data_dir_resolution(monkeypatch, tmp_path):
  class Config:  # attribute access like ml_collections.ConfigDict
    name = "chatterbot_corpus"
  assert sources.config_value(Config(), "data_dir") is None
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "env"))
  assert sources.resolve_data_dir(None) == str(tmp_path / "env")
  assert sources.resolve_data_dir(str(tmp_path / "x")) == str(tmp_path / "x")
  monkeypatch.delenv(sources.DATA_DIR_ENV)
  assert sources.resolve_data_dir(None) == os.path.expanduser(
      "~/.cache/vedgan/tfds")


def test_dialogue_pairs_context_turns():
  records = [
      {"history": [b"a", b"b", b"c"], "response": b"d"},
      {"history": ["x"], "response": "y"},
  ]
  assert sources.dialogue_pairs(records, 2, "<eou>") == [
      ("b <eou> c", "d"), ("x", "y")]
  assert sources.dialogue_pairs(records, 5, "|") == [
      ("a | b | c", "d"), ("x", "y")]
  with pytest.raises(ValueError, match="context_turns"):
    sources.dialogue_pairs(records, 0, "<eou>")


def test_dialogue_pairs_from_data_source(splits):
  pairs = sources.dialogue_pairs(splits["validation"], 1, "<eou>")
  assert len(pairs) == len(splits["validation"])
  assert all(c and r and "<eou>" not in c for c, r in pairs)


_RACE_SCRIPT = """
import json, sys
from vedgan.data import sources
ds = sources.load_split({"name": "chatterbot_corpus", "data_dir": sys.argv[1]},
                        "train")
sys.stderr.write(json.dumps({"n": len(ds),
                             "tf": "tensorflow" in sys.modules}) + "\\n")
"""


def test_concurrent_prepare_is_safe_quiet_and_tf_free(tmp_path):
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  procs = [subprocess.Popen(
      [sys.executable, "-c", _RACE_SCRIPT, str(tmp_path)], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == ""  # no TFDS prints / progress bars on stdout
    results.append(json.loads(err.strip().splitlines()[-1]))
  assert results[0] == results[1]
  assert results[0]["n"] > 1000
  assert not results[0]["tf"]  # TensorFlow never imported
  leftovers = [f for f in os.listdir(tmp_path / "chatterbot_corpus")
               if "incomplete" in f]
  assert not leftovers


def test_sentences_labelled_texts_and_dialogue_examples():
  records = [
      {"history": [b"hi", b"how are you?"], "response": b"fine"},
      {"history": ["hi", "how are you?", "fine"], "response": "good  "},
      {"history": [b"\xff\xfe"], "response": "hi"},  # undecodable turn
      {"history": ["   "], "response": "ok"},
  ]
  assert sources.sentences(records) == ["hi", "how are you?", "fine", "good",
                                        "ok"]
  assert sources.sentences([{"text": b"a b"}, {"text": "a b"},
                            {"text": "c"}]) == ["a b", "c"]
  assert sources.dialogue_examples(records[:2], max_turns=2) == [
      (["hi", "how are you?"], "fine"), (["how are you?", "fine"], "good  ")]
  with pytest.raises(ValueError, match="max_turns"):
    sources.dialogue_examples(records, 0)
  labelled = [{"text": "good", "label": 1}, {"text": "bad", "label": 0},
              {"text": "?", "label": -1},
              {"response": b"yay", "history": [], "emotion": np.int64(4)}]
  assert sources.labelled_texts(labelled[:3], "label") == (
      ["good", "bad"], [1, 0])
  assert sources.labelled_texts(labelled[3:], "emotion") == (["yay"], [4])


def test_builder_names_with_configs():
  assert sources.split_name("persona_chat/both_original") == (
      "persona_chat", "both_original")
  assert sources.split_name("sst2") == ("sst2", None)
  assert sources.builder_class("persona_chat/both_original").__name__ == (
      "PersonaChat")
  for name in ("daily_dialog", "empathetic_dialogues", "persona_chat", "sst2",
               "mojitalk_twitter", "coco_captions_texygen", "opensubtitles"):
    cls = sources.builder_class(name)
    assert cls.name == name
    # TFDS 4.9's default code_path needs importlib_resources: overridden.
    assert str(cls.code_path).endswith(f"{name}.py")
