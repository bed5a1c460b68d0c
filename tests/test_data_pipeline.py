"""Tests for vedgan.data.pipeline (encode_pairs, BatchIterator)."""
import json
import unicodedata

import numpy as np
import pytest
from fakes import FakeTokenizer

from vedgan.data import pipeline
from vedgan.data import sources
from vedgan.data import tokenizer as tokenizer_lib
from vedgan.data.chatterbot_corpus.chatterbot_corpus import read_conversations

#: "7 8 9" -> [7, 8, 9] (the examples' ids are > 5: distinct from the specials).
INT_TOK = FakeTokenizer("ids", vocab_size=20_000)


def _pairs(num, seed=0, max_len=12):
  """Pairs whose tokens identify the example: context k -> (100+k, ...)."""
  rng = np.random.default_rng(seed)
  pairs = []
  for k in range(num):
    lc, lr = rng.integers(1, max_len + 1, size=2)
    context = " ".join([str(100 + k)] * int(lc))
    response = " ".join([str(10_000 + k)] + ["6"] * (int(lr) - 1))
    pairs.append((context, response))
  return pairs


@pytest.fixture(scope="module")
def encoded():
  return pipeline.encode_pairs(_pairs(50), INT_TOK, 16, 16)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _example_ids(batch):
  """Example index of each row (from the context token), -1 for padding."""
  first = batch["context"][:, 0].astype(np.int64)
  return np.where(first > 0, first - 100, -1)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
      assert x[k].dtype == y[k].dtype


# -- encode_pairs -------------------------------------------------------------


def test_encode_pairs_truncation_and_counts():
  pairs = [
      ("1 2 3 4 5 6 7 8 9 10", "11 12 13 14 15 16"),  # both truncated
      ("20 21", "22"),
      ("", "30"),  # empty context
      ("40", "  "),  # empty response
      (b"50 \xff", "51"),  # undecodable bytes
      ("60", "\udcff"),  # lone surrogate (surrogateescape'd bad byte)
  ]
  enc = pipeline.encode_pairs(pairs, INT_TOK, max_context_len=4,
                              max_response_len=4)
  assert len(enc) == 2
  np.testing.assert_array_equal(enc.context[0], [7, 8, 9, 10])  # last tokens
  np.testing.assert_array_equal(enc.response[0], [11, 12, 13])  # first L-1
  np.testing.assert_array_equal(enc.context[1], [20, 21])
  assert enc.context[0].dtype == np.int32
  assert enc.counts == dict(pairs=6, examples=2, skipped_empty=2,
                            skipped_undecodable=2, skipped_too_long=0,
                            truncated_context=1, truncated_response=1,
                            context_tokens=6, response_tokens=4)
  skip = pipeline.encode_pairs(pairs, INT_TOK, 4, 4, too_long="skip")
  assert len(skip) == 1 and skip.counts["skipped_too_long"] == 1
  assert skip.counts["truncated_context"] == 0
  with pytest.raises(ValueError, match="too_long"):
    pipeline.encode_pairs(pairs, INT_TOK, 4, 4, too_long="cut")
  with pytest.raises(ValueError, match="max_response_len must be >= 2"):
    pipeline.encode_pairs(pairs, INT_TOK, 4, 1)
  with pytest.raises(ValueError, match="max_context_len"):
    pipeline.encode_pairs(pairs, INT_TOK, 0, 4)


# -- BatchIterator: contents and shapes --------------------------------------


def test_shapes_are_buckets_and_rows_shifted(encoded):
  buckets = (4, 8, 16)
  it = pipeline.BatchIterator(encoded, 8, buckets, seed=0)
  for batch in _take(it, 12):
    assert set(batch) == {"context", "response_in", "response_out", "weight"}
    b_c, lc = batch["context"].shape
    assert b_c == 8 and lc in buckets
    assert batch["response_in"].shape == batch["response_out"].shape
    assert batch["response_in"].shape[1] in buckets
    for key in ("context", "response_in", "response_out"):
      assert batch[key].dtype == np.int32
    assert batch["weight"].dtype == np.float32
    np.testing.assert_array_equal(batch["weight"], np.ones(8))
    ids = _example_ids(batch)
    longest_c = max(len(encoded.context[i]) for i in ids)
    longest_r = max(len(encoded.response[i]) + 1 for i in ids)
    assert lc == min(b for b in buckets if b >= longest_c)
    assert batch["response_in"].shape[1] == min(
        b for b in buckets if b >= longest_r)
    for row, i in enumerate(ids):
      c, r = encoded.context[i], encoded.response[i]
      n = len(r)
      np.testing.assert_array_equal(batch["context"][row, :len(c)], c)
      assert not batch["context"][row, len(c):].any()
      assert batch["response_in"][row, 0] == tokenizer_lib.BOS_ID
      np.testing.assert_array_equal(batch["response_in"][row, 1:n + 1], r)
      np.testing.assert_array_equal(batch["response_out"][row, :n], r)
      assert batch["response_out"][row, n] == tokenizer_lib.EOS_ID
      assert not batch["response_in"][row, n + 1:].any()
      assert not batch["response_out"][row, n + 1:].any()


