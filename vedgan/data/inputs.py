"""Assembles a run's inputs from the config: dataset -> tokenizer -> batch iterators.

The dataset is ``config.data.format``: a TFDS builder (``"tfds"``,
``config.data.name``) or your own file (``"text_lines"``, ``"tsv_pairs"``,
``"jsonl_dialogues"`` at ``config.data.path``; see :mod:`vedgan.data.custom`).
The tokenizer (``config.tokenizer.kind``: ``"sentencepiece"`` or ``"word"``) is
trained on the training split (kind ``"file"``: read from ``config.data.tokenizer_file``,
:mod:`vedgan.data.outside_tokenizer`) the first time a workdir is used and stored in
``WORKDIR/tokenizer``; later starts (resume) load it from there, whatever its
kind.
"""
from __future__ import annotations

import collections
import dataclasses
import os

import jax
import numpy as np
from absl import logging

from vedgan.data import pipeline, sources, streaming
from vedgan.data.encoding import batch_encoder
from vedgan.data.identity_tokenizer import IdentityTokenizer
from vedgan.data.sample_choice import spread_indices
from vedgan.data.tokenizer import (Tokenizer, load_tokenizer, tokenizer_exists,
                                   train_sentencepiece, train_word_vocab)
from vedgan.errors import CheckpointError, ConfigError, DataError, VedganError


@dataclasses.dataclass
class Inputs:
  """What the driver needs from the data side, for every objective.

  A *stream* is one kind of training example (dialogue pairs, labelled
  sentences, ...) with its own repeating, shuffled iterator; each step spec
  names the stream it reads (:class:`vedgan.steps.Step`). Per-example fields
  (labels, next turns ...) travel inside the encoded datasets
  (:func:`vedgan.data.pipeline.with_fields`) and so inside every batch.

  Attributes:
    tokenizer: the run's tokenizer.
    streams: ``{name: BatchIterator}`` of local training batches.
    validation: ``{name: encoded validation split}`` of the streams evaluated.
    sample_pairs: a few raw (prompt, reference) validation pairs for samples, spread over
      the split (:func:`vedgan.data.sample_choice.spread_indices`).
    counts: filtering / truncation counts per split and stream.
  """
  tokenizer: Tokenizer
  streams: dict
  validation: dict
  sample_pairs: list
  counts: dict
  #: rows of ``validation``'s first stream that ``sample_pairs`` are (where an objective
  #: needs their fields, e.g. MojiTalk's labels); empty where nobody needs them
  sample_rows: tuple = ()

  def validation_batches(self, config, max_batches: int = 0, stream: str = "train"):
    """A fresh single pass over the validation split of ``stream`` (padding rows have
    weight 0), at most ``max_batches`` batches (0 = all)."""
    it = self.streams[stream].one_pass(self.validation[stream],
                                       int(config.train.eval_batch_size))
    for i, batch in enumerate(it):
      if max_batches and i >= max_batches:
        break
      yield batch

  def validation_batch_count(self, config, max_batches: int = 0, stream: str = "train") -> int:
    """How many batches :meth:`validation_batches` yields (progress bars' totals)."""
    n = self.streams[stream].one_pass(self.validation[stream],
                                      int(config.train.eval_batch_size)).num_batches_per_epoch
    return min(n, max_batches) if max_batches else n

  def get_state(self) -> dict:
    """JSON-safe positions of every stream: ``{"streams": {name: state}}``."""
    return {"streams": {k: it.get_state() for k, it in self.streams.items()}}

  def set_state(self, state: dict) -> None:
    """Continues from :meth:`get_state` (a bare iterator state is stream ``train``'s)."""
    streams = state["streams"] if "streams" in state else {"train": state}
    for name, it in self.streams.items():
      if name in streams:
        it.set_state(streams[name])

  def encode_contexts(self, config, contexts: list[str]) -> np.ndarray:
    """``contexts`` -> ``[len, max_context_len]`` int32, left-truncated, right-padded."""
    max_len = int(config.data.max_context_len)
    out = np.zeros((len(contexts), max_len), np.int32)
    for i, ids in enumerate(batch_encoder(self.tokenizer)(list(contexts))):
      ids = ids[-max_len:]
      out[i, :len(ids)] = ids
    return out


def batch_iterator(config, encoded, batch_size: int | None = None, seed: int | None = None,
                   buckets: tuple[int, ...] | None = None, **kwargs) -> pipeline.BatchIterator:
  """The run's repeating, shuffled training iterator over ``encoded``
  (``config.train.batch_size`` rows, ``config.data.buckets``, this process's rows),
  shuffled with ``seed`` (default ``config.seed``)."""
  if streaming.check_input(config.data) == "stream":  # an objective with its own inputs
    raise ConfigError(f"objective {_get(config, 'objective', '?')!r} reads its training data in "
                      "memory; config.data.input='stream' serves the objectives that train on "
                      "(context, response) pairs through the default inputs (seq2seq, topk_gan)")
  seed = int(config.seed) if seed is None else int(seed)
  buckets = tuple(config.data.buckets) if buckets is None else tuple(buckets)
  return pipeline.BatchIterator(encoded, int(batch_size or config.train.batch_size),
                                buckets, seed=seed, shuffle=True,
                                process_index=jax.process_index(),
                                process_count=jax.process_count(), **kwargs)


