"""The ``chitchat`` builder (Chit-Chat Challenge corpus) on a small dataset.json of its format.

``tests/testdata/chitchat/dataset.json`` holds 8 invented conversations in the
package's exact format (see its README line): 5 hash to train, 2 to validation,
1 to test; among them a turn of several messages with an empty one, a turn of
only empty messages between two turns of one speaker, unicode (raw UTF-8 and
``\\u`` escapes), an unrated conversation with ``"prompt": null``, a one-turn
conversation and one whose message lacks ``text``. It is served as
``manual_dir``, so everything after locating the file is the real code.
"""
import collections
import doctest
import json
import os

import pytest

from conftest import make_config
from test_data_builders import _py
from vedgan.data import inputs as inputs_lib
from vedgan.data import sources
from vedgan.data.chitchat import chitchat as chitchat_lib
from vedgan.data.lexicon import Lexicon
from vedgan.errors import DataError
from vedgan.papers.collaborative_ved import data as ved_data
from vedgan.papers.happybot import data as happy_data
from vedgan.papers.latent_gan import data as gan_data
from vedgan.papers.mojitalk import data as moji_data

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "chitchat")

A, B, C = ("6513270e-269e-4d37-b2a7-4de452e6b438", "d23f0824-128b-4f33-8c5c-7fd0a6a3a450",
           "9531985d-5d9d-49f8-9818-e811892f902b")
V1, V2 = "c7a2ea20-b2f1-4c94-ae05-319acb5c7427", "58d5563d-ab2c-431e-a315-128862c33a4f"
T1 = "6b4cb242-4a23-4596-a217-beaddbc496cb"
ONE_TURN, MALFORMED = ("36f675cc-81e7-4ef5-a8e2-5d940ed90475",
                       "6b0d549b-6f03-475a-9600-a35a099950d8")
UNRATED = {"witty": -1, "upbeat": -1, "interesting": -1}


def _rows(source):
  rows = [{k: _py(v) for k, v in source[i].items()} for i in range(len(source))]
  return sorted(rows, key=lambda r: (r["dialogue_id"], r["turn"]))


