r"""MojiTalk (Zhou & Wang, ACL 2018): emoji-conditioned CVAE, emoji classifier, Reinforced CVAE.

One objective holds every network of the paper in one :class:`TrainState`, and
four step functions that ``config.stages`` strings together
(``configs/mojitalk.py``)::

  base        seq2seq MLE, conditioned on the emoji (decoder state from [h_ctx; e; z=0])
  cvae        the CVAE objective L' of supplement Eq. 2, starting from the base's weights
  classifier  the DeepMoji emoji classifier, response -> emoji
  rl          the Reinforced CVAE (Algorithm 1): L'' = L' - lambda J'

Networks (``state.params``):

* ``model``: the :class:`vedgan.nn.seq2seq.Seq2Seq` (BiGRU encoder, GRU decoder
  with scaled Luong attention, word embeddings). Its bridge reads
  ``[h_ctx; e; z]``, so the base model is the CVAE with ``z = 0`` (as in the
  authors' code) and the CVAE stage starts from the converged base weights;
  the bridge rows of ``z`` receive no gradient while ``z = 0``.
* ``emoji``: :class:`vedgan.nn.cvae.EmojiVector`, ``e = tanh(W emb(emoji))`` (12-d).
* ``cvae``: :class:`vedgan.nn.cvae.CVAEHeads`: response encoder + recognition
  network ``q(z|x,c)``, prior network ``p(z|c)``, BoW head ``f(z, c)``.
* ``classifier``: :class:`vedgan.nn.deepmoji.DeepMoji`.

``state.opt_state`` has one Adam state for the generator (``model``, ``emoji``,
``cvae``) and one for the classifier. Stages with ``reset_optimizer`` start
their generator Adam state afresh (a new optimiser over the restored weights,
as the paper's separately trained models).

Losses, per example (sums over tokens), averaged over the global batch:

  L'  = -log p(x|z,c) + w_kl KL(q(z|x,c) || p(z|c)) - w_bow log p(x_bow|z,c),  z ~ q
  J'  = alpha (R - r) sum_t log P(G_t)          (alpha, R - r stop-gradient'ed)
  L'' = L' - lambda J'  (lambda J' switched on after ``policy_start_epochs``)

with ``G`` generated in the step from a prior sample of ``z`` (greedy, as the
authors' code, or sampled), ``log P(G_t)`` recomputed differentiably by a
teacher-forced pass over ``G``, ``R``/``r`` the frozen classifier's
probability of the emoji on ``G``/the gold response, and ``alpha`` the rank
weight of Eq. 3 (:func:`vedgan.losses.rank_weight`).

Data: batches carry ``label`` int32 ``[b]`` next to the usual pair keys. The
real data (``mojitalk_twitter``) has the emoji as a record field; the
embedded demo corpus has no emoji, so ``data.labels = "lexicon"`` derives a
stand-in label offline from the response text (VADER lexicon valence buckets,
:data:`LEXICON_LABEL_NAMES`). See ``docs/mojitalk.md``.

Comparing base / CVAE / Reinforced CVAE of one run (stage-end checkpoints,
all scored by the run's final classifier)::

  python -m vedgan.objectives.mojitalk --workdir DIR [--num_examples N] [--seed S]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax

from vedgan import configlib, decode, losses, parallel, schedules
from vedgan.errors import ConfigError, DataError
from vedgan.nn.cvae import CVAEHeads, EmojiVector
from vedgan.nn.deepmoji import DeepMoji
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.objectives import base
from vedgan.objectives import seq2seq as seq2seq_objective
from vedgan.plots import Panel

GENERATOR = ("model", "emoji", "cvae")   # the networks L' and L'' train
STEP_NAMES = ("base", "cvae", "classifier", "rl")
LATENT_STEPS = ("cvae", "rl")             # stages after which the generator samples z

# RNG salts of one step (state.step_key(salt)).
_SALT_DROPOUT, _SALT_Z, _SALT_GEN_Z, _SALT_GEN = 1, 2, 3, 4
_NEG = -1e9  # finite "minus infinity" for masked logits (exp underflows to exactly 0)

#: Stand-in emoji classes of the demo (``data.labels = "lexicon"``): class 0 when
#: the response has no VADER lexicon word, else 1 + the bucket of the mean
#: valence of its lexicon words, cut at :data:`LEXICON_EDGES`.
LEXICON_LABEL_NAMES = ("neutral", "very negative", "negative", "mixed", "mildly positive",
                       "positive", "very positive", "extremely positive")
LEXICON_EDGES = (-1.5, -0.5, 0.75, 1.25, 1.75, 2.25)


# =============================================================================
# Data: (context, response, label) batches
# =============================================================================


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


def _read_all(records) -> list:
  """A TFDS data source read in one call (much faster than item by item)."""
  if hasattr(records, "__getitems__") and hasattr(records, "__len__"):
    return records.__getitems__(list(range(len(records))))
  return list(records)


def load_split_with_labels(config, split: str):
  """``(pairs, labels or None)`` of a split; ``labels`` only for ``data.labels = "field"``."""
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import sources  # pylint: disable=import-outside-toplevel

  kind = config.data.labels
  if kind == "lexicon":
    return inputs_lib.load_pairs(config.data, split), None
  if kind != "field":
    raise ConfigError(f"data.labels={kind!r} must be 'field' (a record field holds the emoji "
                      "id) or 'lexicon' (derive a stand-in label from the response text)")
  records = sources.load_split(config.data, split)
  pairs = sources.dialogue_pairs(records, int(config.data.context_turns), config.data.eou)
  if not pairs:
    raise DataError(f"dataset {config.data.name!r} split {split!r} has no (context, response) "
                    "pairs")
  field = config.data.label_field
  labels = []
  for record in _read_all(records):
    if field not in record:
      raise DataError(f"dataset {config.data.name!r} has no field {field!r} for the emoji "
                      f"label (fields: {sorted(record)}); set data.label_field")
    labels.append(int(np.asarray(record[field]).item()))
  if len(labels) != len(pairs):
    raise DataError(f"{len(labels)} labels for {len(pairs)} pairs in split {split!r}")
  return pairs, labels


def encode_labelled_pairs(pairs, labels, tokenizer, config, lexicon=None):
  """Encodes pairs and returns ``(EncodedPairs, labels int32 [N], kept raw pairs)``, aligned.

  Pairs whose label is outside ``[0, num_labels)`` (e.g. -1: an emoji unseen in
  training) or that :func:`~vedgan.data.pipeline.encode_pairs` skips (no
  tokens; too long with ``data.too_long = "skip"``) are left out. With
  ``labels=None`` the label is :func:`lexicon_label` of the *kept* (possibly
  truncated) response, so the classifier always sees the words its target comes from.
  """
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  num_labels = int(config.data.num_labels)
  max_c, max_r = int(config.data.max_context_len), int(config.data.max_response_len)
  too_long = config.data.get("too_long", "truncate")
  keep = list(range(len(pairs)))
  if labels is not None:
    keep = [i for i in keep if 0 <= labels[i] < num_labels]
  encode = lambda idx: pipeline.encode_pairs([pairs[i] for i in idx], tokenizer, max_c, max_r,
                                             too_long=too_long)
  enc = encode(keep)
  if len(enc) != len(keep):  # encode_pairs skipped some: find which, as it decides

    def kept(i):
      c, r = tokenizer.encode(pairs[i][0]), tokenizer.encode(pairs[i][1])
      return bool(c and r) and (too_long != "skip" or (len(c) <= max_c and len(r) < max_r))

    keep = [i for i in keep if kept(i)]
    enc = encode(keep)
    if len(enc) != len(keep):
      raise DataError("could not align the labels with the encoded pairs")
  if labels is None:
    if lexicon is None:
      from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel
      lexicon = Lexicon.load()
    edges = tuple(config.data.get("lexicon_edges", LEXICON_EDGES))
    out = [lexicon_label(tokenizer.decode(r.tolist()), lexicon, edges) for r in enc.response]
    if max(out, default=0) >= num_labels:
      raise ConfigError(f"data.num_labels={num_labels} is too small for {len(edges) + 2} "
                        "lexicon classes")
  else:
    out = [labels[i] for i in keep]
  return enc, np.asarray(out, np.int32), [pairs[i] for i in keep]


class LabelledBatches:
  """Adds ``label`` int32 ``[b]`` to the batches of a :class:`~vedgan.data.pipeline.BatchIterator`.

  Labels are looked up by the iterator's own example indices
  (``global_indices(epoch, position)``, this process's rows), so the wrapper
  is resumable exactly like the iterator (same ``get_state``/``set_state``)
  and works for any number of processes. Padding rows get label 0.
  """

  def __init__(self, iterator, labels, process_index: int = 0, process_count: int = 1):
    if len(labels) != iterator.num_examples:
      raise ValueError(f"{len(labels)} labels for {iterator.num_examples} examples")
    self._it = iterator
    self._labels = np.asarray(labels, np.int32)
    self._process_index = int(process_index)
    del process_count  # the iterator's local batch size already accounts for it

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    state = self._it.get_state()   # the (epoch, position) of the batch about to be produced
    batch = next(self._it)
    idx = self._it.global_indices(state["epoch"], state["position"])
    b = self._it.local_batch_size
    local = idx[self._process_index * b:(self._process_index + 1) * b]
    batch["label"] = np.where(local >= 0, self._labels[np.maximum(local, 0)], 0).astype(np.int32)
    return batch

  def get_state(self) -> dict:
    return self._it.get_state()

  def set_state(self, state: dict) -> None:
    self._it.set_state(state)

  def __getattr__(self, name):
    return getattr(self._it, name)


def _make_inputs_class():
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  @dataclasses.dataclass
  class LabelledInputs(inputs_lib.Inputs):
    """:class:`vedgan.data.inputs.Inputs` plus labels.

    Extra attributes: ``validation_labels`` int32 ``[N]`` (aligned with
    ``validation``), ``validation_pairs`` (their raw texts), ``sample_labels``
    (of ``sample_pairs``), ``label_names``.
    """
    validation_labels: np.ndarray | None = None
    validation_pairs: list | None = None
    sample_labels: list | None = None
    label_names: tuple = ()

    def validation_batches(self, config, max_batches: int = 0):
      it = pipeline.BatchIterator(self.validation, config.train.eval_batch_size,
                                  tuple(config.data.buckets), seed=config.seed, shuffle=False,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count(), drop_remainder=False,
                                  repeat=False)
      labelled = LabelledBatches(it, self.validation_labels, jax.process_index(),
                                 jax.process_count())
      for i, batch in enumerate(labelled):
        if max_batches and i >= max_batches:
          break
        yield batch

  return LabelledInputs


def validation_split(config) -> str:
  """The split evaluated during training (``data.validation_split``, default "validation")."""
  return config.data.get("validation_split", "validation") or "validation"


def make_labelled_inputs(config, workdir: str):
  """The run's tokenizer and labelled iterators; returns ``(inputs, tokenizer_is_new)``."""
  from vedgan.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  from vedgan.data import pipeline  # pylint: disable=import-outside-toplevel

  train_pairs, train_labels = load_split_with_labels(config, "train")
  val_pairs, val_labels = load_split_with_labels(config, validation_split(config))
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, train_pairs)
  lexicon = None
  if config.data.labels == "lexicon":
    from vedgan.data.lexicon import Lexicon  # pylint: disable=import-outside-toplevel
    lexicon = Lexicon.load()
  train_enc, train_y, _ = encode_labelled_pairs(train_pairs, train_labels, tok, config, lexicon)
  val_enc, val_y, val_kept = encode_labelled_pairs(val_pairs, val_labels, tok, config, lexicon)
  it = pipeline.BatchIterator(train_enc, config.train.batch_size, tuple(config.data.buckets),
                              seed=config.seed, shuffle=True, process_index=jax.process_index(),
                              process_count=jax.process_count())
  train_it = LabelledBatches(it, train_y, jax.process_index(), jax.process_count())
  n = max(int(config.train.num_samples), 0)
  names = tuple(config.data.get("label_names", ())) or (
      LEXICON_LABEL_NAMES if config.data.labels == "lexicon" else ())
  counts = {"train": dict(train_enc.counts, label_histogram=np.bincount(
                train_y, minlength=int(config.data.num_labels)).tolist()),
            "validation": dict(val_enc.counts, label_histogram=np.bincount(
                val_y, minlength=int(config.data.num_labels)).tolist())}
  for split, c in counts.items():
    inputs_lib.log_counts(f"{config.data.name} {split} (tokenised, labelled)", c)
  cls = _make_inputs_class()
  return cls(tok, train_it, val_enc, val_kept[:n], counts, validation_labels=val_y,
             validation_pairs=val_kept, sample_labels=val_y[:n].tolist(),
             label_names=names), is_new


