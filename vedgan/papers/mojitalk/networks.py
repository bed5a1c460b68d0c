"""MojiTalk's networks as pure functions of one params dict (Zhou & Wang, ACL 2018).

Parameter groups of ``state.params``:

* ``model``: the :class:`vedgan.nn.seq2seq.Seq2Seq` (BiGRU encoder, GRU decoder with
  scaled Luong attention, word embeddings). Its bridge reads ``[h_ctx; e; z]``, so the
  base model is the CVAE with ``z = 0`` (as in the authors' code) and the CVAE starts
  from the converged base weights; the bridge rows of ``z`` get no gradient while
  ``z = 0``.
* ``emoji``: :class:`vedgan.nn.cvae.EmojiVector`, ``e = tanh(W emb(emoji))`` (12-d).
* ``cvae``: :class:`vedgan.nn.cvae.CVAEHeads`: response encoder + recognition network
  ``q(z|x,c)``, prior network ``p(z|c)``, bag-of-words head ``f(z, c)``.
* ``classifier``: :class:`vedgan.nn.deepmoji.DeepMoji` (supplement 0.2).

Shapes: ``B`` rows, ``S`` context length, ``T`` response length, ``L`` latent size,
``V`` vocabulary, ``C`` emoji classes; ``c = [h_ctx; e]`` is the condition.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vedgan import decode, losses
from vedgan.data.tokenizer import EOS_ID
from vedgan.decode import DecodeOptions
from vedgan.metrics import likelihood
from vedgan.nn.cvae import CVAEHeads, EmojiVector
from vedgan.nn.deepmoji import DeepMoji
from vedgan.nn.dense import Dense
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.papers.seq2seq.algorithm import DTYPES, build_seq2seq, token_mask

_NEG = -1e9  # finite "minus infinity" for masked logits (exp underflows to exactly 0)


def strip_eos(tokens: jax.Array, eos_id: int = EOS_ID) -> jax.Array:
  """``tokens [B, T]`` with EOS and everything after it set to 0 (pad)."""
  after = jnp.cumsum((tokens == eos_id).astype(jnp.int32), axis=-1) > 0
  return jnp.where(after, 0, tokens)


def response_tokens(batch, eos_id: int = EOS_ID) -> jax.Array:
  """The response words: ``response_out`` without its EOS (``[B, T]``, pad 0)."""
  return strip_eos(batch["response_out"], eos_id)


def mle_terms(logits: jax.Array, batch) -> tuple[jax.Array, jax.Array]:
  """``(nll_sum [B], tokens [B])`` of ``batch["response_out"]`` (EOS included) under
  ``logits [B, T, V]``."""
  return losses.sequence_cross_entropy(logits, batch["response_out"],
                                       token_mask(batch["response_out"]))


class MojiTalkNetworks:
  """The four networks of the paper and the pieces the losses are built from."""

  def __init__(self, config, tokenizer):
    m = config.model
    vocab = tokenizer.vocab_size
    self.tokenizer = tokenizer
    self.hidden, self.emoji_dim = int(m.hidden), int(m.emoji_dim)
    self.embed_dim = int(m.embed_dim)
    self.num_labels = int(config.data.num_labels)
    self.latent_dim = int(m.latent_dim)
    self.seq2seq = build_seq2seq(m, vocab)       # checks model.dtype
    dtype = DTYPES[m.dtype]
    self.emoji = EmojiVector(self.num_labels, self.embed_dim, self.emoji_dim, dtype)
    self.cvae = CVAEHeads(self.latent_dim, vocab, self.hidden,
                          tuple(int(h) for h in m.recognition_hidden),
                          tuple(int(h) for h in m.prior_hidden), bool(m.latent_tanh),
                          int(m.encoder_layers), float(m.dropout), int(m.unroll), dtype,
                          bool(m.remat))
    c = m.classifier
    self.classifier = DeepMoji(vocab, self.num_labels, int(c.embed_dim), int(c.hidden),
                               int(c.num_layers), float(c.dropout), float(c.embed_scale),
                               int(m.unroll), dtype, bool(m.remat))
    self.eos = tokenizer.eos_id

  def init(self, rng: jax.Array, batch) -> dict:
    """``{"model", "emoji", "cvae", "classifier"}`` parameters for ``batch``'s shapes."""
    keys = jax.random.split(rng, 5)
    context, resp = batch["context"], response_tokens(batch, self.eos)
    model = self.seq2seq.init({"params": keys[0]}, context, batch["response_in"])["params"]
    emoji = self.emoji.init({"params": keys[1]}, batch["label"])["params"]
    # The bridge reads [h_ctx; e; z]: a Dense of the seq2seq's own bridge shape and init.
    cond_width = 2 * self.hidden + self.emoji_dim
    bridge = Dense(self.hidden).init(
        keys[2], jnp.zeros((1, cond_width + self.latent_dim), jnp.float32))["params"]
    model = dict(model, bridge=bridge)
    cond = jnp.zeros((context.shape[0], cond_width))
    emb = jnp.zeros(resp.shape + (self.embed_dim,))
    cvae = self.cvae.init({"params": keys[3]}, emb, (resp != 0).astype(jnp.float32),
                          cond)["params"]
    classifier = self.classifier.init({"params": keys[4]}, resp)["params"]
    return {"model": model, "emoji": emoji, "cvae": cvae, "classifier": classifier}

  # -- pieces -------------------------------------------------------------------------
  def _s2s(self, params, *args, method, rng=None, **kwargs):
    rngs = {"dropout": rng} if rng is not None else {}
    return self.seq2seq.apply({"params": params["model"]}, *args, method=method, rngs=rngs,
                              **kwargs)

  def _heads(self, params, *args, method, rng=None, **kwargs):
    rngs = {"dropout": rng} if rng is not None else {}
    return self.cvae.apply({"params": params["cvae"]}, *args, method=method, rngs=rngs, **kwargs)

  def condition(self, params, context, label, train: bool = False, rng=None):
    """``(memory, c = [h_ctx; e] [B, 2H + 12], e [B, 12])`` for ``context [B, S]``,
    ``label [B]``."""
    memory = self._s2s(params, context, train, method=Seq2Seq.encode, rng=rng)
    e = self.emoji.apply({"params": params["emoji"]}, label)
    return memory, jnp.concatenate([memory.final, e], axis=-1), e

  def initial_state(self, params, memory, e, z):
    """Decoder state ``h_0 = tanh(W_b [h_ctx; e; z])`` ``[B, H]`` (``z = 0``: base model)."""
    return self._s2s(params, memory, jnp.concatenate([e, z], axis=-1),
                     method=Seq2Seq.initial_state)

  def decode_logits(self, params, memory, h0, tokens_in, train: bool = False, rng=None):
    """Teacher-forced logits ``[B, T, V]``."""
    return self._s2s(params, memory, h0, tokens_in, train, method=Seq2Seq.decode,
                     rng=rng)["logits"]

  def prior(self, params, cond):
    """``p(z | c)``: ``(mean, logvar)``, each ``[B, L]``."""
    return self._heads(params, cond, method=CVAEHeads.prior_params)

  def posterior(self, params, resp, cond, train: bool = False, keys=(None, None)):
    """``q(z | x, c)``: ``(mean, logvar)`` ``[B, L]`` from the response words ``resp [B, T]``
    (its own BiGRU over the shared word embeddings)."""
    emb = self._s2s(params, resp, train, method=Seq2Seq.embed_tokens, rng=keys[0])
    h_x = self._heads(params, emb, (resp != 0).astype(jnp.float32), train,
                      method=CVAEHeads.encode_response, rng=keys[1])
    return self._heads(params, h_x, cond, method=CVAEHeads.posterior)

  def classify(self, params, tokens, train: bool = False, rng=None):
    """Emoji logits ``[B, C]`` of responses ``tokens [B, T]`` (EOS and what follows ignored)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return self.classifier.apply({"params": params["classifier"]},
                                 strip_eos(tokens, self.eos), train, rngs=rngs)

  # -- per-example terms ------------------------------------------------------------
  def base_terms(self, params, batch, train: bool = False, rng=None):
    """Per-example ``(nll_sum [B], tokens [B])`` of the base seq2seq (``z = 0``)."""
    k_enc, k_dec = jax.random.split(rng) if rng is not None else (None, None)
    memory, _, e = self.condition(params, batch["context"], batch["label"], train, k_enc)
    z = jnp.zeros((e.shape[0], self.latent_dim), jnp.float32)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                batch["response_in"], train, k_dec)
    return mle_terms(logits, batch)

  def cvae_terms(self, params, batch, z_key, train: bool = False, rng=None,
                 kl_weight=1.0, bow_weight=1.0) -> dict:
    """Per-example terms of supplement Eq. 2 with ``z ~ q(z|x,c)`` (reparameterised).

    Returns ``[B]`` arrays ``rec`` (``-log p(x|z,c)``, summed over tokens), ``tokens``,
    ``kl`` (``KL(q(z|x,c) || p(z|c))``), ``bow`` (``-log p(x_bow|z,c)``, Eq. 1) and
    ``loss = rec + kl_weight kl + bow_weight bow`` (``L'``); plus ``z``, ``mean_q``,
    ``logvar_q``, ``mean_p``, ``logvar_p`` (``[B, L]``).
    """
    keys = jax.random.split(rng, 4) if rng is not None else (None,) * 4
    memory, cond, e = self.condition(params, batch["context"], batch["label"], train, keys[0])
    resp = response_tokens(batch, self.eos)
    mean_q, logvar_q = self.posterior(params, resp, cond, train, keys[1:3])
    mean_p, logvar_p = self.prior(params, cond)
    z = losses.gaussian_sample(z_key, mean_q, logvar_q)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                batch["response_in"], train, keys[3])
    rec, count = mle_terms(logits, batch)
    kl = jnp.sum(losses.gaussian_kl(mean_q, logvar_q, mean_p, logvar_p), axis=-1)
    bow = losses.bow_loss(self._heads(params, z, cond, method=CVAEHeads.bow_logits), resp,
                          (resp != 0).astype(jnp.float32))
    return {"loss": rec + kl_weight * kl + bow_weight * bow, "rec": rec, "tokens": count,
            "kl": kl, "bow": bow, "z": z, "mean_q": mean_q, "logvar_q": logvar_q,
            "mean_p": mean_p, "logvar_p": logvar_p}

  def iw_terms(self, params, batch, key, num_samples: int, chunk: int) -> dict:
    """Per-example ``[B]`` ``iw`` (the K-sample bound ``L_K <= log p(x | c)``, Burda et al.
    2016) and ``elbo`` (``mean_k log w_k`` of the same draws) of the CVAE (no dropout).

    ``log w_k = log p(x | z_k, c) + log p(z_k | c) - log q(z_k | x, c)``, ``z_k ~ q``, with
    the conditional prior network ``p(z | c)`` that generation samples from. Draw ``k``
    reads key ``k`` of ``split(key, num_samples)`` (``z_k = mean_q + exp(logvar_q / 2)
    N(0, I)`` ``[B, L]``), ``chunk`` draws per decoder pass.
    """
    memory, cond, e = self.condition(params, batch["context"], batch["label"])
    mean_q, logvar_q = self.posterior(params, response_tokens(batch, self.eos), cond)
    mean_p, logvar_p = self.prior(params, cond)

    def draw(k):
      z = losses.gaussian_sample(k, mean_q, logvar_q)
      rec, _ = mle_terms(self.decode_logits(params, memory,
                                            self.initial_state(params, memory, e, z),
                                            batch["response_in"]), batch)
      return (-rec, likelihood.gaussian_log_density(z, mean_p, logvar_p),
              likelihood.gaussian_log_density(z, mean_q, logvar_q))

    lw = likelihood.chunked_samples(jax.vmap(draw), key, num_samples, chunk)
    return {"iw": likelihood.importance_weighted_bound(*lw),
            "elbo": likelihood.elbo_estimate(*lw)}

  def sequence_log_probs(self, params, context, label, eps, tokens, latent_source="prior",
                         batch=None):
    """Differentiable ``log P(G_t)`` ``[B, L]`` of generated ``tokens [B, L]`` (teacher forcing).

    Rebuilds the generation's ``z = mean + exp(logvar / 2) eps`` (prior, or posterior of
    ``batch``'s response) and scores ``tokens`` under the masked distribution
    :mod:`vedgan.decode` chose them from (PAD/BOS/UNK forbidden, no dropout). Positions
    after EOS hold the log-probability of EOS; the caller masks them.
    """
    memory, cond, e = self.condition(params, context, label, False)
    if latent_source == "prior":
      mean, logvar = self.prior(params, cond)
    else:
      mean, logvar = self.posterior(params, response_tokens(batch, self.eos), cond)
    z = mean + jnp.exp(0.5 * logvar) * eps
    done = jnp.cumsum((tokens == self.eos).astype(jnp.int32), axis=-1)
    after_eos = (done - (tokens == self.eos)) > 0
    safe = jnp.where(after_eos, self.eos, tokens)
    tokens_in = jnp.concatenate([jnp.full_like(safe[:, :1], self.tokenizer.bos_id),
                                 safe[:, :-1]], axis=1)
    logits = self.decode_logits(params, memory, self.initial_state(params, memory, e, z),
                                tokens_in, False)
    banned = np.zeros((logits.shape[-1],), bool)
    banned[list(decode.special_ids(self.tokenizer, True)["forbid_ids"])] = True
    logits = jnp.where(banned, _NEG, logits)
    return losses.token_log_probs(logits, safe)

  # -- decoding ---------------------------------------------------------------------
  def decode(self, params, memory, h0, key, options: DecodeOptions,
             max_len: int) -> decode.DecodeOutput:
    """Free-running decoding from ``h0 [B, H]`` (no dropout) as ``options`` says."""

    def step(mem, h, tokens):
      h, logits, _ = self._s2s(params, mem, h, tokens, method=Seq2Seq.decode_step)
      return h, logits

    return decode.conditional(step, memory, h0, key, options, h0.shape[0], int(max_len),
                              decode.special_ids(self.tokenizer, options.forbid_unk))

  def best_of(self, params, context, label, key, latent, options: DecodeOptions,
              max_len: int, num_samples: int):
    """Supplement "Generation": ``num_samples`` candidates per input, the classifier's
    favourite kept. Pure and traceable (``latent`` may be traced).

    Each candidate draws its own ``z ~ p(z | c)`` (``z = 0`` when ``latent`` is false:
    the base model) and is decoded by ``options``; the candidate whose designated emoji
    ``label [B]`` the classifier rates most probable is returned.

    Returns:
      ``(DecodeOutput [B, max_len], info)``, ``info`` of ``[B]`` arrays: ``label_prob`` /
      ``rank`` of the returned response, ``label_prob_first`` / ``rank_first`` of the first
      candidate alone.
    """
    b, n = context.shape[0], int(num_samples)
    ctx = jnp.tile(context, (n, 1))
    lab = jnp.tile(label, n)
    memory, cond, e = self.condition(params, ctx, lab)
    mean, logvar = self.prior(params, cond)
    z = jnp.where(latent, losses.gaussian_sample(jax.random.fold_in(key, 0), mean, logvar), 0.0)
    out = self.decode(params, memory, self.initial_state(params, memory, e, z),
                      jax.random.fold_in(key, 1), options, max_len)
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
