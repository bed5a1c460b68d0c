"""Seq2seq-attention baseline trained by maximum likelihood (masked token cross-entropy).

Batches (see :mod:`vedgan.data.pipeline`): ``context[B, S]``, ``response_in[B, T]``
(``[bos, y...]``), ``response_out[B, T]`` (``[y..., eos]``), pad = 0, and in
evaluation ``weight[B]`` (0 for padding rows).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vedgan import decode, losses
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.objectives import base

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_seq2seq(model_config, vocab_size: int) -> Seq2Seq:
  """The :class:`Seq2Seq` module described by ``config.model``."""
  if model_config.dtype not in DTYPES:
    raise base.ConfigError(f"model.dtype={model_config.dtype!r} must be one of {sorted(DTYPES)}")
  return Seq2Seq(vocab_size=vocab_size, embed_dim=model_config.embed_dim,
                 hidden=model_config.hidden, encoder_layers=model_config.encoder_layers,
                 attention=model_config.attention, tie_embeddings=model_config.tie_embeddings,
                 dropout=model_config.dropout, dtype=DTYPES[model_config.dtype],
                 unroll=model_config.get("unroll", 1), remat=model_config.get("remat", False))


def token_mask(tokens: jax.Array) -> jax.Array:
  """1.0 where ``tokens`` is not pad (0)."""
  return (tokens != 0).astype(jnp.float32)


def mle_terms(logits, batch):
  """Per-sequence NLL sums and token counts of ``batch['response_out']`` (each ``[B]``)."""
  return losses.sequence_cross_entropy(logits, batch["response_out"],
                                       token_mask(batch["response_out"]))


@base.register("seq2seq")
class Seq2SeqObjective(base.Objective):
  """MLE seq2seq with Luong attention (the core baseline every paper starts from)."""

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.model = build_seq2seq(config.model, tokenizer.vocab_size)
    self.tx = base.make_optimizer(config.optimizer)

  # -- state --------------------------------------------------------------------
  def init(self, rng: jax.Array, batch) -> base.TrainState:
    params = self.model.init({"params": rng}, batch["context"], batch["response_in"])["params"]
    return base.TrainState(step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
                           params={"model": params},
                           opt_state={"model": self.tx.init(params)})

  # -- training -----------------------------------------------------------------
  STEPS = ("mle",)

  @property
  def step_builders(self):
    return {"mle": self.build_mle_step}

  def build_mle_step(self, stage, start: int):
    """Per-device MLE step: loss = sum NLL / global token count, gradients psum'd."""

    chunk = int(self.config.model.get("loss_chunk", 0))

    def nll_fn(params, batch, rng):
      if chunk > 0:  # chunked output layer: no [B, T, V] logits (model.loss_chunk)
        return self.model.apply({"params": params}, batch["context"], batch["response_in"],
                                batch["response_out"], chunk, train=True, rngs={"dropout": rng},
                                method=Seq2Seq.sequence_nll)
      logits = self.model.apply({"params": params}, batch["context"], batch["response_in"],
                                train=True, rngs={"dropout": rng})
      return mle_terms(logits, batch)

    return base.build_mle_step(self.tx, "model", nll_fn, stage, start)

  # -- evaluation ---------------------------------------------------------------
  def eval_step(self, state: base.TrainState, batch):
    """Per-device sums: ``nll``, ``tokens``, ``examples`` (padding rows weigh 0)."""
    chunk = int(self.config.model.get("loss_chunk", 0))
    if chunk > 0:
      nll, count = self.model.apply({"params": state.params["model"]}, batch["context"],
                                    batch["response_in"], batch["response_out"], chunk,
                                    method=Seq2Seq.sequence_nll)
    else:
      logits = self.model.apply({"params": state.params["model"]}, batch["context"],
                                batch["response_in"])
      nll, count = mle_terms(logits, batch)
    w = batch["weight"]
    return {"nll": (nll * w).sum(), "tokens": (count * w).sum(), "examples": w.sum()}

  def summarize(self, sums):
    """Validation scalars from summed statistics: token NLL and perplexity."""
    nll = float(sums["nll"]) / max(float(sums["tokens"]), 1.0)
    return {"nll": nll, "perplexity": float(jnp.exp(nll)), "examples": float(sums["examples"])}

  # -- generation ---------------------------------------------------------------
  def generate(self, state: base.TrainState, context: jax.Array, rng: jax.Array | None = None,
               mode: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
               top_k: int = 0, beam_width: int = 4, length_penalty: float = 0.0,
               forbid_unk: bool = True) -> decode.DecodeOutput:
    """Responses for ``context[B, S]`` by ``mode`` in greedy|sample|beam (jitted)."""
    max_len = max_len or self.config.data.max_response_len
    return _generate(self.model, self.tokenizer_ids(forbid_unk), mode, max_len, temperature,
                     top_k, beam_width, length_penalty, state.params["model"], context,
                     jax.random.key(0) if rng is None else rng)

  def tokenizer_ids(self, forbid_unk: bool):
    t = self.tokenizer
    forbid = (t.pad_id, t.bos_id) + ((t.unk_id,) if forbid_unk else ())
    return (t.bos_id, t.eos_id, t.pad_id, forbid)


# temperature (argument 4) is traced: a temperature sweep compiles once per mode.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 5, 6, 7))
def _generate(model, ids, mode, max_len, temperature, top_k, beam_width, length_penalty, params,
              context, rng):
  bos, eos, pad, forbid = ids
  variables = {"params": params}
  memory = model.apply(variables, context, method=Seq2Seq.encode)
  h0 = model.apply(variables, memory, method=Seq2Seq.initial_state)
  batch = context.shape[0]
  if mode == "beam":
    memory = decode.tile_for_beam(memory, beam_width)
    h0 = decode.tile_for_beam(h0, beam_width)

  def step_fn(h, tokens):
    h, logits, _ = model.apply(variables, memory, h, tokens, method=Seq2Seq.decode_step)
    return h, logits

  common = dict(batch_size=batch, max_len=max_len, bos_id=bos, eos_id=eos, pad_id=pad,
                forbid_ids=forbid)
  return decode.run(mode, step_fn, h0, rng, temperature=temperature, top_k=top_k,
                    beam_width=beam_width, length_penalty=length_penalty, **common)
