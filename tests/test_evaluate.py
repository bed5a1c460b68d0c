"""``vedgan.evaluate`` / ``vedgan.eval_suites`` on a tiny trained run (CPU, seconds)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, make_config

from vedgan import eval_suites, metrics, train
from vedgan.errors import CheckpointError, ConfigError

NUM_SAMPLES = 12  # contexts decoded: small, and not a multiple of the decode batch (16)


def _snapshot(root, skip=("eval",)):
  """(relative path, size, mtime) of every file below ``root`` outside ``skip``."""
  out = []
  for base, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(base, d), root) not in skip]
    for f in files:
      p = os.path.join(base, f)
      st = os.stat(p)
      out.append((os.path.relpath(p, root), st.st_size, st.st_mtime_ns))
  return sorted(out)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("evalrun") / "run"
  # train.num_samples=0: no samples logged during training (saves a decoder compile).
  result = train.run(make_config(stages__mle__num_steps=4, train__num_samples=0), str(workdir))
  assert result["step"] == 4
  return workdir


@pytest.fixture
def run_copy(run_dir, tmp_path):
  """A private copy of the trained run (tests that write eval/ do not share it)."""
  dst = tmp_path / "run"
  shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("eval"))
  return dst


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "vedgan.evaluate", *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def _error_lines(proc):
  return [l for l in proc.stderr.splitlines() if l.strip()]


def test_run_suites_writes_every_suite_with_settings(run_dir):
  before = _snapshot(run_dir)
  lines = []
  generic = [s for s in eval_suites.known_suites() if "_" not in s]  # not the papers' suites
  out = eval_suites.run_suites(run_dir, generic, echo=lines.append,
                               num_samples=NUM_SAMPLES, temperatures=(0.0, 0.5, 1.0))
  eval_dir = run_dir / "eval"
  assert set(out) == {"likelihood", "bleu", "diversity", "embedding", "sweep"}
  assert [l.split(" ")[0] for l in lines] == list(out)
  assert all("[validation, step 4]" in l and "\n" not in l for l in lines)
  for name, record in out.items():
    on_disk = json.loads((eval_dir / f"{name}.json").read_text())
    assert on_disk["step"] == 4 and on_disk["split"] == "validation"
    assert on_disk["values"] == pytest.approx(record["values"])
    for res in on_disk["results"].values():
      assert {"name", "value", "settings", "details"} <= set(res)
      assert res["settings"]["implementation"] == metrics.IMPLEMENTATION_VERSION
      assert "tokenization" in res["settings"]
      if res["name"] not in ("diversity", "self_bleu"):  # these have no references
        assert len(res["settings"]["reference_hash"]) == 16
  # The run's own files are only read.
  assert _snapshot(run_dir) == before

  lik = out["likelihood"]
  assert lik["values"]["perplexity"] > 1
  assert lik["values"]["examples"] == lik["results"]["likelihood"]["settings"]["num_examples"]
  assert np.isclose(np.exp(lik["values"]["nll"]), lik["values"]["perplexity"], rtol=1e-5)

  bleu = out["bleu"]
  for key in ("bleu", "corpus_bleu"):
    assert 0.0 <= bleu["values"][key] <= 1.0
  texygen, corpus = bleu["results"]["bleu"]["settings"], bleu["results"]["corpus_bleu"]["settings"]
  assert texygen["max_n"] == corpus["max_n"] == 4
  assert texygen["smoothing"] == "nltk-method1" and corpus["smoothing"] == "exp"
  assert texygen["num_hypotheses"] == corpus["num_hypotheses"] == NUM_SAMPLES
  assert texygen["num_references"] == lik["values"]["examples"]  # the whole split
  assert texygen["tokenization"].startswith("word: NFKC, lowercased")
  gen = bleu["generation"]
  assert gen["mode"] == "greedy" and gen["num_contexts"] == NUM_SAMPLES
  assert gen["batch_size"] == 16 and gen["max_len"] == 12
  # the repetition / nucleus / length rules are part of what makes a decoded metric comparable
  assert (gen["top_p"], gen["repetition_penalty"], gen["no_repeat_ngram"], gen["min_len"]) == (
      1.0, 1.0, 0, 0)

  div = out["diversity"]["values"]
  assert 0.0 <= div["distinct_1"] <= 1.0 and 0.0 <= div["distinct_2"] <= 1.0
  assert 0.0 <= div["self_bleu"] <= 1.0 and 0 < div["average_length"]
  assert out["diversity"]["results"]["self_bleu"]["settings"]["num_sentences"] == NUM_SAMPLES

  emb = out["embedding"]
  assert all(-1.0 <= emb["values"][k] <= 1.0 for k in ("average", "greedy", "extrema"))
  emb_settings = emb["results"]["embedding"]["settings"]
  assert emb_settings["word_vectors"].startswith("model input embedding table")
  assert emb_settings["tokenization"].startswith("sentencepiece ids")
  assert emb["values"]["oov_rate"] == 0.0  # every id has a row

  sweep = out["sweep"]
  assert [p["temperature"] for p in sweep["points"]] == [0.0, 0.5, 1.0]
  assert sweep["settings"]["num_samples"] == NUM_SAMPLES
  # The sweep and Texygen BLEU use the same reference set, hence the same hash.
  assert sweep["settings"]["reference_hash"] == texygen["reference_hash"]
  # Temperature 0 is the greedy decoding that the bleu suite scored.
  assert sweep["points"][0]["bleu"]["4"] == pytest.approx(bleu["values"]["bleu"])
  png = eval_dir / "quality_diversity.png"
  assert sweep["plots"] == ["eval/quality_diversity.png"] and png.stat().st_size > 1000
  assert metrics.load_sweep(eval_dir / "sweep.json")["points"] == sweep["points"]

  responses = [json.loads(l) for l in (eval_dir / "responses.jsonl").read_text().splitlines()]
  assert len(responses) == NUM_SAMPLES
  assert all(isinstance(r["response"], str) and r["reference"] for r in responses)



def test_cli_evaluates_a_run(run_copy, tmp_path):
  vectors = tmp_path / "vectors.txt"  # a tiny word-vector file: embedding metrics on words
  rng = np.random.default_rng(0)
  vectors.write_text("".join(f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=6)) + "\n"
                             for w in "you i the a what is are do to of".split()))
  proc = _cli("--workdir", run_copy, "--suite", "likelihood,bleu,embedding", "--num_samples", 8,
              "--word_vectors", vectors)
  assert proc.returncode == 0, proc.stderr
  summaries = [l for l in proc.stdout.splitlines() if l.strip()]
  assert [l.split(" ")[0] for l in summaries] == ["likelihood", "bleu", "embedding"]
  assert "perplexity" in summaries[0] and "corpus BLEU-4" in summaries[1]
  assert sorted(os.listdir(run_copy / "eval")) == ["bleu.json", "embedding.json",
                                                   "likelihood.json", "responses.jsonl"]
  bleu = json.loads((run_copy / "eval" / "bleu.json").read_text())
  assert bleu["generation"]["mode"] == "greedy"  # the run's config.decode
  assert bleu["results"]["bleu"]["settings"]["num_hypotheses"] == 8
  emb = json.loads((run_copy / "eval" / "embedding.json").read_text())
  settings = emb["results"]["embedding"]["settings"]
  assert settings["word_vectors"] == "vectors.txt"
  assert settings["tokenization"] == bleu["results"]["bleu"]["settings"]["tokenization"]
  assert 0.0 < emb["values"]["oov_rate"] < 1.0
  assert emb["generation"]["contexts_hash"] == bleu["generation"]["contexts_hash"]


def test_bad_inputs_are_one_line_errors_that_write_nothing(run_copy, tmp_path):
  before = _snapshot(run_copy, skip=())
  proc = _cli("--workdir", run_copy, "--suite", "likelihood,nope")
  assert proc.returncode == 2
  known = eval_suites.known_suites()  # the generic suites first, then the papers'
  assert known[:5] == ("likelihood", "bleu", "diversity", "embedding", "sweep")
  assert "mojitalk_table2" in known and "topk_gan_fig3" in known
  assert _error_lines(proc) == ["vedgan: error: unknown suite 'nope'; --suite takes a comma "
                                f"list of {', '.join(known)}"]
  assert _snapshot(run_copy, skip=()) == before

  missing = tmp_path / "missing"
  proc = _cli("--workdir", missing)
  assert proc.returncode == 2
  assert _error_lines(proc) == [f"vedgan: error: --workdir {missing} does not exist or is not "
                                "a directory"]
  assert not missing.exists()

  untrained = tmp_path / "untrained"  # a run killed before its first checkpoint
  untrained.mkdir()
  shutil.copy(run_copy / "config.json", untrained / "config.json")
  proc = _cli("--workdir", untrained)
  assert proc.returncode == 2
  assert _error_lines(proc) == [f"vedgan: error: no checkpoint in {untrained}/checkpoints; "
                                "train first with python -m vedgan.main --config CONFIG "
                                f"--workdir {untrained}"]
  assert os.listdir(untrained) == ["config.json"]


def test_python_api_errors(run_dir, tmp_path):
  with pytest.raises(ConfigError, match=r"unknown suite 'bleu4'; --suite takes"):
    eval_suites.run_suites(run_dir, "likelihood,bleu4")
  with pytest.raises(ConfigError, match="--max_n=0 must be >= 1"):
    eval_suites.run_suites(run_dir, "bleu", max_n=0)
  with pytest.raises(TypeError, match="unknown option"):
    eval_suites.run_suites(run_dir, "bleu", num_sample=3)
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="config.json is unreadable"):
    eval_suites.run_suites(tmp_path, "bleu")
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_the_runs_repetition_rules_apply_to_evaluation_decoding(run_copy):
  """config.decode.no_repeat_ngram (and the other rules) reach the decoder of the suites and
  are recorded with the metrics; plain greedy responses of this run repeat tokens."""
  path = run_copy / "config.json"
  saved = json.loads(path.read_text())
  options = eval_suites.EvalOptions(num_samples=16)
  run = eval_suites.open_run(str(run_copy), options)
  try:
    plain = run.decode_ids("greedy", 1.0)
  finally:
    run.trainer.close()
  assert any(len(set(r)) < len(r) for r in plain), plain
  saved["decode"]["no_repeat_ngram"] = 1
  path.write_text(json.dumps(saved))
  run = eval_suites.open_run(str(run_copy), options)
  try:
    assert run.generation["no_repeat_ngram"] == 1
    once = run.decode_ids("greedy", 1.0)
  finally:
    run.trainer.close()
  assert all(len(set(r)) == len(r) for r in once), once


def test_likelihood_options_set_k_and_the_batches_of_the_opened_run(run_dir, tmp_path,
                                                                    monkeypatch):
  """--iw_samples K and --likelihood_batches N reach the config the run is opened with (the
  chunk of K draws becomes a divisor of K); 0 keeps the run's K and reads the whole split;
  a negative value, or K for a run without the bound, is one line before anything opens."""
  from vedgan import train as train_lib  # pylint: disable=import-outside-toplevel
  latent = tmp_path / "latent"  # the run's config with a likelihood section (K 100, chunk 5)
  shutil.copytree(run_dir, latent, ignore=shutil.ignore_patterns("eval"))
  cfg = json.loads((latent / "config.json").read_text())
  cfg["likelihood"] = {"iw_samples": 100, "iw_chunk": 5}
  (latent / "config.json").write_text(json.dumps(cfg))
  seen = []

  class _Opened(Exception):
    """Raised by the fake Trainer: the config was seen, nothing else is opened."""

  def trainer(config, workdir):
    lik = config.get("likelihood")
    seen.append((int(config.train.eval_batches),) + (
        (int(lik.iw_samples), int(lik.iw_chunk)) if lik else ()))
    raise _Opened

  monkeypatch.setattr(train_lib, "Trainer", trainer)
  for workdir, options, want in ((run_dir, {}, (0,)), (run_dir, {"likelihood_batches": 2}, (2,)),
                                 (latent, {}, (0, 100, 5)),
                                 (latent, {"iw_samples": 12, "likelihood_batches": 3}, (3, 12, 1)),
                                 (latent, {"iw_samples": 40}, (0, 40, 5))):
    with pytest.raises(_Opened):
      eval_suites.run_suites(workdir, "likelihood", echo=None, **options)
    assert seen.pop() == want, options
  for name in ("iw_samples", "likelihood_batches"):
    with pytest.raises(ConfigError, match=f"--{name}=-1 must be >= 0"):
      eval_suites.run_suites(latent, "likelihood", echo=None, **{name: -1})
  with pytest.raises(ConfigError, match="--iw_samples applies to the latent models; objective "
                     "'seq2seq' has no importance-weighted bound"):
    eval_suites.run_suites(run_dir, "likelihood", echo=None, iw_samples=10)
  assert not seen
