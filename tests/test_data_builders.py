"""The TFDS builders of the papers' corpora, on dummy data in the real file layouts.

As in TFDS's own dummy-data tests, the download manager is patched so that
downloading a builder's real URL "yields" ``tests/testdata/<name>/`` (which
mirrors the extracted release); everything after that (locating files, nested
archives, parsing, skipping bad lines, writing array_record, reading with
``tfds.data_source``) is the real code. (TFDS's own extractor needs
TensorFlow, so the builders extract archives themselves; the tests that put
the released archive in ``manual_dir`` exercise that.) The manual-download path is tested with
``manual_dir`` holding the released archive or the extracted files.
"""
import gzip
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vedgan.data import pipeline, sources
from vedgan.data import tokenizer as tokenizer_lib
from vedgan.data.opensubtitles import opensubtitles as opensubtitles_lib
from vedgan.errors import DataError

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")

# What downloading (and extracting) each resource yields, under testdata/<name>.
DOWNLOADED = {
    "daily_dialog": {"data": ""},
    "empathetic_dialogues": {"data": ""},
    "persona_chat": {"data": ""},
    "sst2": {"data": ""},
    "coco_captions_texygen": {"train": "data/image_coco.txt",
                              "test": "data/testdata/test_coco.txt"},
    "opensubtitles": {"text": "en.txt"},
}


def _py(value):
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_py(v) for v in value]
  if hasattr(value, "item"):
    return value.item()
  return value


def _records(source):
  rows = [{k: _py(v) for k, v in source[i].items()} for i in range(len(source))]
  key = lambda r: (r.get("dialogue_id", ""), r.get("turn", 0), r.get("idx", 0),
                   r.get("text", ""))
  return sorted(rows, key=key)


def _build(name, data_dir, manual_dir=None):
  """Prepares ``name`` with downloads served from testdata; returns
  ``(builder, {split: records}, [the URL dicts requested])``."""
  base = name.split("/")[0]
  downloads = []

  def fake_download(self, urls):
    downloads.append(dict(urls))
    return {k: os.path.join(TESTDATA, base, DOWNLOADED[base][k]) for k in urls}

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tfds.download.DownloadManager, "download", fake_download)
    config = {"name": name, "data_dir": str(data_dir), "manual_dir": manual_dir}
    builder = sources.prepare_builder(config)
    splits = {s: _records(sources.load_split(config, s))
              for s in builder.info.splits}
  return builder, splits, downloads


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Builds from the dummy downloads, once per module and name."""
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = _build(name, tmp_path_factory.mktemp("tfds"))
    return cache[name]

  return get


@pytest.fixture
def build(tmp_path):
  """``build(name, manual_dir=None)``: a fresh build in this test's tmp dir."""
  return lambda name, manual_dir=None: _build(name, tmp_path / "tfds",
                                              manual_dir)


def _skipped(builder):
  return {split: dict(c) for split, c in builder.info.metadata["skipped"].items()}


def _real_urls(name):
  cls = sources.builder_class(name)
  return {k: r.url for k, r in cls.RESOURCES.items()}


# -- DailyDialog ------------------------------------------------------------------


def test_daily_dialog(built):
  builder, splits, urls = built("daily_dialog")
  assert urls == [_real_urls("daily_dialog")]
  assert urls[0]["data"] == "http://yanran.li/files/ijcnlp_dailydialog.zip"
  train = splits["train"]
  # 5 dialogues: one with 2 acts for 3 turns, one with a latin-1 byte
  assert [(r["dialogue_id"], r["turn"]) for r in train] == [
      ("train/00000", 1), ("train/00000", 2), ("train/00001", 1),
      ("train/00004", 1), ("train/00004", 2)]
  assert train[1] == {
      "dialogue_id": "train/00000", "turn": 2,
      "history": ["Excuse me , is this seat taken ?", "No , please sit down ."],
      "response": "Thanks . It ’ s so crowded today .",
      "emotion": 0, "act": 0, "history_emotion": [0, 0], "history_act": [1, 0]}
  # acts 1..4 -> 0..3; emotions 0..6 as released
  assert train[4]["act"] == 0 and train[4]["emotion"] == 0
  assert train[3]["history_act"] == [2] and train[3]["emotion"] == 5
  features = builder.info.features
  assert features["emotion"].names[4] == "happiness"
  assert features["act"].names == ["inform", "question", "directive",
                                   "commissive"]
  assert {k: len(v) for k, v in splits.items()} == {
      "train": 5, "validation": 2, "test": 2}
  assert _skipped(builder) == {
      "train": {"label_count_mismatch": 1, "undecodable_lines": 1},
      "validation": {}, "test": {}}
  assert "tensorflow" not in sys.modules


