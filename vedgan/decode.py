"""Model-agnostic autoregressive decoding: greedy, temperature/top-k sampling, beam search.

Every decoder here drives a *step function*::

    step_fn(carry, tokens) -> (new_carry, logits)
      tokens: [N] int32   the previous token of every row (BOS at the first step)
      logits: [N, V]      next-token logits (cast to float32 here)

``carry`` is any pytree whose leaves all have leading dimension ``N``, the
rows being decoded: ``N = B`` for :func:`greedy` and :func:`sample`,
``N = B * beam_width`` for :func:`beam_search` (row ``b * beam_width + k`` is
beam ``k`` of batch element ``b``, the layout :func:`tile_for_beam` produces).
``new_carry`` must have the structure, shapes and dtypes of ``carry``. Beam
search reorders the carry every step by gathering rows (``x[flat_idx]``) of
every leaf; rows only move within their batch element, so per-example constants
such as encoder outputs may instead be closed over (tiled to ``[B*beam, ...]``)
to save the gather. The step function must be pure; it is a closure over the
model parameters, e.g.::

    step_fn = lambda c, tok: model.apply(params, c, tok, method=Model.decode_step)

Shapes are static (``lax.scan`` over ``max_len`` for greedy/sampling,
``lax.while_loop`` with at most ``max_len`` iterations for beam search) and
nothing goes back to the host, so a decode call can sit inside a jitted
function. Do not ``jax.jit`` the decoder with ``step_fn`` as a static argument
when ``step_fn`` closes over parameters (that bakes the parameters into the
program as constants and recompiles for every new closure); instead jit a
function that takes the parameters as an argument and builds the closure
inside::

    @functools.partial(jax.jit, static_argnames=("max_len", "beam_width"))
    def generate(params, src, max_len, beam_width):
      carry = model.apply(params, src, method=Model.encode)         # leaves [B, ...]
      step = lambda c, tok: model.apply(params, c, tok, method=Model.decode_step)
      return decode.beam_search(step, carry, src.shape[0], max_len, BOS, EOS,
                                beam_width=beam_width, forbid_ids=(PAD, BOS, UNK))

``batch_size``, ``max_len``, ``beam_width``, ``top_k`` and ``forbid_ids`` must
be Python values (static under jit); the token ids, ``min_len``,
``temperature`` and ``length_penalty`` may be Python numbers or traced scalars.

Conventions shared by all decoders:

* Logits of ``forbid_ids`` (e.g. ``<unk>``, PAD, BOS) are set to ``-inf``; EOS
  may not be forbidden. While fewer than ``min_len`` tokens have been
  generated, EOS is masked too (so at least ``min_len`` non-EOS tokens precede
  EOS, as in Hugging Face's ``min_new_tokens``).
* ``log_probs`` are log-probabilities of the chosen tokens under the
  distribution the token was actually chosen from: ``log_softmax`` of the
  masked logits (divided by the temperature and restricted to the top-k for
  :func:`sample`, i.e. renormalised over the surviving tokens).
* The output ``tokens`` hold the generated tokens after BOS (BOS itself is not
  included), EOS included, PAD after EOS. ``lengths`` counts tokens up to and
  including EOS, or ``max_len`` when no EOS was produced.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence, TypeVar

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vedgan import decode_constraints as constraints
from vedgan import relax
from vedgan.decode_options import DecodeOptions, special_ids  # noqa: F401  (re-exported)
from vedgan.errors import ConfigError

Carry = TypeVar("Carry")
StepFn = Callable[[Carry, jax.Array], tuple[Carry, jax.Array]]

__all__ = [
    "DecodeOutput",
    "StepFn",
    "beam_search",
    "greedy",
    "gnmt_length_penalty",
    "sample",
    "tile_for_beam",
]


@flax.struct.dataclass
class DecodeOutput:
  """Result of a decode call.

  Attributes (``B`` batch, ``L`` = ``max_len``; :func:`beam_search` with
  ``return_all=True`` adds a beam axis ``K`` = ``beam_width`` after ``B``,
  hypotheses sorted best first):
    tokens: ``[B, L]`` int32 generated tokens after BOS, EOS included, PAD after EOS.
    lengths: ``[B]`` int32 tokens up to and including EOS, or ``L`` without EOS.
    log_probs: ``[B, L]`` float32 log-probability of each chosen token (0 on PAD
      after EOS); see the module docstring for the distribution.
    scores: ``[B]`` float32. Greedy/sampling: ``sum(log_probs)``. Beam search:
      the final score ``sum(log_probs) / gnmt_length_penalty(lengths, alpha)``;
      ``-inf`` marks an empty slot (fewer complete hypotheses than beams).
  """
  tokens: jax.Array
  lengths: jax.Array
  log_probs: jax.Array
  scores: jax.Array


def tile_for_beam(carry: Any, beam_width: int) -> Any:
  """Repeats each row of every leaf ``beam_width`` times: ``[B, ...] -> [B*beam_width, ...]``.

  Row ``b * beam_width + k`` of the result is row ``b`` of the input (beam ``k``
  of batch element ``b``), the layout :func:`beam_search` uses.

  >>> tile_for_beam(jnp.array([[1], [2]]), 2)[:, 0]
  Array([1, 1, 2, 2], dtype=int32)
  """
  return jax.tree.map(lambda x: jnp.repeat(x, beam_width, axis=0), carry)


def gnmt_length_penalty(length: jax.Array, alpha: float | jax.Array) -> jax.Array:
  """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016, eq. 14).

  Beam search divides a hypothesis' summed log-probability by this; ``alpha = 0``
  gives 1 (no normalisation), larger ``alpha`` favours longer hypotheses.
  """
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


# ----------------------------------------------------------------------------
# Shared helpers.


def _check_static_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be a Python int (static under jit), got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def _is_concrete(x: Any) -> bool:
  """True for Python/NumPy scalars (never for jax arrays or tracers)."""
  return isinstance(x, (int, float, np.integer, np.floating))


def _normalise_forbid(forbid_ids: Sequence[int], eos_id: Any) -> tuple[int, ...]:
  forbid = tuple(int(i) for i in forbid_ids)
  if _is_concrete(eos_id) and int(eos_id) in forbid:
    raise ValueError(f"eos_id={eos_id} must not be in forbid_ids={forbid}")
  return forbid


def _check_carry(carry: Any, rows: int, what: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(carry):
    shape = jnp.shape(leaf)
    if not shape or shape[0] != rows:
      raise ValueError(
          f"every carry leaf needs leading dimension {what}={rows}; leaf "
          f"{jax.tree_util.keystr(path)} has shape {shape}")


def _masked_logits(logits: jax.Array, rows: int, t: jax.Array, eos_id: Any,
                   forbid: tuple[int, ...], min_len: Any) -> jax.Array:
  """``[N, V]`` float32 logits with forbidden ids (and EOS while ``t < min_len``) at -inf."""
  if logits.ndim != 2 or logits.shape[0] != rows:
    raise ValueError(f"step_fn must return logits of shape [{rows}, V], got {logits.shape}")
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  if forbid:
    if max(forbid) >= vocab or min(forbid) < 0:
      raise ValueError(f"forbid_ids {forbid} out of range for vocabulary size {vocab}")
    banned = np.zeros((vocab,), bool)
    banned[list(forbid)] = True
    logits = jnp.where(banned, -jnp.inf, logits)
  if not (_is_concrete(min_len) and min_len <= 0):
    is_eos = jnp.arange(vocab) == eos_id
    logits = jnp.where(is_eos & (t < min_len), -jnp.inf, logits)
  return logits


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
  """``x[n, idx[n]]`` for ``x`` ``[N, V]`` and ``idx`` ``[N]``."""
  return jnp.take_along_axis(x, idx[:, None], axis=1)[:, 0]


def _scan_decode(step_fn: StepFn, init_carry: Any, batch_size: int, max_len: int,
                 bos_id: Any, eos_id: Any, pad_id: Any, forbid: tuple[int, ...],
                 min_len: Any, choose: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
                 penalty: float = 1.0, no_repeat_ngram: int = 0) -> DecodeOutput:
  """Greedy/sampling loop: ``choose(masked_logits [B, V], t) -> (tokens [B], log_probs [B])``;
  the history ``[B, L]`` of emitted tokens feeds :func:`decode_constraints.constrain`."""
  _check_carry(init_carry, batch_size, "batch_size")
  constrained = constraints.active(penalty, no_repeat_ngram)

  def body(state, t):
    carry, prev, done, history = state
    carry, logits = step_fn(carry, prev)
    logits = _masked_logits(logits, batch_size, t, eos_id, forbid, min_len)
    if constrained:
      logits = constraints.constrain(logits, history, t, penalty, no_repeat_ngram)
    tok, logp = choose(logits, t)
    tok = jnp.where(done, pad_id, tok).astype(jnp.int32)
    logp = jnp.where(done, 0.0, logp).astype(jnp.float32)
    emitted = ~done
    done = done | (tok == eos_id)
    if constrained:
      history = lax.dynamic_update_slice_in_dim(history, tok[:, None], t, axis=1)
    return (carry, tok, done, history), (tok, logp, emitted)

  init = (init_carry, jnp.full((batch_size,), bos_id, jnp.int32),
          jnp.zeros((batch_size,), bool),
          jnp.full((batch_size, max_len if constrained else 1), pad_id, jnp.int32))
  _, (tokens, log_probs, emitted) = lax.scan(body, init, jnp.arange(max_len))
  tokens, log_probs = tokens.T, log_probs.T
  return DecodeOutput(tokens=tokens,
                      lengths=jnp.sum(emitted, axis=0, dtype=jnp.int32),
                      log_probs=log_probs,
                      scores=jnp.sum(log_probs, axis=1))


# ----------------------------------------------------------------------------
# Public decoders.


def greedy(step_fn: StepFn, init_carry: Any, batch_size: int, max_len: int, bos_id: int,
           eos_id: int, pad_id: int = 0, forbid_ids: Sequence[int] = (),
           min_len: int | jax.Array = 0, repetition_penalty: float = 1.0,
           no_repeat_ngram: int = 0) -> DecodeOutput:
  """Greedy decoding: the arg-max token at every step.

  Args:
    step_fn: ``(carry, tokens [B] int32) -> (carry, logits [B, V])``, pure.
    init_carry: pytree, every leaf ``[B, ...]``.
    batch_size: ``B`` (static).
    max_len: ``L``, number of steps (static).
    bos_id, eos_id, pad_id: special token ids.
    forbid_ids: ids that are never emitted (static tuple); must not contain EOS.
    min_len: EOS is masked at steps ``t < min_len``.
    repetition_penalty, no_repeat_ngram: :mod:`vedgan.decode_constraints` (static; 1 and 0
      are off; every decoder takes them).

  Returns:
    :class:`DecodeOutput` with ``tokens``/``log_probs`` ``[B, L]``,
    ``lengths``/``scores`` ``[B]``; ``log_probs`` are under
    ``log_softmax(masked logits)``.
  """
  batch_size = _check_static_int("batch_size", batch_size, 1)
  max_len = _check_static_int("max_len", max_len, 1)
  forbid = _normalise_forbid(forbid_ids, eos_id)
  penalty, ngram = _check_constraints(repetition_penalty, no_repeat_ngram)

  def choose(logits, t):
    del t
    tok = relax.first_argmax(logits)
    return tok, _take(jax.nn.log_softmax(logits), tok)

  return _scan_decode(step_fn, init_carry, batch_size, max_len, bos_id, eos_id, pad_id,
                      forbid, min_len, choose, penalty, ngram)


def _check_constraints(penalty: Any, ngram: Any) -> tuple[float, int]:
  penalty = float(penalty)
  if not penalty > 0:
    raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {penalty}")
  return penalty, _check_static_int("no_repeat_ngram", ngram, 0)


def sample(step_fn: StepFn, init_carry: Any, key: jax.Array, batch_size: int, max_len: int,
           bos_id: int, eos_id: int, pad_id: int = 0,
           temperature: float | jax.Array = 1.0, top_k: int = 0, top_p: float = 1.0,
           forbid_ids: Sequence[int] = (), min_len: int | jax.Array = 0,
           repetition_penalty: float = 1.0, no_repeat_ngram: int = 0) -> DecodeOutput:
  """Ancestral sampling from ``softmax(masked_logits / temperature)``, optionally top-k.

  Step ``t`` draws with ``jax.random.fold_in(key, t)``, so a decode is a
  deterministic function of ``key``.

  Args:
    step_fn: ``(carry, tokens [B] int32) -> (carry, logits [B, V])``, pure.
    init_carry: pytree, every leaf ``[B, ...]``.
    key: PRNG key (typed ``jax.random.key`` or raw ``PRNGKey``).
    batch_size: ``B`` (static).
    max_len: ``L`` (static).
    bos_id, eos_id, pad_id: special token ids.
    temperature: ``>= 0``; ``0`` means greedy (same output as :func:`greedy`,
      log-probs under the untempered distribution). May be traced, in which case
      a traced 0 also falls back to greedy.
    top_k: if ``0 < top_k < V``, sample only among the ``top_k`` most probable
      tokens (static int; exactly ``top_k`` candidates, ties broken by lower id).
    top_p: nucleus sampling (static, in ``(0, 1]``; 1 = off): only the most probable
      tokens whose probability reaches ``top_p`` (after the temperature and top-k).
    forbid_ids: ids never emitted (static tuple); must not contain EOS.
    min_len: EOS is masked at steps ``t < min_len``.
    repetition_penalty, no_repeat_ngram: as :func:`greedy`.

  Returns:
    :class:`DecodeOutput` with ``[B, L]`` tokens/log_probs, ``[B]``
    lengths/scores; ``log_probs`` are under the distribution sampled from
    (masked, temperature-scaled, renormalised over the top-k).
  """
  batch_size = _check_static_int("batch_size", batch_size, 1)
  max_len = _check_static_int("max_len", max_len, 1)
  top_k = _check_static_int("top_k", top_k, 0)
  top_p = float(top_p)
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  forbid = _normalise_forbid(forbid_ids, eos_id)
  penalty, ngram = _check_constraints(repetition_penalty, no_repeat_ngram)
  if _is_concrete(temperature):
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
      return greedy(step_fn, init_carry, batch_size, max_len, bos_id, eos_id, pad_id,
                    forbid, min_len, penalty, ngram)
    traced_temperature = False
  else:
    traced_temperature = True
  temperature = jnp.asarray(temperature, jnp.float32)
  safe_temperature = jnp.where(temperature > 0, temperature, 1.0)

  def choose(logits, t):
    step_key = jax.random.fold_in(key, t)
    scaled = logits / safe_temperature
    if top_p < 1:
      scaled = constraints.nucleus(scaled, top_p)
    if 0 < top_k < logits.shape[-1]:
      values, ids = lax.top_k(scaled, top_k)             # [B, k], sorted
      pick = relax.gumbel_max(step_key, values, axis=-1)
      tok = _take(ids, pick).astype(jnp.int32)
      logp = _take(jax.nn.log_softmax(values), pick)
    else:
      tok = relax.gumbel_max(step_key, scaled, axis=-1)
      logp = _take(jax.nn.log_softmax(scaled), tok)
    if traced_temperature:
      arg_max = relax.first_argmax(logits)
      tok = jnp.where(temperature > 0, tok, arg_max)
      logp = jnp.where(temperature > 0, logp, _take(jax.nn.log_softmax(logits), arg_max))
    return tok, logp

  return _scan_decode(step_fn, init_carry, batch_size, max_len, bos_id, eos_id, pad_id,
                      forbid, min_len, choose, penalty, ngram)


def beam_search(step_fn: StepFn, init_carry: Any, batch_size: int, max_len: int, bos_id: int,
                eos_id: int, pad_id: int = 0, beam_width: int = 4,
                length_penalty: float | jax.Array = 0.0, forbid_ids: Sequence[int] = (),
                return_all: bool = False, min_len: int | jax.Array = 0,
                repetition_penalty: float = 1.0, no_repeat_ngram: int = 0) -> DecodeOutput:
  """Beam search with GNMT length normalisation.

  The search keeps ``K = beam_width`` *alive* hypotheses per batch element and
  a separate buffer of the ``K`` best *finished* ones. At step ``t`` every alive
  hypothesis is extended by every token; the ``K`` best extensions by summed
  log-probability are kept (all have length ``t + 1``, so the length penalty
  does not change this choice). Extensions ending in EOS move to the finished
  buffer with score ``sum_log_prob / gnmt_length_penalty(t + 1, alpha)`` and
  leave a dead (``-inf``) alive slot; the others stay alive, their carry rows
  gathered from their parents. Finished hypotheses keep their score and are
  PAD after EOS. Only beam 0 is alive at ``t = 0``, so the first step yields
  ``K`` distinct hypotheses. Hypotheses alive after ``max_len`` steps count as
  complete with length ``max_len``. With ``beam_width=1`` this is exactly
  :func:`greedy`.

  The loop (``lax.while_loop``) stops early once, for every batch element, no
  alive hypothesis can still beat the best finished one (the ``K``-th best with
  ``return_all=True``): summed log-probabilities only decrease, so
  ``best_alive / max(lp(t+1), lp(max_len))`` bounds any later score. This does
  not change the returned hypotheses.

  Args:
    step_fn: ``(carry, tokens [B*K] int32) -> (carry, logits [B*K, V])``, pure.
    init_carry: pytree whose leaves are all ``[B, ...]`` (tiled here with
      :func:`tile_for_beam`) or all ``[B*K, ...]`` (already tiled).
    batch_size: ``B`` (static).
    max_len: ``L`` (static).
    bos_id, eos_id, pad_id: special token ids.
    beam_width: ``K`` (static).
    length_penalty: GNMT ``alpha``; 0 ranks by summed log-probability.
    forbid_ids: ids never emitted (static tuple); must not contain EOS.
    return_all: also return the other hypotheses (static).
    min_len: EOS is masked at steps ``t < min_len``.
    repetition_penalty, no_repeat_ngram: as :func:`greedy`, on each hypothesis's own tokens.

  Returns:
    :class:`DecodeOutput`: the best hypothesis, ``tokens``/``log_probs``
    ``[B, L]`` and ``lengths``/``scores`` ``[B]``; with ``return_all=True`` the
    ``K`` best complete hypotheses sorted by score, ``[B, K, L]`` and ``[B, K]``
    (empty slots, when fewer than ``K`` complete hypotheses exist, have score
    ``-inf``, length 0 and PAD tokens). ``log_probs`` are under
    ``log_softmax(masked logits)``; ``scores`` are length-normalised.
  """
  B = _check_static_int("batch_size", batch_size, 1)
  L = _check_static_int("max_len", max_len, 1)
  K = _check_static_int("beam_width", beam_width, 1)
  N = B * K
  forbid = _normalise_forbid(forbid_ids, eos_id)
  penalty, ngram = _check_constraints(repetition_penalty, no_repeat_ngram)
  alpha = length_penalty
  neg_inf = jnp.float32(-jnp.inf)

  leading = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(init_carry)}
  if leading == {B} and K > 1:
    init_carry = tile_for_beam(init_carry, K)
  _check_carry(init_carry, N, "batch_size*beam_width")

  def lp(length):
    return gnmt_length_penalty(length, alpha)

  batch_offset = (jnp.arange(B, dtype=jnp.int32) * K)[:, None]       # [B, 1]

  def gather_beams(x, idx):
    """``x`` ``[B, M, ...]``, ``idx`` ``[B, K']`` -> ``[B, K', ...]``."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)

  def merge_finished(fin, new_seq, new_lp, new_len, new_score):
    """Top-K of the finished buffer and ``[B, M]`` new complete hypotheses (buffer first on ties)."""
    seq, lps, length, score = fin
    all_score = jnp.concatenate([score, new_score], axis=1)
    top_score, idx = lax.top_k(all_score, K)
    return (gather_beams(jnp.concatenate([seq, new_seq], axis=1), idx),
            gather_beams(jnp.concatenate([lps, new_lp], axis=1), idx),
            gather_beams(jnp.concatenate([length, new_len], axis=1), idx),
            top_score)

  def cond(state):
    t, _, _, _, _, alive_score, fin = state
    best_alive = jnp.max(alive_score, axis=1)                            # [B]
    bound = best_alive / jnp.maximum(lp(t + 1), lp(L))
    threshold = fin[3][:, K - 1] if return_all else fin[3][:, 0]
    batch_done = (best_alive == neg_inf) | (threshold > bound)
    return (t < L) & ~jnp.all(batch_done)

  def body(state):
    t, carry, prev, alive_seq, alive_lp, alive_score, fin = state
    carry, logits = step_fn(carry, prev)
    logits = _masked_logits(logits, N, t, eos_id, forbid, min_len)
    if constraints.active(penalty, ngram):
      logits = constraints.constrain(logits, alive_seq.reshape(N, L), t, penalty, ngram)
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits).reshape(B, K * vocab)
    cand = (alive_score[:, :, None] + logp.reshape(B, K, vocab)).reshape(B, K * vocab)
    top_score, top_idx = lax.top_k(cand, K)                               # [B, K]
    parent = top_idx // vocab
    tok = (top_idx % vocab).astype(jnp.int32)
    tok_lp = jnp.take_along_axis(logp, top_idx, axis=1)
    seq = lax.dynamic_update_slice_in_dim(gather_beams(alive_seq, parent), tok[..., None], t,
                                          axis=2)                         # [B, K, L]
    lps = lax.dynamic_update_slice_in_dim(gather_beams(alive_lp, parent), tok_lp[..., None], t,
                                          axis=2)
    is_eos = tok == eos_id

    fin = merge_finished(fin, seq, lps, jnp.full((B, K), t + 1, jnp.int32),
                         jnp.where(is_eos, top_score / lp(t + 1), neg_inf))
    alive_score = jnp.where(is_eos, neg_inf, top_score)
    flat = (batch_offset + parent).reshape(N)
    carry = jax.tree.map(lambda x: x[flat], carry)
    return (t + 1, carry, tok.reshape(N), seq, lps, alive_score, fin)

  init_alive_score = jnp.where(jnp.arange(K) == 0, 0.0, neg_inf)
  state = (
      jnp.int32(0),
      init_carry,
      jnp.full((N,), bos_id, jnp.int32),
      jnp.full((B, K, L), pad_id, jnp.int32),
      jnp.zeros((B, K, L), jnp.float32),
      jnp.broadcast_to(init_alive_score, (B, K)).astype(jnp.float32),
      (jnp.full((B, K, L), pad_id, jnp.int32), jnp.zeros((B, K, L), jnp.float32),
       jnp.zeros((B, K), jnp.int32), jnp.full((B, K), neg_inf, jnp.float32)),
  )
  t, _, _, alive_seq, alive_lp, alive_score, fin = lax.while_loop(cond, body, state)

  # Hypotheses alive after the last step are complete with length L. (After an
  # early stop they cannot enter the returned set, so they are dropped.)
  alive_final = jnp.where(t == L, alive_score / lp(L), neg_inf)
  seq, lps, length, score = merge_finished(fin, alive_seq, alive_lp,
                                           jnp.full((B, K), L, jnp.int32), alive_final)
  empty = score == neg_inf
  seq = jnp.where(empty[..., None], pad_id, seq).astype(jnp.int32)
  lps = jnp.where(empty[..., None], 0.0, lps)
  length = jnp.where(empty, 0, length)
  if not return_all:
    seq, lps, length, score = seq[:, 0], lps[:, 0], length[:, 0], score[:, 0]
  return DecodeOutput(tokens=seq, lengths=length, log_probs=lps, scores=score)