def test_separate_response_buckets(encoded):
  it = pipeline.BatchIterator(encoded, 8, (16,), seed=0,
                              response_buckets=(16, 32))
  batch = next(it)
  assert batch["context"].shape[1] == 16
  assert batch["response_in"].shape[1] == 16
  assert it.response_buckets == (16, 32)


def test_epoch_is_a_permutation_and_orders_differ(encoded):
  it = pipeline.BatchIterator(encoded, 10, (16,), seed=3)
  assert it.num_batches_per_epoch == 5
  epoch0 = np.concatenate([_example_ids(b) for b in _take(it, 5)])
  epoch1 = np.concatenate([_example_ids(b) for b in _take(it, 5)])
  assert sorted(epoch0) == list(range(50)) == sorted(epoch1)
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(
      epoch0, np.random.default_rng([3, 0]).permutation(50))
  np.testing.assert_array_equal(
      epoch1, np.random.default_rng([3, 1]).permutation(50))


def test_determinism_and_seed(encoded):
  a = _take(pipeline.BatchIterator(encoded, 8, (4, 8, 16), seed=1), 15)
  b = _take(pipeline.BatchIterator(encoded, 8, (4, 8, 16), seed=1), 15)
  c = _take(pipeline.BatchIterator(encoded, 8, (4, 8, 16), seed=2), 15)
  _assert_batches_equal(a, b)
  assert any(not np.array_equal(_example_ids(x), _example_ids(y))
             for x, y in zip(a, c))


def test_no_shuffle_is_file_order(encoded):
  it = pipeline.BatchIterator(encoded, 10, (16,), seed=0, shuffle=False)
  ids = np.concatenate([_example_ids(b) for b in _take(it, 10)])
  np.testing.assert_array_equal(ids, np.tile(np.arange(50), 2))


def test_drop_remainder(encoded):
  it = pipeline.BatchIterator(encoded, 16, (16,), seed=0)
  assert it.num_batches_per_epoch == 3  # 50 // 16, 2 examples dropped
  epoch = np.concatenate([_example_ids(b) for b in _take(it, 3)])
  assert len(set(epoch)) == 48
  np.testing.assert_array_equal(
      epoch, np.random.default_rng([0, 0]).permutation(50)[:48])


# -- resume ------------------------------------------------------------------


@pytest.mark.parametrize("consumed", [0, 3, 6, 7, 13])
def test_resume_gives_identical_batches(encoded, consumed):
  kwargs = dict(global_batch_size=8, buckets=(4, 8, 16), seed=5)
  reference = pipeline.BatchIterator(encoded, **kwargs)
  _take(reference, consumed)
  state = json.loads(json.dumps(reference.get_state()))
  expected = _take(reference, 14)  # crosses epoch boundaries (6 per epoch)

  resumed = pipeline.BatchIterator(encoded, **kwargs)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 14), expected)


def test_state_values(encoded):
  it = pipeline.BatchIterator(encoded, 8, (16,), seed=0)
  assert it.get_state()["epoch"] == 0 and it.get_state()["position"] == 0
  _take(it, 6)  # a full epoch
  assert (it.get_state()["epoch"], it.get_state()["position"]) == (1, 0)
  _take(it, 2)
  assert (it.get_state()["epoch"], it.get_state()["position"]) == (1, 2)
  it.set_state({"epoch": 4, "position": 1})  # minimal state is enough
  assert (it.get_state()["epoch"], it.get_state()["position"]) == (4, 1)


