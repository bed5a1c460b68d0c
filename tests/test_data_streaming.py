"""Streaming input (``config.data.input = "stream"``, vedgan/data/streaming.py): the same
examples, shapes and resume guarantees as the in-memory path, without holding the corpus.

Time budget: ~15 s on an idle 2-core machine (one tiny training run, resumed once).
"""
import collections
import json
import shutil
import sys
import threading

import jax
import numpy as np
import pytest
from conftest import make_config, restore_numpy_state

from vedgan import configlib, train
from vedgan.checkpoint import Checkpointer
from vedgan.data import custom, inputs, pipeline, sources, streaming
from vedgan.data.tokenizer import EOS_ID, train_word_vocab
from vedgan.errors import ConfigError, DataError

pytest.importorskip("grain")

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa lam mu nu xi omicron pi".split()


def _corpus(tmp_path, n=120, seed=0):
  """A tsv_pairs file (with a header, blank, malformed, undecodable and CRLF lines) and its
  data config; ``n`` good lines."""
  rng = np.random.default_rng(seed)
  lines = [b"context\tresponse"]
  for k in range(n):
    c = " ".join(rng.choice(WORDS, rng.integers(1, 20)))
    r = " ".join(rng.choice(WORDS, rng.integers(1, 14)))
    lines.append(f"{c} <eou> w{k}\t{r}".encode() + (b"\r" if k % 7 == 0 else b""))
    if k % 40 == 3:
      lines += [b"", b"no tab here", b"bad \xff byte\tx", b"  \t  "]
  path = tmp_path / "train.tsv"
  path.write_bytes(b"\n".join(lines))  # no final newline
  (tmp_path / "validation.tsv").write_bytes(b"a\tb\n")
  return {"format": "tsv_pairs", "path": str(tmp_path / "{split}.tsv"), "context_turns": 2,
          "eou": "<eou>"}


def _memory_pairs(data_config, split="train"):
  return sources.dialogue_pairs(custom.load_split(data_config, split), 2, "<eou>")


def _tok(pairs):
  return train_word_vocab([t for p in pairs for t in p], 200)


def _rows(batch):
  """The (context ids, response ids) of each row of a pair batch (padding and eos removed)."""
  out = []
  for c, r_in, r_out in zip(batch["context"], batch["response_in"], batch["response_out"]):
    n = int(np.flatnonzero(r_out == EOS_ID)[0])
    np.testing.assert_array_equal(r_in[1:n + 1], r_out[:n])
    out.append((tuple(c[c != 0].tolist()), tuple(r_out[:n].tolist())))
  return out


def _stream(source, tok, seed=3, batch=8, **kw):
  """A StreamIterator reading chunks of 5 items: batches of 8 cross chunk boundaries."""
  return streaming.StreamIterator(source, tok, 16, 12, batch, (8, 16), seed=seed, chunk_size=5,
                                  **kw)


# -- sources ---------------------------------------------------------------------------


def test_line_index_reads_the_lines_of_read_lines(tmp_path):
  data = b"\xef\xbb\xbfab\ncd\r\n\n\xff\xfe\nlast"
  (tmp_path / "f.txt").write_bytes(data)
  index = streaming.LineIndex(str(tmp_path / "f.txt"), str(tmp_path / "idx"))
  assert [index[k] for k in range(len(index))] == ["ab", "cd", "", None, "last"]
  # offsets on disk: the 5 line starts (hand-computed) and the file size
  assert np.fromfile(index.index_path, np.int64).tolist() == [0, 6, 10, 11, 14, len(data)]
  (tmp_path / "g.txt").write_bytes(b"one\ntwo\n")  # a final newline starts no line
  assert len(streaming.LineIndex(str(tmp_path / "g.txt"), str(tmp_path / "idx"))) == 2
  (tmp_path / "e.txt").write_bytes(b"")
  assert len(streaming.LineIndex(str(tmp_path / "e.txt"), str(tmp_path / "idx"))) == 0
  with pytest.raises(IndexError):
    index[5]


def test_tsv_pairs_are_the_memory_readers_pairs(tmp_path):
  """Line by line, the kept pairs in order are exactly custom.load_split + dialogue_pairs's,
  for a {split} file and for both halves of a hashed single file."""
  cfg = _corpus(tmp_path)
  source = streaming.TsvPairs(cfg, "train", str(tmp_path / "idx"))
  assert len(source) == 1 + 120 + 3 * 4
  assert [p for p in (source[k] for k in range(len(source))) if p] == _memory_pairs(cfg)
  single = dict(cfg, path=str(tmp_path / "train.tsv"), validation_percent=30)
  for split in ("train", "validation"):
    got = streaming.TsvPairs(single, split, str(tmp_path / "idx"))
    assert [p for p in (got[k] for k in range(len(got))) if p] == _memory_pairs(single, split)


