"""MojiTalk's examples: (context, response) pairs with the response's emoji as ``label``.

Every batch of stream ``train`` (and of its validation split) carries

* ``context`` int32 ``[b, Lc]``, ``response_in``/``response_out`` int32 ``[b, Lr]``,
  ``weight`` float32 ``[b]`` (the usual pair keys, :mod:`vedgan.data.pipeline`);
* ``label`` int32 ``[b]``: the emoji of the response (0 on padding rows),

attached per source pair with :func:`vedgan.data.pipeline.with_fields`. All four
stages read this one stream (the classifier maps the same responses to their
emoji).

Where the label comes from is ``config.data.labels``:

* ``"field"`` (the real data, TFDS ``mojitalk_twitter``): the record field
  ``config.data.label_field``; pairs whose label is outside ``[0, num_labels)``
  (e.g. -1, an emoji unseen in training) are left out;
* ``"lexicon"`` (the embedded demo corpus, which has no emoji): a stand-in class
  read off the kept (possibly truncated) response, :func:`lexicon_label`, so the
  classifier always sees the words its target comes from.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.data.sample_choice import spread_indices
from vedgan.errors import ConfigError, DataError

#: Stand-in emoji classes of the demo (``data.labels = "lexicon"``): class 0 when
#: the response has no VADER lexicon word, else 1 + the bucket of the mean
#: valence of its lexicon words, cut at :data:`LEXICON_EDGES`.
LEXICON_LABEL_NAMES = ("neutral", "very negative", "negative", "mixed", "mildly positive",
                       "positive", "very positive", "extremely positive")
LEXICON_EDGES = (-1.5, -0.5, 0.75, 1.25, 1.75, 2.25)


def lexicon_label(text: str, lexicon, edges: Sequence[float] = LEXICON_EDGES) -> int:
  """Stand-in emoji label of ``text``: 0 without lexicon words, else ``1 + bucket(mean valence)``.

  Bucket ``i`` holds valences in ``(edges[i-1], edges[i]]`` (``len(edges) + 1`` buckets).

  >>> from vedgan.data.lexicon import Lexicon
  >>> lex = Lexicon({"good": 1.9, "bad": -2.5})
  >>> [lexicon_label(t, lex) for t in ("a chair", "bad news", "good news", "good and bad")]
  [0, 1, 6, 3]
  """
  found = lexicon.matches(text)
  if not found:
    return 0
  return 1 + int(np.searchsorted(np.asarray(edges, np.float64), sum(found) / len(found),
                                 side="left"))


def label_names(config) -> tuple[str, ...]:
  """Display names of the ``config.data.num_labels`` labels: ``data.label_names``, the
  lexicon classes for ``data.labels = "lexicon"``, else the label ids."""
  names = tuple(config.data.label_names) or (
      LEXICON_LABEL_NAMES if config.data.labels == "lexicon" else ())
  return tuple(names[i] if i < len(names) else str(i)
               for i in range(int(config.data.num_labels)))


def _read_all(records) -> list:
  """A TFDS data source read in one call (much faster than item by item)."""
  if hasattr(records, "__getitems__") and hasattr(records, "__len__"):
    return records.__getitems__(list(range(len(records))))
  return list(records)


def source_pairs(config, split: str) -> tuple[list, np.ndarray | None]:
  """``(pairs, labels int64 [len(pairs)] or None)`` of ``split``; labels only for
  ``data.labels = "field"``."""
  kind = config.data.labels
  if kind == "lexicon":
    return inputs_lib.load_pairs(config.data, split), None
  if kind != "field":
    raise ConfigError(f"data.labels={kind!r} must be 'field' (a record field holds the emoji "
                      "id) or 'lexicon' (derive a stand-in label from the response text)")
  records = sources.load_split(config.data, split)
  pairs = sources.dialogue_pairs(records, int(config.data.context_turns), config.data.eou)
  dataset = inputs_lib.dataset_label(config.data)
  if not pairs:
    raise DataError(f"dataset {dataset!r} split {split!r} has no (context, response) pairs")
  names = getattr(records, "label_names", None)   # string labels of a custom file
  if names and split == "train" and tuple(config.data.label_names) != tuple(names):
    raise ConfigError(
        f"the {config.data.label_field!r} labels of {dataset} are {len(names)} strings, ids "
        f"0-{len(names) - 1} in sorted order; config.data.label_names="
        f"{tuple(config.data.label_names)} does not name them: set "
        f"--config.data.label_names=\"{tuple(names)}\" --config.data.num_labels={len(names)}")
  # a custom file's records carry its label_field's values as "label" (vedgan.data.custom)
  custom_file = (sources.config_value(config.data, "format", "tfds") or "tfds") != "tfds"
  field = "label" if custom_file else config.data.label_field
  labels = []
  for record in _read_all(records):
    if field not in record:
      raise DataError(f"dataset {dataset!r} has no field {field!r} for the emoji "
                      f"label (fields: {sorted(record)}); set data.label_field")
    labels.append(int(np.asarray(record[field]).item()))
  if len(labels) != len(pairs):
    raise DataError(f"{len(labels)} labels for {len(pairs)} pairs in split {split!r}")
  labels = np.asarray(labels, np.int64)
  num_labels = int(config.data.num_labels)
  over = labels >= num_labels
  if split == "train" and over.any():
    raise ConfigError(f"config.data.num_labels={num_labels}, but {int(over.sum())} of the "
                      f"{len(labels)} training pairs of {dataset} have labels up to "
                      f"{int(labels.max())}: set --config.data.num_labels={int(labels.max()) + 1}")
  return pairs, labels


def encode_labelled(config, pairs, labels, tokenizer, lexicon=None):
  """``pairs`` encoded with their ``label`` field (:func:`vedgan.data.pipeline.with_fields`).

  Args:
    pairs: ``N`` raw (context, response) pairs; ``labels``: ``[N]`` ints or None
      (lexicon labels of the kept responses).
    lexicon: a :class:`vedgan.data.lexicon.Lexicon` (loaded when needed and None).

  Returns:
    :class:`vedgan.data.pipeline.EncodedPairs` whose ``fields["label"]`` is int32
    ``[examples]``; ``index`` points into ``pairs``.
  """
  num_labels = int(config.data.num_labels)
  enc = pipeline.encode_pairs(pairs, tokenizer, int(config.data.max_context_len),
                              int(config.data.max_response_len), too_long=config.data.too_long)
  if labels is None:
    if lexicon is None:
      from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel
      lexicon = Lexicon.load()
    edges = tuple(config.data.lexicon_edges)
    kept = [lexicon_label(tokenizer.decode(r.tolist()), lexicon, edges) for r in enc.response]
    if max(kept, default=0) >= num_labels:
      raise ConfigError(f"data.num_labels={num_labels} is too small for {len(edges) + 2} "
                        "lexicon classes")
    labels = np.zeros(len(pairs), np.int32)      # skipped pairs carry no label
    labels[enc.index] = kept
    return pipeline.with_fields(enc, label=labels)
  labels = np.asarray(labels)
  enc = pipeline.with_fields(enc, label=np.where((labels >= 0) & (labels < num_labels),
                                                 labels, -1).astype(np.int32))
  kept = pipeline.subset(enc, enc.fields["label"] >= 0)
  # held-out labels the training split never had (-1) or beyond num_labels: counted, logged
  counts = dict(kept.counts)
  counts["skipped_bad_label"] = counts.pop("subset_dropped", 0)
  return dataclasses.replace(kept, counts=counts)


def labelled_split(config, split: str, tokenizer, lexicon=None):
  """``(encoded, kept pairs)`` of ``split``: :func:`encode_labelled` of its pairs, and the
  raw (context, response) texts of the examples kept, aligned with ``encoded``."""
  pairs, labels = source_pairs(config, split)
  enc = encode_labelled(config, pairs, labels, tokenizer, lexicon)
  return enc, [pairs[i] for i in enc.index]


def make_inputs(config, workdir: str):
  """The run's tokenizer and labelled stream ``train``; returns ``(Inputs, tokenizer_is_new)``."""
  train_pairs, train_labels = source_pairs(config, "train")
  val_pairs, val_labels = source_pairs(config, config.data.validation_split)
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, train_pairs)
  lexicon = None
  if config.data.labels == "lexicon":
    from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel
    lexicon = Lexicon.load()
  train = encode_labelled(config, train_pairs, train_labels, tok, lexicon)
  val = encode_labelled(config, val_pairs, val_labels, tok, lexicon)
  num_labels = int(config.data.num_labels)
  counts = {split: dict(enc.counts, label_histogram=np.bincount(
                enc.fields["label"], minlength=num_labels).tolist())
            for split, enc in (("train", train), ("validation", val))}
  for split, c in counts.items():
    inputs_lib.log_counts(f"{inputs_lib.dataset_label(config.data)} {split} (tokenised, "
                          "labelled)", c)
  rows = spread_indices([val_pairs[i][0] for i in val.index], int(config.train.num_samples),
                        labels=val.fields["label"])  # every label in turn
  samples = [val_pairs[val.index[r]] for r in rows]
  return inputs_lib.Inputs(tok, {"train": inputs_lib.batch_iterator(config, train)},
                           {"train": val}, samples, counts, sample_rows=tuple(rows)), is_new


def sample_labels(inputs) -> np.ndarray:
  """The labels of ``inputs.sample_pairs`` (validation rows ``inputs.sample_rows``) ``[n]``."""
  rows = np.asarray(inputs.sample_rows, np.int64)
  return np.asarray(inputs.validation["train"].fields["label"], np.int32)[rows]
