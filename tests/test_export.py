"""``vedgan export`` and ``vedgan.load_exported``: round trips on two tiny trained runs.

A dialogue model (the seq2seq run of tests/tiny_runs.py, 2 steps, shared with
tests/test_chat.py and tests/test_sample_cli.py) and an unconditional one (a latent GAN,
one D and one G step at toy sizes). Each run is copied, exported through the command
line, and the copy deleted; the folder is then loaded with orbax (and the training stack)
unimportable. The references are the runs opened by ``vedgan.sample`` (tiny_runs.opened).
"""
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types

import chex
import jax
import numpy as np
import pytest
import tiny_runs
from conftest import REPO, make_config

pytest.importorskip("safetensors")

import vedgan  # noqa: E402
from vedgan import cli, parallel, sample  # noqa: E402
from vedgan import export as export_lib  # noqa: E402
from vedgan.errors import CheckpointError, ConfigError  # noqa: E402

#: a latent GAN at toy sizes: one discriminator and one generator step
GAN_TINY = dict(tokenizer__vocab_size=300, model__embed_dim=8, model__gen_hidden=16,
                model__disc_hidden=8, model__rec_hidden=16, model__latent_dim=4,
                model__position_features=4, train__batch_size=8, train__eval_batch_size=16,
                train__eval_batches=1, train__num_samples=0, train__eval_every=10_000,
                train__checkpoint_every=10_000, train__log_every=2, train__progress=False,
                stages__gan__num_steps=2)
CONTEXTS = ["hi there", "how are you <eou> fine thanks", "what is your name"]
#: what load_exported must not import (the checkpoint and training stack)
BLOCKED = ("orbax", "vedgan.checkpoint", "vedgan.train", "vedgan.eval_suites")


@contextlib.contextmanager
def orbax_unimportable():
  """``import orbax`` (and vedgan's checkpoint / training modules) fail inside."""
  with pytest.MonkeyPatch.context() as mp:
    for name in list(sys.modules):
      if any(name == b or name.startswith(b + ".") for b in BLOCKED):
        mp.delitem(sys.modules, name)
    for name in BLOCKED:
      mp.setitem(sys.modules, name, None)
      parent, _, child = name.rpartition(".")
      if parent and hasattr(sys.modules.get(parent), child):
        mp.delattr(sys.modules[parent], child)
    yield


def _export_and_load(run: str, root) -> types.SimpleNamespace:
  """Copies ``run``, exports the copy with the CLI, deletes the copy, loads the export with
  orbax unimportable; the reference is ``run`` opened by vedgan.sample."""
  copy, out = root / "run", root / "model"
  shutil.copytree(run, copy)
  assert cli.main(["export", "--workdir", str(copy), "--out", str(out)]) == 0
  shutil.rmtree(copy)
  with orbax_unimportable():
    with pytest.raises(ImportError):
      importlib.import_module("orbax.checkpoint")
    loaded = vedgan.load_exported(out)
  return types.SimpleNamespace(run=run, out=out, gen=tiny_runs.opened(run)[0], loaded=loaded)


@pytest.fixture(scope="module")
def s2s(tmp_path_factory):
  return _export_and_load(tiny_runs.seq2seq_chat_run(), tmp_path_factory.mktemp("s2s"))


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
  config = make_config("configs/latent_gan.py", "demo", **GAN_TINY)
  run = tiny_runs.trained_run("latent_gan_export", config, 2)
  return _export_and_load(run, tmp_path_factory.mktemp("gan"))


# -- round trips ----------------------------------------------------------------------


def test_dialogue_model_decodes_as_the_run(s2s):
  """Greedy and sampled responses, and the decoder's tokens and scores, equal the run's."""
  gen, loaded = s2s.gen, s2s.loaded
  assert (loaded.kind, loaded.step, loaded.objective_name) == ("dialogue", 2, "seq2seq")
  assert int(loaded.state.step) == int(gen.state.step) == 2  # MojiTalk decodes by the step
  for settings, seed in ((sample.resolve_settings(gen.config, mode="greedy"), 0),
                         (sample.resolve_settings(gen.config, mode="sample",
                                                  temperature=1.5), 3)):
    want = gen.respond(CONTEXTS, settings, seed=seed)
    assert loaded.respond(CONTEXTS, settings, seed=seed) == want
  assert loaded.generate(CONTEXTS) == gen.respond(CONTEXTS, sample.resolve_settings(gen.config))
  # padded to the rows respond() decodes (sample.MIN_BATCH): the programs compiled above
  batch = gen.objective.prompt_batch(gen.inputs, CONTEXTS + CONTEXTS[:1] * 5)
  options = gen.objective.decode_options(mode="greedy")
  a = gen.objective.generate(gen.state, batch, jax.random.key(0), options)
  b = loaded.objective.generate(loaded.state, batch, jax.random.key(0), options)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.scores), np.asarray(b.scores))  # bit for bit
  with pytest.raises(ConfigError, match="pass a list of context strings"):
    loaded.generate("hi there")


