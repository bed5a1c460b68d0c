"""The synthetic-oracle benchmark (issue 18): the oracle LSTM, its data source, the identity
tokenizer and the oracle metrics of a tiny MLE run (configs/oracle.py:demo)."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import make_config
from vedgan import eval_suites, oracle, oracle_eval, train
from vedgan.data import oracle_data, sources
from vedgan.data.identity_tokenizer import IdentityTokenizer
from vedgan.data.tokenizer import load_tokenizer
from vedgan.errors import ConfigError


def _np_oracle_logits(p, tokens):
  """A hand-written numpy forward of the SeqGAN/Texygen layout: ``[B, T, V]`` float64."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  sig = lambda x: 1.0 / (1.0 + np.exp(-x))
  b, t = tokens.shape
  h = np.zeros((b, p["U_i"].shape[0]))
  c = np.zeros_like(h)
  prev = np.zeros((b,), np.int64)            # the first input is token 0
  out = []
  for s in range(t):
    x = p["embedding"][prev]
    i = sig(x @ p["W_i"] + h @ p["U_i"] + p["b_i"])
    f = sig(x @ p["W_f"] + h @ p["U_f"] + p["b_f"])
    o = sig(x @ p["W_o"] + h @ p["U_o"] + p["b_o"])
    c = f * c + i * np.tanh(x @ p["W_c"] + h @ p["U_c"] + p["b_c"])
    h = o * np.tanh(c)
    out.append(h @ p["W_out"] + p["b_out"])
    prev = tokens[:, s]
  return np.stack(out, axis=1)


def test_sampler_and_nll_agree():
  """The NLL of the oracle's own samples is an unbiased estimate of the per-token entropy
  along the sampled prefixes; the exact softmax entropies are computed independently
  (numpy forward). 4,000 x 8 tokens, seed 1: the difference is within 4 standard errors."""
  p = oracle.random_params(jax.random.key(0), vocab=40, embed=8, hidden=8)
  tokens = np.asarray(oracle.sample_jit(p, jax.random.key(1), num=4000, length=8))
  assert tokens.shape == (4000, 8) and tokens.min() >= 0 and tokens.max() < 40
  nll = np.asarray(oracle.token_nll(p, tokens), np.float64)
  logits = _np_oracle_logits(p, tokens)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  entropy = -(np.exp(logp) * logp).sum(-1)
  se = (nll - entropy).std() / np.sqrt(nll.size)
  print("nll", nll.mean(), "entropy", entropy.mean(), "se", se)
  assert abs(nll.mean() - entropy.mean()) < 4 * se, (nll.mean(), entropy.mean(), se)
  assert abs(oracle.mean_nll(p, tokens, chunk=1000) - nll.mean()) < 1e-5
  # The sampler's own entropies (at the prefixes it drew) are the numpy ones.
  toks2, ent2 = oracle.sample_with_entropy(p, jax.random.key(1), 4000, 8)
  np.testing.assert_array_equal(np.asarray(toks2), tokens)
  np.testing.assert_allclose(np.asarray(ent2), entropy, atol=1e-4)


def test_npz_layout_reproduces_logits_exactly(tmp_path):
  rng = np.random.default_rng(0)
  shapes = oracle.param_shapes(vocab=30, embed=5, hidden=7)
  arrays = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  path = str(tmp_path / "oracle.npz")
  np.savez(path, **arrays)
  p = oracle.load_params(path)
  tokens = rng.integers(0, 30, size=(6, 9))
  np.testing.assert_allclose(np.asarray(oracle.logits(p, tokens)), _np_oracle_logits(arrays, tokens),
                             rtol=1e-5, atol=1e-5)
  # Missing and ill-shaped arrays are one-line ConfigErrors naming the array.
  np.savez(path, **{k: v for k, v in arrays.items() if k != "U_f"})
  with pytest.raises(ConfigError, match="U_f") as e:
    oracle.load_params(path)
  assert "\n" not in str(e.value)
  np.savez(path, **{**arrays, "b_out": arrays["b_out"][:5]})
  with pytest.raises(ConfigError, match=r"b_out has shape \(5,\), expected \(30,\)"):
    oracle.load_params(path)
  with pytest.raises(ConfigError, match="does not exist"):
    oracle.load_params(str(tmp_path / "none.npz"))


def test_identity_tokenizer_round_trips_ids(tmp_path):
  tok = IdentityTokenizer(40 + 6)
  assert tok.num_tokens == 40 and (tok.pad_id, tok.bos_id, tok.eos_id, tok.blank_id) == (0, 2, 3, 5)
  ids = tok.encode("0 5 39 7")
  assert ids == [6, 11, 45, 13]
  assert tok.decode(ids) == "0 5 39 7"
  assert tok.decode(ids + [tok.eos_id, 9]) == "0 5 39 7"
  assert [tok.id_to_piece(i) for i in ids] == ["0", "5", "39", "7"]
  assert tok.piece_to_id("39") == 45
  with pytest.raises(ValueError, match="not a token id"):
    tok.encode("40")
  tok.save(tmp_path)
  again = load_tokenizer(tmp_path)
  assert isinstance(again, IdentityTokenizer) and again.fingerprint == tok.fingerprint