def test_bad_states(encoded):
  it = pipeline.BatchIterator(encoded, 8, (16,), seed=0)
  with pytest.raises(ValueError, match="num_examples=49"):
    it.set_state({"epoch": 0, "position": 0, "num_examples": 49})
  with pytest.raises(ValueError, match="global_batch_size"):
    it.set_state({"epoch": 0, "position": 0, "global_batch_size": 16})
  with pytest.raises(ValueError, match="bad iterator state"):
    it.set_state({"epoch": 0, "position": 7})


# -- multi-process sharding ----------------------------------------------------


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_shards_concatenate_to_global_batch(encoded, drop_remainder):
  kwargs = dict(global_batch_size=12, buckets=(4, 8, 16), seed=7,
                drop_remainder=drop_remainder)
  whole = _take(pipeline.BatchIterator(encoded, **kwargs), 11)
  shards = [_take(pipeline.BatchIterator(encoded, process_index=p,
                                         process_count=3, **kwargs), 11)
            for p in range(3)]
  for j, batch in enumerate(whole):
    for key in batch:
      parts = [shards[p][j][key] for p in range(3)]
      assert all(part.shape[0] == 4 for part in parts)
      np.testing.assert_array_equal(np.concatenate(parts), batch[key])


def test_state_is_process_independent(encoded):
  kwargs = dict(global_batch_size=8, buckets=(8, 16), seed=0)
  one = pipeline.BatchIterator(encoded, **kwargs)
  _take(one, 4)
  expected = next(one)
  shard = pipeline.BatchIterator(encoded, process_index=1, process_count=2,
                                 **kwargs)
  shard.set_state(pipeline.BatchIterator(encoded, **kwargs).get_state()
                  | {"position": 4})
  got = next(shard)
  np.testing.assert_array_equal(got["context"], expected["context"][4:])


# -- evaluation mode ------------------------------------------------------------


def test_eval_mode_covers_every_example_once(encoded):
  kwargs = dict(global_batch_size=16, buckets=(4, 8, 16), seed=0,
                shuffle=False, repeat=False, drop_remainder=False)
  seen = []
  for p in range(2):
    it = pipeline.BatchIterator(encoded, process_index=p, process_count=2,
                                **kwargs)
    assert it.num_batches_per_epoch == 4  # ceil(50 / 16)
    batches = list(it)
    assert len(batches) == 4
    for batch in batches:
      assert batch["context"].shape[0] == 8
      ids = _example_ids(batch)
      np.testing.assert_array_equal(batch["weight"], (ids >= 0).astype(
          np.float32))
      pad = batch["weight"] == 0
      for key in ("context", "response_in", "response_out"):
        assert not batch[key][pad].any()
      seen.extend(ids[ids >= 0].tolist())
    with pytest.raises(StopIteration):
      next(it)
    it.reset()
    assert len(list(it)) == 4
  assert sorted(seen) == list(range(50))


def test_eval_last_batch_shapes_agree_across_processes(encoded):
  # Global batch 3 of 4 has 2 real rows, all in process 0; process 1 gets
  # only padding but the same shapes.
  kwargs = dict(global_batch_size=16, buckets=(4, 8, 16), seed=0,
                shuffle=False, repeat=False, drop_remainder=False)
  last = [list(pipeline.BatchIterator(encoded, process_index=p,
                                      process_count=2, **kwargs))[-1]
          for p in range(2)]
  assert last[0]["weight"].sum() == 2 and last[1]["weight"].sum() == 0
  for key in last[0]:
    assert last[0][key].shape == last[1][key].shape


# -- errors ---------------------------------------------------------------------


