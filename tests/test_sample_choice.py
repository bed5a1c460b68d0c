"""The validation examples a run logs at each evaluation: spread over the split, distinct
contexts, every label in turn (``vedgan.data.sample_choice``) and what the inputs use."""
import numpy as np
from conftest import make_config

from vedgan.data import inputs as inputs_lib
from vedgan.data.sample_choice import spread_indices


def test_evenly_spaced_positions_computed_by_hand():
  ten = [f"c{i}" for i in range(10)]
  assert spread_indices(ten, 4) == [1, 3, 6, 8]      # floor((k + 1/2) * 10 / 4) = 1, 3, 6, 8
  assert spread_indices(ten, 1) == [5]
  assert spread_indices(ten, 10) == list(range(10))
  assert spread_indices(ten, 25) == list(range(10))  # no more than there are
  assert spread_indices(ten, 0) == [] and spread_indices([], 3) == []


def test_repeated_contexts_are_passed_over():
  """Ten copies of one opening line and two others: three distinct samples, not the line
  three times; case and spacing do not make a context new."""
  contexts = ["do you like pizza ?"] * 5 + ["Do you  like pizza ?", "hi", "bye"]
  chosen = spread_indices(contexts, 4)
  assert sorted(contexts[i] for i in chosen) == ["bye", "do you like pizza ?", "hi"]
  assert chosen == sorted(chosen)


def test_labels_take_turns():
  """Eight examples, the first six of label 0: four samples cover labels 0, 1, 2 and then 0
  again, each label's pick being its earliest position in the spread order."""
  contexts = [f"c{i}" for i in range(8)]
  labels = [0, 0, 0, 0, 0, 0, 1, 2]
  # spread order: 1, 3, 5, 7 then 0, 2, 4, 6 -> label 0: 1, 3, 5, 0, ...; 1: 6; 2: 7
  assert spread_indices(contexts, 4, labels=labels) == [1, 6, 7, 3]
  # n = 2: spread order 2, 6, then 0, 1, 3, 4, 5, 7
  assert spread_indices(contexts, 2, labels=labels) == [2, 6]
  # n >= 8: every position is evenly spaced: the order is 0..7
  assert spread_indices(contexts, 20, labels=labels) == [0, 6, 7, 1, 2, 3, 4, 5]
  assert spread_indices(contexts, 4, labels=np.asarray(labels)) == [1, 6, 7, 3]


def test_the_seq2seq_inputs_log_spread_contexts(tmp_path):
  config = make_config(**{"train.num_samples": 4})
  inputs, _ = inputs_lib.make_inputs(config, str(tmp_path))
  val_pairs = inputs_lib.load_pairs(config.data, "validation")
  expected = [val_pairs[i] for i in spread_indices([c for c, _ in val_pairs], 4)]
  assert inputs.sample_pairs == expected
  assert inputs.sample_pairs != val_pairs[:4]
  assert len({c for c, _ in inputs.sample_pairs}) == 4