MODES = ("greedy", "sample", "beam")


def run(mode: str, step_fn: StepFn, init_carry: Any, key: jax.Array, *, temperature: Any = 1.0,
        top_k: int = 0, top_p: float = 1.0, beam_width: int = 4, length_penalty: Any = 0.0,
        **common) -> DecodeOutput:
  """Decodes by name (``config.decode.mode``): :func:`greedy`, :func:`sample` or
  :func:`beam_search`. ``common`` holds their shared keywords (``batch_size``,
  ``max_len``, ``bos_id``, ``eos_id``, ``pad_id``, ``forbid_ids``, ``min_len``,
  ``repetition_penalty``, ``no_repeat_ngram``); ``key`` is used by sampling only. An
  unknown mode is a one-line ConfigError."""
  if mode == "greedy":
    return greedy(step_fn, init_carry, **common)
  if mode == "sample":
    return sample(step_fn, init_carry, key, temperature=temperature, top_k=top_k, top_p=top_p,
                  **common)
  if mode == "beam":
    return beam_search(step_fn, init_carry, beam_width=beam_width,
                       length_penalty=length_penalty, **common)
  check_mode(mode)
  raise AssertionError(mode)


def check_mode(mode: str) -> None:
  """A one-line ConfigError for a decoding mode that is not one of :data:`MODES` (the
  trainer checks ``config.decode.mode`` before anything is written)."""
  if mode not in MODES:
    raise ConfigError(f"decoding mode {mode!r} must be one of {', '.join(MODES)}; set "
                      "--config.decode.mode")