# =============================================================================
# The objective
# =============================================================================


def hybrid_loss(cvae_loss, policy_loss, policy_weight):
  """``L'' = L' - lambda J' = L' + lambda * (-J')`` per example (Algorithm 1, line 12)."""
  return cvae_loss + policy_weight * policy_loss


_EOS_ID = 3  # vedgan.data.tokenizer.EOS_ID (not imported: objectives do not load the data stack)


def response_tokens(batch, eos_id: int = _EOS_ID) -> jax.Array:
  """The response words: ``response_out`` without its EOS (``[B, T]``, pad 0)."""
  return _strip_eos(batch["response_out"], eos_id)


def _strip_eos(tokens: jax.Array, eos_id: int = _EOS_ID) -> jax.Array:
  """``tokens`` with EOS and everything after it set to 0 (pad)."""
  after = jnp.cumsum((tokens == eos_id).astype(jnp.int32), axis=-1) > 0
  return jnp.where(after, 0, tokens)


@base.register("mojitalk")
class MojiTalkObjective(base.Objective):
  """Base seq2seq -> CVAE -> emoji classifier -> Reinforced CVAE (see the module docstring)."""

  STEPS = STEP_NAMES
  #: training-curve figures (vedgan.plots): the CVAE's KL with its annealing weight, and
  #: the Reinforced CVAE's classifier reward R on generations against the gold response's
  #: r, which is the REINFORCE baseline of Algorithm 1 (advantage R - r, scaled by alpha).
  PLOT_GROUPS = {
      "latent_kl": (
          Panel("KL(q || p) and its annealing weight", ("kl",), ("KL weight = kl_weight",),
                "KL [nats / response]", "weight"),
          Panel("validation KL and bag-of-words loss", ("validation/kl", "validation/bow"))),
      "rl_reward": (
          Panel("classifier reward (Reinforced CVAE)",
                ("reward R (generated) = reward_gen", "baseline r (gold) = reward_gold",
                 "advantage R - r = reward_gen - reward_gold"), ylabel="P(emoji | response)"),
          Panel("rank weight alpha and top-1 rate", ("alpha", "gen_top1")),
          Panel("hybrid loss terms", ("cvae_loss", "policy"))),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    m, d = config.model, config.data
    vocab = tokenizer.vocab_size
    self.num_labels = int(d.num_labels)
    self.latent_dim = int(m.latent_dim)
    dtype = seq2seq_objective.DTYPES[m.dtype]
    self.seq2seq = seq2seq_objective.build_seq2seq(m, vocab)
    self.emoji = EmojiVector(self.num_labels, int(m.embed_dim), int(m.emoji_dim), dtype)
    self.cvae = CVAEHeads(self.latent_dim, vocab, int(m.hidden),
                          tuple(int(h) for h in m.recognition_hidden),
                          tuple(int(h) for h in m.prior_hidden), bool(m.latent_tanh),
                          int(m.encoder_layers), float(m.dropout), int(m.get("unroll", 1)), dtype,
                          bool(m.get("remat", False)))
    c = m.classifier
    self.classifier = DeepMoji(vocab, self.num_labels, int(c.embed_dim), int(c.hidden),
                               int(c.num_layers), float(c.dropout), float(c.embed_scale),
                               int(m.get("unroll", 1)), dtype, bool(m.get("remat", False)))
    self.tx = base.make_optimizer(config.optimizer)
    self.steps_per_epoch: int | None = None
    self._eos = tokenizer.eos_id
    self._latent_start = None
    start = 0
    for _, stage in configlib.ordered_stages(config):
      names = {n for n, _ in configlib.parse_cycle(stage.step)}
      if names & set(LATENT_STEPS) and self._latent_start is None:
        self._latent_start = start
      start += int(stage.num_steps)
    self._gen_cache: dict = {}

  @classmethod
  def make_inputs(cls, config, workdir: str):
    """Labelled ``(context, response, label)`` inputs; see :func:`make_labelled_inputs`."""
    return make_labelled_inputs(config, workdir)

  def bind_inputs(self, inputs) -> None:
    """Learns the epoch length (global batches per epoch) of the training iterator."""
    self.steps_per_epoch = int(inputs.train.num_batches_per_epoch)

  def epochs_to_steps(self, epochs: float, what: str) -> int:
    """``epochs`` of the training iterator in steps (needs :meth:`bind_inputs`)."""
    if float(epochs) <= 0:
      return 0
    if not self.steps_per_epoch:
      raise ConfigError(f"{what} is given in epochs but the epoch length is unknown; "
                        "call objective.bind_inputs(inputs) (the trainer does)")
    return max(1, int(round(float(epochs) * self.steps_per_epoch)))

  def is_latent(self, step) -> Any:
    """Whether the generator at global ``step`` has been through a CVAE/RL step."""
    if self._latent_start is None:
      return jnp.asarray(False) if isinstance(step, jax.Array) else False
    return step > self._latent_start

  # -- state --------------------------------------------------------------------
  def init(self, rng: jax.Array, batch) -> base.TrainState:
    keys = jax.random.split(rng, 5)
    context, resp = batch["context"], response_tokens(batch, self._eos)
    label = batch["label"]
    model = self.seq2seq.init({"params": keys[0]}, context, batch["response_in"])["params"]
    emoji = self.emoji.init({"params": keys[1]}, label)["params"]
    # The bridge reads [h_ctx; e; z]: a Dense of the seq2seq's own bridge shape and init.
    b = context.shape[0]
    width = 2 * int(self.config.model.hidden) + int(self.config.model.emoji_dim) + self.latent_dim
    bridge = nn.Dense(int(self.config.model.hidden)).init(
        keys[2], jnp.zeros((1, width), jnp.float32))["params"]
    model = dict(model, bridge=bridge)
    cond = jnp.zeros((b, 2 * int(self.config.model.hidden) + int(self.config.model.emoji_dim)))
    emb = jnp.zeros(resp.shape + (int(self.config.model.embed_dim),))
    cvae = self.cvae.init({"params": keys[3]}, emb, (resp != 0).astype(jnp.float32),
                          cond)["params"]
    classifier = self.classifier.init({"params": keys[4]}, resp)["params"]
    params = {"model": model, "emoji": emoji, "cvae": cvae, "classifier": classifier}
    gen = {k: params[k] for k in GENERATOR}
    return base.TrainState(step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                           params=params,
                           opt_state={"generator": self.tx.init(gen),
                                      "classifier": self.tx.init(classifier)})

  # -- network pieces (pure functions of a params dict) ---------------------------
  def _s2s(self, params, *args, method, rng=None, **kwargs):
    rngs = {"dropout": rng} if rng is not None else {}
    return self.seq2seq.apply({"params": params["model"]}, *args, method=method, rngs=rngs,
                              **kwargs)

  def _heads(self, params, *args, method, rng=None, **kwargs):
    rngs = {"dropout": rng} if rng is not None else {}
    return self.cvae.apply({"params": params["cvae"]}, *args, method=method, rngs=rngs, **kwargs)

  def condition(self, params, context, label, train: bool = False, rng=None):
    """``(memory, c = [h_ctx; e], e)`` for ``context[B, S]`` and ``label[B]``."""
    memory = self._s2s(params, context, train, method=Seq2Seq.encode, rng=rng)
    e = self.emoji.apply({"params": params["emoji"]}, label)
    return memory, jnp.concatenate([memory.final, e], axis=-1), e

  def initial_state(self, params, memory, e, z):
    """Decoder state ``h_0 = tanh(W_b [h_ctx; e; z])`` (``z = 0`` for the base model)."""
    return self._s2s(params, memory, jnp.concatenate([e, z], axis=-1),
                     method=Seq2Seq.initial_state)

  def decode_logits(self, params, memory, h0, tokens_in, train: bool = False, rng=None):
    """Teacher-forced logits ``[B, T, V]``."""
    return self._s2s(params, memory, h0, tokens_in, train, method=Seq2Seq.decode,
                     rng=rng)["logits"]

  def prior(self, params, cond):
    """``p(z | c)``: ``(mean, logvar)``."""
    return self._heads(params, cond, method=CVAEHeads.prior_params)

  def classify(self, params, tokens, train: bool = False, rng=None):
    """Emoji logits ``[B, C]`` of responses ``tokens[B, T]`` (EOS and what follows ignored)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return self.classifier.apply({"params": params["classifier"]},
                                 _strip_eos(tokens, self._eos), train, rngs=rngs)

  # -- the losses -----------------------------------------------------------------
  def base_terms(self, params, batch, train: bool = False, rng=None):
    """Per-example ``(nll_sum[B], tokens[B])`` of the base seq2seq (``z = 0``)."""
    k_enc, k_dec = jax.random.split(rng) if rng is not None else (None, None)
    memory, _, e = self.condition(params, batch["context"], batch["label"], train, k_enc)
    z = jnp.zeros((e.shape[0], self.latent_dim), jnp.float32)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                batch["response_in"], train, k_dec)
    return seq2seq_objective.mle_terms(logits, batch)

  def cvae_terms(self, params, batch, z_key, train: bool = False, rng=None,
                 kl_weight: float | jax.Array = 1.0, bow_weight: float | jax.Array = 1.0):
    """Per-example terms of supplement Eq. 2 with ``z ~ q(z|x,c)`` (reparameterised).

    Returns a dict of ``[B]`` arrays: ``rec`` (``-log p(x|z,c)``, summed over
    tokens), ``tokens``, ``kl`` (``KL(q(z|x,c) || p(z|c))``), ``bow``
    (``-log p(x_bow|z,c)``) and ``loss = rec + kl_weight kl + bow_weight bow``
    (``L'``); plus ``z``, ``mean_q``, ``logvar_q``, ``mean_p``, ``logvar_p``.
    """
    keys = jax.random.split(rng, 4) if rng is not None else (None,) * 4
    memory, cond, e = self.condition(params, batch["context"], batch["label"], train, keys[0])
    resp = response_tokens(batch, self._eos)
    resp_mask = (resp != 0).astype(jnp.float32)
    resp_emb = self._s2s(params, resp, train, method=Seq2Seq.embed_tokens, rng=keys[1])
    h_x = self._heads(params, resp_emb, resp_mask, train, method=CVAEHeads.encode_response,
                      rng=keys[2])
    mean_q, logvar_q = self._heads(params, h_x, cond, method=CVAEHeads.posterior)
    mean_p, logvar_p = self.prior(params, cond)
    z = losses.gaussian_sample(z_key, mean_q, logvar_q)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                batch["response_in"], train, keys[3])
    rec, count = seq2seq_objective.mle_terms(logits, batch)
    kl = jnp.sum(losses.gaussian_kl(mean_q, logvar_q, mean_p, logvar_p), axis=-1)
    bow = losses.bow_loss(self._heads(params, z, cond, method=CVAEHeads.bow_logits), resp,
                          resp_mask)
    return {"loss": rec + kl_weight * kl + bow_weight * bow, "rec": rec, "tokens": count,
            "kl": kl, "bow": bow, "z": z, "mean_q": mean_q, "logvar_q": logvar_q,
            "mean_p": mean_p, "logvar_p": logvar_p}

  def rewards(self, gen_logits, gold_logits, label, weights=(0.0, 0.5, 1.0)):
    """``R``, ``r``, the label's rank on the generation and ``alpha`` (Eq. 3), each ``[B]``.

    ``R = softmax(gen_logits)[label]``, ``r = softmax(gold_logits)[label]``,
    ``alpha = rank_weight(rank(R))``: 0 for rank 1, 0.5 for ranks 2-5, else 1.
    """
    probs_gen = jax.nn.softmax(gen_logits, axis=-1)
    probs_gold = jax.nn.softmax(gold_logits, axis=-1)
    take = lambda p: jnp.take_along_axis(p, label[:, None], axis=-1)[:, 0]
    rank = losses.label_rank(gen_logits, label)
    return {"R": take(probs_gen), "r": take(probs_gold), "rank": rank,
            "alpha": losses.rank_weight(rank, *weights)}

  @staticmethod
  def policy_loss(log_probs, mask, rw):
    """``-J' = -alpha (R - r) sum_t log P(G_t)`` per example (Algorithm 1, line 11).

    ``alpha``, ``R`` and ``r`` (from :meth:`rewards`) get no gradient; only
    ``log_probs[B, L]`` (masked by ``mask[B, L]``) carries the policy gradient.
    """
    return losses.reinforce_loss(log_probs, rw["alpha"] * rw["R"], rw["alpha"] * rw["r"], mask)

  def sequence_log_probs(self, params, context, label, eps, tokens, latent_source: str = "prior",
                         batch=None):
    """Differentiable ``log P(G_t)`` ``[B, L]`` of generated ``tokens`` (teacher forcing).

    Rebuilds the generation's ``z = mean + exp(logvar / 2) eps`` (prior, or
    posterior given ``batch``) and scores ``tokens`` under the same masked
    distribution :mod:`vedgan.decode` chose them from (PAD/BOS/UNK forbidden,
    no dropout). Positions after EOS hold the log-probability of EOS and must
    be masked by the caller.
    """
    memory, cond, e = self.condition(params, context, label, False)
    if latent_source == "prior":
      mean, logvar = self.prior(params, cond)
    else:
      resp = response_tokens(batch, self._eos)
      emb = self._s2s(params, resp, False, method=Seq2Seq.embed_tokens)
      h_x = self._heads(params, emb, (resp != 0).astype(jnp.float32), False,
                        method=CVAEHeads.encode_response)
      mean, logvar = self._heads(params, h_x, cond, method=CVAEHeads.posterior)
    z = mean + jnp.exp(0.5 * logvar) * eps
    done = jnp.cumsum((tokens == self._eos).astype(jnp.int32), axis=-1)
    after_eos = (done - (tokens == self._eos)) > 0
    safe = jnp.where(after_eos, self._eos, tokens)
    tokens_in = jnp.concatenate([jnp.full_like(safe[:, :1], self.tokenizer.bos_id),
                                 safe[:, :-1]], axis=1)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                tokens_in, False)
    banned = np.zeros((logits.shape[-1],), bool)
    banned[list(self._forbid(True))] = True
    logits = jnp.where(banned, _NEG, logits)
    return losses.token_log_probs(logits, safe)

  # -- training steps ---------------------------------------------------------------
  @property
  def step_builders(self):
    return {"base": self.build_base_step, "cvae": self.build_cvae_step,
            "classifier": self.build_classifier_step, "rl": self.build_rl_step}

  def _update_generator(self, state, grads, stage, start, lr):
    gen = {k: state.params[k] for k in GENERATOR}
    opt = state.opt_state["generator"]
    if bool(stage.get("reset_optimizer", False)):
      fresh = self.tx.init(gen)
      first = state.step == start
      opt = jax.tree.map(lambda a, b: jnp.where(first, a, b), fresh, opt)
    gen, opt = base.apply_updates(self.tx, grads, opt, gen, lr)
    return state.replace(step=state.step + 1, params=dict(state.params, **gen),
                         opt_state=dict(state.opt_state, generator=opt))

  @staticmethod
  def _global_rows(batch):
    return jnp.maximum(jax.lax.stop_gradient(parallel.psum(batch["weight"].sum())), 1.0)

  def build_base_step(self, stage, start: int):
    """Base seq2seq: minimise the per-example NLL sum, averaged over the global batch."""
    lr_fn = base.learning_rate_fn(stage)

    def step(state, batch):
      rng = parallel.device_rng(state.step_key(_SALT_DROPOUT))
      rows = self._global_rows(batch)
      w = batch["weight"]

      def loss_fn(gen):
        nll, count = self.base_terms(dict(state.params, **gen), batch, True, rng)
        return jnp.sum(nll * w) / rows, (jnp.sum(nll * w), jnp.sum(count * w))

      gen = {k: state.params[k] for k in GENERATOR}
      grads, (nll, count) = jax.grad(loss_fn, has_aux=True)(gen)
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      new = self._update_generator(state, grads, stage, start, lr)
      nll, count = parallel.psum((nll, count))
      return new, {"loss": nll / rows, "nll": nll / jnp.maximum(count, 1.0),
                   "grad_norm": base.global_norm(grads), "learning_rate": lr}

    return step

  def kl_weight_fn(self, stage):
    """The stage's KL weight as a function of the step *within* the stage.

    ``kl_schedule``: ``"linear"`` (the paper: 0 -> ``kl_ceiling`` at the end of
    epoch ``kl_anneal_epochs``), ``"tanh"`` (the authors' code,
    :func:`vedgan.schedules.mojitalk_kl_anneal`, ramp ending at the same
    point), ``"tanh_smooth"`` (its halved monotone form) or ``"constant"``.
    """
    kind = stage.get("kl_schedule", "constant")
    ceiling = float(stage.get("kl_ceiling", 1.0))
    if kind == "constant":
      return lambda s: jnp.float32(ceiling)
    steps = self.epochs_to_steps(float(stage.kl_anneal_epochs), "kl_anneal_epochs")
    if steps <= 0:
      return lambda s: jnp.float32(ceiling)
    if kind == "linear":
      return schedules.linear_kl_anneal(steps, ceiling)
    if kind in ("tanh", "tanh_smooth"):
      ratio = float(stage.get("kl_tanh_ratio", 0.75))
      return schedules.mojitalk_kl_anneal(steps / ratio, ceiling, ratio,
                                          smooth=kind == "tanh_smooth")
    raise ConfigError(f"kl_schedule={kind!r} must be linear, tanh, tanh_smooth or constant")

  def build_cvae_step(self, stage, start: int):
    """CVAE: minimise ``L'`` (Eq. 2) with the annealed KL weight and the BoW loss."""
    lr_fn = base.learning_rate_fn(stage)
    kl_fn = self.kl_weight_fn(stage)
    bow_weight = float(stage.get("bow_weight", 1.0))

    def step(state, batch):
      rng = parallel.device_rng(state.step_key(_SALT_DROPOUT))
      z_key = parallel.device_rng(state.step_key(_SALT_Z))
      rows = self._global_rows(batch)
      w = batch["weight"]
      kl_w = kl_fn(state.step - start)

      def loss_fn(gen):
        t = self.cvae_terms(dict(state.params, **gen), batch, z_key, True, rng, kl_w, bow_weight)
        sums = {k: jnp.sum(t[k] * w) for k in ("loss", "rec", "kl", "bow", "tokens")}
        return sums["loss"] / rows, sums

      gen = {k: state.params[k] for k in GENERATOR}
      grads, sums = jax.grad(loss_fn, has_aux=True)(gen)
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      new = self._update_generator(state, grads, stage, start, lr)
      sums = parallel.psum(sums)
      return new, {"loss": sums["loss"] / rows, "rec": sums["rec"] / rows,
                   "kl": sums["kl"] / rows, "bow": sums["bow"] / rows,
                   "nll": sums["rec"] / jnp.maximum(sums["tokens"], 1.0), "kl_weight": kl_w,
                   "grad_norm": base.global_norm(grads), "learning_rate": lr}

    return step

  def build_classifier_step(self, stage, start: int):
    """Emoji classifier: softmax cross-entropy of the response's emoji (generator untouched)."""
    lr_fn = base.learning_rate_fn(stage)

    def step(state, batch):
      rng = parallel.device_rng(state.step_key(_SALT_DROPOUT))
      rows = self._global_rows(batch)
      w = batch["weight"]
      resp = response_tokens(batch, self._eos)

      def loss_fn(cp):
        logits = self.classify(dict(state.params, classifier=cp), resp, True, rng)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        hit = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return jnp.sum(ce * w) / rows, (jnp.sum(ce * w), jnp.sum(hit * w))

      grads, sums = jax.grad(loss_fn, has_aux=True)(state.params["classifier"])
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      opt = state.opt_state["classifier"]
      if bool(stage.get("reset_optimizer", False)):
        fresh = self.tx.init(state.params["classifier"])
        opt = jax.tree.map(lambda a, b: jnp.where(state.step == start, a, b), fresh, opt)
      cp, opt = base.apply_updates(self.tx, grads, opt, state.params["classifier"], lr)
      ce, hits = parallel.psum(sums)
      metrics = {"loss": ce / rows, "accuracy": hits / rows,
                 "grad_norm": base.global_norm(grads), "learning_rate": lr}
      return state.replace(step=state.step + 1, params=dict(state.params, classifier=cp),
                           opt_state=dict(state.opt_state, classifier=opt)), metrics

    return step

  def build_rl_step(self, stage, start: int):
    """Reinforced CVAE (Algorithm 1): ``L'' = L' - lambda J'`` per batch; classifier frozen."""
    lr_fn = base.learning_rate_fn(stage)
    kl_fn = self.kl_weight_fn(stage)
    bow_weight = float(stage.get("bow_weight", 1.0))
    lam = float(stage.get("policy_weight", 1.0))
    policy_start = self.epochs_to_steps(float(stage.get("policy_start_epochs", 0.0)),
                                        "policy_start_epochs")
    weights = tuple(float(w) for w in stage.get("rank_weights", (0.0, 0.5, 1.0)))
    mode = stage.get("rl_decode", "greedy")
    source = stage.get("rl_latent", "prior")
    if mode not in ("greedy", "sample"):
      raise ConfigError(f"rl_decode={mode!r} must be greedy or sample")
    if source not in ("prior", "posterior"):
      raise ConfigError(f"rl_latent={source!r} must be prior or posterior")
    max_len = int(stage.get("rl_max_len", 0)) or None

    def step(state, batch):
      rng = parallel.device_rng(state.step_key(_SALT_DROPOUT))
      z_key = parallel.device_rng(state.step_key(_SALT_Z))
      eps_key = parallel.device_rng(state.step_key(_SALT_GEN_Z))
      gen_key = parallel.device_rng(state.step_key(_SALT_GEN))
      rows = self._global_rows(batch)
      w = batch["weight"]
      context, label = batch["context"], batch["label"]
      frozen = jax.lax.stop_gradient(state.params)
      # 1. The generation G from the current CVAE (no gradient).
      memory, cond, e = self.condition(frozen, context, label)
      if source == "prior":
        mean, logvar = self.prior(frozen, cond)
      else:
        t = self.cvae_terms(frozen, batch, z_key)
        mean, logvar = t["mean_q"], t["logvar_q"]
      eps = jax.random.normal(eps_key, mean.shape, mean.dtype)
      z = mean + jnp.exp(0.5 * logvar) * eps
      out = self._decode_rows(frozen, memory, self.initial_state(frozen, memory, e, z), gen_key,
                              mode, max_len or batch["response_out"].shape[1], 1.0, 0, 1, 0.0,
                              self._forbid(True))
      g_mask = (jnp.arange(out.tokens.shape[1])[None, :] < out.lengths[:, None])
      # 2. Rewards from the frozen classifier: R on G, r on the gold response T.
      gold = response_tokens(batch, self._eos)
      width = max(out.tokens.shape[1], gold.shape[1])
      pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])))
      both = self.classify(frozen, jnp.concatenate([pad(out.tokens), pad(gold)], 0))  # one pass
      rw = self.rewards(both[:gold.shape[0]], both[gold.shape[0]:], label, weights)
      kl_w = kl_fn(state.step - start)
      on = (state.step - start >= policy_start).astype(jnp.float32)

      def loss_fn(gen):
        params = dict(frozen, **gen)
        t = self.cvae_terms(params, batch, z_key, True, rng, kl_w, bow_weight)
        logp = self.sequence_log_probs(params, context, label, eps, out.tokens, source, batch)
        policy = self.policy_loss(logp, g_mask, rw)         # = -J'
        total = hybrid_loss(t["loss"], policy, lam * on)    # L'' = L' - lambda J'
        sums = {"loss": jnp.sum(total * w), "cvae_loss": jnp.sum(t["loss"] * w),
                "policy": jnp.sum(policy * w), "kl": jnp.sum(t["kl"] * w),
                "rec": jnp.sum(t["rec"] * w), "tokens": jnp.sum(t["tokens"] * w)}
        return sums["loss"] / rows, sums

      gen = {k: state.params[k] for k in GENERATOR}
      grads, sums = jax.grad(loss_fn, has_aux=True)(gen)
      grads = parallel.psum(grads)
      lr = lr_fn(state.step - start)
      new = self._update_generator(state, grads, stage, start, lr)
      extra = {"reward_gen": jnp.sum(rw["R"] * w), "reward_gold": jnp.sum(rw["r"] * w),
               "alpha": jnp.sum(rw["alpha"] * w),
               "gen_top1": jnp.sum((rw["rank"] == 1).astype(jnp.float32) * w),
               "gen_length": jnp.sum(out.lengths.astype(jnp.float32) * w)}
      sums = parallel.psum(dict(sums, **extra))
      metrics = {k: v / rows for k, v in sums.items() if k != "tokens"}
      metrics.update(nll=sums["rec"] / jnp.maximum(sums["tokens"], 1.0), policy_on=on,
                     kl_weight=kl_w, grad_norm=base.global_norm(grads), learning_rate=lr)
      return new, metrics

    return step

  # -- generation -----------------------------------------------------------------
  def _forbid(self, forbid_unk: bool) -> tuple[int, ...]:
    t = self.tokenizer
    return (t.pad_id, t.bos_id) + ((t.unk_id,) if forbid_unk else ())

  def _decode_rows(self, params, memory, h0, key, mode, max_len, temperature, top_k, beam_width,
                   length_penalty, forbid) -> decode.DecodeOutput:
    rows = h0.shape[0]
    t = self.tokenizer
    if mode == "beam":
      memory = decode.tile_for_beam(memory, beam_width)
      h0 = decode.tile_for_beam(h0, beam_width)

    def step_fn(h, tokens):
      h, logits, _ = self._s2s(params, memory, h, tokens, method=Seq2Seq.decode_step)
      return h, logits

    common = dict(batch_size=rows, max_len=int(max_len), bos_id=t.bos_id, eos_id=t.eos_id,
                  pad_id=t.pad_id, forbid_ids=tuple(forbid))
    return decode.run(mode, step_fn, h0, key, temperature=temperature, top_k=top_k,
                      beam_width=beam_width, length_penalty=length_penalty, **common)

  def generate_core(self, params, context, label, key, latent, *, mode="greedy", max_len=24,
                    temperature=1.0, top_k=0, beam_width=4, length_penalty=0.0,
                    forbid=(0, 2, 1), num_samples=1):
    """Decodes ``num_samples`` candidates per input and keeps the classifier's favourite.

    Each candidate draws its own ``z ~ p(z | c)`` (``z = 0`` when ``latent`` is
    false: the base model) and is decoded by ``mode``; the candidate whose
    designated emoji the classifier rates most probable is returned (the
    paper's generation, 5 samples). Pure and traceable (``latent`` may be traced).

    Returns:
      ``(DecodeOutput [B, L], info)`` with ``info`` ``[B]`` arrays:
      ``label_prob`` / ``rank`` of the returned response and
      ``label_prob_first`` / ``rank_first`` of the first candidate alone.
    """
    b, n = context.shape[0], int(num_samples)
    ctx = jnp.tile(context, (n, 1))
    lab = jnp.tile(label, n)
    memory, cond, e = self.condition(params, ctx, lab)
    mean, logvar = self.prior(params, cond)
    z = jnp.where(latent, losses.gaussian_sample(jax.random.fold_in(key, 0), mean, logvar), 0.0)
    out = self._decode_rows(params, memory, self.initial_state(params, memory, e, z),
                            jax.random.fold_in(key, 1), mode, max_len, temperature, top_k,
                            beam_width, length_penalty, forbid)
    logits = self.classify(params, out.tokens)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), lab[:, None], axis=-1)[:, 0]
    rank = losses.label_rank(logits, lab)
    logp, rank = logp.reshape(n, b), rank.reshape(n, b)
    best = jnp.argmax(logp, axis=0)
    cols = jnp.arange(b)
    pick = lambda x: x.reshape((n, b) + x.shape[1:])[best, cols]
    chosen = decode.DecodeOutput(tokens=pick(out.tokens), lengths=pick(out.lengths),
                                 log_probs=pick(out.log_probs), scores=pick(out.scores))
    info = {"label_prob": jnp.exp(logp[best, cols]), "rank": rank[best, cols],
            "label_prob_first": jnp.exp(logp[0]), "rank_first": rank[0]}
    return chosen, info

  def generate(self, state: base.TrainState, context, label=None, rng: jax.Array | None = None,
               mode: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
               top_k: int = 0, beam_width: int = 4, length_penalty: float = 0.0,
               forbid_unk: bool = True, num_samples: int | None = None,
               latent: bool | None = None, return_info: bool = False):
    """Responses for ``context[B, S]`` expressing the emoji ``label[B]`` (jitted).

    ``context`` may also be a batch dict with ``context`` and ``label``.
    ``num_samples`` (default ``config.decode.latent_samples``, 5 in the paper)
    prior samples are decoded by ``mode`` (greedy | sample | beam) and the one
    the classifier rates highest for ``label`` is kept. ``latent`` (default:
    whether the state's generator went through a CVAE stage) decides between
    the CVAE and the base model (``z = 0``, one candidate).
    """
    if isinstance(context, dict):
      label = context["label"] if label is None else label
      context = context["context"]
    if label is None:
      raise ConfigError("the mojitalk objective generates for a designated emoji: pass "
                        "label=[B] ints (or a batch dict with 'label')")
    if latent is None:
      latent = bool(self.is_latent(int(jax.device_get(state.step))))
    n = int(num_samples or self.config.decode.get("latent_samples", 1)) if latent else 1
    max_len = int(max_len or self.config.data.max_response_len)
    options = dict(mode=mode, max_len=max_len, temperature=float(temperature), top_k=int(top_k),
                   beam_width=int(beam_width), length_penalty=float(length_penalty),
                   forbid=self._forbid(forbid_unk), num_samples=n)
    cache_key = (bool(latent),) + tuple(sorted(options.items()))
    if cache_key not in self._gen_cache:
      self._gen_cache[cache_key] = jax.jit(functools.partial(self.generate_core, latent=latent,
                                                             **options))
    out, info = self._gen_cache[cache_key](state.params, jnp.asarray(context, jnp.int32),
                                           jnp.asarray(label, jnp.int32),
                                           jax.random.key(0) if rng is None else rng)
    return (out, info) if return_info else out

  def label_name(self, label: int) -> str:
    names = tuple(self.config.data.get("label_names", ())) or (
        LEXICON_LABEL_NAMES if self.config.data.labels == "lexicon" else ())
    return names[label] if 0 <= label < len(names) else str(label)

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """After the classifier stage: ``classifier_per_label.png``, the classifier's top-1 /
    top-5 accuracy per emoji on the gold validation responses (the paper's Fig. 1, via
    :func:`classifier_report`). The classifier is frozen afterwards, so it is drawn once."""
    if stage != "classifier":
      return []
    path = os.path.join(out_dir, "classifier_per_label.png")
    classifier_report(self, state, inputs, path)
    return [path]

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """Responses to the logged validation contexts for their gold emoji (``[emoji] context``)."""
    pairs = list(inputs.sample_pairs)
    if not pairs:
      return []
    labels = np.asarray(inputs.sample_labels, np.int32)
    d = self.config.decode
    out = self.generate(state, inputs.encode_contexts(self.config, [c for c, _ in pairs]),
                        labels, rng=jax.random.key(step), mode=d.mode, temperature=d.temperature,
                        top_k=d.top_k, beam_width=d.beam_width, length_penalty=d.length_penalty,
                        forbid_unk=d.forbid_unk)
    tokens = np.asarray(jax.device_get(out.tokens))
    return [(f"[{self.label_name(int(l))}] {c}", inputs.tokenizer.decode(t.tolist()))
            for (c, _), l, t in zip(pairs, labels, tokens)]

  # -- evaluation -----------------------------------------------------------------
  def eval_step(self, state: base.TrainState, batch):
    """Per-device sums: likelihoods (base, CVAE posterior/prior), KL, BoW, the classifier
    on the gold responses, and the emoji accuracy of generated responses."""
    p = state.params
    w = batch["weight"]
    key = parallel.device_rng(jax.random.key(int(self.config.seed)))
    k_q, k_p, k_gen = jax.random.split(key, 3)
    nll_base, count = self.base_terms(p, batch)
    t = self.cvae_terms(p, batch, k_q)
    # NLL of the reference with z drawn from the prior (what generation uses).
    memory, cond, e = self.condition(p, batch["context"], batch["label"])
    mean_p, logvar_p = self.prior(p, cond)
    z_p = losses.gaussian_sample(k_p, mean_p, logvar_p)
    prior_nll, _ = seq2seq_objective.mle_terms(
        self.decode_logits(p, memory, self.initial_state(p, memory, e, z_p),
                           batch["response_in"]), batch)
    gold = self.classify(p, response_tokens(batch, self._eos))
    ce = optax.softmax_cross_entropy_with_integer_labels(gold, batch["label"])
    gold_rank = losses.label_rank(gold, batch["label"])
    latent = self.is_latent(state.step)
    d = self.config.decode
    out, info = self.generate_core(
        p, batch["context"], batch["label"], k_gen, latent, mode=d.mode,
        max_len=int(self.config.data.max_response_len), temperature=float(d.temperature),
        top_k=int(d.top_k), beam_width=int(d.beam_width),
        length_penalty=float(d.length_penalty), forbid=self._forbid(bool(d.forbid_unk)),
        num_samples=int(d.get("latent_samples", 1)))
    f = lambda x: jnp.sum(x.astype(jnp.float32) * w)
    return {"nll_base": f(nll_base), "rec": f(t["rec"]), "kl": f(t["kl"]), "bow": f(t["bow"]),
            "prior_nll": f(prior_nll), "tokens": f(count), "examples": jnp.sum(w),
            "latent": jnp.asarray(latent, jnp.float32),
            "classifier_loss": f(ce), "classifier_top1": f(gold_rank <= 1),
            "classifier_top5": f(gold_rank <= 5),
            "emoji_prob": f(info["label_prob"]), "emoji_top1": f(info["rank"] <= 1),
            "emoji_top5": f(info["rank"] <= 5), "emoji_prob_single": f(info["label_prob_first"]),
            "emoji_top1_single": f(info["rank_first"] <= 1),
            "response_length": f(out.lengths)}

  def summarize(self, sums):
    """Validation scalars. ``perplexity`` is the current generator's: the base model's
    (``z = 0``) before any CVAE step, then the CVAE's reconstruction perplexity with
    ``z ~ q(z|x,c)`` (how the paper reports CVAE perplexity). ``prior_perplexity``
    (``z ~ p(z|c)``) and ``elbo_perplexity`` (``exp((rec + KL) / tokens)``, an upper
    bound) are the stricter comparisons."""
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    tokens, ex = max(s["tokens"], 1.0), max(s["examples"], 1.0)
    latent = s["latent"] > 0
    ppl = lambda nll: float(math.exp(min(nll, 700.0)))
    nll = (s["rec"] if latent else s["nll_base"]) / tokens
    out = {"nll": nll, "perplexity": ppl(nll), "base_perplexity": ppl(s["nll_base"] / tokens),
           "rec_perplexity": ppl(s["rec"] / tokens),
           "prior_perplexity": ppl(s["prior_nll"] / tokens),
           "elbo_perplexity": ppl((s["rec"] + s["kl"]) / tokens),
           "kl": s["kl"] / ex, "bow": s["bow"] / ex}
    for k in ("classifier_loss", "classifier_top1", "classifier_top5", "emoji_prob",
              "emoji_top1", "emoji_top5", "emoji_prob_single", "emoji_top1_single",
              "response_length"):
      out[k] = s[k] / ex
    out["examples"] = s["examples"]
    return out