def test_daily_dialog_from_released_zip_in_manual_dir(build, built, tmp_path):
  """The real release: a zip holding nested train/validation/test zips."""
  src = os.path.join(TESTDATA, "daily_dialog", "ijcnlp_dailydialog")
  manual = tmp_path / "manual"
  manual.mkdir()
  with zipfile.ZipFile(manual / "ijcnlp_dailydialog.zip", "w") as outer:
    for split in ("train", "validation", "test"):
      inner_path = tmp_path / f"{split}.zip"
      with zipfile.ZipFile(inner_path, "w") as inner:
        for name in sorted(os.listdir(os.path.join(src, split))):
          inner.write(os.path.join(src, split, name), f"{split}/{name}")
      outer.write(inner_path, f"ijcnlp_dailydialog/{split}.zip")
    outer.writestr("ijcnlp_dailydialog/readme.txt", "DailyDialog\n")
  _, from_zip, urls = build("daily_dialog", manual_dir=str(manual))
  assert urls == []  # nothing downloaded
  assert from_zip == built("daily_dialog")[1]
  assert len(from_zip["train"]) == 5


# -- EmpatheticDialogues ---------------------------------------------------------------


def test_empathetic_dialogues(built):
  builder, splits, urls = built("empathetic_dialogues")
  assert urls == [_real_urls("empathetic_dialogues")]
  emotions = builder.info.features["emotion"].names
  assert len(emotions) == 32
  train = splits["train"]
  assert [(r["dialogue_id"], r["turn"]) for r in train] == [
      ("hit:3_conv:6", 1), ("hit:3_conv:6", 2), ("hit:7_conv:15", 1),
      ("hit:7_conv:15", 2)]
  r = train[1]
  assert r["history"] == [
      "My daughter ran her first marathon on Sunday!",
      "Wow, that is a big deal. How long did it take her?"]  # _comma_ -> ,
  assert r["response"] == "Just under four hours. I could not stop smiling."
  assert emotions[r["emotion"]] == "proud"
  assert r["prompt"] == ("My daughter finished her first marathon last "
                         "weekend, I cried at the finish line.")
  assert r["speaker_idx"] == 41
  # the row with an extra field keeps its first six fields
  assert train[2]["response"] == "Oh no! Was it a burglar?"
  assert train[3]["response"] == "It was only the cat, thankfully."
  assert emotions[splits["validation"][0]["emotion"]] == "grateful"
  assert len(splits["test"]) == 1  # third row undecodable
  assert _skipped(builder) == {
      "train": {"malformed_rows": 1, "rows_with_extra_fields": 1,
                "unknown_emotion": 2},
      "validation": {}, "test": {"undecodable_lines": 1}}


# -- PersonaChat -------------------------------------------------------------------------


def test_persona_chat_self_original(built):
  builder, splits, urls = built("persona_chat")
  assert builder.builder_config.name == "self_original"
  assert urls == [{"data": "http://parl.ai/downloads/personachat/"
                           "personachat.tgz"}]
  train = splits["train"]
  assert [(r["dialogue_id"], r["turn"]) for r in train] == [
      ("train/00000", 0), ("train/00000", 1), ("train/00000", 2),
      ("train/00001", 1)]
  first, third = train[0], train[2]
  assert first["persona"] == ["i have two dogs.", "i work as a nurse.",
                              "i like to bake bread."]
  assert first["partner_persona"] == []
  assert first["history"] == ["hi , how are you today ?"]
  assert first["response"] == "i am great , just got home from the hospital ."
  assert first["candidates"][-1] == first["response"]
  assert len(first["candidates"]) == 4
  assert third["history"] == [
      "hi , how are you today ?",
      "i am great , just got home from the hospital .",
      "oh are you a doctor ?",
      "no , i am a nurse . i love helping people .",
      "that is nice . i am a student ."]
  # __SILENCE__ opens episode 2: its first turn has no history (skipped);
  # the reply to the second turn sees the bot's opening line.
  assert train[3]["history"] == ["hello , anyone there ?",
                                 "yes , hello ! what do you do ?"]
  assert train[3]["persona"] == ["i live on a farm.", "i drive a red truck."]
  assert len(splits["validation"]) == len(splits["test"]) == 1
  assert _skipped(builder)["train"] == {"malformed_lines": 1,
                                        "turns_without_history": 1}