def test_unconditional_model_samples_as_the_run(gan):
  gen, loaded = gan.gen, gan.loaded
  assert (loaded.kind, loaded.step, loaded.objective_name) == ("unconditional", 2, "latent_gan")
  for mode, seed in (("greedy", 0), ("sample", 5)):
    settings = sample.resolve_settings(gen.config, mode=mode, temperature=1.0)
    assert loaded.sample_sentences(4, settings, seed) == gen.sample_sentences(4, settings, seed)
  assert loaded.generate(num_samples=4, seed=1) == gen.sample_sentences(
      4, sample.resolve_settings(gen.config), 1)
  with pytest.raises(ConfigError, match="is unconditional: it takes no contexts"):
    loaded.generate(["hi there"])
  options = gen.objective.decode_options(mode="sample", temperature=1.0, num_samples=4)
  a = gen.objective.generate(gen.state, None, jax.random.key(2), options)
  b = loaded.objective.generate(loaded.state, None, jax.random.key(2), options)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  # Tokens of a 2-step GAN hardly move with its weights; the run's validation sums (every
  # network: G, D and R) with the loaded parameters must equal the run's bit for bit.
  batch = parallel.shard_batch(next(gen.inputs.validation_batches(gen.config, 1)),
                               gen.trainer.mesh)
  want = gen.trainer.eval_fn(gen.state, batch)
  got = gen.trainer.eval_fn(gen.state.replace(params=loaded.state.params), batch)
  chex.assert_trees_all_equal(jax.device_get(got), jax.device_get(want))