def test_data_source_is_deterministic_and_cached(tmp_path):
  d = make_config("configs/oracle.py", "demo", data__data_dir=str(tmp_path / "a")).data
  train_a = sources.load_split(d, "train")
  folder = oracle_data.cache_dir(d)
  assert sorted(os.listdir(folder)) == ["meta.json", "oracle.npz", "test.txt", "train.txt"]
  assert train_a.tokens.shape == (512, 8) and len(train_a) == 512
  # Cached: a second read does not resample (the file is what is read).
  stamp = os.path.getmtime(os.path.join(folder, "train.txt"))
  np.testing.assert_array_equal(sources.load_split(d, "train").tokens, train_a.tokens)
  assert os.path.getmtime(os.path.join(folder, "train.txt")) == stamp
  # Deterministic: a fresh data dir resamples the same sequences; test differs from train.
  d2 = make_config("configs/oracle.py", "demo", data__data_dir=str(tmp_path / "b")).data
  np.testing.assert_array_equal(oracle_data.load_tokens(d2, "train"), train_a.tokens)
  assert not np.array_equal(oracle_data.load_tokens(d2, "test")[:512], train_a.tokens[:256])
  # The cached oracle is the configured one; repeated sequences are kept (no dedup).
  np.testing.assert_array_equal(
      np.asarray(oracle.load_params(os.path.join(folder, "oracle.npz"))["W_out"]),
      np.asarray(oracle.from_config(d)["W_out"]))
  assert len(sources.sentences(train_a)) == 512
  repeated = oracle_data.OracleRecords(np.array([[1, 2], [1, 2], [3, 4]], np.int32))
  assert sources.sentences(repeated) == ["1 2", "1 2", "3 4"]
  # Another oracle seed, or another data seed, is another cache (and other samples).
  d3 = make_config("configs/oracle.py", "demo", data__data_dir=str(tmp_path / "a"),
                   data__oracle_seed=5).data
  assert oracle_data.cache_dir(d3) != folder
  d4 = make_config("configs/oracle.py", "demo", data__data_dir=str(tmp_path / "a"),
                   data__oracle_data_seed=7).data
  assert oracle_data.cache_dir(d4) != folder
  assert not np.array_equal(oracle_data.load_tokens(d4, "train"), train_a.tokens)


@pytest.mark.slow  # a whole training run / subprocess: the slow tier
def test_demo_mle_run_writes_oracle_metrics_and_nll_test_falls(tmp_path):
  config = make_config("configs/oracle.py", "demo", data__data_dir=str(tmp_path / "data"))
  workdir = str(tmp_path / "run")
  result = train.run(config, workdir)
  assert result["step"] == 60 and not result["stopped"]
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  val = [r for r in rows if r["split"] == "validation"]
  assert [r["step"] for r in val] == [0, 30, 60]
  for r in val:
    for k in ("nll_oracle", "nll_test", "nll_oracle_data"):
      assert np.isfinite(r[k]), (k, r)
  first, last = val[0], val[-1]
  print({k: (first[k], last[k]) for k in ("nll_oracle", "nll_test", "nll_oracle_data",
                                           "model_special_mass")})
  assert last["nll_test"] < first["nll_test"] - 0.3
  assert last["nll_oracle"] < first["nll_oracle"]
  assert first["nll_oracle_data"] == last["nll_oracle_data"]
  # The floor is below what an untrained model scores on the oracle's test data.
  assert first["nll_oracle_data"] < first["nll_test"]
  samples = oracle_data.read_tokens(os.path.join(workdir, "eval", "oracle_samples.txt"))
  assert samples.shape == (256, 8) and samples.min() >= 0 and samples.max() < 40
  # The file holds the scored samples: rescoring them gives the logged nll_oracle.
  p = oracle.from_config(config.data)
  assert abs(oracle.mean_nll(p, samples) - last["nll_oracle"]) < 1e-4
  # nll_test is the model's NLL of the T oracle tokens (not the final blank).
  assert 0 < last["nll_test"] < np.log(46)
  # The temperature sweep (item 4) on the same run: NLL-test at T = 1 is the logged one,
  # sharper sampling gives samples the oracle finds likelier, and the curve is plotted.
  out = eval_suites.run_suites(workdir, "oracle_temperature", echo=None, num_samples=200,
                               temperatures=(0.5, 1.0, 2.0))["oracle_temperature"]
  (curve,) = out["curves"]
  points = {p["temperature"]: p for p in curve["points"]}
  assert sorted(points) == [0.5, 1.0, 2.0] and curve["likelihood"]
  np.testing.assert_allclose(points[1.0]["nll_test"], last["nll_test"], rtol=1e-5)
  assert points[0.5]["nll_oracle"] < points[1.0]["nll_oracle"] < points[2.0]["nll_oracle"]
  assert points[2.0]["nll_test"] > points[1.0]["nll_test"]       # a flattened model fits worse
  assert out["values"]["nll_oracle_data"] == pytest.approx(last["nll_oracle_data"])
  curves = eval_suites.run_suites(workdir, "oracle_curves", echo=None)["oracle_curves"]
  (mle_curve,) = curves["curves"]
  assert mle_curve["epochs_per_step"] == pytest.approx(1 / 16)    # every step updates G
  assert [p["nll_test"] for p in mle_curve["points"]] == [r["nll_test"] for r in val]
  assert os.path.isfile(os.path.join(workdir, "eval", "oracle_temperature.png"))
  with pytest.raises(ConfigError, match="must be > 0"):
    eval_suites.run_suites(workdir, "oracle_temperature", echo=None, temperatures=(0.0, 1.0))