def test_persona_chat_config_and_manual_folder(build):
  builder, splits, urls = build(
      "persona_chat/both_original",
      manual_dir=os.path.join(TESTDATA, "persona_chat"))
  assert urls == [] and builder.builder_config.name == "both_original"
  (row,) = splits["train"]
  assert row["persona"] == ["i have two dogs."]
  assert row["partner_persona"] == ["i am a student."]
  assert splits["validation"][0]["history"] == ["hey !"]
  with pytest.raises(ValueError, match="no config 'mine'.*self_original"):
    sources.prepare_builder({"name": "persona_chat/mine"})


# -- SST-2 ------------------------------------------------------------------------------------


def test_sst2(built):
  builder, splits, urls = built("sst2")
  assert urls == [{"data": "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"}]
  assert splits["train"] == [
      {"idx": 0, "text": "a gorgeous , witty , seductive movie .", "label": 1},
      {"idx": 1, "text": "the plot is nothing but boilerplate clichés .",
       "label": 0},
      {"idx": 2, "text": "it 's a charming and often affecting journey .",
       "label": 1}]
  assert [r["label"] for r in splits["validation"]] == [0, 1]
  assert [r["label"] for r in splits["test"]] == [-1, -1]
  assert splits["test"][0]["text"] == "uneasy mishmash of styles and genres ."
  assert _skipped(builder)["train"] == {
      "bad_labels": 1, "empty_sentences": 1, "malformed_rows": 1,
      "undecodable_lines": 1}
  texts, labels = sources.labelled_texts(splits["test"] + splits["train"],
                                         "label")
  assert labels == [1, 0, 1] and len(texts) == 3  # -1 (test) left out


# -- MojiTalk ---------------------------------------------------------------------------------


def test_mojitalk_twitter_from_manual_dir(build):
  builder, splits, urls = build("mojitalk_twitter",
                                manual_dir=os.path.join(TESTDATA,
                                                        "mojitalk_twitter"))
  assert urls == []
  emojis = builder.info.metadata["emojis"]
  assert emojis == sorted(["\U0001F602", "\u2764", "\U0001F62D"])
  train = splits["train"]
  assert len(train) == 5  # the label-only line is skipped
  row = train[0]
  assert row["emoji"] == "\U0001F602" and emojis[row["label"]] == "\U0001F602"
  assert row["history"] == ["when you finally finish your homework at 3am"]
  assert row["response"] == "same here lol i need sleep"
  # an emoji never seen in training gets label -1
  assert [r["label"] for r in splits["validation"]] == [
      emojis.index("\U0001F62D"), -1]
  assert _skipped(builder) == {"train": {"empty_pairs": 1}, "validation": {},
                               "test": {"unpaired_lines": 1}}


def test_mojitalk_missing_is_a_clear_error(build):
  with pytest.raises(DataError) as e:
    build("mojitalk_twitter")
  message = str(e.value)
  assert "\n" not in message
  assert "cannot be downloaded automatically" in message
  assert "github.com/claude-zhou/MojiTalk" in message
  assert "mojitalk_data.zip" in message
  assert os.path.join("downloads", "manual") in message
  assert "config.data.manual_dir" in message


# -- COCO captions (Texygen) ----------------------------------------------------------------


def test_coco_captions_texygen(built):
  builder, splits, urls = built("coco_captions_texygen")
  assert urls == [{
      "train": "https://raw.githubusercontent.com/geek-ai/Texygen/master/"
               "data/image_coco.txt",
      "test": "https://raw.githubusercontent.com/geek-ai/Texygen/master/"
              "data/testdata/test_coco.txt"}]
  assert set(splits) == {"train", "test"}
  assert [r["text"] for r in splits["train"]] == sorted([
      "a man riding a wave on top of a surfboard .",
      "two giraffes standing next to each other in a field",
      "a plate of food with broccoli and rice .",
      "a cat sitting on a laptop keyboard ."])
  assert len(splits["test"]) == 2
  assert _skipped(builder) == {"train": {"empty_lines": 1},
                               "test": {"undecodable_lines": 1}}
  assert sources.sentences(splits["train"])[0] == splits["train"][0]["text"]


