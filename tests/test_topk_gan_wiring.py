"""Wiring of the top-k softmax dialogue GAN (López Zorrilla et al.) against hand-composed
references: what each step's loss computes (Eq. 4, 5, 6 through Eq. 8-9), which parameters
it moves and in which direction, and what evaluation reports.

Every reference below is built from the networks' methods (``encode``/``start``/``step``,
``discriminate``) and the paper's equations written out here, not from the objective's own
losses; the tiny model of ``test_topk_gan.py`` is shared through module-scoped fixtures and
no training loop runs.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_topk_gan import _batch, _objective

from vedgan import replay
from vedgan.nn.topk_gan import TopKDialogueGAN

H = 4  # human (and generated) rows of a discriminator batch of 8


def _reference_topk_run(obj, params, context):
  """Eq. 3 and Eq. 8-9 written out as a scan over the response positions.

  Returns ``(tokens [B, T], emitted [B, T] float32, u [B, T, D])``: the argmax is fed back
  (``W[y_{t-1}]``), ``ũ_t = sum_i softmax(f~_t)_i W[k_t[i]]`` over the ``k = gan.topk``
  largest entries of ``f_t``, ``emitted`` is 1 up to and including EOS.
  """
  t, k = obj.tokenizer, int(obj.config.gan.topk)
  apply = lambda *a, method: obj.model.apply({"params": params}, *a, method=method)
  words = params["words"]
  memory = apply(context, method=TopKDialogueGAN.encode)
  carry = apply(memory, method=TopKDialogueGAN.start)
  n = context.shape[0]

  def body(state, _):
    carry, prev, done = state
    carry, f = apply(memory, carry, prev, method=TopKDialogueGAN.step)
    f = obj.mask_forbidden(f)                        # pad, bos (and unk) are never emitted
    top_f, top_i = jax.lax.top_k(f, k)               # k_t, f~_t       (Eq. 8)
    p = jnp.exp(top_f - top_f[:, :1])
    p = p / p.sum(-1, keepdims=True)                 # p~_t = softmax(f~_t)
    u = jnp.einsum("nk,nkd->nd", p, words[top_i])    # Eq. 9
    tok = jnp.where(done, t.pad_id, jnp.argmax(f, -1)).astype(jnp.int32)  # Eq. 3
    out = (tok, (~done).astype(jnp.float32), u)
    return (carry, tok, done | (tok == t.eos_id)), out

  init = (carry, jnp.full((n,), t.bos_id, jnp.int32), jnp.zeros((n,), bool))
  _, out = jax.lax.scan(body, init, None, length=obj.response_len)
  return tuple(jnp.swapaxes(x, 0, 1) for x in out)


def _reference_l_g(obj, g, params, context):
  """Eq. 6: ``L_G = 1/|B_G| sum_x a``, ``a = sigmoid(D(x, ũ))`` on the top-k path."""
  params = {**params, **g}
  _, emitted, u = _reference_topk_run(obj, params, context)
  logits = obj.model.apply({"params": params}, context, u, emitted,
                           method=TopKDialogueGAN.discriminate)
  return jnp.mean(jax.nn.sigmoid(logits))


def _step_l_g(obj, g, params, context):
  """The ``gadv`` step's loss as the driver normalises it: ``total / count``."""
  value, _ = obj.adversarial_loss({**params, **g}, {"context": context}, None)
  return value.total / value.count


def _human_half(batch, obj):
  return (replay.fit_width(batch["context"][:H], obj.input_len),
          replay.fit_width(batch["response_out"][:H], obj.response_len))


def _reference_l_d(obj, d, params, human, generated):
  """Eq. 5 with the paper's labels (``l = 1``: the bot's response, ``l = 0``: human):
  ``L_D = -1/|B_D| [sum_human log(1 - a) + sum_generated log a]``, differentiable in D's
  weights and in the shared ``W`` (Sec. 4: W is "optimized again throughout the training")."""
  params = {**params, **d}
  context = jnp.concatenate([human[0], generated[0]])
  response = jnp.concatenate([human[1], generated[1]])
  a = jax.nn.sigmoid(obj.model.apply({"params": params}, context, response,
                                     method=TopKDialogueGAN.discriminate_tokens))
  n = context.shape[0]
  return -(jnp.sum(jnp.log(1.0 - a[:H])) + jnp.sum(jnp.log(a[H:]))) / n, a


def _d_context(corpus, key):
  """What :meth:`discriminator_loss` reads from its step context: the corpus and the key."""
  return types.SimpleNamespace(state=types.SimpleNamespace(extra={"replay": corpus}), rng=key)