# -- the iterator ----------------------------------------------------------------------


@pytest.mark.parametrize("too_long", ["truncate", "skip"])
def test_stream_and_memory_give_the_same_examples_and_batch_layout(tmp_path, too_long):
  cfg = _corpus(tmp_path)
  pairs = _memory_pairs(cfg)
  tok = _tok(pairs)
  enc = pipeline.encode_pairs(pairs, tok, 16, 12, too_long=too_long)
  assert (enc.counts["skipped_too_long"] > 20) == (too_long == "skip")
  memory = pipeline.BatchIterator(enc, 8, (8, 16), seed=0, shuffle=False, repeat=False,
                                  drop_remainder=False)
  want = [row for b in memory for row in _rows({k: v[b["weight"] > 0] for k, v in b.items()})]
  it = _stream(streaming.TsvPairs(cfg, "train", str(tmp_path / "idx")), tok, too_long=too_long)
  got, first = [], None
  while len(got) < len(want):  # epoch 0 is the first len(want) kept examples
    batch = next(it)
    first = first or batch
    assert {k: (v.dtype, v.shape[0]) for k, v in batch.items()} == {
        "context": (np.int32, 8), "response_in": (np.int32, 8), "response_out": (np.int32, 8),
        "weight": (np.float32, 8)}
    rows = _rows(batch)
    # each padded axis is the smallest bucket >= its longest row (hand-derived here)
    assert batch["context"].shape[1] == (8 if max(len(c) for c, _ in rows) <= 8 else 16)
    assert batch["response_in"].shape[1] == (8 if max(len(r) for _, r in rows) < 8 else 16)
    assert (batch["weight"] == 1).all()
    got += rows
  assert collections.Counter(got[:len(want)]) == collections.Counter(want)
  assert set(first) == set(next(iter(memory.one_pass(enc, 8))))


def test_stream_order_is_deterministic_in_the_seed(tmp_path):
  cfg = _corpus(tmp_path, n=40)
  tok = _tok(_memory_pairs(cfg))
  source = streaming.TsvPairs(cfg, "train", str(tmp_path / "idx"))
  a, b, c = (_stream(source, tok, seed=s) for s in (5, 5, 6))
  batches_a = [next(a) for _ in range(10)]  # 80 rows: two epochs of 40
  for x, y in zip(batches_a, [next(b) for _ in range(10)]):
    assert all(np.array_equal(x[k], y[k]) for k in x)
  assert _rows(batches_a[0]) != _rows(next(c))
  rows = sum((_rows(x) for x in batches_a), [])
  assert sorted(rows[:40]) == sorted(rows[40:]) and rows[:40] != rows[40:]  # a new order


def test_resume_from_a_saved_state_mid_epoch_continues_exactly(tmp_path):
  cfg = _corpus(tmp_path, n=40)
  tok = _tok(_memory_pairs(cfg))
  source = streaming.TsvPairs(cfg, "train", str(tmp_path / "idx"))
  whole = _stream(source, tok)
  reference = [next(whole) for _ in range(9)]
  first = _stream(source, tok)
  for _ in range(3):
    next(first)
  state = json.loads(json.dumps(first.get_state()))  # as the checkpoint stores it
  # grain's position before the chunk being read (chunks of 5 items, skipped lines and all)
  # and how many of its kept examples were batched: 24 examples, 5 skipped lines at most
  (where,) = state["processes"]
  assert sorted(where) == ["next_index", "taken"] and 0 < where["taken"] <= 5
  assert 24 <= 5 * where["next_index"] + where["taken"] <= 29
  resumed = _stream(source, tok)
  resumed.set_state(state)
  for want in reference[3:]:  # across the end of epoch 0 (40 kept examples)
    got = next(resumed)
    assert all(np.array_equal(got[k], want[k]) for k in want)
  with pytest.raises(pipeline.StateMismatch, match="seed"):
    _stream(source, tok, seed=4).set_state(state)
  with pytest.raises(pipeline.StateMismatch, match="input=memory"):
    resumed.set_state({"epoch": 0, "position": 1})
  enc = pipeline.encode_pairs(_memory_pairs(cfg), tok, 16, 12)
  with pytest.raises(pipeline.StateMismatch, match="input=stream"):
    pipeline.BatchIterator(enc, 8, (8, 16), seed=3).set_state(state)


