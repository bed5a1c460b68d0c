"""The replay corpus ``C_D`` of the top-k softmax dialogue GAN (López Zorrilla et al.).

"Each time we sample a response of the generator to a given input, we add it
to a corpus of generator's turns C_D [...] More recent input-response pairs are
taken with a higher probability than the older ones from C_D when training the
discriminator" (Section 3, Training procedure; Algorithm 1).

:class:`ReplayCorpus` is a fixed-capacity ring buffer with static shapes, so it
lives in the training state (``TrainState.extra``), is filled and sampled
inside jitted steps and is checkpointed with everything else:

==============  ===================  ==========================================
field           shape / dtype        meaning
==============  ===================  ==========================================
``inputs``      ``[C, Lc]`` int32    input utterances ``x`` (right-padded, 0)
``responses``   ``[C, Lr]`` int32    generated responses ``y`` (EOS, then 0)
``time``        ``[C]`` int32        insertion time of each row; -1 = empty
``count``       ``[]`` int32         filled rows (``<= C``)
``cursor``      ``[]`` int32         next row written (the oldest once full)
==============  ===================  ==========================================

Rows are written in insertion order and wrap around when the corpus is full,
overwriting the oldest rows. What "time" measures is the caller's choice; the
``topk_gan`` objective stamps rows with the number of generator updates made
so far (the generator's *version*), so all responses of one generator are
equally recent however many steps it took to produce them.

Recency weighting (the paper gives no formula; this is ours). A filled row
``i`` is drawn with probability proportional to

    w_i = 2 ** (-(t_newest - t_i) / half_life)

where ``t_newest`` is the newest time in the corpus: a row's weight halves for
every ``half_life`` time units it is older than the newest row, and rows of the
same time are equally likely. ``half_life <= 0`` gives uniform sampling over
the filled rows. Empty rows have weight 0.

Everything here is a pure function of arrays (jit/vmap/grad-safe, no Flax).

>>> import jax, jax.numpy as jnp
>>> c = init(capacity=4, input_len=3, response_len=2)
>>> c = add(c, jnp.array([[5, 6, 0], [7, 0, 0]]), jnp.array([[9, 3], [3, 0]]), time=0)
>>> c = add(c, jnp.array([[8, 8, 8]]), jnp.array([[3, 0]]), time=2)
>>> int(c.count), int(c.cursor), c.time.tolist()
(3, 3, [0, 0, 2, -1])
>>> [round(float(p), 3) for p in recency_weights(c, half_life=2.0)]
[0.25, 0.25, 0.5, 0.0]
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["ReplayCorpus", "init", "fit_width", "add", "recency_weights", "row_hash",
           "sample", "gather"]


@flax.struct.dataclass
class ReplayCorpus:
  """A ring buffer of (input, generated response, insertion time); see the module docstring."""
  inputs: Array
  responses: Array
  time: Array
  count: Array
  cursor: Array

  @property
  def capacity(self) -> int:
    return int(self.inputs.shape[0])


def init(capacity: int, input_len: int, response_len: int) -> ReplayCorpus:
  """An empty corpus of ``capacity`` rows (all ``time = -1``)."""
  if capacity < 1 or input_len < 1 or response_len < 1:
    raise ValueError(f"replay corpus needs capacity, input_len, response_len >= 1, got "
                     f"{capacity}, {input_len}, {response_len}")
  return ReplayCorpus(inputs=jnp.zeros((capacity, input_len), jnp.int32),
                      responses=jnp.zeros((capacity, response_len), jnp.int32),
                      time=jnp.full((capacity,), -1, jnp.int32),
                      count=jnp.zeros((), jnp.int32), cursor=jnp.zeros((), jnp.int32))


def fit_width(tokens: Array, width: int) -> Array:
  """Right-pads ``tokens[N, L]`` with 0 or cuts it to ``[N, width]`` (int32)."""
  tokens = jnp.asarray(tokens, jnp.int32)
  length = tokens.shape[1]
  if length >= width:
    return tokens[:, :width]
  return jnp.pad(tokens, ((0, 0), (0, width - length)))


def add(corpus: ReplayCorpus, inputs: Array, responses: Array, time) -> ReplayCorpus:
  """Writes ``N`` rows at the cursor (wrapping around), all stamped ``time``.

  Args:
    corpus: the corpus.
    inputs: ``[N, L]`` int tokens (padded/cut to the corpus width; a cut only
      drops padding if ``L`` exceeds the width by padding alone).
    responses: ``[N, L']`` int tokens.
    time: int scalar (may be traced).

  Returns:
    The updated corpus. ``N`` must not exceed the capacity.
  """
  n = inputs.shape[0]
  if responses.shape[0] != n:
    raise ValueError(f"inputs has {n} rows but responses has {responses.shape[0]}")
  if n > corpus.capacity:
    raise ValueError(f"cannot add {n} rows to a replay corpus of capacity {corpus.capacity}")
  rows = (corpus.cursor + jnp.arange(n, dtype=jnp.int32)) % corpus.capacity
  stamp = jnp.full((n,), time, jnp.int32)
  return corpus.replace(
      inputs=corpus.inputs.at[rows].set(fit_width(inputs, corpus.inputs.shape[1])),
      responses=corpus.responses.at[rows].set(fit_width(responses, corpus.responses.shape[1])),
      time=corpus.time.at[rows].set(stamp),
      count=jnp.minimum(corpus.count + n, corpus.capacity).astype(jnp.int32),
      cursor=((corpus.cursor + n) % corpus.capacity).astype(jnp.int32))


def recency_weights(corpus: ReplayCorpus, half_life) -> Array:
  """``[C]`` float32 sampling probabilities ``∝ 2 ** (-(t_newest - t_i) / half_life)``.

  Filled rows only (empty rows get 0); ``half_life <= 0`` is uniform over the
  filled rows. An empty corpus gives all zeros.
  """
  filled = corpus.time >= 0
  newest = jnp.max(jnp.where(filled, corpus.time, 0))
  age = (newest - corpus.time).astype(jnp.float32)
  half_life = jnp.asarray(half_life, jnp.float32)
  safe = jnp.where(half_life > 0, half_life, 1.0)
  w = jnp.where(half_life > 0, jnp.exp2(-age / safe), 1.0)
  w = jnp.where(filled, w, 0.0)
  total = jnp.sum(w)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


_HASH_BASE = 0x01000193  # the 32-bit FNV prime


def row_hash(tokens: Array) -> Array:
  """``uint32 [N]`` hash ``sum_t tokens[:, t] * P**t mod 2**32`` of ``tokens[N, L]``.

  Padding (0) adds nothing, so a row hashes the same at any padded width;
  equal rows always have equal hashes (different rows rarely collide).
  """
  tokens = jnp.asarray(tokens)
  powers = np.ones((tokens.shape[1],), np.uint32)
  for t in range(1, tokens.shape[1]):
    powers[t] = np.uint32((int(powers[t - 1]) * _HASH_BASE) % (1 << 32))
  return jnp.sum(tokens.astype(jnp.uint32) * jnp.asarray(powers), axis=1, dtype=jnp.uint32)


def sample(corpus: ReplayCorpus, key: Array, num: int, half_life,
           exclude_inputs: Array | None = None) -> tuple[Array, Array]:
  """Draws ``num`` row indices with :func:`recency_weights` (with replacement).

  Args:
    corpus: the corpus.
    key: PRNG key.
    num: number of rows (static).
    half_life: see :func:`recency_weights`.
    exclude_inputs: optional ``[M, L]`` tokens; rows whose input equals one
      of them (compared through :func:`row_hash`, so a rare hash collision
      excludes a row too; an equal input is never missed) are not drawn.

  Returns:
    ``(indices [num] int32, eligible [])``: ``eligible`` is True when some row
    could be drawn. If exclusion leaves no row, rows are drawn without it; if
    the corpus is empty, the indices are 0 (``eligible`` is False in both cases).
  """
  w = recency_weights(corpus, half_life)
  has_rows = jnp.sum(w) > 0
  if exclude_inputs is not None:
    mine = row_hash(corpus.inputs)
    theirs = row_hash(exclude_inputs)
    clash = jnp.any(mine[:, None] == theirs[None, :], axis=1)
    kept = jnp.where(clash, 0.0, w)
    ok = jnp.sum(kept) > 0
    w = jnp.where(ok, kept, w)
  else:
    ok = has_rows
  cdf = jnp.cumsum(w)
  # Inverse-CDF sampling: r in (0, total]; the first row whose cdf reaches r.
  # A row of weight 0 is never the first to reach r > 0.
  r = cdf[-1] * (1.0 - jax.random.uniform(key, (num,), jnp.float32))
  idx = jnp.searchsorted(cdf, r, side="left")
  idx = jnp.clip(idx, 0, corpus.capacity - 1).astype(jnp.int32)
  return jnp.where(has_rows, idx, 0), ok


def gather(corpus: ReplayCorpus, indices: Array) -> tuple[Array, Array]:
  """``(inputs [N, Lc], responses [N, Lr])`` of the rows ``indices``."""
  return corpus.inputs[indices], corpus.responses[indices]