def _build(data_dir, manual_dir=TESTDATA):
  config = {"name": "chitchat", "data_dir": str(data_dir), "manual_dir": manual_dir}
  builder = sources.prepare_builder(config)
  return builder, {s: _rows(sources.load_split(config, s)) for s in builder.info.splits}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A data dir holding ``chitchat`` prepared from the test file (papers' loaders reuse it)."""
  path = tmp_path_factory.mktemp("tfds")
  _build(path)
  return str(path)


@pytest.fixture(scope="module")
def built(data_dir):
  return _build(data_dir)


def _config(path, data_dir, **overrides):
  return make_config(path, "demo", data__name="chitchat", data__data_dir=data_dir,
                     data__manual_dir=TESTDATA, **overrides)


# -- turns and records ------------------------------------------------------------------


def test_turns_are_joined_and_records_keep_prompt_and_ratings(built):
  builder, splits = built
  assert builder.name == "chitchat" and set(splits) == {"train", "validation", "test"}
  common = {"prompt": "What did you do today?", "start": "2018-05-02T19:38:15Z",
            "witty": 5, "upbeat": 10, "interesting": 7}
  assert splits["train"] == [
      # two messages -> one turn; an empty message dropped; whitespace folded
      {"dialogue_id": A, "turn": 1, "history": ["Hello How are you doing today?"],
       "response": "whats up im doing good", **common},
      {"dialogue_id": A, "turn": 2,
       "history": ["Hello How are you doing today?", "whats up im doing good"],
       "response": "I just took a nap.", **common},
      # the empty turn between two turns of one speaker is dropped and they are joined
      {"dialogue_id": C, "turn": 1, "history": ["I love hiking do you hike?"],
       "response": "sometimes, it is wonderful",
       "prompt": "What is your favorite way to spend a weekend?",
       "start": "2018-05-04T08:00:00Z", "witty": 1, "upbeat": 2, "interesting": 3},
      # unicode from \u escapes and raw UTF-8; unrated, "prompt": null
      {"dialogue_id": B, "turn": 1, "history": ["Café au lait ☕ or tea?"],
       "response": "Tee, bitte — mit Zitrone 🍋 naïve choice?", "prompt": "",
       "start": "2018-05-03T10:00:00Z", **UNRATED},
  ]
  assert [(r["dialogue_id"], r["turn"], r["response"]) for r in splits["validation"]] == [
      (V2, 1, "Yes, a dog named Rex."), (V1, 1, "the traffic was terrible"),
      (V1, 2, "sorry to hear that")]
  assert splits["validation"][0]["witty"] == -1 and splits["validation"][1]["upbeat"] == 6
  assert [(r["dialogue_id"], r["history"], r["response"]) for r in splits["test"]] == [
      (T1, ["What is your favourite book?"], "Dune, I read it every summer.")]
  skipped = {s: dict(c) for s, c in builder.info.metadata["skipped"].items()}
  assert skipped == {"train": {"empty_messages": 3, "empty_turns": 1, "merged_turns": 1,
                               "single_turn_conversations": 1,
                               "malformed_conversations": 1},
                     "validation": {}, "test": {}}


def test_join_turns_keeps_speakers_apart_and_counts():
  said = lambda sender, *texts: [{"text": t, "timestamp": "", "sender": sender} for t in texts]
  skipped = collections.Counter()
  turns = chitchat_lib.join_turns(
      [said("a", "  one ", "two"), said("b", ""), said("b", "three"), said("a", "", " "),
       said("b", "four"), said(None, "five"), said(None, "six")], skipped)
  # b's empty turn and a's empty turn are dropped; "three"/"four" (both b) are joined;
  # turns without a sender are never joined
  assert turns == ["one two", "three four", "five", "six"]
  assert skipped == {"empty_messages": 3, "empty_turns": 2, "merged_turns": 1}


def test_conversation_fields_outside_the_format_become_defaults():
  skipped = collections.Counter()
  turns = [[{"text": "hi", "sender": "a"}], [{"text": "hello", "sender": "b"}]]
  c = chitchat_lib.parse_conversation(
      {"messages": turns, "ratings": {"witty": 11, "upbeat": True, "interesting": "5"},
       "prompt": 3, "start": None}, skipped)
  assert (c.turns, c.prompt, c.start) == (["hi", "hello"], "", "")
  assert c.ratings == UNRATED      # out of 1..10, a bool, a string: not a rating
  c = chitchat_lib.parse_conversation({"messages": turns, "ratings": [1, 2, 3],
                                       "prompt": " Pets?  ", "start": "x"}, skipped)
  assert (c.ratings, c.prompt) == (UNRATED, "Pets?")
  c = chitchat_lib.parse_conversation({"messages": turns,
                                       "ratings": {"witty": 1, "upbeat": 10}}, skipped)
  assert c.ratings == {"witty": 1, "upbeat": 10, "interesting": -1}
  for bad in ([], {"messages": "hi"}, {"messages": [[{"text": 1}]]}, {"messages": [["hi"]]},
              {"messages": [{"text": "hi"}]}):
    assert chitchat_lib.parse_conversation(bad, skipped) is None
  assert skipped == {"malformed_conversations": 5}


def test_module_examples():
  result = doctest.testmod(chitchat_lib, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted >= 4 and result.failed == 0


# -- splits ----------------------------------------------------------------------------


def test_split_of_is_a_fixed_hash_of_the_id():
  # sha256(id)[:8] mod 100 (buckets 85, 7, 25 | 93, 92 | 99): < 90 train, < 95 validation
  expected = {A: "train", B: "train", C: "train", V1: "validation", V2: "validation",
              T1: "test"}
  assert {c: chitchat_lib.split_of(c) for c in expected} == expected
  counts = collections.Counter(chitchat_lib.split_of(f"conversation-{i}") for i in range(20_000))
  assert abs(counts["train"] / 20_000 - 0.90) < 0.01
  assert abs(counts["validation"] / 20_000 - 0.05) < 0.005
  assert abs(counts["test"] / 20_000 - 0.05) < 0.005


def test_splits_are_disjoint_and_do_not_depend_on_the_file_order(built, tmp_path):
  _, splits = built
  ids = {s: {r["dialogue_id"] for r in rows} for s, rows in splits.items()}
  assert ids == {"train": {A, B, C}, "validation": {V1, V2}, "test": {T1}}
  with open(os.path.join(TESTDATA, "dataset.json"), encoding="utf-8") as f:
    corpus = json.load(f)
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "dataset.json").write_text(json.dumps(dict(reversed(list(corpus.items())))),
                                       encoding="utf-8")
  _, again = _build(tmp_path / "tfds", str(manual))
  assert again == splits


# -- what the papers read ------------------------------------------------------------------


def test_pairs_hierarchical_turns_and_sentences(built):
  _, splits = built
  validation = splits["validation"]
  assert sorted(sources.dialogue_pairs(validation, context_turns=2, eou="<eou>")) == [
      ("Do you have pets?", "Yes, a dog named Rex."),
      ("what a lovely day", "the traffic was terrible"),
      ("what a lovely day <eou> the traffic was terrible", "sorry to hear that")]
  assert sorted(sources.dialogue_examples(validation, max_turns=1)) == [
      (["Do you have pets?"], "Yes, a dog named Rex."),
      (["the traffic was terrible"], "sorry to hear that"),
      (["what a lovely day"], "the traffic was terrible")]
  # every turn once: "Hello How are you doing today?" is in two histories
  assert sorted(sources.sentences(splits["train"])) == sorted([
      "Hello How are you doing today?", "whats up im doing good", "I just took a nap.",
      "I love hiking do you hike?", "sometimes, it is wonderful",
      "Café au lait ☕ or tea?", "Tee, bitte — mit Zitrone 🍋 naïve choice?"])


def test_every_papers_data_path_reads_chitchat(data_dir):
  for path in ("configs/seq2seq.py", "configs/topk_gan.py"):   # (context, response) pairs
    pairs = inputs_lib.load_pairs(_config(path, data_dir).data, "test")
    assert pairs == [("What is your favourite book?", "Dune, I read it every summer.")]
  config = _config("configs/collaborative_ved.py", data_dir)   # hierarchical turns
  assert sorted(ved_data.load_examples(config, "validation")) == [
      (["Do you have pets?"], "Yes, a dog named Rex."),
      (["what a lovely day"], "the traffic was terrible"),
      (["what a lovely day", "the traffic was terrible"], "sorry to hear that")]
  config = _config("configs/latent_gan.py", data_dir)          # single sentences
  assert sorted(gan_data.load_sentences(config.data, "validation")) == sorted([
      "what a lovely day", "the traffic was terrible", "sorry to hear that",
      "Do you have pets?", "Yes, a dog named Rex."])


def test_lexicon_stand_in_labels_of_mojitalk_and_happybot(data_dir):
  """The VADER-lexicon stand-in labels (not emoji, not human sentiment labels) the demos use."""
  lexicon = Lexicon.load()
  config = _config("configs/mojitalk.py", data_dir)
  assert config.data.labels == "lexicon"
  pairs, labels = moji_data.source_pairs(config, "validation")
  assert labels is None           # read off the responses: mean valence bucketed at the edges
  got = {r: moji_data.lexicon_label(r, lexicon, tuple(config.data.lexicon_edges))
         for _, r in pairs}
  # terrible -2.1 -> bucket 0; sorry -0.3 -> bucket 2; yes 1.7 -> bucket 4 (label = 1 + bucket)
  assert got == {"the traffic was terrible": 1, "sorry to hear that": 3,
                 "Yes, a dog named Rex.": 5}

  config = _config("configs/happybot.py", data_dir, data__dialogue_sources=("chitchat",))
  assert tuple(config.data.sentiment_sources) == ("lexicon",)
  triples = happy_data.load_triples(config.data, "validation")
  assert sorted((t.context, t.response, t.next_turn) for t in triples) == [
      ("Do you have pets?", "Yes, a dog named Rex.", ""),
      ("what a lovely day", "the traffic was terrible", "sorry to hear that"),
      ("what a lovely day <eou> the traffic was terrible", "sorry to hear that", "")]
  sentences = happy_data.load_sentences(config.data, "validation", triples, lexicon)
  # lovely 2.8 / yes 1.7 > 0 -> 1; terrible -2.1, sorry -0.3 -> 0; no lexicon word -> left out
  assert sorted(sentences) == [("Yes, a dog named Rex.", 1), ("sorry to hear that", 0),
                               ("the traffic was terrible", 0), ("what a lovely day", 1)]


# -- where the file comes from, and bad files ------------------------------------------------------


def test_the_installed_package_file_is_found_without_importing_it():
  path = chitchat_lib.package_json()
  assert path.name == "dataset.json" and path.parent.name == "chitchat_dataset"
  assert path.is_file()


def test_missing_package_is_one_line(monkeypatch, tmp_path):
  monkeypatch.setattr(chitchat_lib.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(DataError) as e:
    sources.load_split({"name": "chitchat", "data_dir": str(tmp_path)}, "train")
  assert "\n" not in str(e.value) and "pip install chitchat-dataset" in str(e.value)


def test_default_manual_dir_of_other_builders_falls_back_to_the_package(monkeypatch, tmp_path):
  default_manual = tmp_path / "downloads" / "manual"
  default_manual.mkdir(parents=True)
  (default_manual / "mojitalk_data.zip").write_bytes(b"another builder's file")
  monkeypatch.setattr(chitchat_lib, "package_json",
                      lambda: chitchat_lib.epath.Path(TESTDATA) / "dataset.json")
  builder = sources.prepare_builder({"name": "chitchat", "data_dir": str(tmp_path)})
  assert builder.info.splits["test"].num_examples == 1


@pytest.mark.parametrize("content,match", [
    (None, r"manual directory .* has no dataset.json"),
    ('{"6513270e": {"messages": [[{"text": "hi"}]]', r"is not valid JSON \(Expecting .* line 1"),
    ('[{"messages": []}]', r"holds a JSON list, not an object"),
    (b'{"a": {"messages": [[{"text": "caf\xe9"}]]}}', r"is not UTF-8"),
], ids=["missing", "not_json", "not_an_object", "not_utf8"])
def test_missing_or_malformed_json_is_one_line_and_writes_nothing(monkeypatch, tmp_path, content,
                                                                 match):
  # never a silent fallback to the installed corpus (here: the good test file)
  monkeypatch.setattr(chitchat_lib, "package_json",
                      lambda: chitchat_lib.epath.Path(TESTDATA) / "dataset.json")
  manual = tmp_path / "manual"
  manual.mkdir()
  if content is None:
    (manual / "notes.txt").write_text("not the corpus\n")
  elif isinstance(content, bytes):
    (manual / "dataset.json").write_bytes(content)
  else:
    (manual / "dataset.json").write_text(content)
  with pytest.raises(DataError, match=match) as e:
    _build(tmp_path / "tfds", str(manual))
  assert "\n" not in str(e.value)
  folder = tmp_path / "tfds" / "chitchat"
  assert not folder.exists() or not any(p.name.endswith(".array_record") or "0000" in p.name
                                        for p in folder.rglob("*"))


def test_prepare_command(monkeypatch, tmp_path, capsys):
  from vedgan.data import prepare  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(chitchat_lib, "package_json",   # a wrong fallback fails fast
                      lambda: chitchat_lib.epath.Path(TESTDATA) / "dataset.json")
  out = tmp_path / "stats.json"
  rc = prepare.main(["chitchat", "--data_dir", str(tmp_path / "d"), "--manual_dir", TESTDATA,
                     "--json", str(out)])
  assert rc == 0
  stats = json.loads(out.read_text(encoding="utf-8"))["chitchat"]["splits"]
  assert {s: (v["examples"], v["dialogues"]) for s, v in stats.items()} == {
      "train": (4, 3), "validation": (3, 2), "test": (1, 1)}
  assert stats["train"]["skipped"]["single_turn_conversations"] == 1
  assert "validation  examples=3" in capsys.readouterr().out
  empty = tmp_path / "empty"
  empty.mkdir()
  assert prepare.main(["chitchat", "--data_dir", str(tmp_path / "d2"), "--manual_dir",
                       str(empty)]) == 1
  err = capsys.readouterr().err.strip()
  assert "has no dataset.json" in err and "\n" not in err