# =============================================================================
# Comparing base / CVAE / Reinforced CVAE (the paper's Table 2 columns)
# =============================================================================


def _word_tokens(text: str) -> list[str]:
  from vedgan import eval_suites  # pylint: disable=import-outside-toplevel
  return eval_suites.TOKENIZATIONS["word"][0](text)


def evaluate_generation(objective: MojiTalkObjective, state, inputs, *, num_examples: int = 0,
                        seed: int = 0, batch_size: int | None = None,
                        num_samples: int | None = None, mode: str | None = None,
                        latent: bool | None = None) -> dict[str, Any]:
  """Generates responses for validation contexts with their gold emoji and scores them.

  Returns ``emoji_top1/top5/prob`` (the returned, reranked responses),
  ``emoji_*_single`` (the first candidate alone: the generator without the
  classifier's choice), ``corpus_bleu`` (BLEU-4 of each response against its
  own reference, sacrebleu's definition, word tokens), ``bleu`` (Texygen
  BLEU-4 against all references), ``response_length`` and the ``responses``.
  Batches have a fixed size (the last is padded by repeating its first row), and
  batch ``i`` uses ``fold_in(key(seed), i)``, so results are reproducible.
  """
  from vedgan import metrics  # pylint: disable=import-outside-toplevel

  config = objective.config
  pairs = list(inputs.validation_pairs)
  labels = np.asarray(inputs.validation_labels, np.int32)
  n = len(pairs) if not num_examples else min(int(num_examples), len(pairs))
  bsz = int(batch_size or config.train.eval_batch_size)
  ctx_all = inputs.encode_contexts(config, [c for c, _ in pairs[:n]])
  d = config.decode
  root = jax.random.key(int(seed))
  hyps, probs, ranks, probs1, ranks1 = [], [], [], [], []
  for i, start in enumerate(range(0, n, bsz)):
    ctx, lab = ctx_all[start:start + bsz], labels[start:start + bsz]
    rows = len(ctx)
    if rows < bsz:
      ctx = np.concatenate([ctx, np.repeat(ctx[:1], bsz - rows, 0)])
      lab = np.concatenate([lab, np.repeat(lab[:1], bsz - rows, 0)])
    out, info = objective.generate(state, ctx, lab, rng=jax.random.fold_in(root, i),
                                   mode=mode or d.mode, temperature=d.temperature, top_k=d.top_k,
                                   beam_width=d.beam_width, length_penalty=d.length_penalty,
                                   forbid_unk=d.forbid_unk, num_samples=num_samples,
                                   latent=latent, return_info=True)
    out, info = jax.device_get((out, info))
    hyps += [inputs.tokenizer.decode(t.tolist()) for t in np.asarray(out.tokens)[:rows]]
    probs += np.asarray(info["label_prob"])[:rows].tolist()
    ranks += np.asarray(info["rank"])[:rows].tolist()
    probs1 += np.asarray(info["label_prob_first"])[:rows].tolist()
    ranks1 += np.asarray(info["rank_first"])[:rows].tolist()
  hyp_words = [_word_tokens(h) for h in hyps]
  ref_words = [_word_tokens(r) for _, r in pairs[:n]]
  ranks, ranks1 = np.asarray(ranks), np.asarray(ranks1)
  return {
      "num_examples": n,
      "emoji_top1": float(np.mean(ranks <= 1)), "emoji_top5": float(np.mean(ranks <= 5)),
      "emoji_prob": float(np.mean(probs)),
      "emoji_top1_single": float(np.mean(ranks1 <= 1)),
      "emoji_top5_single": float(np.mean(ranks1 <= 5)),
      "emoji_prob_single": float(np.mean(probs1)),
      "corpus_bleu": float(metrics.corpus_bleu(hyp_words, [[r] for r in ref_words])),
      "bleu": float(metrics.bleu(hyp_words, ref_words)),
      "response_length": float(np.mean([len(h) for h in hyp_words])) if hyp_words else 0.0,
      "responses": [{"context": c, "emoji": objective.label_name(int(l)), "reference": r,
                     "response": h} for (c, r), l, h in zip(pairs[:n], labels[:n], hyps)],
  }


