"""Hierarchical dialogue examples of the collaborative VED paper.

An example is ``(turns, response)``: the previous turns (oldest first, at most
``data.max_turns``) and the response, cut to the paper's 80-word slices
(``data.slice_words``). The run's one stream ``"train"`` yields batches
(:func:`vedgan.data.pipeline.encode_dialogues`) ``turns[B, T, L]`` int32 (turn
``t`` of row ``b``, right-padded with 0; ``T`` from ``data.turn_buckets``, ``L``
from ``data.buckets``), ``num_turns[B]``, ``response_in/out[B, Lr]`` and
``weight[B]``.
"""
from __future__ import annotations

import numpy as np

from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.data.encoding import batch_encoder
from vedgan.data.sample_choice import spread_indices


def slice_examples(examples, slice_words: int):
  """Cuts each ``(turns, response)`` to an ``slice_words``-word slice (oldest turns dropped).

  The paper feeds dialogues as 80-word slices; here a training example is the
  response plus as many of the most recent turns as fit in ``slice_words``
  words (at least one turn). ``slice_words = 0`` keeps everything.

  >>> slice_examples([(["a b c", "d e f g", "h i"], "j k l")], 9)
  [(['d e f g', 'h i'], 'j k l')]
  """
  if slice_words <= 0:
    return list(examples)
  out = []
  for turns, response in examples:
    budget = slice_words - len(response.split())
    kept = []
    for turn in reversed(list(turns)):
      n = len(turn.split())
      if kept and n > budget:
        break
      kept.append(turn)
      budget -= n
    out.append((kept[::-1], response))
  return out


def load_examples(config, split: str) -> list[tuple[list[str], str]]:
  """``(turns, response)`` string examples of ``split``, cut to ``data.slice_words``."""
  records = sources.load_split(config.data, split)
  examples = sources.dialogue_examples(records, int(config.data.max_turns))
  return slice_examples(examples, int(config.data.slice_words))


def split_turns(prompt: str, eou: str) -> list[str]:
  """A prompt whose turns are joined by ``eou`` -> its non-empty turns.

  >>> split_turns("hi <eou> how are you? <eou> ", "<eou>")
  ['hi', 'how are you?']
  """
  return [t.strip() for t in prompt.split(eou) if t.strip()]


def encode_histories(tokenizer, config, histories) -> dict[str, np.ndarray]:
  """Lists of turns -> ``{"turns": [N, max_turns, max_turn_len], "num_turns": [N]}`` int32.

  As the training batches: each turn keeps its first ``data.max_turn_len``
  tokens, empty turns are dropped and the last ``data.max_turns`` kept; a
  history without any token becomes one ``<unk>`` turn.
  """
  max_t, max_l = int(config.data.max_turns), int(config.data.max_turn_len)
  turns = np.zeros((len(histories), max_t, max_l), np.int32)
  num = np.zeros((len(histories),), np.int32)
  flat = batch_encoder(tokenizer)([t for history in histories for t in history])
  start = 0
  for i, history in enumerate(histories):
    ids = [x[:max_l] for x in flat[start:start + len(history)]]
    start += len(history)
    ids = [x for x in ids if x][-max_t:] or [[tokenizer.unk_id]]
    for j, row in enumerate(ids):
      turns[i, j, :len(row)] = row
    num[i] = len(ids)
  return {"turns": turns, "num_turns": num}


def make_inputs(config, workdir: str) -> tuple[inputs_lib.Inputs, bool]:
  """The run's :class:`vedgan.data.inputs.Inputs` (hierarchical stream ``"train"``) and
  whether the tokenizer is new. ``sample_pairs`` joins the turns with ``" <eou> "``."""
  d = config.data
  train_ex = load_examples(config, "train")
  val_ex = load_examples(config, d.validation_split)
  texts = [(r,) for _, r in train_ex] + [(h[0],) for h, _ in train_ex if h]
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, texts)

  def encode(examples):
    return pipeline.encode_dialogues(examples, tok, max_turns=int(d.max_turns),
                                     max_turn_len=int(d.max_turn_len),
                                     max_response_len=int(d.max_response_len),
                                     too_long=d.too_long)

  train_enc, val_enc = encode(train_ex), encode(val_ex)
  counts = {"train": train_enc.counts, "validation": val_enc.counts}
  for split, c in counts.items():
    inputs_lib.log_counts(f"{inputs_lib.dataset_label(d)} {split} (dialogues)", c)
  stream = inputs_lib.batch_iterator(config, train_enc, turn_buckets=tuple(d.turn_buckets))
  eou = f" {d.eou} "
  joined = [(eou.join(h), r) for h, r in val_ex]
  samples = [joined[i] for i in spread_indices([c for c, _ in joined],
                                               int(config.train.num_samples))]
  return inputs_lib.Inputs(tok, {"train": stream}, {"train": val_enc}, samples, counts), is_new
