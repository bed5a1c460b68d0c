"""Tests for vedgan.decode with toy step functions (Markov-chain tables and a tiny Flax GRU)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vedgan import decode

PAD, BOS, EOS = 0, 1, 2


# ----------------------------------------------------------------------------
# Toy step functions.


def chain_step_fn(table):
  """Time-dependent Markov chain: ``logits = table[min(t, T-1), prev_token]``.

  ``table`` is ``[T, V, V]``; the carry is the step counter ``[N]`` int32.
  """
  table = jnp.asarray(table, jnp.float32)

  def step(t, tokens):
    logits = table[jnp.minimum(t, table.shape[0] - 1), tokens]
    return t + 1, logits

  return step


def chain_carry(n):
  return jnp.zeros((n,), jnp.int32)


def random_chain(seed, vocab, steps, scale=2.0):
  return np.random.default_rng(seed).normal(size=(steps, vocab, vocab)) * scale


def probs_chain(rows):
  """Time-independent chain from a dict ``prev -> {token: prob}`` over V=5 (0 pad, 1 bos, 2 eos, 3, 4)."""
  table = np.full((1, 5, 5), -30.0)
  for prev, dist in rows.items():
    for tok, p in dist.items():
      table[0, prev, tok] = np.log(p)
  return table


class _GRUStep(nn.Module):
  vocab: int = 7
  hidden: int = 8

  @nn.compact
  def __call__(self, carry, tokens):
    emb = nn.Embed(self.vocab, self.hidden)(tokens)
    x = emb + carry["memory"].mean(axis=1)
    h, _ = nn.GRUCell(features=self.hidden)(carry["h"], x)
    logits = 3.0 * nn.Dense(self.vocab)(h)
    return {"h": h, "memory": carry["memory"], "t": carry["t"] + 1}, logits


@functools.lru_cache(maxsize=None)
def _gru_params():
  """Random parameters drawn with numpy (``eval_shape`` for the structure: no init compile)."""
  module = _GRUStep()
  carry = {"h": jnp.zeros((1, module.hidden)), "memory": jnp.zeros((1, 4, module.hidden)),
           "t": jnp.zeros((1,), jnp.int32)}
  shapes = jax.eval_shape(module.init, jax.random.key(0), carry, jnp.zeros((1,), jnp.int32))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def gru_setup(batch=3, seed=0):
  """A random Flax GRU step closure (shared random params) and a random pytree carry.

  The carry has a hidden state ``[N, H]``, a constant "memory" ``[N, 4, H]`` and a
  step counter ``[N]``; ``seed`` picks the carry.
  """
  module = _GRUStep()
  rng = np.random.default_rng(seed)
  carry = {"h": jnp.asarray(rng.normal(size=(batch, module.hidden)), jnp.float32),
           "memory": jnp.asarray(rng.normal(size=(batch, 4, module.hidden)), jnp.float32),
           "t": jnp.zeros((batch,), jnp.int32)}

  def make_step(p):
    return lambda c, tok: module.apply(p, c, tok)

  return make_step, _gru_params(), carry


# ----------------------------------------------------------------------------
# References.


def masked_log_softmax(logits, t, forbid=(), min_len=0):
  logits = np.array(logits, np.float64)
  logits[..., list(forbid)] = -np.inf
  if t < min_len:
    logits[..., EOS] = -np.inf
  m = logits.max(axis=-1, keepdims=True)
  return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


# Compiling dominates the run time of these tests; XLA's backend optimisations do not pay off
# for toy shapes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jrun(fn, *args, **kwargs):
  """Calls a decoder under ``jax.jit`` (one compile, no op-by-op dispatch: keeps tests fast)."""
  return jax.jit(lambda: fn(*args, **kwargs), compiler_options=FAST_COMPILE)()


def teacher_forced_logits(step_fn, carry, tokens):
  """Per-step logits ``[N, L, V]`` of ``step_fn`` fed BOS followed by ``tokens[:, :-1]``."""
  tokens = np.asarray(tokens)
  step_fn = jax.jit(step_fn, compiler_options=FAST_COMPILE)
  prev = jnp.full((tokens.shape[0],), BOS, jnp.int32)
  out = []
  for t in range(tokens.shape[1]):
    carry, logits = step_fn(carry, prev)
    out.append(np.asarray(logits))
    prev = jnp.asarray(tokens[:, t], jnp.int32)
  return np.stack(out, axis=1)


def check_layout(out, max_len):
  """EOS/PAD layout: tokens after EOS are PAD with zero log-prob, lengths consistent."""
  tokens = np.asarray(out.tokens).reshape(-1, max_len)
  lengths = np.asarray(out.lengths).reshape(-1)
  logps = np.asarray(out.log_probs).reshape(-1, max_len)
  for row, n, lp in zip(tokens, lengths, logps):
    eos = np.flatnonzero(row == EOS)
    if eos.size:
      assert n == eos[0] + 1
    else:
      assert n == max_len
    assert np.all(row[n:] == PAD) and np.all(lp[n:] == 0.0)
    assert np.all(np.isfinite(lp[:n]))


def check_log_probs(out, step_fn, carry, forbid_ids=(), min_len=0):
  """``out.log_probs`` equals the masked log-softmax of teacher-forced logits (untempered)."""
  tokens = np.asarray(out.tokens)
  logits = teacher_forced_logits(step_fn, carry, tokens)
  for t in range(tokens.shape[1]):
    ref = masked_log_softmax(logits[:, t], t, forbid_ids, min_len)
    ref = np.take_along_axis(ref, tokens[:, t:t + 1], axis=1)[:, 0]
    alive = t < np.asarray(out.lengths)
    np.testing.assert_allclose(np.asarray(out.log_probs)[alive, t], ref[alive],
                               rtol=1e-5, atol=1e-5)


def brute_force(table, max_len, alpha=0.0, forbid=(), min_len=0):
  """All complete sequences of a ``chain_step_fn`` chain, best first: ``[(score, tokens)]``.

  A complete sequence ends in EOS at some length <= max_len, or has length
  max_len without EOS; its score is the summed masked log-prob divided by the
  GNMT length penalty.
  """
  vocab = table.shape[-1]
  results = []

  def visit(prefix, raw, prev):
    t = len(prefix)
    lp = masked_log_softmax(table[min(t, table.shape[0] - 1), prev], t, forbid, min_len)
    for tok in range(vocab):
      if not np.isfinite(lp[tok]):
        continue
      seq, score = prefix + [tok], raw + lp[tok]
      if tok == EOS or len(seq) == max_len:
        norm = score / ((5.0 + len(seq)) / 6.0) ** alpha
        results.append((norm, seq + [PAD] * (max_len - len(seq))))
      else:
        visit(seq, score, tok)

  visit([], 0.0, BOS)
  results.sort(key=lambda r: -r[0])
  return results


# ----------------------------------------------------------------------------
# Tests.


def test_tile_for_beam():
  carry = {"a": jnp.arange(3), "b": jnp.arange(6.0).reshape(3, 2)}
  tiled = decode.tile_for_beam(carry, 2)
  np.testing.assert_array_equal(tiled["a"], [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(tiled["b"][::2], carry["b"])
  np.testing.assert_array_equal(tiled["b"][1::2], carry["b"])


def test_greedy_matches_numpy_reference():
  table = random_chain(0, vocab=6, steps=5)
  batch, max_len, forbid = 4, 7, (PAD, BOS)
  out = jrun(decode.greedy, chain_step_fn(table), chain_carry(batch), batch, max_len, BOS, EOS,
             forbid_ids=forbid)
  # Every row of a time-dependent chain follows the same path; reference in numpy.
  prev, ref_tok, ref_lp = BOS, [], []
  for t in range(max_len):
    lp = masked_log_softmax(table[min(t, 4), prev], t, forbid)
    tok = int(np.argmax(lp))
    ref_tok.append(tok)
    ref_lp.append(lp[tok])
    prev = tok
    if tok == EOS:
      break
  n = len(ref_tok)
  assert 1 < n < max_len
  ref_tok += [PAD] * (max_len - n)
  ref_lp += [0.0] * (max_len - n)
  assert out.tokens.shape == (batch, max_len) and out.tokens.dtype == jnp.int32
  np.testing.assert_array_equal(out.tokens, np.tile(ref_tok, (batch, 1)))
  np.testing.assert_array_equal(out.lengths, n)
  np.testing.assert_allclose(out.log_probs, np.tile(ref_lp, (batch, 1)), atol=1e-5)
  np.testing.assert_allclose(out.scores, np.sum(ref_lp), atol=1e-5)


def test_beam_width_one_equals_greedy():
  make_step, params, carry = gru_setup(batch=5, seed=1)
  step = make_step(params)
  kw = dict(forbid_ids=(PAD, BOS, 5), min_len=2)
  g = jrun(decode.greedy, step, carry, 5, 7, BOS, EOS, **kw)
  b = jrun(decode.beam_search, step, carry, 5, 7, BOS, EOS, beam_width=1, length_penalty=0.6,
           **kw)
  check_layout(g, 7)
  check_log_probs(g, step, carry, **kw)
  np.testing.assert_array_equal(b.tokens, g.tokens)
  np.testing.assert_array_equal(b.lengths, g.lengths)
  np.testing.assert_allclose(b.log_probs, g.log_probs, rtol=1e-6, atol=1e-6)   # fusion ulps
  np.testing.assert_allclose(g.scores, np.asarray(g.log_probs).sum(1), atol=1e-5)
  lp = ((5.0 + np.asarray(g.lengths)) / 6.0) ** 0.6
  np.testing.assert_allclose(b.scores, np.asarray(g.scores) / lp, rtol=1e-5)
  # And on a time-dependent Markov chain, without min_len.
  table = random_chain(3, vocab=5, steps=6)
  g = jrun(decode.greedy, chain_step_fn(table), chain_carry(2), 2, 6, BOS, EOS,
           forbid_ids=(PAD, BOS))
  b = jrun(decode.beam_search, chain_step_fn(table), chain_carry(2), 2, 6, BOS, EOS,
           beam_width=1, forbid_ids=(PAD, BOS))
  np.testing.assert_array_equal(b.tokens, g.tokens)
  np.testing.assert_array_equal(b.lengths, g.lengths)
  np.testing.assert_allclose(b.scores, g.scores, rtol=1e-6)


def test_beam_finds_optimum_where_greedy_fails():
  table = probs_chain({
      BOS: {3: 0.6, 4: 0.4},
      3: {3: 0.34, 4: 0.33, EOS: 0.33},   # flat after the greedy first token
      4: {EOS: 0.95, 3: 0.05},
  })
  forbid, max_len = (PAD, BOS), 4
  best_score, best_seq = brute_force(table, max_len, forbid=forbid)[0]
  assert best_seq[:2] == [4, EOS]
  g = jrun(decode.greedy, chain_step_fn(table), chain_carry(1), 1, max_len, BOS, EOS,
           forbid_ids=forbid)
  assert g.tokens[0, 0] == 3 and float(g.scores[0]) < best_score - 0.3
  b = jrun(decode.beam_search, chain_step_fn(table), chain_carry(1), 1, max_len, BOS, EOS,
           beam_width=2, forbid_ids=forbid)
  np.testing.assert_array_equal(b.tokens[0], best_seq)
  np.testing.assert_allclose(b.scores[0], best_score, rtol=1e-5)
  assert int(b.lengths[0]) == 2


@pytest.mark.parametrize("alpha,min_len", [(0.0, 0), (1.5, 0), (0.7, 2)])
def test_beam_exhaustive_matches_brute_force(alpha, min_len):
  """With a beam wide enough to prune nothing, the K best hypotheses are the exact K best."""
  # V=5 with PAD/BOS forbidden: 2 content tokens + EOS; max_len=3 -> at most 4*3=12 candidates.
  max_len, width, forbid = 3, 12, (PAD, BOS)
  tables = np.stack([random_chain(seed, vocab=5, steps=3) for seed in (10, 11)])
  step_tables = jnp.asarray(tables, jnp.float32)

  def step(carry, tokens):   # a different chain per batch element: carry = (batch index, step)
    b, t = carry
    return (b, t + 1), step_tables[b, jnp.minimum(t, 2), tokens]

  carry = (jnp.arange(2, dtype=jnp.int32), jnp.zeros((2,), jnp.int32))
  kw = dict(beam_width=width, length_penalty=alpha, forbid_ids=forbid, min_len=min_len)
  out = jrun(decode.beam_search, step, carry, 2, max_len, BOS, EOS, return_all=True, **kw)
  assert out.tokens.shape == (2, width, max_len) and out.scores.shape == (2, width)
  check_layout(out, max_len)
  # return_all=False stops as soon as the best is settled (early-stopping bound).
  best = jrun(decode.beam_search, step, carry, 2, max_len, BOS, EOS, **kw) if alpha else None
  for b in range(2):
    ref = brute_force(tables[b], max_len, alpha, forbid, min_len)
    scores = np.array([r[0] for r in ref])
    assert np.all(-np.diff(scores[:width + 1]) > 1e-5), "test needs tie-free scores"
    k = min(width, len(ref))
    np.testing.assert_array_equal(out.tokens[b, :k], [r[1] for r in ref[:k]])
    np.testing.assert_allclose(out.scores[b, :k], scores[:k], rtol=1e-5, atol=1e-6)
    assert np.all(np.isneginf(np.asarray(out.scores[b, k:])))
    assert np.all(np.asarray(out.lengths[b, :k]) > min_len)
    if best is not None:
      np.testing.assert_array_equal(best.tokens[b], ref[0][1])
      np.testing.assert_allclose(best.scores[b], scores[0], rtol=1e-5)


def test_beam_first_step_has_distinct_hypotheses():
  table = random_chain(4, vocab=8, steps=1)
  out = jrun(decode.beam_search, chain_step_fn(table), chain_carry(2), 2, 1, BOS, EOS,
             beam_width=4, forbid_ids=(PAD, BOS), return_all=True)
  ref = np.argsort(-masked_log_softmax(table[0, BOS], 0, (PAD, BOS)))[:4]
  for b in range(2):
    np.testing.assert_array_equal(out.tokens[b, :, 0], ref)
    assert np.all(np.isfinite(np.asarray(out.scores[b])))


def test_length_penalty_prefers_longer_hypotheses():
  table = probs_chain({
      BOS: {3: 0.6, 4: 0.4},
      3: {EOS: 0.999, 4: 0.001},
      4: {4: 0.98, EOS: 0.02},
  })
  forbid, max_len = (PAD, BOS), 6

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(alpha):   # alpha traced: one compile for both settings
    return decode.beam_search(chain_step_fn(table), chain_carry(1), 1, max_len, BOS, EOS,
                              beam_width=3, forbid_ids=forbid, length_penalty=alpha)

  short, long = run(0.0), run(3.0)
  np.testing.assert_array_equal(short.tokens[0], [3, EOS, 0, 0, 0, 0])
  np.testing.assert_array_equal(long.tokens[0], [4] * 6)
  assert int(long.lengths[0]) == 6 > int(short.lengths[0]) == 2
  for alpha, out in ((0.0, short), (3.0, long)):
    score, seq = brute_force(table, max_len, alpha, forbid)[0]
    np.testing.assert_array_equal(out.tokens[0], seq)
    np.testing.assert_allclose(out.scores[0], score, rtol=1e-5)


def test_beam_log_probs_and_carry_reordering_gru():
  """Teacher-forcing the returned hypotheses reproduces their log-probs (carry rows gathered right)."""
  make_step, params, carry = gru_setup(batch=3, seed=2)
  step = make_step(params)
  forbid, width, max_len, alpha = (PAD, BOS), 3, 6, 0.5
  out = jrun(decode.beam_search, step, carry, 3, max_len, BOS, EOS, beam_width=width,
             length_penalty=alpha, forbid_ids=forbid, return_all=True)
  check_layout(out, max_len)
  flat = decode.DecodeOutput(tokens=out.tokens.reshape(9, max_len),
                             lengths=out.lengths.reshape(9),
                             log_probs=out.log_probs.reshape(9, max_len),
                             scores=out.scores.reshape(9))
  check_log_probs(flat, step, decode.tile_for_beam(carry, width), forbid)
  lp = ((5.0 + np.asarray(out.lengths)) / 6.0) ** alpha
  np.testing.assert_allclose(out.scores, np.asarray(out.log_probs).sum(-1) / lp, rtol=1e-5)
  assert np.all(np.diff(np.asarray(out.scores), axis=1) <= 0)     # sorted best first
  for b in range(3):                                              # distinct hypotheses
    assert len({tuple(r) for r in np.asarray(out.tokens[b])}) == width
  # A pre-tiled carry gives the same result; the best equals return_all's first.
  tiled = jrun(decode.beam_search, step, decode.tile_for_beam(carry, width), 3, max_len, BOS,
               EOS, beam_width=width, length_penalty=alpha, forbid_ids=forbid)
  np.testing.assert_array_equal(tiled.tokens, out.tokens[:, 0])
  np.testing.assert_allclose(tiled.scores, out.scores[:, 0], rtol=1e-6)


def test_sample_temperature_zero_is_greedy():
  make_step, params, carry = gru_setup(batch=6, seed=3)
  step = make_step(params)
  kw = dict(forbid_ids=(PAD, BOS))
  key = jax.random.key(0)
  g = jrun(decode.greedy, step, carry, 6, 6, BOS, EOS, **kw)
  s0 = jrun(decode.sample, step, carry, key, 6, 6, BOS, EOS, temperature=0.0, **kw)
  for field in ("tokens", "lengths", "log_probs", "scores"):
    np.testing.assert_array_equal(getattr(s0, field), getattr(g, field))

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def traced(temp):   # temperature traced: 0 falls back to greedy, tiny -> arg-max too
    return decode.sample(step, carry, key, 6, 6, BOS, EOS, temperature=temp, **kw)

  st = traced(jnp.float32(0.0))
  np.testing.assert_array_equal(st.tokens, g.tokens)
  np.testing.assert_allclose(st.log_probs, g.log_probs, atol=1e-6)
  cold = traced(jnp.float32(1e-4))
  np.testing.assert_array_equal(cold.tokens, g.tokens)
  np.testing.assert_array_equal(cold.lengths, g.lengths)
  assert not np.array_equal(traced(jnp.float32(5.0)).tokens, g.tokens)


@pytest.mark.parametrize("temperature,top_k", [(0.7, 0), (1.5, 3)])
def test_sample_first_token_frequencies(temperature, top_k):
  """20000 first tokens: chi-square goodness of fit to softmax(logits / T) (top-k renormalised)."""
  logits = np.array([3.0, 0.5, 1.0, -0.5, 0.8, 0.2])     # PAD (id 0) is forbidden
  n = 20000
  step = lambda c, tok: (c, jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, 6)))
  out = jrun(decode.sample, step, jnp.zeros((n,)), jax.random.key(0), n, 1, BOS, EOS,
             temperature=temperature, top_k=top_k, forbid_ids=(PAD,))
  first = np.asarray(out.tokens[:, 0])
  counts = np.bincount(first, minlength=6)
  masked = logits / temperature
  masked[PAD] = -np.inf
  if top_k:
    masked[np.argsort(-masked)[top_k:]] = -np.inf
  probs = np.exp(masked - masked.max())
  probs /= probs.sum()
  support = probs > 0
  assert counts[~support].sum() == 0                      # outside the top-k / forbidden: never
  chi2 = stats.chisquare(counts[support], counts.sum() * probs[support])
  assert chi2.pvalue > 1e-3, (counts, probs)
  np.testing.assert_allclose(out.log_probs[:, 0], np.log(probs[first]), rtol=1e-5, atol=1e-5)


def test_sample_top_k_support_and_log_probs():
  make_step, params, carry = gru_setup(batch=64, seed=4)
  step = make_step(params)
  temperature, top_k, max_len, forbid = 2.0, 2, 6, (PAD, BOS)
  out = jrun(decode.sample, step, carry, jax.random.key(1), 64, max_len, BOS, EOS,
             temperature=temperature, top_k=top_k, forbid_ids=forbid)
  check_layout(out, max_len)
  tokens = np.asarray(out.tokens)
  logits = teacher_forced_logits(step, carry, tokens)
  used_second = False
  for t in range(max_len):
    alive = t < np.asarray(out.lengths)
    scaled = masked_log_softmax(logits[:, t], t, forbid) / temperature
    rank = np.argsort(-scaled, axis=1)
    tok = tokens[:, t]
    assert np.all((rank[:, :top_k] == tok[:, None]).any(1)[alive])
    used_second |= bool(np.any((rank[:, 1] == tok)[alive]))
    top = np.take_along_axis(scaled, rank[:, :top_k], axis=1)
    ref = np.take_along_axis(scaled, tok[:, None], 1)[:, 0] - np.log(np.exp(top).sum(1))
    np.testing.assert_allclose(out.log_probs[alive, t], ref[alive], rtol=1e-5, atol=1e-5)
  assert used_second                                      # it really samples
  np.testing.assert_allclose(out.scores, np.asarray(out.log_probs).sum(1), atol=1e-5)


def test_forbid_ids_never_appear():
  # Forbid the tokens the chain likes best (besides EOS): unforbidden, they would win.
  table = random_chain(5, vocab=6, steps=5)
  table[:, :, 3] += 8.0
  table[:, :, 5] += 7.0
  assert np.all(np.isin(table.argmax(-1), (3, 5)))
  forbid = (PAD, BOS, 3, 5)
  step, carry, max_len = chain_step_fn(table), chain_carry(32), 8
  outs = [
      jrun(decode.greedy, step, carry, 32, max_len, BOS, EOS, forbid_ids=forbid),
      jrun(decode.sample, step, carry, jax.random.key(2), 32, max_len, BOS, EOS,
           forbid_ids=forbid, temperature=3.0, top_k=3),
      jrun(decode.beam_search, step, carry, 32, max_len, BOS, EOS, forbid_ids=forbid,
           beam_width=3, return_all=True),
  ]
  for out in outs:
    check_layout(out, max_len)
    toks = np.asarray(out.tokens)
    real = np.arange(max_len) < np.asarray(out.lengths)[..., None]
    assert not np.isin(toks[real], forbid).any()
  assert np.isin(np.asarray(outs[1].tokens), (2, 4)).all(axis=1).sum() < 32   # varied samples


def test_min_len_masks_eos():
  table = random_chain(6, vocab=5, steps=4)
  table[:, :, EOS] += 6.0                                 # EOS is the favourite everywhere
  step, carry = chain_step_fn(table), chain_carry(16)
  kw = dict(forbid_ids=(PAD, BOS), min_len=3)
  outs = [jrun(decode.greedy, step, carry, 16, 6, BOS, EOS, **kw),
          jrun(decode.sample, step, carry, jax.random.key(3), 16, 6, BOS, EOS, **kw),
          jrun(decode.beam_search, step, carry, 16, 6, BOS, EOS, beam_width=2,
               return_all=True, **kw)]
  for out in outs:
    check_layout(out, 6)
    assert np.all(np.asarray(out.lengths) >= 4)           # at least 3 tokens before EOS
  np.testing.assert_array_equal(outs[0].lengths, 4)       # greedy: EOS as soon as allowed
  np.testing.assert_array_equal(outs[2].lengths[:, 0], 4)
  check_log_probs(outs[0], step, carry, **kw)


def test_argument_errors():
  step, carry = chain_step_fn(random_chain(0, 5, 1)), chain_carry(1)
  with pytest.raises(ValueError, match="eos_id"):
    decode.greedy(step, carry, 1, 3, BOS, EOS, forbid_ids=(PAD, EOS))
  with pytest.raises(ValueError, match="leading dimension"):
    decode.greedy(step, chain_carry(2), 1, 3, BOS, EOS)
  with pytest.raises(ValueError, match="leading dimension"):
    decode.beam_search(step, chain_carry(3), 1, 3, BOS, EOS, beam_width=2)
  with pytest.raises(TypeError, match="max_len"):
    decode.greedy(step, carry, 1, jnp.int32(3), BOS, EOS)


def test_jit_matches_eager():
  make_step, params, carry = gru_setup(batch=3, seed=5)
  kw = dict(forbid_ids=(PAD, BOS))

  @functools.partial(jax.jit, static_argnames=("max_len", "width"), compiler_options=FAST_COMPILE)
  def generate(p, c, key, max_len, width):
    step = make_step(p)
    return (decode.greedy(step, c, 3, max_len, BOS, EOS, **kw),
            decode.sample(step, c, key, 3, max_len, BOS, EOS, temperature=1.3, top_k=4, **kw),
            decode.beam_search(step, c, 3, max_len, BOS, EOS, beam_width=width,
                               length_penalty=0.6, **kw))

  key = jax.random.key(7)
  jitted = generate(params, carry, key, max_len=6, width=3)
  eager = generate.__wrapped__(params, carry, key, max_len=6, width=3)
  for a, b in zip(jitted, eager):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    check_layout(a, 6)