@pytest.mark.parametrize("which", ["s2s", "gan"])
def test_weights_are_the_checkpoints_params_by_name(which, request):
  """model.safetensors holds exactly the restored state.params: names (paths joined by '/',
  computed here with jax's own tree paths), shapes, dtypes and values; the loaded tree has
  the same structure."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  ex = request.getfixturevalue(which)
  stored = load_file(str(ex.out / export_lib.WEIGHTS))
  want = {"/".join(str(k.key) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(ex.gen.state.params)}
  assert sorted(stored) == sorted(want) and len(want) > 5
  for name, value in want.items():
    assert (stored[name].shape, stored[name].dtype) == (value.shape, value.dtype), name
    np.testing.assert_array_equal(stored[name], value, err_msg=name)
  assert jax.tree.structure(ex.loaded.state.params) == jax.tree.structure(ex.gen.state.params)
  assert {"s2s": "model/embed/embedding", "gan": "generator/embedding"}[which] in stored  # docs


def test_export_folder_holds_the_runs_tokenizer_and_config(s2s):
  out = s2s.out
  assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors",
                                     "tokenizer"]
  with open(os.path.join(s2s.run, "config.json"), encoding="utf-8") as f:
    assert json.loads((out / "config.json").read_text()) == json.load(f)
  run_tok = sorted(os.listdir(os.path.join(s2s.run, "tokenizer")))
  assert sorted(os.listdir(out / "tokenizer")) == run_tok
  for name in run_tok:
    assert (out / "tokenizer" / name).read_bytes() == open(
        os.path.join(s2s.run, "tokenizer", name), "rb").read()
  assert not [p for p in os.listdir(out.parent) if p.startswith(".")]  # no temporary left


# -- the model card -------------------------------------------------------------------------


def _metrics_rows(run, step, split):
  rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"),
                                            encoding="utf-8")]
  return [r for r in rows if r["step"] == step and r["split"] == split]


def test_model_card_states_objective_paper_data_metrics_and_loads(s2s, gan, monkeypatch):
  gan_card = (gan.out / "README.md").read_text()
  assert ("| paper | Latent-space language GAN (Kojima et al.) (vedgan's `docs/latent_gan.md`) |"
          in gan_card)
  assert "| objective | `latent_gan` (unconditional: samples sentences) |" in gan_card
  card = (s2s.out / "README.md").read_text()
  assert card.startswith("# seq2seq: a vedgan model")
  assert "| objective | `seq2seq` (dialogue model: answers a context) |" in card
  assert "| paper | Seq2seq with Luong attention trained by maximum likelihood |" in card
  assert "| data | `chatterbot_corpus` |" in card
  assert "| step | 2 |" in card and "`--checkpoint latest`" in card
  assert "| tokenizer | sentencepiece, 300 ids |" in card
  count = sum(int(np.size(x)) for x in jax.tree.leaves(s2s.gen.state.params))
  assert f"| parameters | {count:,} values in 20 arrays (float32) |" in card
  validation, = _metrics_rows(s2s.run, 2, "validation")
  section = card.split("validation (`metrics.jsonl`):", 1)[1].split("\n\n", 2)[1]
  for key in ("nll", "perplexity", "examples"):
    assert f"| {key} | {validation[key]:.6g} |" in section
  # The card's loading snippet runs as written, from the folder above the export.
  code, = re.findall(r"```python\n(.*?)```", card, flags=re.S)
  monkeypatch.chdir(s2s.out.parent)
  printed = []
  exec(compile(code, "README.md", "exec"), {"print": printed.append})  # pylint: disable=exec-used
  assert printed == [s2s.loaded.generate(["hi there", "how are you?"])]


def test_docs_loading_snippet_runs_on_both_exports(s2s, gan):
  """docs/export.md's "Loading it" block (a text block: the docs tests have no export) runs:
  its dialogue calls on the seq2seq export, its unconditional call on the latent GAN's."""
  page = open(os.path.join(REPO, "docs", "export.md"), encoding="utf-8").read()
  block = page.split("## Loading it", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
  lines = [line.split("#")[0].strip() for line in block.splitlines()]
  calls = [line for line in lines if line.startswith("model.generate(")]
  assert len(calls) == 3 and lines[:3] == ["import vedgan", "",
                                           'model = vedgan.load_exported("models/demo")']
  for ex in (s2s, gan):
    namespace = {}
    exec(lines[0], namespace)  # pylint: disable=exec-used
    namespace["model"] = eval(lines[2].split("=", 1)[1].replace(  # pylint: disable=eval-used
        "models/demo", str(ex.out)), namespace)
    for call in calls:
      if ("num_samples=5)" in call) == (ex is gan):
        out = eval(call, namespace)  # pylint: disable=eval-used
        assert len(out) == (5 if ex is gan else 1 if "num_samples=3" in call else 2)


def test_read_metrics_takes_the_rows_and_evaluations_of_the_step(tmp_path):
  rows = [{"step": 2, "stage": "a", "split": "train", "step_name": "disc", "loss": 9.0},
          {"step": 4, "stage": "a", "split": "train", "step_name": "disc", "loss": 1.0,
           "wall_time": 5.0},
          {"step": 4, "stage": "a", "split": "train", "step_name": "gen", "loss": 2.0},
          {"step": 4, "stage": "a", "split": "validation", "nll": 3.0},
          {"step": 6, "stage": "a", "split": "validation", "nll": 7.0}]
  text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "spl'  # a torn last line
  (tmp_path / "metrics.jsonl").write_text(text)
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "bleu.json").write_text(json.dumps(
      {"suite": "bleu", "step": 4, "split": "test", "values": {"bleu": 0.25}}))
  (tmp_path / "eval" / "old.json").write_text(json.dumps(
      {"suite": "old", "step": 2, "split": "test", "values": {"bleu": 0.5}}))
  assert export_lib.read_metrics(str(tmp_path), 4) == {
      "train/disc": {"loss": 1.0}, "train/gen": {"loss": 2.0}, "validation": {"nll": 3.0},
      "eval/bleu (test)": {"bleu": 0.25}}
  assert export_lib.read_metrics(str(tmp_path / "none"), 4) == {}


# -- bad input: one line, nothing written --------------------------------------------------


def _cli_error(capsys, *argv):
  rc = cli.main(["export", *[str(a) for a in argv]])
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert rc == 2 and len(err) == 1 and err[0].startswith("vedgan: error: "), err
  return err[0]