def tokenizer_dir(workdir: str) -> str:
  return os.path.join(workdir, "tokenizer")


def _get(config, key: str, default=None):
  try:
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key)
  except (AttributeError, KeyError):
    return default
  return default if value is None else value


def dataset_label(data_config) -> str:
  """``config.data.name`` for TFDS, else ``"<format>:<path>"`` (for messages)."""
  fmt = _get(data_config, "format", "tfds") or "tfds"
  return data_config.name if fmt == "tfds" else f"{fmt}:{_get(data_config, 'path', '')}"


def load_pairs(data_config, split: str) -> list[tuple[str, str]]:
  """``(context, response)`` strings of ``split`` of the configured dataset."""
  if (_get(data_config, "format", "tfds") or "tfds") == "text_lines":
    raise ConfigError("config.data.format='text_lines' has single sentences, no (context, "
                      "response) pairs; use it with an unconditional objective (latent_gan) "
                      "or use tsv_pairs / jsonl_dialogues")
  records = sources.load_split(data_config, split)
  source_counts = getattr(records, "counts", None)
  if source_counts:
    log_counts(f"{dataset_label(data_config)} {split} (reading)", source_counts)
  pairs = sources.dialogue_pairs(records, int(data_config.context_turns), data_config.eou)
  if pairs and split != "train":
    warn_if_unrepresentative(pairs, f"{dataset_label(data_config)} {split}")
  if not pairs:
    raise DataError(f"dataset {dataset_label(data_config)!r} split {split!r} has no (context, "
                    f"response) pairs{_why_no_pairs(data_config, source_counts)}")
  return pairs


#: a held-out split smaller than this gives noisy metrics (a warning, not an error)
MIN_HELD_OUT = 50
#: ... and one whose most common context is more than this share of it is repetitive
MAX_CONTEXT_SHARE = 0.2


def warn_if_unrepresentative(pairs: list[tuple[str, str]], what: str) -> list[str]:
  """Logs (and returns) warnings about a held-out split of ``(context, response)`` pairs
  that is tiny or dominated by one context; an empty list when it is neither."""
  found = []
  if len(pairs) < MIN_HELD_OUT:
    found.append(f"data {what}: only {len(pairs)} (context, response) pairs; its metrics "
                 "will be noisy (raise config.data.validation_percent or give a larger file)")
  context, count = collections.Counter(c for c, _ in pairs).most_common(1)[0]
  if count > 1 and count > MAX_CONTEXT_SHARE * len(pairs):
    found.append(f"data {what}: {count} of its {len(pairs)} pairs have the context "
                 f"{context[:60]!r}; its metrics and logged samples will repeat it")
  for line in found:
    logging.warning("%s", line)
  return found


def _why_no_pairs(data_config, counts) -> str:
  """The end of the no-pairs error: what to check, from the reader's skip counts."""
  fmt = _get(data_config, "format", "tfds") or "tfds"
  if fmt == "jsonl_dialogues" and counts and counts.get("missing_turns"):
    field = _get(data_config, "turns_field", "turns") or "turns"
    return (f" ({counts['missing_turns']} lines have no list of turns under "
            f"{field!r}); set --config.data.turns_field to the field that holds them "
            "(a list of strings, or of chat messages {\"role\", \"content\"})")
  if fmt != "tfds" and counts:
    skipped = {k: v for k, v in counts.items() if v and k != "records"}
    return f" (skipped lines: {skipped}); check config.data.path and config.data.format"
  return "; check config.data and the prepared files"


def log_counts(what: str, counts: dict) -> None:
  """Logs filtering / truncation counts (a warning if items were skipped or cut short)."""
  dropped = {k: v for k, v in counts.items()
             if v and (k.startswith(("skipped", "undecodable", "malformed", "empty", "missing",
                                     "too_few", "bad", "label_count", "truncated")))}
  if dropped:
    logging.warning("data %s: %s (all counts: %s)", what, dropped, counts)
  else:
    logging.info("data %s: %s", what, counts)


