"""Latent-space language GAN (Kojima et al.) and the MLE LSTM language model baseline.

``latent_gan`` is Algorithm 1 of the paper, its two halves the step functions
``disc`` and ``gen`` that a stage cycles through (``step = "disc*1,gen*1"``: one
paper iteration is two global steps):

* ``disc`` (lines 2-15): ``z ~ N(0, I)``, a free-running Gumbel-softmax rollout
  of the generator (one ``lax.scan``), the per-prefix discriminator on real
  sentences and on the (stop-gradient) soft one-hots, loss
  ``(1/T) sum_t -log D(x_t|x_<t) + (1/T) sum_t -log(1 - D(x~_t|x~_<t))`` (Eq. 1)
  plus the L2 weight decay ``(wd / 2) ||phi||^2`` (Appendix A);
* ``gen`` (lines 17-30): a fresh ``z`` and rollout, loss
  ``(1/T) sum_t log(1 - D(x~_t|x~_<t)) + lambda (1/N_z) ||R(x._1..x._T) - z||^2``
  (Eq. 3) minimised by the generator and the reconstructor together; the
  discriminator reads the soft one-hots ``x~``, the reconstructor the
  straight-through hard one-hots ``x.`` (Fig. 2).

``lstm_lm`` is the standard baseline of the quality-diversity literature: the
same generator network without ``z`` (zero initial state), trained by teacher-
forced maximum likelihood on the same sentences (step ``mle``).

Data (both objectives). Single sentences of ``config.data.name``
(:func:`vedgan.data.sources.sentences`), tokenised by the run's sentencepiece
model, at a FIXED length ``T = config.data.max_len`` (static shapes): a
sentence keeps at most ``T - 1`` tokens (``data.too_long``: truncate or skip).
Batches are the pipeline's ``tokens_in = [bos, y.., pad..]`` /
``tokens_out = [y.., eos, pad..]``. **Blank mapping:** the GAN's vocabulary
ends a sentence with the ``<blank>`` token (``Tokenizer.blank_id``, 5), which
also pads it (Sec. 4.1, "the end of the text was padded with blank tokens"):
in ``tokens_out`` both ``eos`` and ``pad`` become ``blank``, so a real
sentence is ``[y_1 .. y_n, blank, .., blank]`` with ``n <= T - 1``. The
generator never emits pad, bos, eos or eou (their logits get -1e9); it ends a
sentence by choosing blank, after which the blank rule pads the rest. The
language model is trained on the same blank-mapped rows (``[bos, y..]`` ->
``[y.., blank]``, the loss masked after the first blank), so both models are
sampled and scored alike (:meth:`SentenceObjective.sampler`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vedgan import losses, parallel
from vedgan.data import inputs as inputs_lib
from vedgan.data import pipeline, sources
from vedgan.data.tokenizer import Tokenizer
from vedgan.errors import ConfigError, DataError
from vedgan.nn import gan
from vedgan.objectives import base
from vedgan.plots import Panel

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
GEN_LOSSES = ("minimax", "non_saturating")


# -- data ---------------------------------------------------------------------------


def load_sentences(data_config, split: str) -> list[str]:
  """Distinct sentences of ``split`` (every turn of a dialogue corpus)."""
  texts = sources.sentences(sources.load_split(data_config, split))
  if not texts:
    raise DataError(f"dataset {data_config.name!r} split {split!r} has no sentences; check "
                    "config.data.name and the prepared files")
  return texts


@dataclasses.dataclass
class SentenceInputs:
  """The driver's view of a sentence corpus (duck-types :class:`vedgan.data.inputs.Inputs`).

  Attributes:
    tokenizer: the run's tokenizer.
    train: repeating, shuffled :class:`~vedgan.data.pipeline.BatchIterator` of
      ``{"tokens_in", "tokens_out", "weight"}``, width ``data.max_len``.
    validation: encoded validation sentences.
    validation_texts: their raw text (the demo's BLEU reference set).
    sample_pairs: unused (unconditional models log their own samples).
    counts: encoding counts per split.
  """
  tokenizer: Tokenizer
  train: pipeline.BatchIterator
  validation: pipeline.EncodedSentences
  validation_texts: list[str]
  sample_pairs: list
  counts: dict

  def validation_batches(self, config, max_batches: int = 0):
    """One pass over the validation sentences (padding rows have weight 0)."""
    it = pipeline.BatchIterator(self.validation, int(config.train.eval_batch_size),
                                (int(config.data.max_len),), seed=int(config.seed),
                                shuffle=False, process_index=jax.process_index(),
                                process_count=jax.process_count(), drop_remainder=False,
                                repeat=False)
    for i, batch in enumerate(it):
      if max_batches and i >= max_batches:
        break
      yield batch


def make_sentence_inputs(config, workdir: str) -> tuple[SentenceInputs, bool]:
  """Tokenizer + fixed-length sentence iterators; returns ``(inputs, tokenizer_is_new)``."""
  max_len = int(config.data.max_len)
  if max_len < 2:
    raise ConfigError(f"config.data.max_len={max_len} must be >= 2 (it counts the final blank)")
  train_texts = load_sentences(config.data, "train")
  val_texts = load_sentences(config.data, config.data.validation_split)
  tok, is_new = inputs_lib.get_tokenizer(config, workdir, [(t,) for t in train_texts])
  too_long = str(config.data.too_long)
  train_enc = pipeline.encode_sentences(train_texts, tok, max_len, too_long=too_long)
  val_enc = pipeline.encode_sentences(val_texts, tok, max_len, too_long=too_long)
  if len(train_enc) < int(config.train.batch_size):
    raise DataError(f"{len(train_enc)} training sentences (after data.too_long={too_long!r} "
                    f"at data.max_len={max_len}) are fewer than train.batch_size="
                    f"{config.train.batch_size}")
  if not len(val_enc):
    raise DataError(f"no {config.data.validation_split} sentence fits data.max_len={max_len}")
  train_it = pipeline.BatchIterator(train_enc, int(config.train.batch_size), (max_len,),
                                    seed=int(config.seed), shuffle=True,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  inputs_lib.log_counts("train sentences", train_enc.counts)
  inputs_lib.log_counts(f"{config.data.validation_split} sentences", val_enc.counts)
  counts = {"train": train_enc.counts, "validation": val_enc.counts}
  return SentenceInputs(tok, train_it, val_enc, val_texts, [], counts), is_new


def blank_tokens(tokens_out: jax.Array, tokenizer) -> jax.Array:
  """``tokens_out = [y.., eos, pad..]`` -> the GAN's ``[y.., blank, blank..]``."""
  end = (tokens_out == tokenizer.eos_id) | (tokens_out == tokenizer.pad_id)
  return jnp.where(end, tokenizer.blank_id, tokens_out).astype(jnp.int32)


def words(tokenizer, tokens) -> list[list[str]]:
  """``[N, T]`` ids -> whitespace words of each row up to its first blank."""
  out = []
  for row in np.asarray(tokens).tolist():
    if tokenizer.blank_id in row:
      row = row[:row.index(tokenizer.blank_id)]
    out.append(tokenizer.decode(row).split())
  return out


def reference_words(tokenizer, texts: list[str]) -> list[list[str]]:
  """Reference sentences as words comparable with :func:`words` of the samples.

  A word tokenizer's own segmentation (``tokenizer.words``: lower-cased words
  and punctuation) WITHOUT the ``<unk>`` mapping, so a generated ``<unk>``
  never matches a reference word; otherwise ``decode(encode(text)).split()``
  (sentencepiece: the normalised text).
  """
  if hasattr(tokenizer, "words"):
    return [list(tokenizer.words(t)) for t in texts]
  return [tokenizer.decode(tokenizer.encode(t)).split() for t in texts]


def _distinct_rows(tokens: jax.Array, weight: jax.Array) -> jax.Array:
  """Number of distinct rows of ``tokens[N, T]`` among rows with ``weight > 0``."""
  same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)
  valid = weight > 0
  n = tokens.shape[0]
  earlier = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]
  dup = jnp.any(same & earlier & valid[None, :], axis=1)
  return jnp.sum(valid & ~dup).astype(jnp.float32)