class _Exchange:
  """``exchange`` for processes simulated by threads: a barrier-synchronised all-gather."""

  def __init__(self, n):
    self.barrier, self.slots = threading.Barrier(n, timeout=60), [None] * n

  def of(self, p):
    def exchange(values):
      self.slots[p] = np.asarray(values)
      self.barrier.wait()
      out = np.stack(self.slots)
      self.barrier.wait()
      return out
    return exchange


def test_two_processes_read_disjoint_shares_that_cover_the_data(tmp_path):
  pairs = [(" ".join(WORDS[:1 + k % 15]), " ".join(WORDS[k % 5:k % 5 + 1 + k % 11]))
           for k in range(48)]
  pairs = [(f"{c} w{k}", r) for k, (c, r) in enumerate(pairs)]  # all distinct
  tok = _tok(pairs)
  exchange, got = _Exchange(2), {}

  def run(p):
    it = _stream(pairs, tok, process_index=p, process_count=2, exchange=exchange.of(p))
    got[p] = [next(it) for _ in range(6)]  # 6 x 4 local rows = each process's half of epoch 0
    got[p, "state"] = it.get_state()

  threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  rows = [sum((_rows(b) for b in got[p]), []) for p in (0, 1)]
  enc = pipeline.encode_pairs(pairs, tok, 16, 12)
  want = [(tuple(c.tolist()), tuple(r.tolist())) for c, r in zip(enc.context, enc.response)]
  assert not set(rows[0]) & set(rows[1]) and sorted(rows[0] + rows[1]) == sorted(want)
  for b0, b1 in zip(got[0], got[1]):  # the global batch's buckets, on both processes
    assert all(b0[k].shape == b1[k].shape for k in b0)
    longest = max(len(c) for c, _ in _rows(b0) + _rows(b1))
    assert b0["context"].shape == (4, 8 if longest <= 8 else 16)
  assert got[0, "state"] == got[1, "state"]
  # 24 rows each, in chunks of 5: chunk 4 (grain's next_index before it) is being read and
  # 4 of its rows were batched
  assert got[0, "state"]["processes"] == [{"next_index": 4, "taken": 4}] * 2


# -- config and a training run ---------------------------------------------------------


def test_bad_values_are_one_line_errors(tmp_path, monkeypatch):
  config = make_config(data__input="disk")
  with pytest.raises(ConfigError, match=r"config.data.input='disk' is out of range") as e:
    configlib.validate(config, ["mle"])
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="use one of"):
    streaming.check_input({"input": "disk"})
  with pytest.raises(ConfigError, match="not 'text_lines'"):
    streaming.check_input({"input": "stream", "format": "text_lines"})
  assert streaming.check_input({}) == "memory"
  with pytest.raises(ConfigError, match="seq2seq, topk_gan"):
    inputs.batch_iterator(make_config(data__input="stream"), None)
  (tmp_path / "c.tsv.gz").write_bytes(b"")
  with pytest.raises(ConfigError, match="uncompressed"):
    streaming.LineIndex(str(tmp_path / "c.tsv.gz"))
  with pytest.raises(ValueError, match="must reach max_context_len"):
    streaming.StreamIterator([("a", "b")], _tok([("a", "b")]), 16, 12, 8, (8,), seed=0)
  with pytest.raises(DataError, match="every one is skipped"):
    next(streaming.StreamIterator([None, ("a", "")] * 6, _tok([("a", "b")]), 16, 12, 2, (16,),
                                  seed=0, chunk_size=4))
  monkeypatch.setitem(sys.modules, "grain", None)
  with pytest.raises(ConfigError, match=r'pip install "vedgan\[stream\]"'):
    streaming.require_grain()


def test_a_streamed_training_run_resumes_bit_identically(tmp_path):
  """2 steps with a checkpoint after each; the same workdir without its step-2 checkpoint
  resumes from step 1 and must end where the uninterrupted run ended."""
  config = make_config(data__input="stream", stages__mle__num_steps=2, train__eval_batches=1,
                       train__num_samples=0, train__checkpoint_every=1, model__dropout=0.2)
  train.run(config, str(tmp_path / "a"))
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "2")
  meta = Checkpointer(str(tmp_path / "b" / "checkpoints"), 2, read_only=True).read_meta(1)
  assert meta["data_state"]["streams"]["train"]["input"] == "stream"
  assert meta["data_state"]["streams"]["train"]["processes"] == [{"next_index": 0, "taken": 8}]
  assert train.run(config, str(tmp_path / "b"))["step"] == 2
  (step_a, a), (step_b, b) = restore_numpy_state(tmp_path / "a"), restore_numpy_state(tmp_path / "b")
  assert step_a == step_b == 2
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