def test_bad_requests_are_refused_before_anything_is_written(s2s, tmp_path, capsys,
                                                           monkeypatch):
  """Decided from listings and config.json alone: the run is never opened."""
  run = s2s.run
  monkeypatch.setattr(sample, "open_generator", lambda *a: pytest.fail("opened the run"))
  before = tiny_runs.snapshot(run)
  full = tmp_path / "full"
  full.mkdir()
  (full / "keep.txt").write_text("mine")
  assert "pass --overwrite" in _cli_error(capsys, "--workdir", run, "--out", full)
  assert (full / "keep.txt").read_text() == "mine" and os.listdir(full) == ["keep.txt"]
  (tmp_path / "file").write_text("x")
  assert "is not a folder" in _cli_error(capsys, "--workdir", run, "--out", tmp_path / "file")
  out = tmp_path / "out"
  for flag, message in (("foo", "must be best, latest or a step number"),
                        ("99", "has no step 99"), ("best", "has no best checkpoint")):
    assert message in _cli_error(capsys, "--workdir", run, "--out", out, "--checkpoint", flag)
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(run, "config.json"), bare / "config.json")
  assert "checkpoints to export; train first" in _cli_error(capsys, "--workdir", bare, "--out",
                                                           out)
  assert "does not exist" in _cli_error(capsys, "--workdir", tmp_path / "nope", "--out", out)
  assert "holds the run itself" in _cli_error(capsys, "--workdir", run, "--out", run,
                                              "--overwrite")
  assert "required" in _cli_error(capsys, "--workdir", run)
  assert sorted(os.listdir(tmp_path)) == ["bare", "file", "full"]   # no out, no temporary
  assert os.listdir(bare) == ["config.json"] and tiny_runs.snapshot(run) == before


def test_overwrite_replaces_and_an_interrupted_export_leaves_the_old_folder(s2s, tmp_path,
                                                                          monkeypatch):
  out = tmp_path / "model"
  out.mkdir()
  (out / "old.txt").write_text("old")
  real = export_lib._write_text  # pylint: disable=protected-access
  seen = []

  def interrupted(path, text):
    """Ctrl-C while the last file is written; records what --out holds at that moment (a
    SIGKILL there would leave exactly that)."""
    if path.endswith(export_lib.CARD):
      seen.append(sorted(os.listdir(tmp_path)))
      seen.append(sorted(os.listdir(out)))
      raise KeyboardInterrupt
    real(path, text)

  monkeypatch.setattr(export_lib, "_write_text", interrupted)
  with pytest.raises(KeyboardInterrupt):
    export_lib.export(s2s.run, out, overwrite=True, echo=None)
  assert os.listdir(tmp_path) == ["model"] and os.listdir(out) == ["old.txt"]
  with pytest.raises(KeyboardInterrupt):
    export_lib.export(s2s.run, tmp_path / "new", echo=None)
  assert os.listdir(tmp_path) == ["model"]                  # no half folder, no temporary
  hidden = f".new.export-{os.getpid()}"                      # written beside, renamed at the end
  assert seen == [[f".model.export-{os.getpid()}", "model"], ["old.txt"],
                  [hidden, "model"], ["old.txt"]]
  monkeypatch.setattr(export_lib, "_write_text", real)
  export_lib.export(s2s.run, out, overwrite=True, echo=None)
  assert os.listdir(tmp_path) == ["model"] and "old.txt" not in os.listdir(out)
  assert _weights(out) == _weights(s2s.out)