def test_errors_are_clear(encoded):
  with pytest.raises(ValueError, match="global_batch_size=10 is not "
                     "divisible by process_count=4"):
    pipeline.BatchIterator(encoded, 10, (16,), seed=0, process_count=4)
  with pytest.raises(ValueError, match=r"do not cover the longest context "
                     r"\(\d+ tokens\)"):
    pipeline.BatchIterator(encoded, 8, (4, 8), seed=0)
  with pytest.raises(ValueError, match="longest response"):
    pipeline.BatchIterator(encoded, 8, (16,), seed=0, response_buckets=(4,))
  with pytest.raises(ValueError, match="fewer than global_batch_size"):
    pipeline.BatchIterator(encoded, 64, (16,), seed=0)
  with pytest.raises(ValueError, match="process_index"):
    pipeline.BatchIterator(encoded, 8, (16,), seed=0, process_index=2,
                           process_count=2)
  with pytest.raises(ValueError, match="buckets"):
    pipeline.BatchIterator(encoded, 8, (), seed=0)
  empty = pipeline.encode_pairs([("", "")], INT_TOK, 4, 4)
  with pytest.raises(ValueError, match="no examples"):
    pipeline.BatchIterator(empty, 8, (16,), seed=0)
  hand_made = pipeline.EncodedPairs([np.array([7], np.int32)],
                                    [np.array([], np.int32)], {}, 4, 4)
  with pytest.raises(ValueError, match="empty context or response"):
    pipeline.BatchIterator(hand_made, 1, (4,), seed=0)


# -- end to end on the embedded corpus ---------------------------------------


def test_chatterbot_end_to_end():
  records = []
  for _, _, turns in read_conversations():
    for t in range(1, len(turns)):
      records.append({"history": turns[:t], "response": turns[t]})
  pairs = sources.dialogue_pairs(records, 2, "<eou>")
  tok = tokenizer_lib.train_sentencepiece(
      [text for pair in pairs for text in pair], vocab_size=600)
  enc = pipeline.encode_pairs(pairs, tok, 24, 24)
  assert enc.counts["examples"] == len(pairs) > 2000
  assert enc.counts["skipped_empty"] == 0
  assert enc.counts["truncated_context"] > 0  # long trivia turns
  it = pipeline.BatchIterator(enc, 32, (8, 16, 24), seed=0, shuffle=False)
  batches = _take(it, it.num_batches_per_epoch)
  norm = lambda text: " ".join(unicodedata.normalize("NFKC", text).split())
  checked = 0
  for k, (context, response) in enumerate(pairs[:32 * len(batches)]):
    if len(tok.encode(context)) > 24 or len(tok.encode(response)) > 23:
      continue  # truncated
    row = {key: value[k % 32] for key, value in batches[k // 32].items()}
    assert tok.decode(row["context"]) == norm(context)
    assert tok.decode(row["response_in"]) == norm(response)
    assert tok.decode(row["response_out"]) == norm(response)
    checked += 1
  assert checked > 1000
  assert any("<eou>" in c for c, _ in pairs)


# -- sentences and labelled sentences ------------------------------------------


def _sentences(num, seed=0, max_len=12):
  """Sentence k starts with token 100+k, then 6s (ids identify examples)."""
  rng = np.random.default_rng(seed)
  return [" ".join([str(100 + k)] + ["6"] * int(rng.integers(0, max_len)))
          for k in range(num)]


def _sentence_ids(batch):
  first = batch["tokens_out"][:, 0].astype(np.int64)
  return np.where(first > 0, first - 100, -1)


def test_encode_sentences_counts_and_filtering():
  texts = ["7 8 9 10 11", "12", "", "   ", b"13 \xfe", "\udcff 14", "15 16"]
  enc = pipeline.encode_sentences(texts, INT_TOK, max_len=4)
  assert [r.tolist() for r in enc.tokens] == [[7, 8, 9], [12], [15, 16]]
  assert enc.labels is None and enc.max_len == 4
  assert enc.counts == dict(sentences=7, examples=3, skipped_empty=2,
                            skipped_undecodable=2, skipped_too_long=0,
                            skipped_bad_label=0, truncated=1, tokens=6)
  skip = pipeline.encode_sentences(texts, INT_TOK, 4, too_long="skip")
  assert [r.tolist() for r in skip.tokens] == [[12], [15, 16]]
  assert skip.counts["skipped_too_long"] == 1 and skip.counts["truncated"] == 0
  with pytest.raises(ValueError, match="max_len must be >= 2"):
    pipeline.encode_sentences(texts, INT_TOK, 1)


def test_sentence_batches_shift_and_bucket():
  enc = pipeline.encode_sentences(_sentences(40), INT_TOK, max_len=16)
  it = pipeline.BatchIterator(enc, 8, (4, 8, 16), seed=0)
  assert it.keys == ("tokens_in", "tokens_out", "weight")
  for batch in _take(it, 10):
    assert set(batch) == {"tokens_in", "tokens_out", "weight"}
    assert batch["tokens_in"].dtype == batch["tokens_out"].dtype == np.int32
    assert batch["weight"].dtype == np.float32
    n, width = batch["tokens_in"].shape
    assert n == 8 and batch["tokens_out"].shape == (8, width)
    ids = _sentence_ids(batch)
    longest = max(len(enc.tokens[i]) + 1 for i in ids)
    assert width == min(b for b in (4, 8, 16) if b >= longest)
    for row, i in enumerate(ids):
      y = enc.tokens[i]
      n = len(y)
      assert batch["tokens_in"][row, 0] == tokenizer_lib.BOS_ID
      np.testing.assert_array_equal(batch["tokens_in"][row, 1:n + 1], y)
      np.testing.assert_array_equal(batch["tokens_out"][row, :n], y)
      assert batch["tokens_out"][row, n] == tokenizer_lib.EOS_ID
      assert not batch["tokens_in"][row, n + 1:].any()
      assert not batch["tokens_out"][row, n + 1:].any()


def test_sentence_iterator_resume_shard_and_eval():
  enc = pipeline.encode_sentences(_sentences(30), INT_TOK, 16)
  kwargs = dict(global_batch_size=6, buckets=(8, 16), seed=4)
  ref = pipeline.BatchIterator(enc, **kwargs)
  _take(ref, 7)
  state = json.loads(json.dumps(ref.get_state()))
  expected = _take(ref, 9)
  resumed = pipeline.BatchIterator(enc, **kwargs)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 9), expected)
  halves = [pipeline.BatchIterator(enc, process_index=p, process_count=2,
                                   **kwargs) for p in range(2)]
  for h in halves:
    h.set_state(state)
  for whole in expected[:3]:
    parts = [next(h) for h in halves]
    for key in whole:
      np.testing.assert_array_equal(
          np.concatenate([p[key] for p in parts]), whole[key])
  seen = []
  for p in range(2):
    it = pipeline.BatchIterator(enc, 8, (16,), seed=0, shuffle=False,
                                repeat=False, drop_remainder=False,
                                process_index=p, process_count=2)
    for batch in it:
      ids = _sentence_ids(batch)
      np.testing.assert_array_equal(batch["weight"], ids >= 0)
      assert not batch["tokens_in"][ids < 0].any()
      seen.extend(ids[ids >= 0].tolist())
  assert sorted(seen) == list(range(30))


