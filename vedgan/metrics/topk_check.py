"""How good is the top-k softmax word-vector approximation? (López Zorrilla et
al., dialogue GAN with top-k softmax, Section 5 and Fig. 3.)

At each generation step the generator has unnormalised scores ``f_t`` [V];
the generated token is ``y_t = argmax f_t`` with word vector ``u_t = W[y_t]``.
The top-k approximation (Eq. 8-9) is ``u~_t = sum_{i<k} softmax(f~_t)_i
W[k_t[i]]`` over the k highest scores ``f~_t`` at indices ``k_t``.  The check
asks how often ``u_t`` is the nearest word vector (Euclidean distance over
the whole table W) to ``u~_t``:

* **with repetitions** -- over all produced tokens ("if we consider all the
  produced tokens": 98% for k = 2 in the paper);
* **without repetitions** -- every distinct produced token counted once: for
  each distinct y, the fraction of its occurrences that were recovered, then
  the mean over the distinct tokens (97% for k = 2 in the paper), so frequent
  tokens do not dominate.  When all occurrences of a token agree this is
  simply "the share of distinct tokens recovered".

**Random-table control.** Next to the model's numbers the check reports the
same statistic, on the same logits and tokens, with a random table ``R`` of the
shape of ``W`` (i.i.d. ``N(0, 1/D)`` entries, numpy seed ``control_seed``; the
statistic does not depend on the scale). For k = 2 it is ~100% whatever the
logits: ``||u~ - R[y]|| = p~_2 ||R[y] - R[j]|| <= ||u~ - R[j]||`` for the
other averaged row ``j``, and every other row is at least ~sqrt(3) times
farther in high dimension. So a high percentage alone shows nothing about a
trained ``W``; what it shows is how far the model's number falls below this
control (for larger k the control depends on how peaked the logits are).

The weighted average is implemented here on its own (no dependency on
``vedgan.relax``) so the check can validate that module independently.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vedgan.metrics import _plotting


def topk_weighted_embedding(logits: jax.Array, table: jax.Array,
                            k: int) -> jax.Array:
  """Top-k softmax approximation of the argmax word vector (Eq. 8-9).

  Args:
    logits: float [..., V] unnormalised scores f_t.
    table: float [V, D] word vectors W.
    k: number of top scores kept (>= 1; k = 1 gives exactly W[argmax]).
  Returns:
    float [..., D]: ``sum_i softmax(top_k(f_t))_i * W[top_k indices_i]``.
  """
  vals, idx = jax.lax.top_k(logits, k)
  probs = jax.nn.softmax(vals.astype(jnp.float32), axis=-1)
  return jnp.einsum("...k,...kd->...d", probs,
                    jnp.take(table, idx, axis=0).astype(jnp.float32))


def _nearest_impl(vectors, table, chunk):
  """Argmin Euclidean distance, in blocks of ``chunk`` rows (traceable)."""
  n = vectors.shape[0]
  chunk = max(1, min(chunk, n))
  pad = (-n) % chunk
  vectors = jnp.pad(vectors, ((0, pad), (0, 0)))
  sq = jnp.sum(jnp.square(table), axis=-1)  # [V]

  def one(block):  # [chunk, D] -> [chunk]
    # ||u - w||^2 = ||u||^2 - 2 u.w + ||w||^2; ||u||^2 is constant per row.
    scores = sq[None, :] - 2.0 * block @ table.T
    return jnp.argmin(scores, axis=-1).astype(jnp.int32)

  blocks = vectors.reshape(-1, chunk, vectors.shape[-1])
  return jax.lax.map(one, blocks).reshape(-1)[:n]


_nearest = jax.jit(_nearest_impl, static_argnames=("chunk",))


def nearest_word(vectors: Any, table: Any, chunk: int = 512) -> np.ndarray:
  """Index of the Euclidean-nearest row of ``table`` for each vector.

  Args:
    vectors: float [N, D]; table: float [V, D].
    chunk: rows per distance block (memory ``chunk * V`` floats).
  Returns:
    int32 numpy [N] (ties: the lowest index).
  """
  vectors = jnp.asarray(vectors, jnp.float32)
  table = jnp.asarray(table, jnp.float32)
  return np.asarray(_nearest(vectors, table, chunk=int(chunk)))


@functools.partial(jax.jit, static_argnames=("ks", "chunk"))
def _check_core(logits, table, ks, chunk):
  """Nearest word of the top-k approximation for every k: int32 [K, N]."""
  approx = jnp.stack([topk_weighted_embedding(logits, table, k)
                      for k in ks])  # [K, N, D]
  flat = approx.reshape(-1, approx.shape[-1])
  return _nearest_impl(flat, table, chunk).reshape(len(ks), -1)


def random_table(shape: Sequence[int], seed: int = 0) -> np.ndarray:
  """The control's random word table: float32 ``[V, D]`` = ``shape``, i.i.d.
  ``N(0, 1/D)`` entries from ``numpy.random.default_rng(seed)``."""
  v, d = (int(n) for n in shape)
  rng = np.random.default_rng(int(seed))
  return (rng.standard_normal((v, d)) / np.sqrt(d)).astype(np.float32)


def _hit_rates(nearest: np.ndarray, tokens: np.ndarray, inverse: np.ndarray,
               per_type_count: np.ndarray) -> tuple[list[float], list[float]]:
  """``(with_repetitions, without_repetitions)`` per k of ``nearest [K, N]``."""
  with_rep, without_rep = [], []
  for row in nearest:
    hit = (row == tokens).astype(np.float64)
    with_rep.append(float(hit.mean()))
    per_type = np.bincount(inverse, weights=hit,
                           minlength=per_type_count.shape[0]) / per_type_count
    without_rep.append(float(per_type.mean()))
  return with_rep, without_rep


def topk_approximation_check(logits: Any, table: Any, tokens: Any = None,
                             mask: Any = None,
                             ks: Sequence[int] = tuple(range(2, 11)),
                             chunk: int = 512,
                             control_seed: int | None = 0) -> dict[str, Any]:
  """Share of top-k approximations whose nearest word vector is the token.

  Args:
    logits: float [N, V] or [B, T, V] generator scores at each produced
      position.
    table: float [V, D] the word vectors the discriminator sees.
    tokens: int [N] / [B, T] produced tokens; default ``argmax(logits)``.
    mask: optional [N] / [B, T], 1 for positions to count (e.g. up to EOS).
    ks: values of k.
    chunk: see :func:`nearest_word`.
    control_seed: seed of the random-table control (:func:`random_table` of
      ``table``'s shape); None: no control.
  Returns:
    dict with ``k`` (list), ``with_repetitions`` and ``without_repetitions``
    (lists of fractions in [0, 1], one per k), ``num_tokens`` and
    ``num_distinct_tokens``; unless ``control_seed`` is None,
    ``random_table_control``: ``{"seed", "shape" [V, D], "with_repetitions",
    "without_repetitions"}``, the same check on the same logits and tokens
    with ``random_table(table.shape, control_seed)`` in place of ``table``.
  """
  logits = jnp.asarray(logits)
  v = logits.shape[-1]
  logits = logits.reshape(-1, v)
  if tokens is None:
    tokens = np.asarray(jnp.argmax(logits, axis=-1))
  tokens = np.asarray(tokens).reshape(-1).astype(np.int64)
  keep = (np.ones(tokens.shape, bool) if mask is None
          else np.asarray(mask).reshape(-1).astype(bool))
  logits = logits[np.flatnonzero(keep)]
  tokens = tokens[keep]
  if tokens.shape[0] == 0:
    raise ValueError("no position to check (empty input or all masked)")
  table = jnp.asarray(table, jnp.float32)
  uniq, inverse = np.unique(tokens, return_inverse=True)
  inverse = inverse.reshape(-1)
  per_type_count = np.bincount(inverse, minlength=uniq.shape[0])
  ks = tuple(int(k) for k in ks)
  logits = logits.astype(jnp.float32)
  nearest = np.asarray(_check_core(logits, table, ks, int(chunk)))
  with_rep, without_rep = _hit_rates(nearest, tokens, inverse, per_type_count)
  result = {"k": [int(k) for k in ks], "with_repetitions": with_rep,
            "without_repetitions": without_rep,
            "num_tokens": int(tokens.shape[0]),
            "num_distinct_tokens": int(uniq.shape[0])}
  if control_seed is not None:
    control = jnp.asarray(random_table(table.shape, control_seed))
    nearest = np.asarray(_check_core(logits, control, ks, int(chunk)))
    c_with, c_without = _hit_rates(nearest, tokens, inverse, per_type_count)
    result["random_table_control"] = {
        "seed": int(control_seed), "shape": [int(n) for n in control.shape],
        "with_repetitions": c_with, "without_repetitions": c_without}
  return result


def plot_topk_check(result: dict[str, Any], path: str | os.PathLike,
                    title: str | None = None) -> str:
  """Line plot of the check (paper's Fig. 3): percentage vs k, two curves, and
  the random-table control's (all tokens) when the result has it.

  Returns:
    the PNG path written.
  """
  fig, ax = _plotting.new_figure((5.0, 3.5))
  ks = result["k"]
  ax.plot(ks, [100 * x for x in result["with_repetitions"]], "o-",
          label="all produced tokens")
  ax.plot(ks, [100 * x for x in result["without_repetitions"]], "s--",
          label="without repetitions")
  control = result.get("random_table_control")
  if control:  # the random-W control (absent when the check ran without it)
    ax.plot(ks, [100 * x for x in control["with_repetitions"]], ":", color="gray",
            label=f"random W (seed {control['seed']}), all tokens")
  ax.set_xlabel("k")
  ax.set_ylabel("nearest word vector is the token (%)")
  ax.set_xticks(ks)
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend()
  if title:
    ax.set_title(title)
  return _plotting.save(fig, path)