# -- shared plumbing ----------------------------------------------------------------


def _dtype(model_config):
  if model_config.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={model_config.dtype!r} must be one of {sorted(DTYPES)}")
  return DTYPES[model_config.dtype]


def build_generator(config, tokenizer, latent_dim: int) -> gan.Generator:
  m = config.model
  t = tokenizer
  return gan.Generator(vocab_size=t.vocab_size, embed_dim=int(m.embed_dim),
                       hidden=int(m.gen_hidden), latent_dim=latent_dim,
                       position_features=int(m.position_features), start_id=t.bos_id,
                       forbid_ids=(t.pad_id, t.bos_id, t.eos_id, t.eou_id),
                       forget_bias=float(m.forget_bias), unroll=int(m.unroll),
                       dtype=_dtype(m), remat=bool(m.get("remat", False)))


class SentenceObjective(base.Objective):
  """What the GAN and the language model share: sentence data, sampling, logged samples."""

  latent_dim = 0

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.length = int(config.data.max_len)
    self.blank_id = tokenizer.blank_id
    self.tx = base.make_optimizer(config.optimizer)

  @classmethod
  def make_inputs(cls, config, workdir: str):
    return make_sentence_inputs(config, workdir)

  def real_tokens(self, batch) -> jax.Array:
    return blank_tokens(batch["tokens_out"], self.tokenizer)

  def word_embeddings(self, state):
    return state.params["generator"]["embedding"]

  # -- sampling -----------------------------------------------------------------
  def latent(self, key: jax.Array, n: int) -> jax.Array:
    return jax.random.normal(key, (n, self.latent_dim), jnp.float32)

  @functools.cached_property
  def _sample_fn(self):
    generator, length, blank = self.generator, self.length, self.blank_id

    @jax.jit
    def sample(params, z, key, temperature):
      return gan.sample_tokens(generator, params, z, key, length, blank, temperature)

    return sample

  def generate(self, state: base.TrainState, num_samples: int, seed: int = 0,
               temperature: float = 0.0, chunk: int = 512) -> np.ndarray:
    """``[num_samples, T]`` int32 sentences at word temperature ``temperature`` (0 = greedy).

    Chunk ``i`` draws ``z`` from ``fold_in(key(seed), 2i)`` and the Gumbel
    noise from ``fold_in(key(seed), 2i + 1)``, so the same ``seed`` gives the
    same latent codes at every temperature (common random numbers).
    """
    params = state.params["generator"]
    root = jax.random.key(int(seed))
    out = []
    for i in range(-(-int(num_samples) // chunk)):
      z = self.latent(jax.random.fold_in(root, 2 * i), chunk)
      out.append(np.asarray(self._sample_fn(params, z, jax.random.fold_in(root, 2 * i + 1),
                                            jnp.float32(temperature))))
    if not out:
      return np.zeros((0, self.length), np.int32)
    return np.concatenate(out)[:num_samples]

  def sampler(self, state: base.TrainState, chunk: int = 512
              ) -> Callable[[float, int, int], list[list[str]]]:
    """``generate(temperature, num_samples, seed) -> [[word, ...], ...]`` for
    :func:`vedgan.metrics.quality_diversity_sweep` (temperature = tau_2, 0 = greedy)."""

    def generate(temperature: float, num_samples: int, seed: int) -> list[list[str]]:
      return words(self.tokenizer, self.generate(state, num_samples, seed, temperature, chunk))

    return generate

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """Greedy sentences from ``train.num_samples`` fixed latent codes (and one sampled at tau_2 = 1)."""
    n = int(self.config.train.num_samples)
    if n <= 0:
      return []
    seed = int(self.config.seed) + 7
    greedy = words(self.tokenizer, self.generate(state, n, seed, 0.0, chunk=max(n, 1)))
    sampled = words(self.tokenizer, self.generate(state, 1, seed + 1, 1.0, chunk=1))
    label = "z[{}] greedy" if self.latent_dim else "greedy #{}"
    pairs = [(label.format(i), " ".join(w)) for i, w in enumerate(greedy)]
    return pairs + [("tau_2=1.0", " ".join(sampled[0]))]


def _new_state(rng, params: dict, tx) -> base.TrainState:
  return base.TrainState(step=jnp.zeros((), jnp.int32),
                         rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                         params=params, opt_state={k: tx.init(v) for k, v in params.items()})


# -- the GAN ------------------------------------------------------------------------


@base.register("latent_gan")
class LatentGAN(SentenceObjective):
  """Kojima et al.: Gumbel-softmax generator, per-prefix discriminator, reconstructor."""

  STEPS = ("disc", "gen")
  #: training-curve figure (vedgan.plots): D and G losses (Eq. 1, 3), D's accuracy on real
  #: and generated prefixes, and the latent reconstruction loss.
  PLOT_GROUPS = {
      "gan": (
          Panel("discriminator and generator losses", ("D loss = d_loss", "G loss = g_adv")),
          Panel("D accuracy", ("real = d_acc_real", "fake = d_acc_fake",
                               "validation/d_acc_real", "validation/d_acc_fake")),
          Panel("D loss terms", ("d_real", "d_fake")),
          Panel("latent reconstruction", ("recon", "validation/recon"))),
  }

  #: word temperatures tau_2 of the stage-end diversity plot (0 = greedy) and its sample count.
  PLOT_TEMPERATURES = (0.0, 0.5, 0.75, 1.0, 1.5)
  PLOT_SAMPLES = 64

  def diversity_by_temperature(self, state, temperatures, num_samples: int, seed: int
                               ) -> dict[str, list[float]]:
    """Distinct-1, distinct-2 and the distinct-sentence fraction of ``num_samples`` samples
    at each word temperature (the same latent codes at every temperature; empty
    sentences count as sentences, not as n-grams). Returns ``{name: [value per tau]}``."""
    from vedgan import metrics  # pylint: disable=import-outside-toplevel
    sample = self.sampler(state, chunk=num_samples)
    curves = {"distinct-1": [], "distinct-2": [], "distinct sentences": []}
    for tau in temperatures:
      sents = sample(float(tau), num_samples, seed)
      words_ = [s for s in sents if s]
      curves["distinct-1"].append(metrics.distinct_n(words_, 1) if words_ else 0.0)
      curves["distinct-2"].append(metrics.distinct_n(words_, 2)
                                  if any(len(s) > 1 for s in words_) else 0.0)
      curves["distinct sentences"].append(len({" ".join(s) for s in sents}) / len(sents))
    return curves

  def stage_end_plots(self, state, inputs, stage: str, out_dir: str) -> list[str]:
    """``diversity_vs_temperature.png``: distinct-1, distinct-2 and the fraction of distinct
    sentences among ``PLOT_SAMPLES`` samples (the same latent codes at every tau_2), against
    the word temperature tau_2. The paper's quality-diversity curve (negative BLEU vs
    Self-BLEU, Fig. 2) needs many more samples: ``python -m vedgan.objectives.latent_gan_sweep``.
    """
    del inputs, stage
    from vedgan import plots  # pylint: disable=import-outside-toplevel
    n = int(self.PLOT_SAMPLES)
    curves = self.diversity_by_temperature(state, self.PLOT_TEMPERATURES, n,
                                           int(self.config.seed) + 11)
    fig, axes = plots.new_figure((5.5, 3.6))
    ax = axes[0, 0]
    for name, ys in curves.items():
      ax.plot(self.PLOT_TEMPERATURES, ys, "o-", label=name)
    ax.set_xlabel("word temperature tau_2 (0 = greedy)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"diversity of {n} generated sentences")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [plots.save_figure(fig, os.path.join(out_dir, "diversity_vs_temperature.png"))]

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    m = config.model
    if m.gen_loss not in GEN_LOSSES:
      raise ConfigError(f"model.gen_loss={m.gen_loss!r} must be one of {GEN_LOSSES}")
    for name in ("gumbel_temperature", "word_temperature"):
      if not float(m[name]) > 0:
        raise ConfigError(f"model.{name}={m[name]} must be > 0 for training")
    self.latent_dim = int(m.latent_dim)
    if self.latent_dim < 1:
      raise ConfigError(f"model.latent_dim={m.latent_dim} must be >= 1")
    v, dtype = tokenizer.vocab_size, _dtype(m)
    self.generator = build_generator(config, tokenizer, self.latent_dim)
    self.discriminator = gan.Discriminator(
        vocab_size=v, embed_dim=int(m.embed_dim), hidden=int(m.disc_hidden),
        position_features=int(m.position_features), dropout=float(m.disc_dropout),
        forget_bias=float(m.forget_bias), unroll=int(m.unroll), dtype=dtype,
        remat=bool(m.get("remat", False)))
    self.reconstructor = gan.Reconstructor(
        vocab_size=v, embed_dim=int(m.embed_dim), hidden=int(m.rec_hidden),
        latent_dim=self.latent_dim, position_features=int(m.position_features),
        forget_bias=float(m.forget_bias), unroll=int(m.unroll), dtype=dtype,
        remat=bool(m.get("remat", False)))

  # -- state --------------------------------------------------------------------
  def init(self, rng: jax.Array, batch) -> base.TrainState:
    b = batch["tokens_out"].shape[0]
    kg, kd, kr = jax.random.split(rng, 3)
    z = jnp.zeros((b, self.latent_dim), jnp.float32)
    onehot = jax.nn.one_hot(self.real_tokens(batch), self.tokenizer.vocab_size)
    params = {
        "generator": self.generator.init({"params": kg}, z, batch["tokens_in"])["params"],
        "discriminator": self.discriminator.init({"params": kd}, onehot)["params"],
        "reconstructor": self.reconstructor.init({"params": kr}, onehot)["params"],
    }
    return _new_state(rng, params, self.tx)

  # -- pieces of Algorithm 1 ----------------------------------------------------
  def fake(self, g_params, key, n: int, gumbel_temperature=None, word_temperature=None):
    """``(z, Rollout)``: ``z ~ N(0, I)`` and the free-running rollout (lines 2-11)."""
    m = self.config.model
    kz, kg = jax.random.split(key)
    z = self.latent(kz, n)
    tau1 = m.gumbel_temperature if gumbel_temperature is None else gumbel_temperature
    tau2 = m.word_temperature if word_temperature is None else word_temperature
    out = gan.rollout(self.generator, g_params, z, kg, self.length, self.blank_id, tau1, tau2)
    return z, out

  def mask(self, tokens: jax.Array) -> jax.Array:
    """Which prefixes are scored: up to the first blank (``model.mask_after_blank``) or all."""
    if self.config.model.mask_after_blank:
      return gan.prefix_mask(tokens, self.blank_id)
    return jnp.ones(tokens.shape, jnp.float32)

  def discriminate(self, d_params, x, key=None):
    """Per-prefix logits ``[B, T]``; dropout on when ``key`` is given."""
    if key is None:
      return self.discriminator.apply({"params": d_params}, x)
    return self.discriminator.apply({"params": d_params}, x, train=True, rngs={"dropout": key})

  def disc_loss(self, d_params, real_onehot, real_mask, fake_soft, fake_mask, key=None):
    """Eq. 1 as a loss (Algorithm 1 lines 12-14) + L2; returns ``(loss, aux)``."""
    n_real = real_onehot.shape[0]
    logits = self.discriminate(d_params, jnp.concatenate([real_onehot, fake_soft]), key)
    real_logits, fake_logits = logits[:n_real], logits[n_real:]
    real, fake = losses.prefix_discriminator_loss(real_logits, real_mask, fake_logits, fake_mask)
    real, fake = real.mean() / self.length, fake.mean() / self.length
    l2 = 0.5 * float(self.config.model.disc_weight_decay) * sum(
        jnp.sum(jnp.square(p)) for p in jax.tree.leaves(d_params))
    aux = {"d_real": real, "d_fake": fake, "d_l2": l2,
           "d_acc_real": _masked_mean((real_logits > 0).astype(jnp.float32), real_mask),
           "d_acc_fake": _masked_mean((fake_logits < 0).astype(jnp.float32), fake_mask)}
    return real + fake + l2, aux

  def gen_loss(self, g_params, r_params, d_params, key, n: int):
    """Eq. 3 (Algorithm 1 lines 17-28); returns ``(loss, aux)``."""
    m = self.config.model
    k_fake, k_drop = jax.random.split(key)
    z, out = self.fake(g_params, k_fake, n)
    fake_mask = self.mask(out.tokens)
    logits = self.discriminate(d_params, out.soft, k_drop)
    adv = losses.prefix_generator_loss(logits, fake_mask,
                                       non_saturating=m.gen_loss == "non_saturating")
    adv = adv.mean() / self.length
    z_hat = self.reconstructor.apply({"params": r_params}, out.hard)
    recon = losses.latent_reconstruction_loss(z_hat, z).mean()
    aux = {"g_adv": adv, "recon": recon, "fake_length": _lengths(out.tokens, self.blank_id).mean()}
    return adv + float(m.recon_weight) * recon, aux

  # -- steps --------------------------------------------------------------------
  @property
  def step_builders(self):
    return {"disc": self.build_disc_step, "gen": self.build_gen_step}

  def build_disc_step(self, stage, start: int):
    """Discriminator update (Algorithm 1 lines 2-15)."""
    lr_fn = base.learning_rate_fn(stage)

    def step(state: base.TrainState, batch):
      key = parallel.device_rng(state.step_key())
      k_fake, k_drop = jax.random.split(key)
      real = self.real_tokens(batch)
      n = real.shape[0]
      _, out = self.fake(state.params["generator"], k_fake, n)
      fake_soft = jax.lax.stop_gradient(out.soft)
      real_onehot = jax.nn.one_hot(real, self.tokenizer.vocab_size)
      grad_fn = jax.grad(self.disc_loss, has_aux=True)
      grads, aux = grad_fn(state.params["discriminator"], real_onehot, self.mask(real),
                           fake_soft, self.mask(out.tokens), k_drop)
      grads = parallel.pmean(grads)
      lr = lr_fn(state.step - start)
      d_params, d_opt = base.apply_updates(self.tx, grads, state.opt_state["discriminator"],
                                           state.params["discriminator"], lr)
      aux = parallel.pmean(aux)
      metrics = dict(aux, d_loss=aux["d_real"] + aux["d_fake"], d_grad_norm=base.global_norm(grads),
                     learning_rate=lr)
      return state.replace(step=state.step + 1,
                           params=dict(state.params, discriminator=d_params),
                           opt_state=dict(state.opt_state, discriminator=d_opt)), metrics

    return step

  def build_gen_step(self, stage, start: int):
    """Generator + reconstructor update (Algorithm 1 lines 17-30)."""
    lr_fn = base.learning_rate_fn(stage)

    def step(state: base.TrainState, batch):
      key = parallel.device_rng(state.step_key())
      n = batch["tokens_out"].shape[0]
      p = state.params
      grad_fn = jax.grad(lambda g, r: self.gen_loss(g, r, p["discriminator"], key, n),
                         argnums=(0, 1), has_aux=True)
      (g_grads, r_grads), aux = grad_fn(p["generator"], p["reconstructor"])
      g_grads, r_grads = parallel.pmean((g_grads, r_grads))
      lr = lr_fn(state.step - start)
      g_params, g_opt = base.apply_updates(self.tx, g_grads, state.opt_state["generator"],
                                           p["generator"], lr)
      r_params, r_opt = base.apply_updates(self.tx, r_grads, state.opt_state["reconstructor"],
                                           p["reconstructor"], lr)
      aux = parallel.pmean(aux)
      metrics = dict(aux, loss=aux["g_adv"] + float(self.config.model.recon_weight) * aux["recon"],
                     g_grad_norm=base.global_norm(g_grads), r_grad_norm=base.global_norm(r_grads),
                     learning_rate=lr)
      return state.replace(step=state.step + 1,
                           params=dict(p, generator=g_params, reconstructor=r_params),
                           opt_state=dict(state.opt_state, generator=g_opt,
                                          reconstructor=r_opt)), metrics

    return step

  # -- evaluation ---------------------------------------------------------------
  def eval_step(self, state: base.TrainState, batch):
    """Per-device sums on validation sentences and fixed-seed fakes (one fake per row).

    ``recon``: reconstruction MSE of training-temperature rollouts;
    ``recon_greedy``: of greedy (tau_2 = 0) sentences; discriminator losses and
    prefix accuracies on real vs. fake; ``greedy_distinct``: distinct greedy
    sentences among each evaluation batch of latent codes (all devices).
    """
    p = state.params
    w = batch["weight"]
    real = self.real_tokens(batch)
    n = real.shape[0]
    key = jax.random.fold_in(jax.random.key(int(self.config.seed) + 1), jax.lax.axis_index(parallel.AXIS))
    key = jax.random.fold_in(key, jnp.sum(batch["tokens_out"]))  # differs between batches
    k_fake, k_greedy = jax.random.split(key)
    z, out = self.fake(p["generator"], k_fake, n)
    z_hat = self.reconstructor.apply({"params": p["reconstructor"]}, out.hard)
    recon = losses.latent_reconstruction_loss(z_hat, z)
    zg = self.latent(k_greedy, n)
    greedy = gan.sample_tokens(self.generator, p["generator"], zg, k_greedy, self.length,
                               self.blank_id, 0.0)
    onehot_g = jax.nn.one_hot(greedy, self.tokenizer.vocab_size)
    recon_g = losses.latent_reconstruction_loss(
        self.reconstructor.apply({"params": p["reconstructor"]}, onehot_g), zg)
    real_mask, fake_mask = self.mask(real), self.mask(out.tokens)
    logits = self.discriminate(p["discriminator"],
                               jnp.concatenate([jax.nn.one_hot(real, self.tokenizer.vocab_size),
                                                out.soft]))
    rl, fl = logits[:n], logits[n:]
    d_real, d_fake = losses.prefix_discriminator_loss(rl, real_mask, fl, fake_mask)
    all_greedy = jax.lax.all_gather(greedy, parallel.AXIS, tiled=True)
    all_w = jax.lax.all_gather(w, parallel.AXIS, tiled=True)
    ndev = jax.lax.psum(1, parallel.AXIS)
    return {
        "recon": jnp.sum(w * recon), "recon_greedy": jnp.sum(w * recon_g),
        "d_real": jnp.sum(w * d_real) / self.length, "d_fake": jnp.sum(w * d_fake) / self.length,
        "real_correct": jnp.sum(w[:, None] * real_mask * (rl > 0)),
        "real_prefixes": jnp.sum(w[:, None] * real_mask),
        "fake_correct": jnp.sum(w[:, None] * fake_mask * (fl < 0)),
        "fake_prefixes": jnp.sum(w[:, None] * fake_mask),
        "fake_length": jnp.sum(w * _lengths(out.tokens, self.blank_id)),
        "greedy_length": jnp.sum(w * _lengths(greedy, self.blank_id)),
        "greedy_distinct": _distinct_rows(all_greedy, all_w) / ndev,
        "examples": jnp.sum(w),
    }

  def summarize(self, sums):
    s = {k: float(v) for k, v in sums.items()}
    n = max(s["examples"], 1.0)
    return {"recon": s["recon"] / n, "recon_greedy": s["recon_greedy"] / n,
            "d_real": s["d_real"] / n, "d_fake": s["d_fake"] / n,
            "d_acc_real": s["real_correct"] / max(s["real_prefixes"], 1.0),
            "d_acc_fake": s["fake_correct"] / max(s["fake_prefixes"], 1.0),
            "fake_length": s["fake_length"] / n, "greedy_length": s["greedy_length"] / n,
            "greedy_distinct_frac": s["greedy_distinct"] / n, "examples": s["examples"]}


def _masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _lengths(tokens, blank_id):
  """Words before the first blank, ``[B]`` float32."""
  return jnp.sum(gan.prefix_mask(tokens, blank_id) * (tokens != blank_id), axis=-1)


# -- the MLE baseline ---------------------------------------------------------------


@base.register("lstm_lm")
class LSTMLanguageModel(SentenceObjective):
  """Maximum-likelihood LSTM language model on the GAN's sentences (no latent code)."""

  STEPS = ("mle",)

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.generator = build_generator(config, tokenizer, 0)

  def init(self, rng: jax.Array, batch) -> base.TrainState:
    z = jnp.zeros((batch["tokens_in"].shape[0], 0), jnp.float32)
    params = {"generator": self.generator.init({"params": rng}, z, batch["tokens_in"])["params"]}
    return _new_state(rng, params, self.tx)

  def nll(self, params, batch):
    """Per-sentence NLL sums and token counts (targets up to and including the first blank)."""
    target = self.real_tokens(batch)
    z = jnp.zeros((target.shape[0], 0), jnp.float32)
    logits = self.generator.apply({"params": params}, z, batch["tokens_in"])
    return losses.sequence_cross_entropy(logits, target, gan.prefix_mask(target, self.blank_id))

  @property
  def step_builders(self):
    return {"mle": self.build_mle_step}

  def build_mle_step(self, stage, start: int):
    return base.build_mle_step(self.tx, "generator",
                               lambda params, batch, rng: self.nll(params, batch), stage, start)

  def eval_step(self, state: base.TrainState, batch):
    nll, count = self.nll(state.params["generator"], batch)
    w = batch["weight"]
    return {"nll": jnp.sum(w * nll), "tokens": jnp.sum(w * count), "examples": jnp.sum(w)}

  def summarize(self, sums):
    nll = float(sums["nll"]) / max(float(sums["tokens"]), 1.0)
    return {"nll": nll, "perplexity": float(np.exp(nll)), "examples": float(sums["examples"])}

