"""Repetition penalty, no-repeat n-grams, nucleus sampling and min_len (issue 22): each rule
against hand-computed values, and its wiring into greedy, sampling and beam search."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from test_decode import BOS, EOS, PAD, chain_carry, chain_step_fn, jrun
from vedgan import decode
from vedgan import decode_constraints as dc


def test_seen_mask_counts_only_the_positions_before_t():
  history = jnp.array([[3, 4, 3, 9], [5, 0, 0, 0]])
  got = np.asarray(dc.seen_mask(history, jnp.int32(2), 10))
  assert got[0].nonzero()[0].tolist() == [3, 4] and got[1].nonzero()[0].tolist() == [0, 5]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
  logits = jnp.array([[2.0, -1.0, 0.5, 3.0]])
  seen = jnp.array([[True, True, False, False]])
  got = dc.repetition_penalty(logits, seen, 2.0)
  np.testing.assert_allclose(got, [[1.0, -2.0, 0.5, 3.0]])          # CTRL: o/theta, o*theta


@pytest.mark.parametrize("n,t,banned", [
    (2, 5, [7]),        # 3 4 7 3 4 | ?: after 4 came 7 (bigram (4, 7)): 7 is banned
    (3, 5, [7]),        # prefix (3, 4): the trigram (3, 4, 7) exists: 7 is banned
    (1, 5, [3, 4, 7]),  # unigrams: everything already emitted
    (2, 1, []),         # nothing complete before t = 1
    (3, 1, []),         # t < n - 1: no prefix yet
    (3, 6, [7]),        # 7 3 7 4 7 3 | ?: prefix (7, 3) began the trigram (7, 3, 7)
])
def test_repeated_ngram_ban_by_hand(n, t, banned):
  history = jnp.array([[3, 4, 7, 3, 4, 3, 9, 9]])
  if (n, t) == (3, 6):
    history = jnp.array([[7, 3, 7, 4, 7, 3, 9, 9]])  # prefix (7, 3) occurred at 0: bans 7
  got = np.asarray(dc.repeated_ngram_ban(history, jnp.int32(t), n, 10))[0]
  assert got.nonzero()[0].tolist() == banned


def test_nucleus_keeps_the_smallest_set_reaching_p():
  probs = np.array([0.5, 0.25, 0.15, 0.1])
  logits = jnp.log(jnp.asarray([probs]))
  for p, kept in [(0.5, [0]), (0.6, [0, 1]), (0.75, [0, 1]), (0.76, [0, 1, 2]), (1.0, [0, 1, 2, 3]),
                  (0.01, [0])]:
    got = np.asarray(dc.nucleus(logits, p))[0]
    assert np.isfinite(got).nonzero()[0].tolist() == kept, p


def _loop_table(vocab=8):
  """A chain that, left alone, repeats 3 4 3 4 ... (3 -> 4 -> 3) with 5 a close second."""
  table = np.full((1, vocab, vocab), -5.0)
  table[0, BOS, 3] = 3.0
  table[0, 3, 4], table[0, 3, 5] = 3.0, 2.0
  table[0, 4, 3], table[0, 4, 6] = 3.0, 2.0
  table[0, 5, 6], table[0, 6, 7], table[0, 7, EOS] = 3.0, 3.0, 3.0
  table[0, 5, EOS] = table[0, 6, EOS] = 2.5
  return table


@pytest.mark.parametrize("mode", ["greedy", "beam", "sample0"])
def test_decoders_apply_the_constraints(mode):
  step = chain_step_fn(_loop_table())
  common = dict(batch_size=1, max_len=8, bos_id=BOS, eos_id=EOS, pad_id=PAD)
  if mode == "greedy":
    fn = lambda **kw: decode.greedy(step, chain_carry(1), **common, **kw)
  elif mode == "beam":
    fn = lambda **kw: decode.beam_search(step, chain_carry(1), beam_width=1, **common, **kw)
  else:   # temperature 0 sampling falls back to greedy, constraints included
    fn = lambda **kw: decode.sample(step, chain_carry(1), jax.random.key(0), temperature=0.0,
                                    **common, **kw)
  plain = np.asarray(jrun(fn).tokens)[0].tolist()
  assert plain == [3, 4, 3, 4, 3, 4, 3, 4]
  no_bigram = np.asarray(jrun(fn, no_repeat_ngram=2).tokens)[0].tolist()
  assert no_bigram[:4] == [3, 4, 3, 5]          # (3, 4) again is banned: the runner-up 5
  penalised = np.asarray(jrun(fn, repetition_penalty=10.0).tokens)[0].tolist()
  assert penalised[:3] == [3, 4, 6]             # 3 is seen: 3/10 < 2 (token 6)


def test_beam_search_constrains_each_hypothesis_by_its_own_history():
  step = chain_step_fn(_loop_table())
  out = jrun(decode.beam_search, step, chain_carry(2), batch_size=2, max_len=8, bos_id=BOS,
             eos_id=EOS, pad_id=PAD, beam_width=3, no_repeat_ngram=2, return_all=True)
  for hyp in np.asarray(out.tokens).reshape(-1, 8):
    seq = [t for t in hyp.tolist() if t not in (PAD,)]
    bigrams = list(zip(seq, seq[1:]))
    assert len(bigrams) == len(set(bigrams)), seq


def test_nucleus_sampling_draws_from_the_renormalised_nucleus():
  """Statistical: 4,000 draws at top_p = 0.7 over probabilities (0.4, 0.3, 0.2, 0.1) after
  BOS: only tokens 3 and 4 (mass 0.7) occur, in ratio 4:3 (chi-square, p > 0.001)."""
  vocab = 7
  table = np.full((1, vocab, vocab), -40.0)
  table[0, BOS, 3:7] = np.log([0.4, 0.3, 0.2, 0.1])
  step = chain_step_fn(table)
  n = 4000
  out = jrun(decode.sample, step, chain_carry(n), jax.random.key(1), batch_size=n, max_len=1,
             bos_id=BOS, eos_id=EOS, pad_id=PAD, top_p=0.7)
  first = np.asarray(out.tokens)[:, 0]
  counts = np.bincount(first, minlength=vocab)
  assert counts[5] == counts[6] == 0 and counts[3] + counts[4] == n
  assert stats.chisquare(counts[3:5], n * np.array([4, 3]) / 7).pvalue > 1e-3
  # log-probs are under the distribution sampled from: the renormalised nucleus
  np.testing.assert_allclose(np.asarray(out.log_probs)[first == 3, 0], np.log(4 / 7), rtol=1e-5)


def test_options_carry_the_settings_from_the_config():
  from vedgan import configlib
  c = configlib.base_config()
  c.decode.top_p, c.decode.repetition_penalty = 0.9, 1.3
  c.decode.no_repeat_ngram, c.decode.min_len = 3, 2
  o = decode.DecodeOptions.from_config(c.decode)
  assert (o.top_p, o.repetition_penalty, o.no_repeat_ngram, o.min_len) == (0.9, 1.3, 3, 2)
  old = c.decode.to_dict()
  for key in ("top_p", "repetition_penalty", "no_repeat_ngram", "min_len"):
    del old[key]                               # a run saved before these fields existed
  o = decode.DecodeOptions.from_config(configlib.ml_collections.ConfigDict(old))
  assert (o.top_p, o.repetition_penalty, o.no_repeat_ngram, o.min_len) == (1.0, 1.0, 0, 0)
  with pytest.raises(ValueError, match="top_p must be in"):
    decode.sample(chain_step_fn(_loop_table()), chain_carry(1), jax.random.key(0), 1, 2, BOS,
                  EOS, top_p=0.0)


def test_conditional_decoding_applies_the_options_min_len_and_constraints():
  """DecodeOptions reach the decoders through decode.conditional (what every objective's
  generate calls): min_len keeps EOS out of the first tokens, the n-gram ban applies."""
  table = _loop_table()
  table[0, BOS, EOS] = table[0, 3, EOS] = table[0, 4, EOS] = 4.0       # EOS is always best
  step = chain_step_fn(table)
  ids = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)
  run = lambda o: np.asarray(jrun(decode.conditional, lambda m, c, tok: step(c, tok), None,
                                  chain_carry(1), jax.random.key(0), o, 1, 6, ids).tokens)[0]
  assert run(decode.DecodeOptions()).tolist()[0] == EOS
  held = run(decode.DecodeOptions(min_len=3, no_repeat_ngram=2)).tolist()
  assert held[:4] == [3, 4, 3, EOS], held       # EOS from t = 3 on