def _step_l_d(obj, d, params, batch, corpus, key):
  value, metrics = obj.discriminator_loss({**params, **d}, batch, _d_context(corpus, key))
  return value.total / value.count, metrics


@pytest.fixture(scope="module")
def gan():
  """The tiny objective and state, a replay corpus of generated responses whose inputs are
  disjoint from the human half's, and the jitted functions the tests share."""
  obj, state = _objective()
  batch = {k: jnp.asarray(v) for k, v in _batch(seed=11).items()}
  params = state.params
  # C_D: greedy responses (Eq. 3) to the other half's inputs and to two unseen inputs.
  other = np.array([[7, 7, 7], [8, 9, 0]], np.int32)
  inputs = jnp.concatenate([replay.fit_width(batch["context"][H:], obj.input_len),
                            replay.fit_width(other, obj.input_len)])
  tokens, _, _ = jax.jit(lambda p, c: _reference_topk_run(obj, p, c))(params, inputs)
  corpus = replay.add(replay.init(obj.capacity, obj.input_len, obj.response_len), inputs,
                      tokens, time=0)
  g_of = lambda p: {"words": p["words"], "generator": p["generator"]}
  d_of = lambda p: {"words": p["words"], "discriminator": p["discriminator"]}
  return types.SimpleNamespace(
      obj=obj, params=params, batch=batch, corpus=corpus, g_of=g_of, d_of=d_of,
      ref_g=jax.jit(jax.value_and_grad(lambda g, p, c: _reference_l_g(obj, g, p, c))),
      step_g=jax.jit(jax.value_and_grad(lambda g, p, c: _step_l_g(obj, g, p, c))),
      ref_d=jax.jit(jax.value_and_grad(
          lambda d, p, hu, ge: _reference_l_d(obj, d, p, hu, ge), has_aux=True)),
      step_d=jax.jit(jax.value_and_grad(
          lambda d, p, b, c, k: _step_l_d(obj, d, p, b, c, k), has_aux=True)),
      d_batch=jax.jit(obj.discriminator_batch))


def _assert_trees_close(got, want, rtol=1e-4, atol=1e-6):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree))))


# -- Eq. 6 through Eq. 8-9 ---------------------------------------------------------------


def test_adversarial_loss_is_eq6_on_the_topk_path(gan):
  """The ``gadv`` loss and its gradient (in ``W`` and the generator) equal Eq. 6 on the
  hand-written top-k path: the mean over the batch of D's ``a`` on ``(x, ũ)``, ``ũ`` read
  up to and including EOS."""
  context = gan.batch["context"]
  g = gan.g_of(gan.params)
  want, want_grad = gan.ref_g(g, gan.params, context)
  got, got_grad = gan.step_g(g, gan.params, context)
  assert 0.0 < float(want) < 1.0
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  _assert_trees_close(got_grad, want_grad)
  assert _norm(want_grad["generator"]) > 0 and _norm(want_grad["words"]) > 0


def test_adversarial_loss_reads_each_response_up_to_its_eos(gan):
  """Eq. 3 stops a response at EOS (``tau``): with an output bias that makes some responses
  end early, D reads ``ũ_1..ũ_tau`` only, and the ``gadv`` loss still equals Eq. 6."""
  obj, context = gan.obj, gan.batch["context"]
  eos = obj.tokenizer.eos_id
  for boost in np.arange(1, 16) * 0.02:  # the untrained f_t are flat: EOS trails by ~0.1
    gen = dict(gan.params["generator"])
    gen["out"] = dict(gen["out"], bias=gen["out"]["bias"].at[eos].add(boost))
    params = {**gan.params, "generator": gen}
    emitted = np.asarray(obj.free_run_logits(params, context)["emitted"])
    lengths = emitted.sum(1)
    if (lengths < emitted.shape[1]).sum() >= 2 and (lengths > 1).any():
      break
  else:
    raise AssertionError("no output bias makes a response end early")
  g = gan.g_of(params)
  want, want_grad = gan.ref_g(g, params, context)
  got, got_grad = gan.step_g(g, params, context)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  _assert_trees_close(got_grad, want_grad)