def classifier_report(objective: MojiTalkObjective, state, inputs, plot_path: str | None = None,
                      batch_size: int | None = None) -> dict[str, Any]:
  """Top-1/top-5 accuracy of the classifier on the gold validation responses, overall and
  per label (the paper's Fig. 1, drawn to ``plot_path`` if given)."""
  from vedgan import metrics  # pylint: disable=import-outside-toplevel

  config = objective.config
  logits, labels = [], []
  classify = jax.jit(lambda p, t: objective.classify(p, t))
  for batch in inputs.validation_batches(config):
    keep = np.asarray(batch["weight"]) > 0
    resp = np.where(batch["response_out"] == objective.tokenizer.eos_id, 0,
                    batch["response_out"])
    logits.append(np.asarray(classify(state.params, resp))[keep])
    labels.append(np.asarray(batch["label"])[keep])
  result = metrics.per_label_accuracy(np.concatenate(logits), np.concatenate(labels),
                                      objective.num_labels, ks=(1, 5))
  if plot_path:
    names = [objective.label_name(i) for i in range(objective.num_labels)]
    metrics.plot_per_label_accuracy(result, plot_path, label_names=names, ks=(1, 5),
                                    max_labels=32, title="emoji classifier, validation")
  counts = np.asarray(result["count"])
  seen = counts > 0
  return {"top1": result["top1"], "top5": result["top5"],
          "balanced_top1": float(np.mean(np.asarray(result["per_label_top1"])[seen])),
          "majority_rate": float(counts.max() / max(counts.sum(), 1)),
          "count": counts.tolist(),
          "per_label_top1": [None if np.isnan(v) else float(v) for v in result["per_label_top1"]],
          "per_label_top5": [None if np.isnan(v) else float(v) for v in result["per_label_top5"]]}