def test_encode_labelled_and_label_batches():
  texts = _sentences(24) + ["", "7 7"]
  labels = [k % 3 for k in range(24)] + [1, "x"]
  enc = pipeline.encode_labelled(texts, labels, INT_TOK, 16)
  assert len(enc) == 24 and enc.labels.dtype == np.int32
  assert enc.counts["skipped_empty"] == 1
  assert enc.counts["skipped_bad_label"] == 1
  np.testing.assert_array_equal(enc.labels, np.arange(24) % 3)
  it = pipeline.BatchIterator(enc, 10, (16,), seed=1, shuffle=True,
                              drop_remainder=False, repeat=False)
  batches = list(it)
  assert len(batches) == 3
  for batch in batches:
    assert set(batch) == {"tokens_in", "tokens_out", "label", "weight"}
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (10,)
    ids = _sentence_ids(batch)
    np.testing.assert_array_equal(batch["label"][ids >= 0],
                                  ids[ids >= 0] % 3)
    assert not batch["label"][ids < 0].any()
  # numpy ints, integral floats and digit strings are fine labels
  ok = pipeline.encode_labelled(["5", "6", "7"], [np.int64(2), 1.0, "3"],
                                INT_TOK, 4)
  assert ok.labels.tolist() == [2, 1, 3]
  bad = pipeline.encode_labelled(["5", "6", "7"], [1.5, None, True],
                                 INT_TOK, 4)
  assert len(bad) == 0 and bad.counts["skipped_bad_label"] == 3
  with pytest.raises(ValueError, match="2 texts but 1 labels"):
    pipeline.encode_labelled(["5", "6"], [1], INT_TOK, 4)
  with pytest.raises(ValueError, match="no examples"):
    pipeline.BatchIterator(bad, 2, (4,), seed=0)


# -- hierarchical dialogues -----------------------------------------------------