def conditional(step: Callable, memory: Any, carry: Any, key: jax.Array,
                options: DecodeOptions, batch_size: int, max_len: int, ids: dict,
                **extra) -> DecodeOutput:
  """Decodes responses of a conditional model whose encoder already ran: the one
  decode prologue of every conditional objective.

  Args:
    step: ``(memory, carry, tokens [N]) -> (carry, logits [N, V])``.
    memory: the encoder's output for ``batch_size`` rows (any pytree, rows first).
    carry: the decoder's initial state for those rows.
    key: sampling key.
    options: :class:`DecodeOptions` (mode, temperature, top-k, beam ...).
    batch_size, max_len: rows and generated length.
    ids: :func:`special_ids`; ``extra``: more keywords of :func:`run` (``min_len``).

  Beam search tiles ``memory`` and ``carry`` ``beam_width`` times first.
  """
  if options.mode == "beam":
    memory = tile_for_beam(memory, options.beam_width)
    carry = tile_for_beam(carry, options.beam_width)
  if options.min_len:   # the options' floor on top of the objective's own (if any)
    given = extra.get("min_len", 0)
    extra["min_len"] = (max(int(given), options.min_len) if isinstance(given, int)
                        else jnp.maximum(given, options.min_len))
  return run(options.mode, lambda c, tokens: step(memory, c, tokens), carry, key,
             temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
             beam_width=options.beam_width, length_penalty=options.length_penalty,
             repetition_penalty=options.repetition_penalty,
             no_repeat_ngram=options.no_repeat_ngram,
             batch_size=batch_size, max_len=max_len, **ids, **extra)