def generator_stage_ends(config) -> list[tuple[str, str, int]]:
  """``[(stage name, step function, end step)]`` of the stages that train the generator."""
  out, start = [], 0
  for name, stage in configlib.ordered_stages(config):
    start += int(stage.num_steps)
    kinds = {n for n, _ in configlib.parse_cycle(stage.step)}
    kind = next((k for k in ("rl", "cvae", "base") if k in kinds), None)
    if kind is not None:
      out.append((name, kind, start))
  return out


MODEL_NAMES = {"base": "base seq2seq", "cvae": "CVAE", "rl": "Reinforced CVAE"}


def compare_stages(workdir: str, num_examples: int = 0, seed: int = 0,
                   write: bool = True, split: str | None = None) -> dict[str, Any]:
  """Evaluates the generator at the end of each generator stage of a finished run.

  Opens ``workdir`` read-only (its ``config.json``, tokenizer and checkpoints)
  and runs :func:`compare_trainer` on ``split`` (default: the run's validation
  split; e.g. ``"test"`` for the paper's table); writes
  ``eval/mojitalk_comparison[_<split>].json`` and
  ``eval/classifier_per_label[_<split>].png`` (the paper's Fig. 1) unless ``write=False``.
  """
  from vedgan import eval_suites, train  # pylint: disable=import-outside-toplevel

  workdir, config = eval_suites.load_run_config(workdir)
  if config.objective != "mojitalk":
    raise ConfigError(f"{workdir} is a {config.objective!r} run, not mojitalk")
  config.train.eval_batches = 0
  trainer = train.Trainer(config, workdir)
  trainer.setup(write=False)
  try:
    suffix = ""
    if split and split != validation_split(config):
      use_split(trainer.inputs, config, split)
      suffix = f"_{split}"
    eval_dir = os.path.join(workdir, "eval")
    if write:
      os.makedirs(eval_dir, exist_ok=True)
    plot = os.path.join(eval_dir, f"classifier_per_label{suffix}.png") if write else None
    report = compare_trainer(trainer, num_examples, seed, plot)
    report["split"] = split or validation_split(config)
  finally:
    trainer.close()
  if write:
    path = os.path.join(eval_dir, f"mojitalk_comparison{suffix}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return report


def use_split(inputs, config, split: str) -> None:
  """Points ``inputs``' evaluation data (pairs, labels, encodings) at ``split``."""
  pairs, labels = load_split_with_labels(config, split)
  enc, y, kept = encode_labelled_pairs(pairs, labels, inputs.tokenizer, config)
  inputs.validation, inputs.validation_labels, inputs.validation_pairs = enc, y, kept


def compare_trainer(trainer, num_examples: int = 0, seed: int = 0,
                    plot_path: str | None = None) -> dict[str, Any]:
  """:func:`compare_stages` on an open :class:`vedgan.train.Trainer` (after training).

  Every stage-end checkpoint of a generator stage (``checkpoints/<end step>``)
  is restored and paired with the *current* state's classifier, so all models
  are scored by the same classifier. Reports teacher-forced perplexities
  (``trainer.evaluate``), BLEU and the emoji accuracy of generated responses
  (:func:`evaluate_generation`), and the classifier's own accuracy on the gold
  responses (:func:`classifier_report`). ``trainer.state`` is left as it was.
  """
  config = trainer.config
  final = trainer.state
  objective = trainer.objective
  classifier_ends = [s for n, s in _stage_ends(config) if n == "classifier"]
  if not classifier_ends or trainer.step < classifier_ends[0]:
    raise ConfigError(f"the run in {trainer.workdir} has not finished its classifier stage "
                      f"(step {trainer.step}); train on before comparing")
  report = {"step": int(trainer.step), "seed": int(seed), "decode": dict(config.decode),
            "classifier": classifier_report(objective, final, trainer.inputs, plot_path),
            "models": {}}
  available = set(trainer.checkpointer.manager.all_steps())
  try:
    for name, kind, end in generator_stage_ends(config):
      if end > trainer.step:
        continue
      if end not in available:
        report["models"][name] = {"error": f"checkpoint {end} was not kept (raise "
                                           "train.max_checkpoints)"}
        continue
      state = final if end == trainer.step else trainer.checkpointer.restore(end, final)[0]
      state = state.replace(params=dict(state.params, classifier=final.params["classifier"]))
      trainer.state = state
      likelihood = trainer.evaluate()
      gen = evaluate_generation(objective, state, trainer.inputs, num_examples=num_examples,
                                seed=seed)
      # evaluate_generation's emoji metrics (per-batch seeds) replace eval_step's.
      report["models"][name] = {"model": MODEL_NAMES[kind], "step": end, **likelihood, **gen}
  finally:
    trainer.state = final
  return report


def _stage_ends(config) -> list[tuple[str, int]]:
  out, start = [], 0
  for name, stage in configlib.ordered_stages(config):
    start += int(stage.num_steps)
    out.append((stage.step, start))
  return out


def format_comparison(report: dict[str, Any]) -> str:
  """A markdown table of :func:`compare_stages`' report."""
  cols = [("perplexity", "PPL"), ("prior_perplexity", "PPL (z~prior)"),
          ("corpus_bleu", "BLEU-4"), ("emoji_top1", "emoji top-1"),
          ("emoji_top5", "emoji top-5"), ("emoji_prob", "p(emoji)"),
          ("emoji_top1_single", "top-1 (1 sample)"), ("emoji_prob_single", "p(emoji) (1 sample)")]
  lines = ["| model | step | " + " | ".join(c for _, c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for name, r in report["models"].items():
    if "error" in r:
      lines.append(f"| {name} | - | {r['error']} |")
      continue
    vals = []
    for k, _ in cols:
      v = r[k]
      vals.append(f"{100 * v:.1f}" if k.startswith(("corpus_bleu", "emoji_top")) else f"{v:.3g}")
    lines.append(f"| {r['model']} | {r['step']} | " + " | ".join(vals) + " |")
  c = report["classifier"]
  lines.append("")
  lines.append(f"classifier on gold validation responses: top-1 {100 * c['top1']:.1f}%, "
               f"top-5 {100 * c['top5']:.1f}% (majority class {100 * c['majority_rate']:.1f}%), "
               f"mean per-label top-1 {100 * c['balanced_top1']:.1f}% "
               f"(chance {100 / max(sum(1 for n in c['count'] if n), 1):.1f}%)")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m vedgan.objectives.mojitalk",
      description="Compare base seq2seq / CVAE / Reinforced CVAE of a finished mojitalk run.")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_examples", type=int, default=0, help="0 = the whole split")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default=None,
                      help="evaluation split (default: the run's data.validation_split)")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from vedgan.errors import VedganError  # pylint: disable=import-outside-toplevel
  try:
    report = compare_stages(args.workdir, args.num_examples, args.seed, split=args.split)
  except (VedganError, FileNotFoundError) as e:
    print(f"vedgan: error: {e}", file=sys.stderr)
    return 2
  print(format_comparison(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
