"""The seq2seq-attention model and its MLE objective."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config
from fakes import FakeTokenizer

from vedgan import parallel, train
from vedgan.decode import DecodeOptions
from vedgan.errors import ConfigError
from vedgan.nn.seq2seq import Seq2Seq
from vedgan.papers.seq2seq.algorithm import Seq2SeqObjective, build_seq2seq

V = 40
TOK = FakeTokenizer(vocab_size=V)


def _batch(rng=0, b=4, s=7, t=6):
  r = np.random.RandomState(rng)
  context = r.randint(4, V, size=(b, s)).astype(np.int32)
  context[0, 4:] = 0
  context[2, 2:] = 0
  resp = r.randint(4, V, size=(b, t)).astype(np.int32)
  resp[1, 3:] = 0
  response_in = np.concatenate([np.full((b, 1), 2, np.int32), resp[:, :-1]], axis=1)
  response_out = resp.copy()
  return {"context": context, "response_in": response_in * (response_out != 0),
          "response_out": response_out, "weight": np.ones(b, np.float32)}


@pytest.mark.parametrize("attention, tie", [("dot", False), ("general", True),
                                            ("scaled_dot", False)])
def test_teacher_forcing_equals_step_by_step_decoding(attention, tie):
  model = Seq2Seq(vocab_size=V, embed_dim=12, hidden=16, attention=attention, tie_embeddings=tie,
                  encoder_layers=2)
  batch = _batch()
  params = model.init(jax.random.key(0), batch["context"], batch["response_in"])
  full = model.apply(params, batch["context"], batch["response_in"])
  memory = model.apply(params, batch["context"], method=Seq2Seq.encode)
  h = model.apply(params, memory, method=Seq2Seq.initial_state)
  steps = []
  for t in range(batch["response_in"].shape[1]):
    h, logits, _ = model.apply(params, memory, h, batch["response_in"][:, t],
                               method=Seq2Seq.decode_step)
    steps.append(logits)
  np.testing.assert_allclose(full, jnp.stack(steps, 1), rtol=1e-5, atol=1e-5)


def test_padding_of_the_context_changes_nothing():
  model = Seq2Seq(vocab_size=V, embed_dim=12, hidden=16)
  batch = _batch()
  params = model.init(jax.random.key(1), batch["context"], batch["response_in"])
  padded = np.concatenate([batch["context"], np.zeros((4, 5), np.int32)], axis=1)
  np.testing.assert_allclose(model.apply(params, batch["context"], batch["response_in"]),
                             model.apply(params, padded, batch["response_in"]),
                             rtol=1e-6, atol=1e-6)


def test_unknown_attention_is_a_config_error():
  model = Seq2Seq(vocab_size=V, attention="bahdanau")
  with pytest.raises(ValueError, match="model.attention='bahdanau'"):
    model.init(jax.random.key(0), _batch()["context"], _batch()["response_in"])


def _objective(**overrides):
  config = make_config(**overrides)
  return Seq2SeqObjective(config, TOK), config


def test_mle_step_is_the_token_mean_and_learns():
  obj, config = _objective(model__dropout=0.0)
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = parallel.shard_batch(_batch(), mesh)
  # (the references are jitted: one program each instead of one per operation)
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  # Loss reported by the step = summed token NLL / number of target tokens.
  apply = jax.jit(lambda p, c, r: obj.model.apply({"params": p}, c, r))
  logits = apply(state.params["model"], batch["context"], batch["response_in"])
  logp = jax.nn.log_softmax(logits)
  tgt = np.asarray(batch["response_out"])
  picked = np.take_along_axis(np.asarray(logp), tgt[..., None], -1)[..., 0]
  expected = -(picked * (tgt != 0)).sum() / (tgt != 0).sum()
  # Its gradient: Eq. (MLE) composed by hand on the logits of [bos, y_<t]; the step reports
  # the norm of the gradient before clipping.
  mask = (tgt != 0).astype(np.float32)

  def reference(params):
    logits = obj.model.apply({"params": params}, batch["context"], batch["response_in"])
    logp = jax.nn.log_softmax(logits)
    return -(jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0] * mask).sum() / mask.sum()

  grads = jax.jit(jax.grad(reference))(state.params["model"])
  grad_norm = np.sqrt(sum(float(np.sum(np.square(np.asarray(g, np.float64))))
                          for g in jax.tree.leaves(grads)))
  step = train.step_function(obj, "mle", config, state, mesh=mesh)
  state, metrics = step(state, batch)
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-4)
  assert int(metrics["tokens"]) == int((tgt != 0).sum())
  assert int(state.step) == 1
  for _ in range(40):
    state, metrics = step(state, batch)
  assert float(metrics["loss"]) < 0.5 * expected


def test_generation_modes():
  obj, _ = _objective()
  batch = _batch()
  state = obj.init(jax.random.key(0), batch)
  ctx = {"context": batch["context"]}

  def gen(rng=jax.random.key(0), **options):
    return obj.generate(state, ctx, rng, DecodeOptions(max_len=8, **options))

  greedy = gen(mode="greedy")
  beam1 = gen(mode="beam", beam_width=1)
  np.testing.assert_array_equal(greedy.tokens, beam1.tokens)
  beam = gen(mode="beam", beam_width=3)
  assert beam.tokens.shape == (4, 8)
  # Beam search never scores below greedy (it keeps the greedy path among its beams).
  assert np.all(np.asarray(beam.scores) >= np.asarray(greedy.scores) - 1e-4)
  sample = gen(jax.random.key(3), mode="sample", temperature=1.0, top_k=5)
  cold = gen(jax.random.key(3), mode="sample", temperature=1e-4)
  np.testing.assert_array_equal(cold.tokens, greedy.tokens)
  for out in (greedy, beam, sample):
    toks = np.asarray(out.tokens)
    assert not np.isin(toks, [TOK.unk_id, TOK.bos_id]).any()
  with pytest.raises(ConfigError, match="decoding mode"):
    gen(mode="nucleus")


def test_bad_dtype_is_a_config_error():
  config = make_config(model__dtype="float16")
  with pytest.raises(ConfigError, match="model.dtype='float16'"):
    build_seq2seq(config.model, V)


def test_a_temperature_sweep_compiles_once():
  """The temperature is traced (DecodeOptions.split_temperature): sampling at three
  temperatures compiles the decoder once, and the temperatures still act."""
  from vedgan import decode  # pylint: disable=import-outside-toplevel
  obj, _ = _objective()
  batch = _batch()
  state = obj.init(jax.random.key(0), batch)
  ctx = {"context": batch["context"]}
  before = decode._jit_module_conditional._cache_size()  # pylint: disable=protected-access
  outs = [obj.generate(state, ctx, jax.random.key(1),
                       DecodeOptions(mode="sample", max_len=9, temperature=t))
          for t in (1e-4, 0.5, 3.0)]
  assert decode._jit_module_conditional._cache_size() == before + 1  # pylint: disable=protected-access
  greedy = obj.generate(state, ctx, jax.random.key(1), DecodeOptions(max_len=9))
  np.testing.assert_array_equal(outs[0].tokens, greedy.tokens)  # cold sampling = greedy
  assert not np.array_equal(outs[0].tokens, outs[2].tokens)


def _reference_nll(model, params, batch):
  """Per-row teacher-forced ``(sum_t -log p(y_t | y_<t, x), #tokens)`` without dropout, from
  the model's logits on ``[bos, y...]`` and a numpy log-softmax over the real tokens."""
  logits = np.asarray(model.apply({"params": params}, batch["context"], batch["response_in"]),
                      np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  tgt = np.asarray(batch["response_out"])
  picked = np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
  mask = tgt != 0
  return -(picked * mask).sum(-1), mask.sum(-1).astype(np.float64)


def test_mle_trains_with_dropout_and_evaluates_without():
  """The MLE step runs the model with dropout (its loss differs from the deterministic
  token-mean NLL); ``eval_step`` scores the deterministic model."""
  obj, config = _objective(model__dropout=0.5)
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = _batch()
  state = obj.init(jax.random.key(0), batch)
  nll, count = _reference_nll(obj.model, state.params["model"], batch)
  sums = obj.eval_step(state, batch)
  np.testing.assert_allclose(sums["nll"], nll.sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["tokens"], count.sum())
  step = train.step_function(obj, "mle", config, state, mesh=mesh, donate_state=False)
  _, metrics = step(state, parallel.shard_batch(batch, mesh))
  assert abs(float(metrics["loss"]) - nll.sum() / count.sum()) > 1e-3


def test_eval_sums_and_perplexity():
  """Evaluation sums the NLL and tokens of real rows only (``weight`` 0 rows weigh
  nothing); the perplexity is ``exp(sum NLL / #tokens)``, the exponentiated token mean."""
  obj, _ = _objective()
  batch = _batch()
  batch["weight"] = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  state = obj.init(jax.random.key(0), batch)
  nll, count = _reference_nll(obj.model, state.params["model"], batch)
  w = batch["weight"]
  sums = obj.eval_step(state, batch)
  np.testing.assert_allclose(sums["nll"], (nll * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["tokens"], (count * w).sum())
  np.testing.assert_allclose(sums["examples"], 3.0)
  out = obj.summarize(jax.device_get(sums))
  token_mean = (nll * w).sum() / (count * w).sum()
  np.testing.assert_allclose(out["nll"], token_mean, rtol=1e-5)
  np.testing.assert_allclose(out["perplexity"], np.exp(token_mean), rtol=1e-5)

