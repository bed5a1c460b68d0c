"""Seq2seq-attention trained by maximum likelihood (masked token cross-entropy).

    for each batch (context x, response y):                      stream "train"
        L = -sum_t log p(y_t | y_<t, x) / #tokens                  Eq. (MLE)
        update the network "model"

Batches (:mod:`vedgan.data.pipeline`): ``context[B, S]``, ``response_in[B, T]``
(``[bos, y...]``), ``response_out[B, T]`` (``[y..., eos]``), pad = 0, and
``weight[B]`` (0 for padding rows).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vedgan import decode, losses
from vedgan.errors import ConfigError
from vedgan.nn import attention as attention_lib
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.objective import Generation, Objective, register
from vedgan.plots import Panel
from vedgan.steps import Step, Weighted

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: the (encode, start, step) methods of free-running decoding (decode.module_conditional)
DECODER_METHODS = (Seq2Seq.encode, Seq2Seq.initial_state, Seq2Seq.decode_step)


def build_seq2seq(model_config, vocab_size: int) -> Seq2Seq:
  """The :class:`Seq2Seq` module described by ``config.model``."""
  if model_config.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={model_config.dtype!r} must be one of {sorted(DTYPES)}")
  if model_config.attention not in attention_lib.SCORES:
    raise ConfigError(f"model.attention={model_config.attention!r} must be one of "
                      f"{attention_lib.SCORES} (Luong et al.'s scores)")
  return Seq2Seq(vocab_size=vocab_size, embed_dim=model_config.embed_dim,
                 hidden=model_config.hidden, encoder_layers=model_config.encoder_layers,
                 attention=model_config.attention, tie_embeddings=model_config.tie_embeddings,
                 dropout=model_config.dropout, dtype=DTYPES[model_config.dtype],
                 unroll=model_config.unroll, remat=model_config.remat)


def token_mask(tokens: jax.Array) -> jax.Array:
  """1.0 where ``tokens`` is not pad (0)."""
  return (tokens != 0).astype(jnp.float32)


def sequence_nll(model: Seq2Seq, params, batch, chunk: int, rng=None):
  """Teacher-forced ``(nll_sum [B], token_count [B])`` of ``batch["response_out"]``;
  dropout when ``rng`` is given; ``chunk > 0``: chunked output layer, no ``[B, T, V]``."""
  train = rng is not None
  rngs = {"dropout": rng} if train else None
  if chunk > 0:
    return model.apply({"params": params}, batch["context"], batch["response_in"],
                       batch["response_out"], chunk, train=train, rngs=rngs,
                       method=Seq2Seq.sequence_nll)
  logits = model.apply({"params": params}, batch["context"], batch["response_in"], train=train,
                       rngs=rngs)
  return losses.sequence_cross_entropy(logits, batch["response_out"],
                                       token_mask(batch["response_out"]))


@register("seq2seq")
class Seq2SeqObjective(Objective):
  """MLE seq2seq with Luong attention."""

  STEPS = ("mle",)
  #: the training loss (token-mean NLL, dropout on) and the validation NLL on one axis, so
  #: overfitting shows; the perplexity on a log axis.
  PLOT_GROUPS = {
      "likelihood": (
          Panel("token NLL, train and validation", ("train loss = loss",
                                                    "validation NLL = validation/nll"),
                ylabel="nats per token"),
          Panel("validation perplexity", ("validation/perplexity",), log_y=True)),
  }

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.model = build_seq2seq(config.model, tokenizer.vocab_size)
    self.chunk = int(config.model.loss_chunk)

  def init(self, rng, batch):
    params = self.model.init({"params": rng}, batch["context"], batch["response_in"])["params"]
    return self.new_state(rng, {"model": params})

  # -- the algorithm ------------------------------------------------------------
  def steps(self):
    return {"mle": Step(trains=("model",), loss=self.mle_loss)}

  def mle_loss(self, params, batch, ctx):
    """Token-mean NLL of the gold responses (dropout on)."""
    nll, count = sequence_nll(self.model, params["model"], batch, self.chunk, ctx.rng)
    return Weighted(nll.sum(), count.sum()), {"tokens": ctx.global_sum(count.sum())}

  # -- evaluation -----------------------------------------------------------------
  def eval_step(self, state, batch):
    """Per-device sums: ``nll``, ``tokens``, ``examples`` (padding rows weigh 0)."""
    nll, count = sequence_nll(self.model, state.params["model"], batch, self.chunk)
    w = batch["weight"]
    return {"nll": (nll * w).sum(), "tokens": (count * w).sum(), "examples": w.sum()}

  def summarize(self, sums):
    """Token NLL and perplexity."""
    nll = float(sums["nll"]) / max(float(sums["tokens"]), 1.0)
    return {"nll": nll, "perplexity": float(jnp.exp(nll)), "examples": float(sums["examples"])}

  # -- generation -------------------------------------------------------------------
  def prompt_batch(self, inputs, prompts, label=None):
    del label
    return {"context": inputs.encode_contexts(self.config, prompts)}

  def generate(self, state, batch, rng, options):
    """Responses for ``batch["context"] [B, S]`` (greedy | sample | beam, jitted)."""
    return respond(self.model, self.tokenizer, self.config, state.params["model"], batch, rng,
                   options)


def respond(model: Seq2Seq, tokenizer, config, params, batch, rng, options) -> Generation:
  """Free-running responses of a :class:`Seq2Seq` to ``batch["context"] [B, S]`` (jitted);
  ``options.max_len`` 0: ``config.data.max_response_len``."""
  max_len = options.max_len or int(config.data.max_response_len)
  ids = decode.special_ids(tokenizer, options.forbid_unk)
  out = decode.jit_module_conditional(model, DECODER_METHODS, params, batch["context"], rng,
                                      options=options, max_len=max_len,
                                      ids=tuple(sorted(ids.items())))
  return Generation(out.tokens, out.lengths, out.scores)