@pytest.mark.slow  # a whole training run / subprocess: the slow tier
def test_latent_gan_demo_on_the_oracle_scores_samples_and_sweeps_self_bleu(tmp_path):
  """configs/oracle.py:latent_gan takes every model field of configs/latent_gan.py:paper (a
  field added there reaches the oracle run), and its runs are scored without a likelihood."""
  paper = make_config("configs/latent_gan.py", "paper").model.to_dict()
  for variant in ("latent_gan", "latent_gan_demo"):
    model = make_config("configs/oracle.py", variant).model.to_dict()
    assert set(model) == set(paper), variant
    sizes = {"embed_dim", "gen_hidden", "disc_hidden", "rec_hidden"}
    assert {k: v for k, v in model.items() if k not in sizes} == {
        k: v for k, v in paper.items() if k not in sizes}, variant
  config = make_config("configs/oracle.py", "latent_gan_demo",
                       data__data_dir=str(tmp_path / "data"), stages__gan__num_steps=8,
                       train__eval_every=8, train__checkpoint_every=8)
  workdir = str(tmp_path / "run")
  assert train.run(config, workdir)["step"] == 8
  val = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  val = [r for r in val if r["split"] == "validation"]
  assert [r["step"] for r in val] == [0, 8]
  for r in val:
    assert np.isfinite(r["nll_oracle"]) and np.isfinite(r["nll_oracle_data"])
    assert "nll_test" not in r                  # the latent GAN has no likelihood
    assert r["nll_oracle_data"] < r["nll_oracle"]
  out = eval_suites.run_suites(workdir, "oracle_temperature", echo=None, num_samples=64,
                               temperatures=(0.05, 2.0))["oracle_temperature"]
  (curve,) = out["curves"]
  assert not curve["likelihood"]
  # Temperature 1 is the GAN's own word distribution softmax(o / tau_2) (Eq. 2), not softmax(o).
  run = train.Trainer(config, workdir)
  try:
    run.setup(write=False)
    ev = oracle_eval.OracleEvaluator(config, run.objective)
    assert ev.base_temperature == config.model.word_temperature == 0.1
    sample, _ = oracle_eval._model_fns(run.objective.generator, 8, 8)  # pylint: disable=protected-access
    own, _ = ev.model_samples(run.state, 1.0, seed=3)
    raw = sample(run.state.params["generator"], jax.random.fold_in(jax.random.key(3), 0),
                 np.float32(0.1), num=ev.chunk)[0]
    np.testing.assert_array_equal(own[:ev.chunk], np.asarray(raw))
  finally:
    run.close()
  # The training curve is on epochs of generator updates: one G update per two global steps,
  # 512 / 32 = 16 batches an epoch.
  curves = eval_suites.run_suites(workdir, "oracle_curves", echo=None)["oracle_curves"]
  (gan_curve,) = curves["curves"]
  assert gan_curve["epochs_per_step"] == pytest.approx(0.5 / 16)
  assert [(p["step"], p["epoch"]) for p in gan_curve["points"]] == [(0, 0.0), (8, 0.25)]
  assert [p["nll_oracle"] for p in gan_curve["points"]] == [r["nll_oracle"] for r in val]
  assert os.path.isfile(os.path.join(workdir, "eval", "oracle_curves.png"))
  lo, hi = curve["points"]
  assert "self_bleu" in lo and "nll_test" not in lo
  # Sharper sampling repeats itself more: Self-BLEU falls as the temperature rises.
  assert lo["self_bleu"] > hi["self_bleu"]