# -- OpenSubtitles --------------------------------------------------------------------------


def _subtitle_lines():
  with open(os.path.join(TESTDATA, "opensubtitles", "en.txt"), "rb") as f:
    return [line.rstrip(b"\n") for line in f]


@pytest.fixture
def small_blocks(monkeypatch):
  # Blocks of 2 lines and 30%/30% validation/test, so 15 lines fill 3 splits.
  monkeypatch.setattr(opensubtitles_lib, "BLOCK_LINES", 2)
  monkeypatch.setattr(opensubtitles_lib, "VALIDATION_PER_MILLE", 300)
  monkeypatch.setattr(opensubtitles_lib, "TEST_PER_MILLE", 300)


def _expected_subtitle_pairs():
  lines = _subtitle_lines()
  expected = {"train": [], "validation": [], "test": []}
  for i in range(len(lines) - 1):
    a, b = lines[i], lines[i + 1]
    try:
      a, b = a.decode("utf-8"), b.decode("utf-8")
    except UnicodeDecodeError:
      continue
    if a and b:
      split = opensubtitles_lib.split_of_block(i // 2)
      expected[split].append((a, b))
  return expected


def test_opensubtitles_consecutive_pairs(build, small_blocks):
  del small_blocks
  builder, splits, urls = build("opensubtitles")
  assert builder.builder_config.name == "en_1m"
  assert urls == [{"text": "https://object.pouta.csc.fi/OPUS-OpenSubtitles/"
                           "v2018/mono/en.txt.gz"}]
  got = {s: [(r["history"][0], r["response"]) for r in rows]
         for s, rows in splits.items()}
  expected = _expected_subtitle_pairs()
  assert got == expected
  assert all(got.values())
  assert ("Where are you going?", "To the station.") in sum(got.values(), [])
  skipped = _skipped(builder)
  assert sum(c.get("empty_pairs", 0) for c in skipped.values()) == 2
  assert sum(c.get("undecodable_pairs", 0) for c in skipped.values()) == 2


def test_opensubtitles_reads_gz_from_manual_dir(build, small_blocks, tmp_path):
  del small_blocks
  manual = tmp_path / "manual"
  manual.mkdir()
  with gzip.open(manual / "en.txt.gz", "wb") as f:
    f.write(b"\n".join(_subtitle_lines()) + b"\n")
  _, splits, urls = build("opensubtitles", manual_dir=str(manual))
  assert urls == []
  got = {s: [(r["history"][0], r["response"]) for r in rows]
         for s, rows in splits.items()}
  assert got == _expected_subtitle_pairs()


# -- errors -------------------------------------------------------------------------------------


def test_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch):
  def offline(self, urls):
    raise OSError("[Errno -3] Temporary failure in name resolution")

  monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
  with pytest.raises(DataError) as e:
    sources.load_split({"name": "sst2", "data_dir": str(tmp_path)}, "train")
  message = str(e.value)
  assert "\n" not in message
  assert "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip" in message
  assert "name resolution" in message
  assert "SST-2.zip" in message and "config.data.manual_dir" in message
  # nothing half-built is left behind
  assert not any("incomplete" in f for f in os.listdir(tmp_path / "sst2"))


def test_manual_dir_without_the_files(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "notes.txt").write_text("not the data\n")
  with pytest.raises(DataError, match=r"manual directory .* does not hold "
                     r"empatheticdialogues.tar.gz"):
    sources.load_split({"name": "empathetic_dialogues",
                        "data_dir": str(tmp_path / "d"),
                        "manual_dir": str(manual)}, "train")


def test_a_split_with_no_usable_example_is_a_data_error(build, tmp_path):
  manual = tmp_path / "manual" / "SST-2"
  shutil.copytree(os.path.join(TESTDATA, "sst2", "SST-2"), manual)
  (manual / "dev.tsv").write_text("sentence\tlabel\n  \t1\n")
  with pytest.raises(DataError, match="split 'validation' has no usable "
                     "examples .*empty_sentences"):
    build("sst2", manual_dir=str(manual.parent))


