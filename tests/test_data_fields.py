"""Per-example fields: the encoder's kept-row index, with_fields, subset, and batches."""
import numpy as np
import pytest
from fakes import FakeTokenizer

from vedgan.data import pipeline

PAIRS = [("a bb", "ccc"), ("", "x"), ("dd", ""), ("e f g", "hh ii"), ("jj", "k"),
         ("ll mm", "nn"), ("o", "pp qq rr")]
# Every word its own id: a row's first token names its pair.
TOK = FakeTokenizer(vocab=sorted({w for pair in PAIRS for text in pair for w in text.split()}))


def test_index_and_fields_follow_the_kept_rows():
  enc = pipeline.encode_pairs(PAIRS, TOK, 8, 8)
  assert enc.index.tolist() == [0, 3, 4, 5, 6]  # rows 1 and 2 are empty: skipped
  labels = np.arange(len(PAIRS)) * 10
  enc = pipeline.with_fields(enc, label=labels, other=np.ones((len(PAIRS), 2), np.float32))
  assert enc.fields["label"].tolist() == [0, 30, 40, 50, 60]
  with pytest.raises(ValueError, match="one entry per input item"):
    pipeline.with_fields(enc, label=labels[:3])


def test_batches_carry_fields_and_padding_rows_are_zero():
  enc = pipeline.with_fields(pipeline.encode_pairs(PAIRS, TOK, 8, 8),
                             label=np.arange(len(PAIRS)) + 1)
  it = pipeline.BatchIterator(enc, 2, (4, 8), seed=0, shuffle=False)
  seen = []
  for _ in range(2):
    batch = next(it)
    # the label travels with its own row: the context's first token identifies the pair
    for row, label in zip(batch["context"], batch["label"]):
      assert PAIRS[label - 1][0] and TOK.encode(PAIRS[label - 1][0])[0] == row[0]
    seen += batch["label"].tolist()
  assert seen == [1, 4, 5, 6]
  last = list(it.one_pass(enc, 4))[-1]
  assert last["weight"].tolist() == [1.0, 0.0, 0.0, 0.0]
  assert last["label"].tolist() == [7, 0, 0, 0]


def test_subset_keeps_fields_index_and_counts():
  enc = pipeline.with_fields(pipeline.encode_pairs(PAIRS, TOK, 8, 8),
                             label=np.arange(len(PAIRS)))
  sub = pipeline.subset(enc, np.array([True, False, True, False, True]))
  assert sub.index.tolist() == [0, 4, 6]
  assert sub.fields["label"].tolist() == [0, 4, 6]
  assert [c.tolist() for c in sub.context] == [enc.context[i].tolist() for i in (0, 2, 4)]
  assert sub.counts["examples"] == 3 and sub.counts["subset_dropped"] == 2


def test_field_clashing_with_a_batch_key_is_refused():
  enc = pipeline.encode_pairs(PAIRS, TOK, 8, 8)
  enc = pipeline.with_fields(enc, context=np.zeros(len(PAIRS)))
  with pytest.raises(ValueError, match="clashes"):
    pipeline.BatchIterator(enc, 2, (4, 8), seed=0)


def test_sentences_and_dialogues_keep_their_index():
  sents = pipeline.encode_sentences(["a b", "", "c"], TOK, 8)
  assert sents.index.tolist() == [0, 2]
  dial = pipeline.encode_dialogues([(["a"], "b"), ([""], "c"), (["d", "e"], "f")], TOK,
                                   2, 8, 8)
  assert dial.index.tolist() == [0, 2]
  dial = pipeline.with_fields(dial, label=np.array([5, 6, 7]))
  batch = next(pipeline.BatchIterator(dial, 2, (8,), seed=0, shuffle=False))
  assert batch["label"].tolist() == [5, 7]