def train_tokenizer(config, texts):
  """A new tokenizer of ``config.tokenizer.kind`` trained on ``texts``."""
  tc = config.tokenizer
  kind = tc.kind
  if kind == "file":  # made elsewhere: a tokenizer.json or SentencePiece .model, nothing to train
    from vedgan.data import outside_tokenizer  # pylint: disable=import-outside-toplevel
    return outside_tokenizer.from_config(config)
  if _get(config.data, "tokenizer_file", ""):
    raise ConfigError(f"config.data.tokenizer_file={config.data.tokenizer_file!r} is only read "
                      f"with tokenizer.kind='file' (not {kind!r}); set --config.tokenizer.kind=file "
                      "or --config.data.tokenizer_file=''")
  if kind == "sentencepiece":
    try:   # a bad model_type, or a vocabulary too large for a small corpus: one line
      return train_sentencepiece(texts, int(tc.vocab_size), model_type=tc.model_type)
    except ValueError as e:
      raise ConfigError(f"{e} (config.tokenizer)") from None
  if kind == "word":
    return train_word_vocab(texts, int(tc.vocab_size), lowercase=bool(_get(tc, "lowercase", True)),
                            min_count=int(_get(tc, "min_count", 1)))
  if kind == "identity":  # texts of token ids (the synthetic oracle, issue 18): nothing to train
    return IdentityTokenizer(int(tc.vocab_size))
  raise ConfigError(f"tokenizer.kind={kind!r} is not supported; use 'sentencepiece', 'word', "
                    "'file' or 'identity'")


def get_tokenizer(config, workdir: str, train_pairs) -> tuple[Tokenizer, bool]:
  """Loads the run's tokenizer, or trains one (not yet saved). Returns (tokenizer, is_new).

  ``train_pairs``: tuples of training texts (pairs, or 1-tuples of sentences).
  A saved tokenizer of either kind is reused as it is (resume).
  """
  if tokenizer_exists(tokenizer_dir(workdir)):
    try:
      return load_tokenizer(tokenizer_dir(workdir)), False
    except Exception as e:  # pylint: disable=broad-except  (sentencepiece/protobuf errors vary)
      why = " ".join(str(e).split())[:160] or type(e).__name__
      raise CheckpointError(f"the tokenizer in {tokenizer_dir(workdir)} cannot be read ({why}); "
                            "restore it or use a new --workdir") from None
  texts = [t for pair in train_pairs for t in pair]
  return train_tokenizer(config, texts), True


def make_inputs(config, workdir: str) -> tuple[Inputs, bool]:
  """Builds the inputs of a run; returns ``(inputs, tokenizer_is_new)``."""
  if streaming.check_input(config.data) == "stream":
    return make_stream_inputs(config, workdir)
  train_pairs = load_pairs(config.data, "train")
  val_pairs = load_pairs(config.data, _get(config.data, "validation_split", "validation"))
  tok, is_new = get_tokenizer(config, workdir, train_pairs)
  max_c, max_r = int(config.data.max_context_len), int(config.data.max_response_len)
  too_long = _get(config.data, "too_long", "truncate")
  train_enc = pipeline.encode_pairs(train_pairs, tok, max_c, max_r, too_long=too_long)
  val_enc = pipeline.encode_pairs(val_pairs, tok, max_c, max_r, too_long=too_long)
  counts = {"train": getattr(train_enc, "counts", {}), "validation": getattr(val_enc, "counts", {})}
  for split, c in counts.items():
    log_counts(f"{dataset_label(config.data)} {split} (tokenised)", c)
  chosen = spread_indices([c for c, _ in val_pairs], int(config.train.num_samples))
  return Inputs(tok, {"train": batch_iterator(config, train_enc)}, {"train": val_enc},
                [val_pairs[i] for i in chosen], counts), is_new


def make_stream_inputs(config, workdir: str) -> tuple[Inputs, bool]:
  """:func:`make_inputs` for ``config.data.input = "stream"``: the training pairs are read and
  tokenised as batches need them (:class:`vedgan.data.streaming.StreamIterator`); the
  validation split is encoded in memory as usual; a new tokenizer is trained on at most
  :data:`vedgan.data.streaming.TOKENIZER_SAMPLE` training pairs spread over the split."""
  source = streaming.open_pairs(config.data, "train")
  val_pairs = load_pairs(config.data, _get(config.data, "validation_split", "validation"))
  tok, is_new = get_tokenizer(config, workdir, streaming.sample_pairs(source))
  max_c, max_r = int(config.data.max_context_len), int(config.data.max_response_len)
  too_long = _get(config.data, "too_long", "truncate")
  val_enc = pipeline.encode_pairs(val_pairs, tok, max_c, max_r, too_long=too_long)
  try:
    stream = streaming.StreamIterator(
        source, tok, max_c, max_r, int(config.train.batch_size), tuple(config.data.buckets),
        seed=int(config.seed), process_index=jax.process_index(),
        process_count=jax.process_count(), too_long=too_long)
  except VedganError:
    raise
  except ValueError as e:  # batch size, buckets, seed: one line
    raise ConfigError(f"{e} (config.data.input='stream')") from None
  counts = {"train": {"records": len(source)}, "validation": getattr(val_enc, "counts", {})}
  log_counts(f"{dataset_label(config.data)} validation (tokenised)", counts["validation"])
  logging.info("data %s train: %d records, streamed", dataset_label(config.data), len(source))
  chosen = spread_indices([c for c, _ in val_pairs], int(config.train.num_samples))
  return Inputs(tok, {"train": stream}, {"train": val_enc}, [val_pairs[i] for i in chosen],
                counts), is_new
