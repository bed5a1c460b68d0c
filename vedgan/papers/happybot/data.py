"""HappyBot's examples: dialogue triples and labelled sentences, as three input streams.

A dialogue is ``[u_1, s_1, u_2, s_2, ...]`` (user / system turns). One policy
example (a :class:`Triple`) is the context ``x = [s_i; <eou>; u_{i+1}]``, the
response ``s_{i+1}``, the user's last turn ``u_{i+1}`` and the next user turn
``u_{i+2}`` ("" when the dialogue ends), which the look-ahead predictor learns
to score (Sec. 2.2).

Streams of :func:`make_inputs` (each step names the one it reads):

* ``dialogue`` (mle, multiseq, rl; validation): (context, response) pairs with
  the per-example fields ``last_turn [B, U]`` (``u_{i+1}``, its last ``U``
  tokens), ``next_turn [B, U]`` (``u_{i+2}``, its first ``U`` tokens),
  ``has_next [B]`` (1.0 when ``u_{i+2}`` has tokens) and ``response_label [B]``
  (the lexicon's 0/1/-1 label of ``s_{i+1}``); ``U = data.max_turn_len``;
* ``lookahead`` (predictor): the dialogue examples that have a next user turn;
* ``sentences`` (classifier): labelled sentences, ``tokens_out [B, Ls]``
  (sentence + EOS) and ``label [B]`` (0/1).

Sentence sources (``data.sentiment_sources``): ``"lexicon"`` labels the distinct
utterances of the dialogue training split with the VADER lexicon (the demo's
offline stand-in for SST-2); any other name is a TFDS builder of labelled
sentences read by :func:`sentence_example` (SST-2, EmpatheticDialogues'
situations through :data:`ED_SENTIMENT`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.data.encoding import batch_encoder
from vedgan.data.sample_choice import spread_indices
from vedgan.errors import ConfigError, DataError

#: EmpatheticDialogues' 32 emotions -> sentiment (1 positive, 0 negative, None dropped):
#: the paper maps ED situations' emotions to sentiments without listing the map.
ED_SENTIMENT = {
    **{e: 1 for e in ("excited", "proud", "grateful", "impressed", "confident", "hopeful",
                      "joyful", "prepared", "content", "caring", "trusting", "faithful",
                      "anticipating")},
    **{e: 0 for e in ("annoyed", "angry", "sad", "lonely", "afraid", "disgusted", "terrified",
                      "anxious", "disappointed", "guilty", "furious", "jealous", "embarrassed",
                      "devastated", "ashamed", "apprehensive")},
    **{e: None for e in ("surprised", "nostalgic", "sentimental")},
}

#: The order of the streams; stream ``k`` shuffles with seed ``config.seed + k``.
STREAMS = ("dialogue", "lookahead", "sentences")


@dataclasses.dataclass(frozen=True)
class Triple:
  """One policy example: ``context`` = ``[s_i; <eou>; u_{i+1}]``, ``response`` = ``s_{i+1}``,
  ``last_turn`` = ``u_{i+1}``, ``next_turn`` = ``u_{i+2}`` ("" when the dialogue ends)."""
  context: str
  response: str
  last_turn: str
  next_turn: str


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):
    return _text(value.item())
  return str(value)


def _records(source) -> list:
  if hasattr(source, "__getitems__") and hasattr(source, "__len__"):
    return source.__getitems__(list(range(len(source))))
  return list(source)


def dialogue_triples(records: Sequence[dict], context_turns: int, eou: str) -> list[Triple]:
  """Dialogue records (``history``, ``response``, ``dialogue_id``) -> triples, in record order.

  ``history`` must hold all earlier utterances of the dialogue (as every
  vedgan dialogue builder writes it). Each dialogue's utterance sequence is
  rebuilt from its longest record, so the next user turn ``u_{i+2}`` of a
  record with ``h`` history turns is utterance ``h + 1`` -- also for corpora
  such as PersonaChat whose records only cover one speaker's turns.
  """
  rows, full = [], {}
  for r in _records(records):
    utterances = [_text(t) for t in r["history"]] + [_text(r["response"])]
    key = _text(r["dialogue_id"])
    rows.append((key, utterances))
    if len(utterances) > len(full.get(key, ())):
      full[key] = utterances
  out = []
  for key, utterances in rows:
    history, response = utterances[:-1], utterances[-1]
    if not history:
      continue
    dialogue = full[key]
    out.append(Triple(context=f" {eou} ".join(history[-context_turns:]), response=response,
                      last_turn=history[-1],
                      next_turn=dialogue[len(utterances)] if len(dialogue) > len(utterances)
                      else ""))
  return out


def sentence_example(record: dict) -> tuple[str, int] | None:
  """A labelled sentence record -> ``(text, 0/1)``, or None when it has no usable label.

  Text: the first of ``sentence``, ``text``, ``situation``, ``prompt``. Label:
  ``label`` (0/1: SST-2; anything else, e.g. -1 for unlabelled, is dropped),
  else an EmpatheticDialogues emotion in ``emotion`` (a name, or the class id
  of the ED builder's ``ClassLabel``) or ``context``, mapped by :data:`ED_SENTIMENT`.
  """
  text = next((_text(record[k]) for k in ("sentence", "text", "situation", "prompt")
               if k in record), None)
  if not text or not text.strip():
    return None
  if "label" in record:
    label = int(np.asarray(record["label"]).item())
    return (text, label) if label in (0, 1) else None
  for key in ("emotion", "context"):
    if key in record:
      value = record[key]
      if isinstance(value, (int, np.integer)) or (hasattr(value, "dtype")
                                                  and np.issubdtype(value.dtype, np.integer)):
        from vedgan.data.empathetic_dialogues.empathetic_dialogues import EMOTIONS  # pylint: disable=import-outside-toplevel
        value = EMOTIONS[int(np.asarray(value).item())]
      label = ED_SENTIMENT.get(_text(value).strip().lower())
      return None if label is None else (text, label)
  return None


def _load(name: str, data_config, split: str, what: str):
  try:
    return sources.load_split({"name": name, "data_dir": data_config.data_dir}, split)
  except ValueError as e:
    if "unknown data.name" in str(e):
      raise DataError(f"config.data.{what} names {name!r}, which has no TFDS builder in "
                      f"vedgan.data.sources.BUILDERS ({', '.join(sorted(sources.BUILDERS))}); "
                      "the paper's corpora come from the data builders, see "
                      "docs/happybot.md") from None
    raise


def load_triples(data_config, split: str) -> list[Triple]:
  """The triples of every ``data.dialogue_sources`` corpus for ``split``, in order."""
  out = []
  for name in data_config.dialogue_sources:
    records = _load(name, data_config, split, "dialogue_sources")
    out.extend(dialogue_triples(records, int(data_config.context_turns), data_config.eou))
  if not out:
    raise DataError(f"config.data.dialogue_sources {tuple(data_config.dialogue_sources)} split "
                    f"{split!r} has no dialogue with at least two turns")
  return out


def load_sentences(data_config, split: str, triples: Sequence[Triple],
                   lexicon=None) -> list[tuple[str, int]]:
  """Labelled sentences of the classifier for ``split``.

  ``"lexicon"`` labels the distinct utterances of ``triples`` with the lexicon
  and keeps those with a lexicon word (binary, no neutral class, as SST-2);
  other names are TFDS builders read with :func:`sentence_example`, each
  distinct text once (``"empathetic_dialogues"`` gives its situations labelled
  through :data:`ED_SENTIMENT`).
  """
  out = []
  for name in data_config.sentiment_sources:
    if name == "lexicon":
      seen = {}
      for t in triples:
        for text in (t.last_turn, t.response, t.next_turn):
          if text and text not in seen:
            seen[text] = lexicon.label(text)
      out.extend((text, label) for text, label in seen.items() if label >= 0)
    else:
      seen = set()          # ED repeats a conversation's situation on every utterance
      for record in _records(_load(name, data_config, split, "sentiment_sources")):
        ex = sentence_example(record)
        if ex is not None and ex[0] not in seen:
          seen.add(ex[0])
          out.append(ex)
  if not out:
    raise DataError(f"config.data.sentiment_sources {tuple(data_config.sentiment_sources)} "
                    f"give no labelled sentence for split {split!r}")
  return out


def _fixed(tokenizer, texts: Sequence[str], width: int, keep_last: bool) -> np.ndarray:
  """Texts -> ``[N, width]`` int32 ids, right-padded; too long keeps the last/first ``width``."""
  out = np.zeros((len(texts), width), np.int32)
  for i, ids in enumerate(batch_encoder(tokenizer)(list(texts))):  # one batched call
    ids = ids[-width:] if keep_last else ids[:width]
    out[i, :len(ids)] = ids
  return out


def encode_triples(triples: Sequence[Triple], tokenizer, data_config, lexicon
                   ) -> pipeline.EncodedPairs:
  """Triples -> (context, response) pairs carrying the dialogue fields (module docstring)."""
  enc = pipeline.encode_pairs([(t.context, t.response) for t in triples], tokenizer,
                              int(data_config.max_context_len), int(data_config.max_response_len))
  if not len(enc):
    raise DataError("no dialogue example survives tokenisation")
  width = int(data_config.max_turn_len)
  next_turn = _fixed(tokenizer, [t.next_turn for t in triples], width, keep_last=False)
  return pipeline.with_fields(
      enc, last_turn=_fixed(tokenizer, [t.last_turn for t in triples], width, keep_last=True),
      next_turn=next_turn, has_next=(next_turn != 0).any(axis=1).astype(np.float32),
      response_label=np.asarray([lexicon.label(t.response) for t in triples], np.int32))


def encode_sentences(sentences: Sequence[tuple[str, int]], tokenizer, data_config
                     ) -> pipeline.EncodedSentences:
  """Labelled sentences -> ``tokens_out`` (sentence + EOS, ``max_turn_len`` tokens) + ``label``."""
  enc = pipeline.encode_labelled([s for s, _ in sentences], [l for _, l in sentences], tokenizer,
                                 int(data_config.max_turn_len) + 1)
  if not len(enc):
    raise DataError("no labelled sentence survives tokenisation")
  return enc


def make_inputs(config, workdir: str) -> tuple[inputs_lib.Inputs, bool]:
  """``(Inputs, tokenizer_is_new)``: the streams ``dialogue``, ``lookahead``, ``sentences``
  (see the module docstring) and the ``dialogue`` validation split."""
  from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel

  d = config.data
  if int(d.max_turn_len) < 1:
    raise ConfigError(f"config.data.max_turn_len={d.max_turn_len} must be >= 1")
  lexicon = Lexicon.load(threshold=float(d.lexicon_threshold))
  train_triples = load_triples(d, "train")
  val_triples = load_triples(d, "validation")
  train_sentences = load_sentences(d, "train", train_triples, lexicon)
  text_pairs = [(t.context, t.response) for t in train_triples]
  if tuple(d.sentiment_sources) != ("lexicon",):
    text_pairs += [(s,) for s, _ in train_sentences]
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, text_pairs)

  dialogue = encode_triples(train_triples, tok, d, lexicon)
  encoded = {"dialogue": dialogue,
             "lookahead": pipeline.subset(dialogue, dialogue.fields["has_next"] > 0),
             "sentences": encode_sentences(train_sentences, tok, d)}
  batch_size = int(config.train.batch_size)
  for name, enc in encoded.items():
    if len(enc) < batch_size:
      raise DataError(f"the {name} stream has {len(enc)} training examples, fewer than "
                      f"train.batch_size={batch_size}")
  streams = {name: inputs_lib.batch_iterator(config, encoded[name], batch_size,
                                             seed=int(config.seed) + k)
             for k, name in enumerate(STREAMS)}
  validation = encode_triples(val_triples, tok, d, lexicon)
  sentences = encoded["sentences"]
  counts = {"train": dialogue.counts, "validation": validation.counts,
            "lookahead_examples": len(encoded["lookahead"]), "sentences": len(sentences),
            "sentence_positive_rate": float(np.mean(sentences.labels == 1))}
  chosen = spread_indices([t.context for t in val_triples], int(config.train.num_samples))
  return inputs_lib.Inputs(tok, streams, {"dialogue": validation},
                           [(val_triples[i].context, val_triples[i].response) for i in chosen],
                           counts), is_new
