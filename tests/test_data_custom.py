"""Custom data by config (text_lines / tsv_pairs / jsonl_dialogues) and config-driven inputs,
end to end through to padded batches on the devices."""
import json

import jax
import numpy as np
import pytest

from conftest import make_config
from vedgan import parallel
from vedgan.data import custom, inputs, pipeline, sources
from vedgan.data import tokenizer as tokenizer_lib
from vedgan.errors import ConfigError, DataError


def _write(path, data: bytes):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  return str(path)


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


# -- text_lines ------------------------------------------------------------------


def test_text_lines_hash_split_and_counts(tmp_path):
  lines = [f"sentence number {k} is here" for k in range(40)]
  body = "\ufeff" + "\n".join(lines[:20]) + "\n\n   \n" + "\n".join(lines[20:])
  path = _write(tmp_path / "corpus.txt",
                body.encode() + b"\nbad \xff byte\r\n" + lines[0].encode())
  cfg = {"format": "text_lines", "path": path, "validation_percent": 25}
  train = sources.load_split(cfg, "train")
  val = sources.load_split(cfg, "validation")
  got = [r["text"] for r in train] + [r["text"] for r in val]
  assert sorted(set(got)) == sorted(lines)
  assert len(got) == 41  # the repeated line is kept (and in the same split)
  assert 0 < len(val) < len(train)
  assert not {r["text"] for r in train} & {r["text"] for r in val}
  assert train.counts == {"empty_lines": 2, "undecodable_lines": 1,
                          "records": len(train)}
  assert sources.load_split(cfg, "validation") == val  # stable
  assert sources.sentences(train) == sorted(set(sources.sentences(train)),
                                            key=sources.sentences(train).index)


def test_text_lines_to_device_batches(tmp_path):
  _write(tmp_path / "{split}.txt".replace("{split}", "train"),
         b"a cat sat on the mat\nthe dog ran\nbirds sing in the trees\n"
         b"a very long sentence that will certainly be cut short here\n")
  cfg = {"format": "text_lines", "path": str(tmp_path / "{split}.txt")}
  texts = sources.sentences(sources.load_split(cfg, "train"))
  tok = tokenizer_lib.train_word_vocab(texts, 100)
  enc = pipeline.encode_sentences(texts, tok, max_len=8)
  assert enc.counts["truncated"] == 1
  it = pipeline.BatchIterator(enc, 4, (4, 8), seed=0)
  batch = parallel.shard_batch(next(it), _mesh())
  assert isinstance(batch["tokens_in"], jax.Array)
  assert batch["tokens_in"].shape == (4, 8)
  rows = np.asarray(batch["tokens_out"])
  assert sorted(tok.decode(r) for r in rows) == sorted(
      [texts[0], texts[1], texts[2], " ".join(texts[3].split()[:7])])


# -- tsv_pairs ---------------------------------------------------------------------


def test_tsv_pairs_with_split_pattern(tmp_path):
  _write(tmp_path / "d" / "train.tsv",
         b"context\tresponse\n"
         b"hi there\thello!\n"
         b"how are you? <eou> fine, you?\tgreat, thanks\n"
         b"only one field\n"
         b"a\tb\tc\n"
         b"\tno context\n"
         b"caf\xe9\tbad bytes\n")
  _write(tmp_path / "d" / "validation.tsv", b"good night\tsleep well\n")
  cfg = {"format": "tsv_pairs", "path": str(tmp_path / "d" / "{split}.tsv"),
         "eou": "<eou>"}
  train = sources.load_split(cfg, "train")
  assert [(r["history"], r["response"]) for r in train] == [
      (["hi there"], "hello!"),
      (["how are you?", "fine, you?"], "great, thanks")]
  assert train.counts == {"empty_pairs": 1, "malformed_lines": 2,
                          "undecodable_lines": 1, "records": 2}
  assert sources.dialogue_pairs(train, 2, "<eou>")[1] == (
      "how are you? <eou> fine, you?", "great, thanks")
  assert len(sources.load_split(cfg, "validation")) == 1
  with pytest.raises(DataError, match="test.tsv does not exist"):
    sources.load_split(cfg, "test")