def test_words_get_the_adversarial_gradient_through_the_topk_rows(gan):
  """Eq. 9 is differentiable in the shared ``W``: a word among the top k at an emitted step
  that is neither an input token nor a fed-back token reaches ``L_G`` only through ``ũ_t``,
  and its row of ``W`` gets a gradient; a word never among them gets none."""
  obj, params = gan.obj, gan.params
  context = np.zeros(gan.batch["context"].shape, np.int32)  # the shape step_g compiled for
  context[:, :3] = np.random.RandomState(0).randint(6, 10, size=(context.shape[0], 3))
  context = jnp.asarray(context)
  run = jax.device_get(obj.free_run_logits(params, context))
  top = np.asarray(jax.lax.top_k(jnp.asarray(run["logits"]), int(obj.config.gan.topk))[1])
  emitted = np.asarray(run["emitted"])
  in_topk = set(top[emitted].ravel().tolist())
  seen = set(np.asarray(context).ravel().tolist()) | set(run["tokens"].ravel().tolist())
  seen |= {obj.tokenizer.bos_id, obj.tokenizer.pad_id}
  only_topk = sorted(in_topk - seen)
  unused = sorted(set(range(obj.tokenizer.vocab_size)) - in_topk - seen)
  assert only_topk and unused, (in_topk, seen)
  _, grad = gan.step_g(gan.g_of(params), params, context)
  w = np.abs(np.asarray(grad["words"])).sum(-1)
  assert (w[only_topk] > 0).all(), (only_topk, w[only_topk])
  np.testing.assert_array_equal(w[unused], 0.0)


# -- Eq. 5 -------------------------------------------------------------------------------


def test_discriminator_loss_is_eq5_on_the_balanced_batch(gan):
  """The ``dstep`` loss and its gradient equal Eq. 5 written out with the paper's labels on
  ``[(x, r) of the first half of the batch; replayed (x, y) pairs]``; its metrics are the
  mean ``a`` of each half."""
  obj, params = gan.obj, gan.params
  key = jax.random.key(3)
  human = _human_half(gan.batch, obj)
  db = jax.device_get(gan.d_batch(gan.corpus, gan.batch["context"], gan.batch["response_out"],
                                  key))
  generated = (jnp.asarray(db["context"][H:]), jnp.asarray(db["response"][H:]))
  rows = {tuple(r) for r in np.asarray(gan.corpus.inputs[:gan.corpus.count])}
  assert all(tuple(r) in rows for r in db["context"][H:])  # generated pairs come from C_D
  d = gan.d_of(params)
  (want, a), want_grad = gan.ref_d(d, params, human, generated)
  (got, metrics), got_grad = gan.step_d(d, params, gan.batch, gan.corpus, key)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["d_human"]), float(jnp.mean(a[:H])), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["d_generated"]), float(jnp.mean(a[H:])), rtol=1e-5)
  _assert_trees_close(got_grad["discriminator"], want_grad["discriminator"])
  assert _norm(want_grad["discriminator"]) > 0


def test_discriminator_step_leaves_the_shared_word_vectors_to_the_generator(gan):
  """``W`` is the seq2seq model's word matrix (Sec. 2); by default (``model.
  word_table_trained_by = "generator"``) ``L_D`` reads it without training it: the written-out
  Eq. 5 has a gradient on ``W`` but the step's loss has none. The other settings of the
  option: tests/test_topk_gan_word_table.py."""
  obj, params = gan.obj, gan.params
  assert obj.config.model.word_table_trained_by == "generator"
  key = jax.random.key(3)
  db = gan.d_batch(gan.corpus, gan.batch["context"], gan.batch["response_out"], key)
  generated = (db["context"][H:], db["response"][H:])
  d = gan.d_of(params)
  _, want = gan.ref_d(d, params, _human_half(gan.batch, obj), generated)
  _, grad = gan.step_d(d, params, gan.batch, gan.corpus, key)
  assert _norm(want["words"]) > 0 and _norm(grad["words"]) == 0


# -- the direction of each adversarial term ----------------------------------------------


def test_generator_step_lowers_a_and_discriminator_step_separates(gan):
  """One small gradient step on the ``gadv`` loss lowers D's ``a`` on the generator's
  responses (Eq. 6); one on the ``dstep`` loss lowers Eq. 5 with the paper's labels, i.e.
  moves ``a`` up on replayed responses and down on human ones."""
  obj, params = gan.obj, gan.params
  context = gan.batch["context"]
  eps = 1e-3
  g = gan.g_of(params)
  before, ref_grad = gan.ref_g(g, params, context)
  _, grad = gan.step_g(g, params, context)
  norm = _norm(grad)
  moved = jax.tree.map(lambda p, q: p - eps * q / norm, g, grad)
  after, _ = gan.ref_g(moved, params, context)
  # First order: L(g - eps grad/|grad|) = L(g) - eps |grad_ref| (grad = grad_ref).
  drop = float(before) - float(after)
  assert drop > 0, (float(before), float(after))
  np.testing.assert_allclose(drop, eps * _norm(ref_grad), rtol=0.25)

  key = jax.random.key(3)
  human = _human_half(gan.batch, obj)
  db = gan.d_batch(gan.corpus, gan.batch["context"], gan.batch["response_out"], key)
  generated = (db["context"][H:], db["response"][H:])
  d = gan.d_of(params)
  (before, a0), _ = gan.ref_d(d, params, human, generated)
  _, grad = gan.step_d(d, params, gan.batch, gan.corpus, key)
  norm = _norm(grad)
  moved = jax.tree.map(lambda p, q: p - 10 * eps * q / norm, d, grad)
  (after, a1), _ = gan.ref_d(moved, params, human, generated)
  assert float(after) < float(before)
  assert float(jnp.mean(a1[H:])) - float(jnp.mean(a1[:H])) > (float(jnp.mean(a0[H:]))
                                                              - float(jnp.mean(a0[:H])))