def test_encode_dialogues_counts():
  examples = [
      (["1 2", "3", "", "4 5 6 7 8"], "9 10"),   # 4 turns, one empty, one long
      ("11", "12 13 14 15 16"),                  # a string history, long resp
      (["", " "], "17"),                         # no non-empty turn
      ([b"\xff"], "18"),                         # undecodable
  ]
  enc = pipeline.encode_dialogues(examples, INT_TOK, max_turns=2,
                                  max_turn_len=3, max_response_len=4)
  assert len(enc) == 2
  assert [t.tolist() for t in enc.turns[0]] == [[3], [4, 5, 6]]
  assert [t.tolist() for t in enc.turns[1]] == [[11]]
  assert enc.response[1].tolist() == [12, 13, 14]
  assert enc.counts == dict(dialogues=4, examples=2, skipped_empty=1,
                            skipped_undecodable=1, skipped_too_long=0,
                            skipped_bad_label=0, dropped_turns=2,
                            truncated_turn=1, truncated_response=1,
                            turn_tokens=5, response_tokens=5)


def test_dialogue_batches_are_hierarchical():
  rng = np.random.default_rng(0)
  examples, labels = [], []
  for k in range(30):
    turns = [" ".join([str(1000 + k)] + ["6"] * int(rng.integers(0, 6)))
             for _ in range(int(rng.integers(1, 5)))]
    examples.append((turns, " ".join([str(100 + k)] + ["7"] * (k % 5))))
    labels.append(k % 4)
  enc = pipeline.encode_dialogues(examples, INT_TOK, 3, 8, 8,
                                  labels=labels)
  it = pipeline.BatchIterator(enc, 2, (4, 8), seed=0, turn_buckets=(2, 3))
  shapes = set()
  for batch in _take(it, 20):
    assert set(batch) == {"turns", "num_turns", "response_in",
                          "response_out", "label", "weight"}
    b, t, lt = batch["turns"].shape
    shapes.add((t, lt))
    assert b == 2 and t in (2, 3) and lt in (4, 8)
    assert batch["turns"].dtype == np.int32
    ids = batch["response_out"][:, 0] - 100
    np.testing.assert_array_equal(batch["label"], ids % 4)
    assert t == min(x for x in (2, 3) if x >= batch["num_turns"].max())
    for row, i in enumerate(ids):
      kept = enc.turns[i]
      assert batch["num_turns"][row] == len(kept)
      for j, ids_j in enumerate(kept):
        np.testing.assert_array_equal(batch["turns"][row, j, :len(ids_j)],
                                      ids_j)
        assert not batch["turns"][row, j, len(ids_j):].any()
      assert not batch["turns"][row, len(kept):].any()
      r = enc.response[i]
      assert batch["response_in"][row, 0] == tokenizer_lib.BOS_ID
      np.testing.assert_array_equal(batch["response_out"][row, :len(r)], r)
      assert batch["response_out"][row, len(r)] == tokenizer_lib.EOS_ID
  assert len(shapes) > 1
  with pytest.raises(ValueError, match=r"turn_buckets \(2,\) do not cover"):
    pipeline.BatchIterator(enc, 6, (8,), seed=0, turn_buckets=(2,))
  with pytest.raises(ValueError, match="longest turn"):
    pipeline.BatchIterator(enc, 6, (2,), seed=0, response_buckets=(8,))


def test_batch_iterator_rejects_other_types():
  with pytest.raises(TypeError, match="cannot batch list"):
    pipeline.BatchIterator([[1, 2]], 1, (4,), seed=0)


def test_chatterbot_sentences_end_to_end():
  records = []
  for _, _, turns in read_conversations():
    for t in range(1, len(turns)):
      records.append({"history": turns[:t], "response": turns[t]})
  texts = sources.sentences(records)
  all_turns = {t for _, _, turns in read_conversations() for t in turns}
  assert set(texts) == all_turns and len(texts) == len(all_turns)
  tok = tokenizer_lib.train_sentencepiece(texts, vocab_size=600)
  enc = pipeline.encode_sentences(texts, tok, 24)
  it = pipeline.BatchIterator(enc, 32, (8, 16, 24), seed=0, shuffle=False)
  batch = next(it)
  norm = lambda text: " ".join(unicodedata.normalize("NFKC", text).split())
  for row in range(32):
    if len(tok.encode(texts[row])) < 24:
      assert tok.decode(batch["tokens_out"][row]) == norm(texts[row])
      assert tok.decode(batch["tokens_in"][row]) == norm(texts[row])