# -- jsonl_dialogues -------------------------------------------------------------------


def _dialogues(tmp_path):
  rows = [
      {"id": "d1", "turns": ["hi", "hello", "how are you?"],
       "mood": "happy"},
      {"turns": ["i lost my keys", "oh no", "found them"],
       "mood": ["sad", "sad", "happy"]},
      {"id": "d3", "turns": ["x", None, "", "y"], "mood": 2},
      {"turns": ["only one turn"], "mood": "sad"},
      {"turns": ["a", "b"], "mood": ["sad"]},
      {"turns": "not a list", "mood": "sad"},
      {"turns": ["a", "b"]},
      [1, 2],
  ]
  body = "\n".join(json.dumps(r) for r in rows) + "\n{broken json\n\n"
  return _write(tmp_path / "dialogues.jsonl", body.encode())


def test_jsonl_dialogues_with_labels(tmp_path):
  cfg = {"format": "jsonl_dialogues", "path": _dialogues(tmp_path),
         "validation_percent": 0, "label_field": "mood"}
  train = sources.load_split(cfg, "train")
  assert train.label_names == ["happy", "sad"]
  assert [(r["dialogue_id"], r["turn"], r["history"], r["response"],
           r["label"]) for r in train] == [
               ("d1", 1, ["hi"], "hello", 0),
               ("d1", 2, ["hi", "hello"], "how are you?", 0),
               ("00000001", 1, ["i lost my keys"], "oh no", 1),
               ("00000001", 2, ["i lost my keys", "oh no"], "found them", 0),
               ("d3", 1, ["x"], "y", 2)]  # empty turns dropped
  assert train.counts == {
      "empty_lines": 1, "label_count_mismatch": 1, "malformed_json": 2,
      "missing_label": 1, "missing_turns": 1, "too_few_turns": 1,
      "records": 5}
  assert len(sources.load_split(cfg, "validation")) == 0
  texts, labels = sources.labelled_texts(train, "label")
  enc = pipeline.encode_labelled(texts, labels, tokenizer_lib.train_word_vocab(
      texts, 50), max_len=6)
  batch = next(pipeline.BatchIterator(enc, 5, (6,), seed=0, shuffle=False))
  np.testing.assert_array_equal(batch["label"], [0, 0, 1, 0, 2])
  no_labels = sources.load_split(dict(cfg, label_field=""), "train")
  assert "label" not in no_labels[0] and no_labels.label_names is None
  assert len(no_labels) == 7  # label problems no longer matter: 2 more kept


def test_custom_format_errors(tmp_path):
  with pytest.raises(ConfigError, match="needs config.data.path"):
    sources.load_split({"format": "tsv_pairs", "path": ""}, "train")
  with pytest.raises(DataError, match="does not exist"):
    sources.load_split({"format": "tsv_pairs",
                        "path": str(tmp_path / "nope.tsv")}, "train")
  path = _write(tmp_path / "x.txt", b"a\n")
  with pytest.raises(ConfigError, match="train and validation only"):
    sources.load_split({"format": "text_lines", "path": path}, "test")
  with pytest.raises(ConfigError, match="slices"):
    sources.load_split({"format": "text_lines", "path": path}, "train[:5]")
  with pytest.raises(ConfigError, match="format='csv'"):
    custom.load_split({"format": "csv", "path": path}, "train")
  with pytest.raises(ConfigError, match="validation_percent"):
    sources.load_split({"format": "text_lines", "path": path,
                        "validation_percent": 120}, "train")
  with pytest.raises(ConfigError, match="single sentences"):
    inputs.load_pairs(make_config(data__format="text_lines",
                                  data__path=path).data, "train")