def module_conditional(model, methods: tuple, params, context: jax.Array, key: jax.Array,
                       options: DecodeOptions, max_len: int, ids: dict,
                       min_len: int = 0) -> DecodeOutput:
  """:func:`conditional` for a Flax encoder-decoder given by three of its methods.

  Args:
    model: the ``flax.linen`` module.
    methods: ``(encode, start, step)``: ``encode(context) -> memory``,
      ``start(memory) -> carry``, ``step(memory, carry, tokens) -> (carry, logits, ...)``
      (outputs after the logits are ignored).
    params: the module's parameters; ``context``: ``[B, S]`` token ids.
    key, options, max_len, ids, min_len: as :func:`conditional`.
  """
  encode, start, step = methods
  variables = {"params": params}
  memory = model.apply(variables, context, method=encode)
  carry = model.apply(variables, memory, method=start)

  def step_fn(mem, c, tokens):
    out = model.apply(variables, mem, c, tokens, method=step)
    return out[0], out[1]

  return conditional(step_fn, memory, carry, key, options, context.shape[0], max_len, ids,
                     min_len=min_len)


def jit_module_conditional(model, methods: tuple, params, context: jax.Array, key: jax.Array, *,
                           options: DecodeOptions, max_len: int, ids: tuple,
                           min_len: int = 0) -> DecodeOutput:
  """:func:`module_conditional` compiled once per model, decoding mode and shapes (the
  temperature is traced); ``ids`` is ``tuple(sorted(special_ids(...).items()))``."""
  static, temperature = options.split_temperature()
  return _jit_module_conditional(model, methods, params, context, key, temperature,
                                 options=static, max_len=max_len, ids=ids, min_len=min_len)


@functools.partial(jax.jit, static_argnames=("model", "methods", "options", "max_len", "ids",
                                             "min_len"))
def _jit_module_conditional(model, methods, params, context, key, temperature, *, options,
                            max_len, ids, min_len):
  return module_conditional(model, methods, params, context, key,
                            options.with_temperature(temperature), max_len, dict(ids), min_len)