def _weights(folder):
  """``(metadata, {name: (dtype, shape, bytes)})`` of an export's weights file."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  with safe_open(str(folder / export_lib.WEIGHTS), framework="np") as f:
    return f.metadata(), {k: (v.dtype, v.shape, v.tobytes())
                          for k, v in ((k, f.get_tensor(k)) for k in f.keys())}


# -- the loader's errors, the flat names, the lazy attribute -----------------------------


def test_loader_refuses_incomplete_or_mismatched_folders(s2s, gan, tmp_path, monkeypatch):
  with pytest.raises(CheckpointError, match="is not a folder"):
    export_lib.load_exported(tmp_path / "nope")
  part = tmp_path / "part"
  shutil.copytree(s2s.out, part)
  os.remove(part / "model.safetensors")
  with pytest.raises(CheckpointError, match="lacks model.safetensors"):
    export_lib.load_exported(part)
  mixed = tmp_path / "mixed"
  shutil.copytree(s2s.out, mixed)
  shutil.rmtree(mixed / "tokenizer")
  shutil.copytree(gan.out / "tokenizer", mixed / "tokenizer")
  with pytest.raises(CheckpointError, match="not the tokenizer the weights were trained with"):
    export_lib.load_exported(mixed)
  foreign = tmp_path / "foreign"
  shutil.copytree(s2s.out, foreign)
  export_lib.write_weights(str(foreign / "model.safetensors"), {"w": np.ones(2, np.float32)},
                           {"format": "other"})
  with pytest.raises(CheckpointError, match="was not written by vedgan export"):
    export_lib.load_exported(foreign)
  monkeypatch.setitem(sys.modules, "safetensors", None)
  with pytest.raises(ConfigError, match=re.escape('pip install "vedgan[export]"')):
    export_lib.load_exported(s2s.out)


def test_flat_names_round_trip_a_parameter_tree():
  tree = {"g": {"dense": {"kernel": np.ones((2, 3), np.float32),
                          "bias": np.zeros(3, np.float32)}},
          "empty": {}, "d": {"w": np.arange(4, dtype=np.int32)}}
  flat, empty = export_lib.flatten_params(tree)
  assert sorted(flat) == ["d/w", "g/dense/bias", "g/dense/kernel"] and empty == ["empty"]
  back = export_lib.unflatten_params(flat, empty)
  assert jax.tree.structure(back) == jax.tree.structure(tree) and back["empty"] == {}
  for bad in ({"a/b": np.ones(1)}, {"a": [np.ones(1)]}):
    with pytest.raises(CheckpointError, match="cannot be exported"):
      export_lib.flatten_params(bad)


def test_weights_file_keeps_dtypes_values_and_empty_groups(tmp_path):
  """bfloat16 (read back as bfloat16: safetensors >= 0.4.1), float32 and int32 arrays, an
  empty group and the metadata survive write_weights -> read_weights exactly."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  tree = {"g": {"w": np.asarray(jnp.asarray([[1.5, -2.25]], jnp.bfloat16)),
                "b": np.asarray([0.1, 3e-8], np.float32)},
          "n": {"steps": np.asarray([3, 4, 5], np.int32)}, "none": {}}
  path = str(tmp_path / "w.safetensors")
  flat = export_lib.write_weights(path, tree, {"format": "x", "step": "7"})
  assert sorted(flat) == ["g/b", "g/w", "n/steps"]
  back, meta = export_lib.read_weights(path)
  assert meta == {"format": "x", "step": "7", "empty_subtrees": '["none"]'}
  assert jax.tree.structure(back) == jax.tree.structure(tree) and back["none"] == {}
  for (_, want), (_, got) in zip(jax.tree_util.tree_leaves_with_path(tree),
                                 jax.tree_util.tree_leaves_with_path(back)):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.asarray(got).tobytes() == want.tobytes()
  (tmp_path / "bad.safetensors").write_bytes(b"\x05not a safetensors file")
  with pytest.raises(CheckpointError, match="bad.safetensors is unreadable"):
    export_lib.read_weights(str(tmp_path / "bad.safetensors"))


def test_load_exported_is_a_lazy_attribute_of_a_light_package():
  assert vedgan.load_exported is export_lib.load_exported
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    vedgan.nope  # pylint: disable=pointless-statement
  code = ("import sys, vedgan; "
          "print(sorted(m for m in sys.modules if m.startswith(('vedgan', 'jax'))))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120, check=True)
  assert proc.stdout.strip() == "['vedgan']"


@pytest.mark.slow  # four tiny trainings of whole recipes (a few compiles each)
@pytest.mark.parametrize("name", ["mojitalk", "happybot", "collaborative_ved", "topk_gan"])
def test_every_dialogue_objective_round_trips(name, tmp_path):
  """The other dialogue objectives (smoke-sized demo recipes, every stage one pass): the
  export loaded without orbax holds the run's parameters and answers greedily exactly as
  the run does (MojiTalk for a designated emoji, the hierarchical model on multi-turn
  contexts)."""
  from vedgan import notebook, train  # pylint: disable=import-outside-toplevel

  config = notebook.load_config(name, "demo", {"train.num_samples": 0}, smoke=True,
                                smoke_steps=1)
  run = str(tmp_path / "trained")
  assert train.run(config, run)["step"] > 0
  ex = _export_and_load(run, tmp_path)
  gen, loaded = ex.gen, ex.loaded
  assert (loaded.kind, loaded.objective_name, loaded.step) == (
      "dialogue", name, int(gen.state.step))
  label = 1 if name == "mojitalk" else None
  settings = sample.resolve_settings(gen.config, mode="greedy")  # sampling: the tests above
  want = gen.respond(CONTEXTS, settings, seed=0, label=label)
  assert loaded.respond(CONTEXTS, settings, seed=0, label=label) == want
  chex.assert_trees_all_equal(jax.device_get(loaded.state.params),
                              jax.device_get(gen.state.params))