# -- config-driven inputs (make_inputs) --------------------------------------------------


def test_make_inputs_custom_tsv_word_tokenizer_and_resume(tmp_path):
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
  rows = []
  for k in range(120):
    context = " ".join(rng.choice(words, 5))
    response = " ".join(rng.choice(words, 4))
    rows.append(f"{context} number {k}\t{response}")
  path = _write(tmp_path / "pairs.tsv", ("\n".join(rows) + "\n").encode())
  config = make_config(data__format="tsv_pairs", data__path=path,
                       data__validation_percent=20, tokenizer__kind="word",
                       tokenizer__vocab_size=50)
  workdir = str(tmp_path / "run")
  got, is_new = inputs.make_inputs(config, workdir)
  assert is_new and isinstance(got.tokenizer, tokenizer_lib.WordTokenizer)
  assert got.tokenizer.vocab_size == 50  # 6 specials + 44 most frequent
  assert got.counts["train"]["examples"] + got.counts["validation"][
      "examples"] == 120
  batch = parallel.shard_batch(next(got.streams["train"]), _mesh())
  assert batch["context"].shape[0] == config.train.batch_size
  assert batch["context"].shape[1] in tuple(config.data.buckets)
  row = np.asarray(batch["context"][0])
  assert got.tokenizer.decode(row).split()[:5] != []
  assert next(iter(got.validation_batches(config, 1)))["weight"].sum() > 0
  # the count progress bars show is what a pass yields (24 examples over buckets; capped)
  passes = len(list(got.validation_batches(config)))
  assert got.validation_batch_count(config) == passes >= 2
  assert got.validation_batch_count(config, 1) == 1
  # The run stores the tokenizer; a restart (resume) reuses it as saved.
  got.tokenizer.save(inputs.tokenizer_dir(workdir))
  again, is_new = inputs.make_inputs(
      make_config(data__format="tsv_pairs", data__path=path,
                  data__validation_percent=20, tokenizer__kind="word",
                  tokenizer__vocab_size=50), workdir)
  assert not is_new and again.tokenizer.fingerprint == got.tokenizer.fingerprint
  np.testing.assert_array_equal(next(again.streams["train"])["context"],
                                next(inputs.make_inputs(config, workdir)[0]
                                     .streams["train"])["context"])


def test_make_inputs_embedded_corpus_to_device_batches(tmp_path):
  config = make_config(tokenizer__kind="word", tokenizer__vocab_size=400)
  got, is_new = inputs.make_inputs(config, str(tmp_path / "run"))
  assert is_new and got.tokenizer.model_type == "word"
  assert got.counts["train"]["examples"] > 1000
  stream = got.streams["train"]
  for _ in range(3):
    batch = parallel.shard_batch(next(stream), _mesh())
    b, lr = batch["response_out"].shape
    assert b == 8 and lr in (8, 16)
    out = np.asarray(batch["response_out"])
    assert (out == tokenizer_lib.EOS_ID).sum() == b  # one eos per row
  assert stream.get_state()["position"] == 3


def test_unknown_tokenizer_kind(tmp_path):
  with pytest.raises(ConfigError, match="tokenizer.kind='chars'"):
    inputs.get_tokenizer(make_config(tokenizer__kind="chars"),
                         str(tmp_path), [("a b", "c")])