# -- Eq. 4 -------------------------------------------------------------------------------


def test_mle_loss_is_eq4_the_mean_of_per_response_means(gan):
  """``L_MLE = 1/|C| sum_(x,s) 1/|s| sum_t -log p_t[s_t]`` with teacher forcing, on a batch
  whose responses have different lengths (so it differs from the per-token mean)."""
  obj, params, batch = gan.obj, gan.params, gan.batch
  assert float(obj.config.model.dropout) == 0.0  # train=True changes nothing
  value, metrics = jax.jit(lambda p, b: obj.mle_loss(
      p, b, types.SimpleNamespace(rng=jax.random.key(0))))(params, batch)
  logits = np.asarray(obj.model.apply({"params": params}, batch["context"],
                                      batch["response_in"], method=TopKDialogueGAN.mle_logits),
                      np.float64)
  target = np.asarray(batch["response_out"])
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0] * (target != 0)
  lengths = (target != 0).sum(-1)
  assert len(set(lengths.tolist())) > 1
  want = np.mean(nll.sum(-1) / lengths)
  np.testing.assert_allclose(float(value.total / value.count), want, rtol=1e-5)
  nll_tok = metrics["nll_per_token"]
  np.testing.assert_allclose(float(nll_tok.total / nll_tok.count), nll.sum() / lengths.sum(),
                             rtol=1e-5)


# -- evaluation --------------------------------------------------------------------------


def test_eval_step_matches_a_hand_composed_reference(gan):
  """``eval_step``: D's ``a`` on the human response, on ``W[y_t]`` of the greedy response
  and on its top-k approximations ``ũ_t``; a human response is classified right when
  ``a < 0.5`` and a generated one when ``a > 0.5`` (Eq. 5's convention); ``nn_hits``
  counts emitted tokens whose word vector is the nearest to ``ũ_t`` (Section 5)."""
  obj = gan.obj
  params = jax.tree.map(jnp.asarray, gan.params)
  disc = dict(params["discriminator"])
  # Shift D's output so that the human responses do not split evenly around 0.5.
  disc["logit"] = dict(disc["logit"], bias=disc["logit"]["bias"] + 0.3)
  params = {**params, "discriminator": disc}
  batch = gan.batch
  sums = jax.device_get(jax.jit(lambda p, b: obj.eval_step(
      types.SimpleNamespace(params=p), b))(params, batch))
  context = batch["context"]
  tokens, emitted, u = jax.jit(lambda p, c: _reference_topk_run(obj, p, c))(params, context)
  words = params["words"]
  apply = lambda *a: np.asarray(jax.nn.sigmoid(obj.model.apply(
      {"params": params}, *a, method=TopKDialogueGAN.discriminate)), np.float64)
  human = replay.fit_width(batch["response_out"], obj.response_len)
  a_h = apply(context, words[human], (human != 0).astype(jnp.float32))
  a_g = apply(context, words[tokens], emitted)
  a_k = apply(context, u, emitted)
  assert (a_h < 0.5).sum() != (a_h > 0.5).sum()
  w = np.asarray(batch["weight"], np.float64)
  np.testing.assert_allclose(sums["d_human"], np.sum(a_h * w), rtol=1e-5)
  np.testing.assert_allclose(sums["d_generated"], np.sum(a_g * w), rtol=1e-5)
  np.testing.assert_allclose(sums["d_topk"], np.sum(a_k * w), rtol=1e-5)
  assert not np.allclose(a_k, a_g)  # ũ_t is an approximation, not W[y_t]
  np.testing.assert_allclose(sums["d_correct"], np.sum(((a_h < 0.5) + (a_g > 0.5)) * w))
  wn, un, em = np.asarray(words, np.float64), np.asarray(u, np.float64), np.asarray(emitted)
  dist = ((un[:, :, None, :] - wn[None, None]) ** 2).sum(-1)
  hits = (dist.argmin(-1) == np.asarray(tokens)) * em
  assert sums["nn_tokens"] == em.sum()
  assert sums["nn_hits"] == hits.sum()
