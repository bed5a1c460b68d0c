r"""Top-k softmax dialogue GAN (López Zorrilla et al.): Algorithm 1 as four step functions.

Networks: :class:`vedgan.nn.topk_gan.TopKDialogueGAN` (shared word vectors
``W``, the LSTM seq2seq generator, the two-BiLSTM discriminator). Batches are
the dialogue pairs of :mod:`vedgan.data.pipeline` (``context``,
``response_in = [bos, s..]``, ``response_out = [s.., eos]``, pad 0).

Step functions (``STEPS``), which the config's stages cycle through:

* ``gmle`` -- teacher-forced MLE of the generator, Eq. 4:
  ``L_MLE = 1/|C| sum_(x,s) 1/|s| sum_t -log p_t[s_t]`` (each response's
  per-token mean, averaged over the batch). Updates ``W`` and the generator.
* ``refill`` -- "Add (x, y) pairs to C_D using G": greedy responses (Eq. 3) to
  the batch's inputs, gathered from all devices and written into the replay
  corpus (:mod:`vedgan.replay`), stamped with the generator's version (the
  number of generator updates so far).
* ``dstep`` -- the discriminator, Eq. 5, on a balanced batch: the first half
  of the local batch supplies the human pairs (``l = 0``), the same number of
  generated pairs (``l = 1``) is drawn from the replay corpus with recency
  weights (``config.gan.replay_half_life``), excluding every row whose input
  is one of the human half's inputs ("human and generator's examples [...] did
  not share the input"). Updates the discriminator (and ``W`` if
  ``model.discriminator_trains_words``).
* ``gadv`` -- the generator against the discriminator, Eq. 6,
  ``L_G = 1/|B_G| sum_x a``: one ``lax.scan`` over ``data.max_response_len``
  steps feeds back ``y_t = argmax f_t`` (Eq. 3) and emits
  ``ũ_t = sum_i softmax(top-k(f_t))_i W[k_t[i]]`` (Eq. 8-9,
  :func:`vedgan.relax.topk_softmax_embedding`), which the discriminator reads
  in place of ``W[y_t]`` (positions up to the first EOS). ``L_G`` is therefore
  differentiable in the generator's parameters; the update touches ``W`` and
  the generator only.

Logged metrics are named per step function (the driver averages every key
over its logging window): ``loss`` (Eq. 4), ``nll_per_token``, ``mle_*`` of
``gmle``; ``replay_size``, ``refill_length`` of ``refill``; ``d_loss`` (Eq. 5),
``d_human``/``d_generated`` (mean ``a``), ``d_accuracy``, ``input_overlap``
(generated inputs equal to a human input: 0), ``replay_eligible``, ``d_*`` of
``dstep``; ``g_adv_loss`` (Eq. 6, mean ``a``), ``g_adv_length``, ``g_adv_*``
of ``gadv``.

Learning rates: ``stage.learning_rate`` with the stage's ``lr_decay`` /
``lr_decay_every`` (:func:`vedgan.objectives.base.learning_rate_fn`), times
``stage.<step>_lr_scale`` (default 1; the paper's adversarial generator step
is ``gadv_lr_scale = 0.1``).

State: ``params = {"words", "generator", "discriminator"}``; ``opt_state =
{"generator": Adam over {words, generator}, "discriminator": Adam over {words,
discriminator}}``; ``extra = {"replay": ReplayCorpus, "generator_updates":
int32}``. All of it is checkpointed, the replay corpus included.

The paper's evaluation (Section 5: Fig. 3's nearest-neighbour check, Table 1,
diversity against the MLE model) is :mod:`vedgan.objectives.topk_gan_report`.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vedgan import configlib, decode, losses, parallel, relax, replay
from vedgan.errors import ConfigError
from vedgan.nn.topk_gan import TopKDialogueGAN
from vedgan.objectives import base
from vedgan.plots import Panel

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
STEP_NAMES = ("gmle", "refill", "dstep", "gadv")


# -- word vectors -------------------------------------------------------------------


def word_vector_table(path: str, tokenizer, dim: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
  """``W`` initialised from a word2vec/fastText file: ``(table [V, dim], found [V] bool)``.

  A word of a word-level vocabulary, or a word-initial sentencepiece piece
  ``"\u2581word"``, takes the file's vector of the word (or of its lower-case
  form); the other rows (special ids, sentencepiece word continuations, words
  missing from the file) are drawn from ``N(0, s^2)`` with ``s`` the standard
  deviation of the file's vectors, so that every row has the same scale.
  """
  from vedgan import metrics  # pylint: disable=import-outside-toplevel

  vocab = int(tokenizer.vocab_size)
  word_level = getattr(tokenizer, "model_type", "") == "word"
  specials = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
  specials |= set(getattr(tokenizer, "user_symbols", {}).values())
  words = {}
  for i in range(vocab):
    if i in specials:
      continue
    piece = tokenizer.id_to_piece(i)
    if piece.startswith("\u2581") and len(piece) > 1:
      words[i] = piece[1:]
    elif word_level and piece:
      words[i] = piece
  wanted = set(words.values()) | {w.lower() for w in words.values()}
  vectors = metrics.load_word_vectors(path, vocabulary=wanted)
  if vectors.dim != dim:
    raise ConfigError(f"model.word_vectors {path} has {vectors.dim}-d vectors but "
                      f"model.word_dim={dim}; set --config.model.word_dim={vectors.dim}")
  scale = float(np.std(vectors.table)) if len(vectors) else 0.0
  table = np.random.default_rng(seed).normal(0.0, scale or dim ** -0.5,
                                             (vocab, dim)).astype(np.float32)
  found = np.zeros((vocab,), bool)
  for i, word in words.items():
    for candidate in (word, word.lower()):
      if candidate in vectors:
        table[i] = vectors[candidate]
        found[i] = True
        break
  return table, found


def _table_init(table: np.ndarray):
  def init(key, shape, dtype=jnp.float32):
    del key
    if tuple(shape) != table.shape:
      raise ValueError(f"word table {table.shape} != {shape}")
    return jnp.asarray(table, dtype)

  return init


def build_model(config, vocab_size: int, word_init=None) -> TopKDialogueGAN:
  """The :class:`TopKDialogueGAN` described by ``config.model``."""
  m = config.model
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={m.dtype!r} must be one of {sorted(DTYPES)}")
  dtype = DTYPES[m.dtype]
  gen = (("encoder_hidden", int(m.encoder_hidden)), ("encoder_layers", int(m.encoder_layers)),
         ("decoder_hidden", int(m.decoder_hidden)), ("decoder_layers", int(m.decoder_layers)),
         ("attention_hidden", int(m.attention_hidden)), ("output_hidden", int(m.output_hidden)),
         ("leaky_relu_slope", float(m.leaky_relu_slope)), ("dropout", float(m.dropout)),
         ("unroll", int(m.unroll)), ("dtype", dtype), ("remat", bool(m.get("remat", False))))
  disc = (("hidden", int(m.disc_hidden)), ("num_layers", int(m.disc_layers)),
          ("mlp_hidden", int(m.disc_mlp_hidden)),
          ("leaky_relu_slope", float(m.leaky_relu_slope)), ("unroll", int(m.unroll)),
          ("dtype", dtype), ("remat", bool(m.get("remat", False))))
  return TopKDialogueGAN(vocab_size=vocab_size, word_dim=int(m.word_dim), generator_kwargs=gen,
                         discriminator_kwargs=disc, word_init=word_init)


def check_recipe(config) -> None:
  """One-line :class:`ConfigError` unless the replay corpus is filled before any ``dstep``."""
  filled = False
  for name, stage in configlib.ordered_stages(config):
    remaining = int(stage.num_steps)
    cycle = configlib.parse_cycle(stage.step)
    for step, n in cycle:
      if remaining <= 0:
        break
      if step == "refill":
        filled = True
      elif step == "dstep" and not filled:
        raise ConfigError(f"config.stages.{name} runs 'dstep' before any 'refill' has filled "
                          "the replay corpus; put a stage with 'refill' first")
      remaining -= n


def _groups(params) -> tuple[dict, dict]:
  """``(generator group, discriminator group)``; both hold the shared ``words``."""
  return ({"words": params["words"], "generator": params["generator"]},
          {"words": params["words"], "discriminator": params["discriminator"]})


def _all_gather(x):
  return jax.lax.all_gather(x, parallel.AXIS, tiled=True)


@base.register("topk_gan")
class TopKGANObjective(base.Objective):
  """Algorithm 1 of López Zorrilla et al.; see the module docstring."""

  STEPS = STEP_NAMES
  #: training-curve figure (vedgan.plots): D and G losses, D's accuracy and its mean output
  #: on human, generated and top-k-softmax responses.
  PLOT_GROUPS = {
      "gan": (
          Panel("discriminator and generator losses",
                ("D loss = d_loss", "G adversarial loss = g_adv_loss"), ("G MLE loss = loss",),
                "", "MLE"),
          Panel("D accuracy", ("d_accuracy", "validation/d_accuracy")),
          Panel("D(response) on human / generated", (
              "human = d_human", "generated = d_generated", "validation/d_human",
              "validation/d_generated", "validation/d_topk"), ylabel="P(human)")),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    g = config.gan
    self.k = int(g.topk)
    if not 1 <= self.k <= int(tokenizer.vocab_size) - 3:
      raise ConfigError(f"gan.topk={self.k} must be in [1, vocab_size - 3]")
    self.input_len = int(config.data.max_context_len)
    self.response_len = int(config.data.max_response_len)
    self.capacity = int(g.replay_capacity)
    self.half_life = float(g.replay_half_life)
    batch = int(config.train.batch_size)
    if self.capacity < batch:
      raise ConfigError(f"gan.replay_capacity={self.capacity} must hold at least one refill "
                        f"(train.batch_size={batch} rows)")
    local = batch // max(jax.device_count(), 1)
    if local % 2:
      raise ConfigError(f"train.batch_size={batch} gives {local} rows per device; the "
                        "discriminator's balanced batches need an even number per device")
    check_recipe(config)
    word_init = None
    self.word_coverage = None
    if config.model.word_vectors:
      table, found = word_vector_table(config.model.word_vectors, tokenizer,
                                       int(config.model.word_dim), int(config.seed))
      word_init = _table_init(table)
      self.word_coverage = float(found.mean())
      logging.info("word vectors from %s cover %.1f%% of the vocabulary",
                   config.model.word_vectors, 100 * self.word_coverage)
    self.model = build_model(config, tokenizer.vocab_size, word_init)
    self.tx = base.make_optimizer(config.optimizer)
    t = tokenizer
    self.forbid = (t.pad_id, t.bos_id) + ((t.unk_id,) if config.decode.forbid_unk else ())
    self.discriminator_trains_words = bool(config.model.discriminator_trains_words)

  # -- state --------------------------------------------------------------------
  def init(self, rng: jax.Array, batch) -> base.TrainState:
    params = self.model.init({"params": rng}, batch["context"], batch["response_in"],
                             batch["response_out"])["params"]
    g_group, d_group = _groups(params)
    extra = {"replay": replay.init(self.capacity, self.input_len, self.response_len),
             "generator_updates": jnp.zeros((), jnp.int32)}
    return base.TrainState(step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                           params=dict(params),
                           opt_state={"generator": self.tx.init(g_group),
                                      "discriminator": self.tx.init(d_group)},
                           extra=extra)

  def word_embeddings(self, state):
    return state.params["words"]

  # -- building blocks ------------------------------------------------------------
  def _apply(self, params, *args, method, **kwargs):
    return self.model.apply({"params": params}, *args, method=method, **kwargs)

  def mask_forbidden(self, logits: jax.Array) -> jax.Array:
    """``-inf`` at the ids Eq. 3's argmax may not pick (pad, bos, and unk if forbidden)."""
    banned = np.zeros((logits.shape[-1],), bool)
    banned[list(self.forbid)] = True
    return jnp.where(banned, -jnp.inf, logits)

  def free_run(self, params, context: jax.Array, vectors: bool = False,
               logits: bool = False) -> dict[str, jax.Array]:
    """Free-running decoding with argmax feedback (Eq. 3): one ``lax.scan``.

    Args:
      params: the full parameter dict.
      context: ``[B, S]`` input tokens.
      vectors: also return the top-k approximations ``ũ_t`` (Eq. 9).
      logits: also return the masked logits ``f_t``.

    Returns:
      ``tokens [B, T]`` (EOS included, pad after), ``emitted [B, T]`` (True up to
      and including EOS) and, if asked, ``vectors [B, T, D]``, ``logits [B, T, V]``;
      ``T = data.max_response_len``. Same tokens as :func:`vedgan.decode.greedy`.
    """
    t = self.tokenizer
    memory = self._apply(params, context, method=TopKDialogueGAN.encode)
    carry = self._apply(params, memory, method=TopKDialogueGAN.start)
    n = context.shape[0]
    words = params["words"]

    def body(state, _):
      carry, prev, done = state
      carry, f = self._apply(params, memory, carry, prev, method=TopKDialogueGAN.step)
      f = self.mask_forbidden(f)
      tok = jnp.where(done, t.pad_id, jnp.argmax(f, axis=-1)).astype(jnp.int32)
      out = {"tokens": tok, "emitted": ~done}
      if vectors:
        out["vectors"] = relax.topk_softmax_embedding(f, words, k=self.k).vector
      if logits:
        out["logits"] = f
      return (carry, tok, done | (tok == t.eos_id)), out

    init = (carry, jnp.full((n,), t.bos_id, jnp.int32), jnp.zeros((n,), bool))
    _, out = jax.lax.scan(body, init, None, length=self.response_len)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)

  def discriminator_batch(self, corpus: replay.ReplayCorpus, context: jax.Array,
                          response_out: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """A balanced discriminator batch (Section 4) from a local batch and the replay corpus.

    The first ``h = b // 2`` rows of the batch give the human examples (label 0);
    ``h`` generated examples (label 1) are drawn from ``corpus`` with recency
    weights, never with an input equal to one of the human inputs.

    Returns:
      ``context [2h, Lc]``, ``response [2h, Lr]``, ``labels [2h]`` float32,
      ``eligible`` (bool: some corpus row had a disjoint input) and
      ``overlap`` (how many generated inputs equal a human input: 0 unless
      ``eligible`` is False).
    """
    h = context.shape[0] // 2
    human_ctx = replay.fit_width(context[:h], self.input_len)
    human_resp = replay.fit_width(response_out[:h], self.response_len)
    idx, eligible = replay.sample(corpus, key, h, self.half_life, exclude_inputs=human_ctx)
    gen_ctx, gen_resp = replay.gather(corpus, idx)
    same = jnp.all(gen_ctx[:, None, :] == human_ctx[None, :, :], axis=-1)  # [h, h]
    return {"context": jnp.concatenate([human_ctx, gen_ctx]),
            "response": jnp.concatenate([human_resp, gen_resp]),
            "labels": jnp.concatenate([jnp.zeros((h,)), jnp.ones((h,))]).astype(jnp.float32),
            "eligible": eligible,
            "overlap": jnp.sum(jnp.any(same, axis=1)).astype(jnp.float32)}

  def generator_adversarial_loss(self, g_group, params, context: jax.Array):
    """Per-example ``a`` (Eq. 6) of the discriminator on the generator's top-k path.

    Returns ``(a [B], run)`` with ``run`` the :meth:`free_run` output.
    """
    full = {**params, **g_group}
    run = self.free_run(full, context, vectors=True)
    d_logits = self._apply(full, context, run["vectors"], run["emitted"].astype(jnp.float32),
                           method=TopKDialogueGAN.discriminate)
    return losses.dialogue_generator_loss(d_logits), run

  def _lr(self, stage, start: int, name: str):
    lr_fn = base.learning_rate_fn(stage)
    scale = float(stage.get(f"{name}_lr_scale", 1.0))
    return lambda step: lr_fn(step - start) * scale

  # -- training -----------------------------------------------------------------
  @property
  def step_builders(self):
    return {"gmle": self.build_gmle_step, "refill": self.build_refill_step,
            "dstep": self.build_dstep_step, "gadv": self.build_gadv_step}

  def _update_generator(self, state, grads, lr):
    g_group, _ = _groups(state.params)
    new, opt = base.apply_updates(self.tx, grads, state.opt_state["generator"], g_group, lr)
    params = {**state.params, **new}
    extra = dict(state.extra, generator_updates=state.extra["generator_updates"] + 1)
    return state.replace(step=state.step + 1, params=params,
                         opt_state={**state.opt_state, "generator": opt}, extra=extra)

  def build_gmle_step(self, stage, start: int):
    """Teacher-forced MLE (Eq. 4) of ``W`` and the generator."""
    lr_at = self._lr(stage, start, "gmle")

    def step(state: base.TrainState, batch):
      rng = parallel.device_rng(state.step_key())
      target = batch["response_out"]
      mask = (target != 0).astype(jnp.float32)
      rows = (mask.sum(-1) > 0).astype(jnp.float32)
      n_rows = jnp.maximum(jax.lax.stop_gradient(parallel.psum(rows.sum())), 1.0)

      def loss_fn(g_group):
        logits = self._apply({**state.params, **g_group}, batch["context"], batch["response_in"],
                             train=True, rngs={"dropout": rng},
                             method=TopKDialogueGAN.mle_logits)
        nll, count = losses.sequence_cross_entropy(logits, target, mask)
        per_seq = nll / jnp.maximum(count, 1.0)
        return jnp.sum(per_seq * rows) / n_rows, (nll.sum(), count.sum(), per_seq @ rows)

      g_group, _ = _groups(state.params)
      grads, (nll, count, seq) = jax.grad(loss_fn, has_aux=True)(g_group)
      grads = parallel.psum(grads)
      lr = lr_at(state.step)
      new_state = self._update_generator(state, grads, lr)
      nll, count, seq = parallel.psum((nll, count, seq))
      metrics = {"loss": seq / n_rows, "nll_per_token": nll / jnp.maximum(count, 1.0),
                 "mle_grad_norm": base.global_norm(grads), "mle_learning_rate": lr}
      return new_state, metrics

    return step

  def build_refill_step(self, stage, start: int):
    """Greedy responses to the batch's inputs, added to the replay corpus."""
    del stage, start

    def step(state: base.TrainState, batch):
      context = batch["context"]
      run = self.free_run(state.params, context)
      ctx = _all_gather(replay.fit_width(context, self.input_len))
      resp = _all_gather(run["tokens"])
      corpus = replay.add(state.extra["replay"], ctx, resp, state.extra["generator_updates"])
      length = parallel.pmean(jnp.mean(jnp.sum(run["emitted"], axis=1).astype(jnp.float32)))
      metrics = {"replay_size": corpus.count.astype(jnp.float32), "refill_length": length}
      return state.replace(step=state.step + 1, extra=dict(state.extra, replay=corpus)), metrics

    return step

  def build_dstep_step(self, stage, start: int):
    """Eq. 5 on a balanced batch with disjoint human / generated inputs."""
    lr_at = self._lr(stage, start, "dstep")

    def step(state: base.TrainState, batch):
      key = parallel.device_rng(state.step_key())
      db = self.discriminator_batch(state.extra["replay"], batch["context"],
                                    batch["response_out"], key)
      labels = db["labels"]
      total = parallel.psum(jnp.asarray(labels.shape[0], jnp.float32))

      def loss_fn(d_group):
        if not self.discriminator_trains_words:
          d_group = {**d_group, "words": jax.lax.stop_gradient(d_group["words"])}
        logits = self._apply({**state.params, **d_group}, db["context"], db["response"],
                             method=TopKDialogueGAN.discriminate_tokens)
        return losses.dialogue_discriminator_loss(logits, labels).sum() / total, logits

      _, d_group = _groups(state.params)
      grads, logits = jax.grad(loss_fn, has_aux=True)(d_group)
      grads = parallel.psum(grads)
      lr = lr_at(state.step)
      new, opt = base.apply_updates(self.tx, grads, state.opt_state["discriminator"], d_group, lr)
      a = jax.nn.sigmoid(logits)
      h = labels.shape[0] // 2
      loss = parallel.psum(losses.dialogue_discriminator_loss(logits, labels).sum()) / total
      metrics = parallel.pmean({
          "d_human": jnp.mean(a[:h]), "d_generated": jnp.mean(a[h:]),
          "d_accuracy": jnp.mean(jnp.where(labels > 0, a > 0.5, a < 0.5).astype(jnp.float32)),
          "input_overlap": db["overlap"], "replay_eligible": db["eligible"].astype(jnp.float32)})
      metrics.update(d_loss=loss, d_grad_norm=base.global_norm(grads), d_learning_rate=lr)
      return state.replace(step=state.step + 1, params={**state.params, **new},
                           opt_state={**state.opt_state, "discriminator": opt}), metrics

    return step

  def build_gadv_step(self, stage, start: int):
    """Eq. 6 through the top-k softmax path; updates ``W`` and the generator."""
    lr_at = self._lr(stage, start, "gadv")

    def step(state: base.TrainState, batch):
      context = batch["context"]
      total = parallel.psum(jnp.asarray(context.shape[0], jnp.float32))

      def loss_fn(g_group):
        a, run = self.generator_adversarial_loss(g_group, state.params, context)
        return a.sum() / total, (a, run["emitted"])

      g_group, _ = _groups(state.params)
      grads, (a, emitted) = jax.grad(loss_fn, has_aux=True)(g_group)
      grads = parallel.psum(grads)
      lr = lr_at(state.step)
      new_state = self._update_generator(state, grads, lr)
      metrics = {"g_adv_loss": parallel.psum(a.sum()) / total,
                 "g_adv_length": parallel.pmean(jnp.mean(jnp.sum(emitted, 1).astype(
                     jnp.float32))),
                 "g_adv_grad_norm": base.global_norm(grads), "g_adv_learning_rate": lr}
      return new_state, metrics

    return step

  # -- evaluation ---------------------------------------------------------------
  def eval_step(self, state: base.TrainState, batch):
    """Per-device sums on validation pairs (padding rows weigh 0).

    ``nll``/``tokens``: teacher-forced token NLL; ``seq_nll``: Eq. 4's
    per-response means; ``d_human``/``d_generated``/``d_topk``: the
    discriminator's ``a`` on the human response, on the greedy response's
    word vectors and on its top-k approximations; ``nn_hits``/``nn_tokens``:
    generated tokens whose word vector is the nearest (Euclidean, whole
    vocabulary) to ``ũ_t`` (Section 5, k = ``gan.topk``).
    """
    p = state.params
    w = batch["weight"]
    context, target = batch["context"], batch["response_out"]
    mask = (target != 0).astype(jnp.float32)
    logits = self._apply(p, context, batch["response_in"], method=TopKDialogueGAN.mle_logits)
    nll, count = losses.sequence_cross_entropy(logits, target, mask)
    run = self.free_run(p, context, vectors=True)
    emitted = run["emitted"].astype(jnp.float32)
    words = p["words"]
    scores = jnp.sum(words ** 2, -1) - 2.0 * jnp.einsum("btd,vd->btv", run["vectors"], words)
    hits = (jnp.argmin(scores, -1) == run["tokens"]).astype(jnp.float32) * emitted
    # One discriminator pass over [human; W[greedy]; top-k approximations].
    human = replay.fit_width(target, self.response_len)
    vectors = jnp.concatenate([jnp.take(words, human, axis=0),
                               jnp.take(words, run["tokens"], axis=0), run["vectors"]])
    masks = jnp.concatenate([(human != 0).astype(jnp.float32), emitted, emitted])
    a = jax.nn.sigmoid(self._apply(p, jnp.concatenate([context] * 3), vectors, masks,
                                   method=TopKDialogueGAN.discriminate))
    a_h, a_g, a_k = jnp.split(a, 3)
    return {"nll": jnp.sum(nll * w), "tokens": jnp.sum(count * w),
            "seq_nll": jnp.sum(nll / jnp.maximum(count, 1.0) * w), "examples": jnp.sum(w),
            "d_human": jnp.sum(a_h * w), "d_generated": jnp.sum(a_g * w),
            "d_topk": jnp.sum(a_k * w),
            "d_correct": jnp.sum(((a_h < 0.5).astype(jnp.float32)
                                  + (a_g > 0.5).astype(jnp.float32)) * w),
            "nn_hits": jnp.sum(hits.sum(-1) * w), "nn_tokens": jnp.sum(emitted.sum(-1) * w)}

  def summarize(self, sums):
    s = {k: float(v) for k, v in sums.items()}
    n = max(s["examples"], 1.0)
    nll = s["nll"] / max(s["tokens"], 1.0)
    return {"nll": nll, "perplexity": float(math.exp(min(nll, 50.0))),
            "seq_nll": s["seq_nll"] / n, "d_human": s["d_human"] / n,
            "d_generated": s["d_generated"] / n, "d_topk": s["d_topk"] / n,
            "d_accuracy": s["d_correct"] / (2 * n),
            "topk_nn_accuracy": s["nn_hits"] / max(s["nn_tokens"], 1.0),
            "generated_length": s["nn_tokens"] / n, "examples": s["examples"]}

  # -- generation ---------------------------------------------------------------
  def generate(self, state: base.TrainState, context: jax.Array, rng: jax.Array | None = None,
               mode: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
               top_k: int = 0, beam_width: int = 4, length_penalty: float = 0.0,
               forbid_unk: bool = True) -> decode.DecodeOutput:
    """Responses for ``context[B, S]`` by ``mode`` in greedy|sample|beam (jitted).

    ``greedy`` is the paper's decoding (Eq. 3).
    """
    t = self.tokenizer
    forbid = (t.pad_id, t.bos_id) + ((t.unk_id,) if forbid_unk else ())
    return _generate(self.model, (t.bos_id, t.eos_id, t.pad_id, forbid), mode,
                     int(max_len or self.response_len), temperature, top_k, beam_width,
                     length_penalty, state.params, context,
                     jax.random.key(0) if rng is None else rng)

  def stage_end_plots(self, state: base.TrainState, inputs, stage: str, out_dir: str
                      ) -> list[str]:
    """After the generator's stages (mle_pretrain, adversarial): ``topk_nn_check.png``, the
    nearest-neighbour check of Fig. 3 (:meth:`topk_check`, k in ``gan.nn_check_ks``) on the
    greedy responses to the contexts of one validation batch. The paper's report on
    ``gan.report_inputs`` contexts: ``python -m vedgan.objectives.topk_gan_report``."""
    if stage not in ("mle_pretrain", "adversarial"):
      return []
    from vedgan import metrics  # pylint: disable=import-outside-toplevel
    batch = next(iter(inputs.validation_batches(self.config, 1)), None)
    if batch is None:
      return []
    contexts = np.asarray(batch["context"])[np.asarray(batch["weight"]) > 0]
    if not len(contexts):
      return []
    ks = tuple(int(k) for k in self.config.gan.get("nn_check_ks", tuple(range(2, 11))))
    check = self.topk_check(state, contexts, ks=ks, batch_size=len(batch["context"]))
    return [metrics.plot_topk_check(check, os.path.join(out_dir, "topk_nn_check.png"),
                                    title=f"top-k approximation after {stage} "
                                          f"({len(contexts)} contexts)")]

  def topk_check(self, state: base.TrainState, contexts: np.ndarray,
                 ks=tuple(range(2, 11)), batch_size: int = 64) -> dict[str, Any]:
    """The nearest-neighbour check of Section 5 / Fig. 3 on greedy responses to ``contexts``.

    Returns :func:`vedgan.metrics.topk_approximation_check`'s dict (fractions
    with and without repetitions for each k) plus ``num_inputs``.
    """
    from vedgan import metrics  # pylint: disable=import-outside-toplevel

    logits, tokens = [], []
    for start in range(0, len(contexts), batch_size):
      chunk = np.asarray(contexts[start:start + batch_size])
      rows = len(chunk)
      if rows < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - rows, axis=0)])
      out = _free_run_logits(self, state.params, jnp.asarray(chunk))
      keep = np.asarray(out["emitted"])[:rows]
      logits.append(np.asarray(out["logits"])[:rows][keep])
      tokens.append(np.asarray(out["tokens"])[:rows][keep])
    result = metrics.topk_approximation_check(np.concatenate(logits),
                                              np.asarray(state.params["words"]),
                                              tokens=np.concatenate(tokens), ks=tuple(ks))
    result["num_inputs"] = int(len(contexts))
    return result


@functools.partial(jax.jit, static_argnums=(0,))
def _free_run_logits(objective, params, context):
  return objective.free_run(params, context, logits=True)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 7))
def _generate(model, ids, mode, max_len, temperature, top_k, beam_width, length_penalty, params,
              context, rng):
  bos, eos, pad, forbid = ids
  variables = {"params": params}
  memory = model.apply(variables, context, method=TopKDialogueGAN.encode)
  carry = model.apply(variables, memory, method=TopKDialogueGAN.start)
  batch = context.shape[0]
  if mode == "beam":
    memory = decode.tile_for_beam(memory, beam_width)
    carry = decode.tile_for_beam(carry, beam_width)

  def step_fn(c, tokens):
    return model.apply(variables, memory, c, tokens, method=TopKDialogueGAN.step)

  common = dict(batch_size=batch, max_len=max_len, bos_id=bos, eos_id=eos, pad_id=pad,
                forbid_ids=forbid)
  return decode.run(mode, step_fn, carry, rng, temperature=temperature, top_k=top_k,
                    beam_width=beam_width, length_penalty=length_penalty, **common)