@pytest.mark.parametrize("encoding, fragment", [
    ("utf-16", "is UTF-16LE text (it starts with its byte-order mark)"),
    ("utf-16-le", "line 1 of"),                 # no byte-order mark: NUL bytes
    ("utf-32", "is UTF-32LE text"),
    ("utf-16-be", "has NUL bytes: it is not UTF-8 text"),
])
def test_wide_encodings_are_one_line_errors_not_garbage(tmp_path, encoding, fragment):
  """UTF-16/32 text is valid UTF-8 byte by byte (letters with NULs between them): it used to
  train silently on that. Now one line names the encoding and the fix; UTF-8 with a
  byte-order mark reads as UTF-8."""
  from vedgan.data import textio  # pylint: disable=import-outside-toplevel
  text = "".join(f"how is item {i}\tfine {i}\n" for i in range(5))
  path = tmp_path / "pairs.tsv"
  path.write_bytes(text.encode(encoding))
  with pytest.raises(DataError) as exc:
    list(textio.read_lines(path))
  assert fragment in str(exc.value) and "iconv" in str(exc.value), str(exc.value)
  path.write_bytes(text.encode("utf-8-sig"))
  assert list(textio.read_lines(path)) == text.splitlines()


# -- own data: chat messages, split keys, warnings, errors (issue 22) -------------


def test_chat_format_messages_are_read_as_turns(tmp_path):
  chat = [{"messages": [{"role": "system", "content": "be kind"},
                        {"role": "user", "content": "hi there"},
                        {"role": "assistant", "content": "hello"},
                        {"role": "assistant", "content": "how are you?"},
                        {"role": "user", "content": "fine"}]},
          {"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]},  # no content
          {"dialog": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
  path = _write(tmp_path / "chat.jsonl", "".join(json.dumps(c) + "\n" for c in chat).encode())
  cfg = {"format": "jsonl_dialogues", "path": path, "validation_percent": 0}
  recs = sources.load_split(cfg, "train")
  assert [(r["history"], r["response"]) for r in recs] == [
      (["hi there"], "hello how are you?"), (["hi there", "hello how are you?"], "fine")]
  assert recs.counts == {"missing_turns": 2, "records": 2}
  named = sources.load_split(dict(cfg, turns_field="dialog"), "train")   # any field name
  assert [(r["history"], r["response"]) for r in named] == [(["a"], "b")]


def test_no_pairs_error_names_the_turns_field(tmp_path):
  path = _write(tmp_path / "d.jsonl", b'{"utterances": ["a", "b"]}\n{"utterances": ["c", "d"]}\n')
  config = make_config(data__format="jsonl_dialogues", data__path=path,
                       data__validation_percent=0)
  with pytest.raises(DataError, match=r"has no \(context, response\) pairs \(2 lines have no "
                     r"list of turns under 'turns'\); set --config.data.turns_field"):
    inputs.load_pairs(config.data, "train")


def test_dialogues_that_open_alike_are_spread_over_both_splits(tmp_path):
  """The split hashes the whole dialogue: 200 dialogues that all open with one line were all
  in one split when it hashed the first turn."""
  lines = [json.dumps({"turns": ["do you like pizza ?", f"yes, number {k}", f"why {k} ?"]})
           for k in range(200)]
  path = _write(tmp_path / "pizza.jsonl", ("\n".join(lines) + "\n").encode())
  cfg = {"format": "jsonl_dialogues", "path": path, "validation_percent": 10}
  train, val = sources.load_split(cfg, "train"), sources.load_split(cfg, "validation")
  assert len(train) + len(val) == 400
  assert 20 <= len(val) <= 60, len(val)           # ~10% of 400, binomial spread
  key = lambda r: (tuple(r["history"]), r["response"])
  assert not {key(r) for r in train} & {key(r) for r in val}


def test_a_tiny_or_repetitive_validation_split_is_warned_about():
  varied = [(f"context {k}", f"reply {k}") for k in range(60)]
  assert inputs.warn_if_unrepresentative(varied, "x validation") == []
  (tiny,) = inputs.warn_if_unrepresentative(varied[:10], "x validation")
  assert "only 10 (context, response) pairs" in tiny
  same = varied + [("do you like pizza ?", f"r{k}") for k in range(20)]
  (repetitive,) = inputs.warn_if_unrepresentative(same, "x validation")
  assert "20 of its 80 pairs have the context 'do you like pizza ?'" in repetitive