# -- end to end: builder -> tokenizer -> padded device batches ------------------------------


def test_daily_dialog_to_hierarchical_device_batches(built):
  import jax  # pylint: disable=import-outside-toplevel
  from vedgan import parallel  # pylint: disable=import-outside-toplevel
  _, splits, _ = built("daily_dialog")
  records = splits["train"] + splits["validation"] + splits["test"]
  tok = tokenizer_lib.train_word_vocab(sources.sentences(records), 200)
  examples = sources.dialogue_examples(records, max_turns=3)
  labels = [r["emotion"] for r in records]
  enc = pipeline.encode_dialogues(examples, tok, 3, 12, 12, labels=labels)
  assert len(enc) == 9
  it = pipeline.BatchIterator(enc, 4, (8, 16), seed=0, turn_buckets=(2, 3))
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  batch = parallel.shard_batch(next(it), mesh)  # global arrays on the mesh, as the trainer does
  assert batch["turns"].shape[0] == 4 and batch["turns"].shape[1] in (2, 3)
  assert batch["turns"].shape[2] in (8, 16)
  assert isinstance(batch["label"], jax.Array)
  turns = np.asarray(batch["turns"])
  for row in range(4):
    n = int(batch["num_turns"][row])
    decoded = [tok.decode(turns[row, j]) for j in range(n)]
    assert all(decoded) and not turns[row, n:].any()
    response = tok.decode(np.asarray(batch["response_out"][row]))
    match = [r for r in records if r["response"].lower() == response]
    assert match and int(batch["label"][row]) == match[0]["emotion"]


def test_prepare_command_prints_statistics(tmp_path, capsys):
  from vedgan.data import prepare  # pylint: disable=import-outside-toplevel
  out = tmp_path / "stats.json"
  rc = prepare.main(["sst2", "--data_dir", str(tmp_path / "d"), "--manual_dir",
                     os.path.join(TESTDATA, "sst2"), "--json", str(out)])
  assert rc == 0
  import json  # pylint: disable=import-outside-toplevel
  stats = json.loads(out.read_text())["sst2"]["splits"]
  assert stats["train"]["examples"] == 3
  assert stats["train"]["skipped"]["bad_labels"] == 1
  assert stats["validation"]["mean_words"] == 6.0  # 4 and 8 words
  assert "train       examples=3" in capsys.readouterr().out
  assert prepare.main(["mojitalk_twitter", "--data_dir",
                       str(tmp_path / "d")]) == 1
  assert "cannot be downloaded automatically" in capsys.readouterr().err


def _tar(path, members):
  """A .tar.gz of ``members``: (name, bytes) files or (name, "->target") symbolic links."""
  import io  # pylint: disable=import-outside-toplevel
  import tarfile  # pylint: disable=import-outside-toplevel
  with tarfile.open(path, "w:gz") as t:
    for name, content in members:
      info = tarfile.TarInfo(name)
      if isinstance(content, str) and content.startswith("->"):
        info.type, info.linkname = tarfile.SYMTYPE, content[2:]
        t.addfile(info)
      else:
        info.size = len(content)
        t.addfile(info, io.BytesIO(content))


def test_tar_extraction_writes_files_and_refuses_links(tmp_path):
  """Folders and files come out as they went in; a symbolic link member (which a later
  member could write through, outside the extraction folder) is refused on every Python,
  with nothing written outside and no extraction folder left."""
  from vedgan.data import builder_base  # pylint: disable=import-outside-toplevel
  good = tmp_path / "good.tar.gz"
  _tar(good, [("d/a.txt", b"alpha"), ("d/sub/b.txt", b"beta")])
  out = builder_base.extract_archive(good, tmp_path / "x")
  assert (out / "d" / "a.txt").read_bytes() == b"alpha"
  assert (out / "d" / "sub" / "b.txt").read_bytes() == b"beta"
  outside = tmp_path / "outside"
  outside.mkdir()
  evil = tmp_path / "evil.tar.gz"
  _tar(evil, [("d/link", "->" + str(outside)), ("d/link/pwned.txt", b"x")])
  with pytest.raises(DataError, match="'d/link' is a link; refusing to extract"):
    builder_base.extract_archive(evil, tmp_path / "y")
  assert os.listdir(outside) == []
  assert [p for p in os.listdir(tmp_path / "y") if "evil" in p] == []
