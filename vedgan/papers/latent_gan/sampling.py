"""What the latent GAN and its MLE language model share: the generator network, the
sentence stream, and sampling ``N`` sentences (unconditional generation).

Both objectives are sampled alike: a sentence is ``T = data.max_len`` words of
the generator run freely from ``z ~ N(0, I)`` (no ``z`` for the language model)
at word temperature ``tau_2`` (0 = greedy), cut at its first ``<blank>``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vedgan.errors import ConfigError
from vedgan.metrics import text as text_lib
from vedgan.nn import gan
from vedgan.objective import Generation, Objective
from vedgan.papers.latent_gan import data

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: latent codes drawn per jitted sampling call of the quality-diversity sweep.
SWEEP_CHUNK = 512
#: the metric word of a generated ``<unk>`` id: :func:`vedgan.metrics.text.words` never
#: produces it from a text, so it never matches a reference word.
UNK_WORD = "<unk>"


def dtype(model_config):
  """``model.dtype`` as a jnp dtype (one-line :class:`ConfigError` otherwise)."""
  if model_config.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={model_config.dtype!r} must be one of {sorted(DTYPES)}")
  return DTYPES[model_config.dtype]


def build_generator(config, tokenizer, latent_dim: int) -> gan.Generator:
  """The generator LSTM of ``config.model`` (``latent_dim = 0``: the language model).

  It never emits pad, bos, eos or eou (their logits get -1e9) and reads bos first.
  """
  m, t = config.model, tokenizer
  return gan.Generator(vocab_size=t.vocab_size, embed_dim=int(m.embed_dim),
                       hidden=int(m.gen_hidden), latent_dim=latent_dim,
                       position_features=int(m.position_features), start_id=t.bos_id,
                       forbid_ids=(t.pad_id, t.bos_id, t.eos_id, t.eou_id),
                       forget_bias=float(m.forget_bias), unroll=int(m.unroll),
                       dtype=dtype(m), remat=bool(m.remat))


def sentence_lengths(tokens, blank_id: int):
  """Words before the first blank of ``tokens [B, T]``, float32 ``[B]``."""
  return jnp.sum(gan.prefix_mask(tokens, blank_id) * (tokens != blank_id), axis=-1)


class SentenceObjective(Objective):
  """Unconditional sentence models: sentence data, sampling, logged samples.

  Subclasses set ``self.generator`` and :attr:`latent_dim`.
  """

  CONDITIONAL = False
  latent_dim = 0

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.length = int(config.data.max_len)
    self.blank_id = tokenizer.blank_id

  @classmethod
  def make_inputs(cls, config, workdir: str):
    return data.make_inputs(config, workdir)

  def real_tokens(self, batch) -> jax.Array:
    """The batch's sentences as the models write them, ``[B, T]`` (blank-mapped)."""
    return data.blank_tokens(batch["tokens_out"], self.tokenizer)

  def word_embeddings(self, state):
    return state.params["generator"]["embedding"]

  # -- sampling -------------------------------------------------------------------
  def latent(self, key: jax.Array, n: int) -> jax.Array:
    """``z ~ N(0, I)``, ``[n, latent_dim]`` float32."""
    return jax.random.normal(key, (n, self.latent_dim), jnp.float32)

  @functools.cached_property
  def _sample_fn(self):
    generator, length, blank = self.generator, self.length, self.blank_id

    @jax.jit
    def sample(params, z, key, temperature):
      return gan.sample_tokens(generator, params, z, key, length, blank, temperature)

    return sample

  def sample(self, state, num_samples: int, rng: jax.Array, temperature: float = 0.0,
             chunk: int = SWEEP_CHUNK) -> np.ndarray:
    """``[num_samples, T]`` int32 sentences at word temperature ``temperature`` (0 = greedy).

    Chunk ``i`` of ``chunk`` rows draws ``z`` from ``fold_in(rng, 2i)`` and the
    Gumbel noise from ``fold_in(rng, 2i + 1)``, so the same ``rng`` gives the
    same latent codes at every temperature (common random numbers).
    """
    params = state.params["generator"]
    out = []
    for i in range(-(-int(num_samples) // chunk)):
      z = self.latent(jax.random.fold_in(rng, 2 * i), chunk)
      out.append(np.asarray(self._sample_fn(params, z, jax.random.fold_in(rng, 2 * i + 1),
                                            jnp.float32(temperature))))
    if not out:
      return np.zeros((0, self.length), np.int32)
    return np.concatenate(out)[:num_samples]

  def sentence_texts(self, tokens) -> list[str]:
    """``[N, T]`` ids -> each row's text up to its first blank (words joined by one space)."""
    out = []
    for row in np.asarray(tokens).tolist():
      if self.blank_id in row:
        row = row[:row.index(self.blank_id)]
      out.append(" ".join(self.tokenizer.decode(row).split()))
    return out

  def sentence_words(self, tokens) -> list[list[str]]:
    """``[N, T]`` ids -> each row's metric words up to its first blank: the text between
    ``<unk>`` ids split by :func:`vedgan.metrics.text.words`, each ``<unk>`` id
    :data:`UNK_WORD` (one word that no reference holds)."""
    unk = self.tokenizer.unk_id
    out = []
    for row in np.asarray(tokens).tolist():
      if self.blank_id in row:
        row = row[:row.index(self.blank_id)]
      words, start = [], 0
      for i in [i for i, t in enumerate(row) if t == unk] + [len(row)]:
        words += text_lib.words(self.tokenizer.decode(row[start:i])) if i > start else []
        words += [UNK_WORD] if i < len(row) else []
        start = i + 1
      out.append(words)
    return out

  def sampler(self, state, chunk: int = SWEEP_CHUNK):
    """``generate(temperature, num_samples, seed) -> [[word, ...], ...]`` for
    :func:`vedgan.metrics.quality_diversity_sweep` (temperature = tau_2, 0 = greedy; words
    by :meth:`sentence_words`)."""

    def generate(temperature: float, num_samples: int, seed: int) -> list[list[str]]:
      return self.sentence_words(
          self.sample(state, num_samples, jax.random.key(int(seed)), temperature, chunk))

    return generate

  # -- the Objective's generation interface -------------------------------------------
  def generate(self, state, batch, rng, options) -> Generation:
    """``options.num_samples`` sentences (``batch`` is None): greedy words for mode
    ``greedy``, else sampled at ``tau_2 = options.temperature``.

    ``tokens [N, T]`` end with ``<blank>``, which also pads them (the models' EOS);
    ``lengths``: tokens up to and including the first blank (``T`` without one);
    ``scores``: 0 (not computed). Rows come in chunks of the next power of two
    ``>= min(N, 512)`` (see :meth:`sample`).
    """
    del batch
    if options.mode == "beam":
      raise ConfigError(f"objective {self.name!r} samples sentences; beam search needs a "
                        "context: use mode greedy or sample")
    n = int(options.num_samples)
    temperature = 0.0 if options.mode == "greedy" else float(options.temperature)
    chunk = 1
    while chunk < min(n, SWEEP_CHUNK):
      chunk *= 2
    tokens = self.sample(state, n, rng, temperature, chunk)
    blank = tokens == self.blank_id
    lengths = np.where(blank.any(1), blank.argmax(1) + 1, self.length).astype(np.int32)
    return Generation(tokens, lengths, np.zeros((n,), np.float32))

  def texts(self, generation: Generation) -> list[str]:
    """Each row's words up to its first blank (blanks dropped), joined by single spaces."""
    return self.sentence_texts(jax.device_get(generation.tokens))

  def prompt_batch(self, inputs, prompts, label=None):
    """None: unconditional models take no prompt."""
    del inputs, prompts, label
    return None

  def sample_texts(self, state, inputs, step: int) -> list[tuple[str, str]]:
    """Greedy sentences from ``train.num_samples`` fixed latent codes (seed
    ``config.seed + 7``) and one sampled at ``tau_2 = 1`` (seed ``+ 8``)."""
    del inputs, step
    n = int(self.config.train.num_samples)
    if n <= 0:
      return []
    seed = int(self.config.seed) + 7
    greedy = self.sentence_texts(self.sample(state, n, jax.random.key(seed), 0.0, max(n, 1)))
    sampled = self.sentence_texts(self.sample(state, 1, jax.random.key(seed + 1), 1.0, 1))
    label = "z[{}] greedy" if self.latent_dim else "greedy #{}"
    return [(label.format(i), t) for i, t in enumerate(greedy)] + [("tau_2=1.0", sampled[0])]
