"""``python -m vedgan.sample`` on tiny trained runs: every flag's effect and its errors.

One seq2seq run (2 steps, ``data.context_turns=3``, shared with
tests/test_chat.py through tests/tiny_runs.py) and one LSTM language model run
(2 steps, tiny sizes); every call goes through :func:`vedgan.sample.main`
in-process (tests/test_chat.py runs its CLI as a real subprocess). Time budget (with tests/test_chat.py):
40 s on an idle 2-core machine.
"""
import io
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import tiny_runs
from conftest import make_config

from vedgan import sample, train


def _open(workdir):
  """``(workdir, snapshot taken before opening, opened Generator)``."""
  gen, before = tiny_runs.opened(workdir)
  return pathlib.Path(workdir), before, gen


@pytest.fixture(scope="module")
def s2s():
  return _open(tiny_runs.seq2seq_chat_run())  # shared with tests/test_chat.py


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
  """An unconditional run: the LSTM language model of configs/latent_gan.py (the GAN's
  sampling path, SentenceObjective.generate, at a fraction of the GAN's compile time)."""
  workdir = tmp_path_factory.mktemp("sample") / "lm"
  config = make_config("configs/latent_gan.py", "mle_demo", tokenizer__vocab_size=300,
                       model__embed_dim=16, model__gen_hidden=32, data__max_len=8,
                       train__batch_size=8, train__eval_batch_size=16, train__eval_batches=1,
                       train__num_samples=0, train__progress=False, stages__mle__num_steps=2)
  assert train.run(config, str(workdir))["step"] == 2
  return _open(workdir)


def _run(opened, *args):
  """``(exit status, stdout)`` of the CLI on an already opened run (parsing included)."""
  workdir, _, gen = opened
  out = io.StringIO()
  rc = sample.main(["--workdir", str(workdir)] + [str(a) for a in args], out=out, gen=gen)
  return rc, out.getvalue()


def _jsonl(opened, *args):
  rc, text = _run(opened, *args, "--jsonl")
  assert rc == 0
  return [json.loads(line) for line in text.splitlines()]


def _responses(opened, *args):
  return [r["responses"] for r in _jsonl(opened, *args)]


def test_greedy_text_is_the_teacher_forced_argmax(s2s):
  """Each greedy token is the argmax (PAD/BOS/UNK excluded) of the model's teacher-forced
  logits given the tokens before it: the training forward pass, not the decoder."""
  _, _, gen = s2s
  contexts = ["hi there", "what is your name"]
  rc, text = _run(s2s, "--mode", "greedy", *[x for c in contexts for x in ("--input", c)])
  assert rc == 0
  assert _run(s2s, "--mode", "greedy", "--input", contexts[0], "--input", contexts[1]) == (0, text)
  lines = text.splitlines()
  assert lines[0::2] == [f"> {c}" for c in contexts]
  tok, model = gen.tokenizer, gen.objective.model
  params = gen.state.params["model"]
  # The batch the CLI decoded: its inputs padded with copies of the first to MIN_BATCH rows.
  batch = gen.inputs.encode_contexts(gen.config, contexts + [contexts[0]] * 6)
  assert len(batch) == sample.MIN_BATCH
  decoded = np.asarray(gen.objective.generate(
      gen.state, {"context": batch}, jax.random.key(0),
      gen.objective.decode_options(mode="greedy")).tokens)
  for i, line in enumerate(lines[1::2]):
    ids, out = batch[i:i + 1], decoded[i].tolist()
    assert line == "  " + tok.decode(out)
    end = out.index(tok.eos_id) + 1 if tok.eos_id in out else len(out)
    response_in = np.asarray([[tok.bos_id] + out[:end - 1]], np.int32)
    logits = np.array(model.apply({"params": params}, ids, response_in))[0]
    logits[:, [tok.pad_id, tok.bos_id, tok.unk_id]] = -np.inf
    assert logits.argmax(-1).tolist() == out[:end]


def test_sampling_seed_num_samples_top_k_and_beam(s2s):
  inputs = ["--input", "hi there", "--input", "what is your name"]
  hot = ["--mode", "sample", "--temperature", "1.5", "--num_samples", "3"]
  sampled = _responses(s2s, *inputs, *hot, "--seed", "1")
  assert [len(r) for r in sampled] == [3, 3]
  assert len({t for r in sampled for t in r}) > 1  # samples differ from each other
  assert _responses(s2s, *inputs, *hot, "--seed", "1") == sampled  # same seed, same text
  assert _responses(s2s, *inputs, *hot, "--seed", "2") != sampled
  greedy = _responses(s2s, *inputs, "--mode", "greedy")
  # Sampling among the single most probable token is greedy decoding, as is a beam of 1.
  assert _responses(s2s, *inputs, "--mode", "sample", "--top_k", "1", "--seed", "5") == greedy
  assert _responses(s2s, *inputs, "--mode", "beam", "--beam_width", "1") == greedy
  beam = _responses(s2s, *inputs, "--mode", "beam", "--beam_width", "3")
  assert [len(r) for r in beam] == [1, 1]


def test_repetition_and_length_flags_reach_the_decoder(s2s):
  """--no_repeat_ngram 1 (no token twice), --min_len (no end before it) and --top_p change the
  decoded responses as they say; the plain greedy answer repeats a token (checked, so the
  flag has something to remove)."""
  _, _, gen = s2s
  contexts = [f"hello number {k}" for k in range(6)]
  ins = [x for c in contexts for x in ("--input", c)]
  ids = lambda texts: [gen.tokenizer.encode(t) for t in texts]
  plain = [r[0] for r in _responses(s2s, "--mode", "greedy", "--max_len", 12, *ins)]
  assert any(len(set(t)) < len(t) for t in ids(plain)), plain
  once = [r[0] for r in _responses(s2s, "--mode", "greedy", "--max_len", 12,
                                   "--no_repeat_ngram", 1, *ins)]
  assert all(len(set(t)) == len(t) for t in ids(once)), once
  longer = [r[0] for r in _responses(s2s, "--mode", "greedy", "--max_len", 12, "--min_len", 8,
                                     *ins)]
  assert all(len(t) >= 7 for t in ids(longer)), longer    # 8 tokens with the end
  rc, text = _run(s2s, "--mode", "sample", "--top_p", "0.5", "--input", "hi")
  assert rc == 0


def test_input_file_turns_and_context_turns(s2s, tmp_path):
  path = tmp_path / "contexts.txt"
  # One context per line, blank lines skipped; turns by tab or " <eou> ". The run keeps the
  # last data.context_turns=3 turns, as its training contexts did.
  path.write_text("hello there\n\nzero\tfirst\tgood morning\thow are you\n", encoding="utf-8")
  from_file = _jsonl(s2s, "--input_file", path)
  assert [r["context"] for r in from_file] == ["hello there",
                                               "zero\tfirst\tgood morning\thow are you"]
  direct = _responses(s2s, "--input", "hello there", "--input",
                      "first <eou> good morning <eou> how are you")
  assert [r["responses"] for r in from_file] == direct
  assert direct != _responses(s2s, "--input", "hello there", "--input",
                              "good morning <eou> how are you")


def test_unconditional_num_samples_mode_and_seed(lm):
  rc, text = _run(lm, "--num_samples", 3, "--mode", "greedy")
  lines = text.splitlines()
  assert rc == 0 and len(lines) == 3 and all(lines)
  assert len(set(lines)) == 1  # a language model has no latent code: greedy is one sentence
  sampled = _jsonl(lm, "--num_samples", 4, "--mode", "sample", "--seed", 3)
  assert len(sampled) == 4 and all(set(r) == {"sample"} for r in sampled)
  assert len({r["sample"] for r in sampled}) > 1
  assert _jsonl(lm, "--num_samples", 4, "--mode", "sample", "--seed", 3) == sampled
  assert _jsonl(lm, "--num_samples", 4, "--mode", "sample", "--seed", 4) != sampled


def test_opened_runs_stay_unwritten(s2s, lm):
  for workdir, before, _ in (s2s, lm):
    assert tiny_runs.snapshot(workdir) == before


def _one_line_error(capsys, rc, out, message):
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert rc == 2 and out == ""
  assert len(err) == 1 and err[0].startswith("vedgan: error: ") and message in err[0], err


@pytest.mark.parametrize("args,message", [
    (["--mode", "foo"], "--mode 'foo' is unknown"),
    (["--temperature", "0"], "must be a finite number > 0"),
    (["--top_k", "x"], "invalid int value"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--input_file", "/nonexistent/x.txt"], "cannot be read"),
    (["--num_samples", "0"], "must be >= 1"),
    (["--input", "caf\udcc3"], "is not valid UTF-8 text"),   # a non-UTF-8 byte in argv
    (["--top_p", "0"], "--top_p 0.0 must be in (0, 1]"),
    (["--repetition_penalty", "0"], "--repetition_penalty 0.0 must be > 0"),
    (["--no_repeat_ngram", "-1"], "--no_repeat_ngram -1 must be >= 0"),
    (["--min_len", "-2"], "--min_len -2 must be >= 0"),
])
def test_bad_flags_are_one_line_errors_before_loading(args, message, tmp_path, capsys):
  capsys.readouterr()
  out = io.StringIO()
  rc = sample.main(["--workdir", str(tmp_path / "nope"), "--input", "hi"] + args, out=out)
  _one_line_error(capsys, rc, out.getvalue(), message)


@pytest.mark.parametrize("which,args,message", [
    ("s2s", ["--input", "hi", "--num_samples", "2", "--mode", "greedy"], "needs --mode sample"),
    ("s2s", ["--input", "hi", "--emoji", "smile"], "--emoji applies to MojiTalk only"),
    ("s2s", [], "answers contexts: give --input"),
    ("lm", ["--input", "hi"], "is unconditional"),
    ("lm", ["--mode", "beam"], "--mode beam needs a context"),
    ("lm", ["--no_repeat_ngram", "2"], "--no_repeat_ngram applies to dialogue decoders"),
])
def test_flags_that_do_not_fit_the_model(which, args, message, s2s, lm, capsys):
  capsys.readouterr()
  rc, out = _run({"s2s": s2s, "lm": lm}[which], *args)
  _one_line_error(capsys, rc, out, message)


@pytest.mark.parametrize("which,message", [("missing", "does not exist"),
                                           ("no_checkpoint", "no checkpoint in")])
def test_unusable_workdir(which, message, s2s, tmp_path, capsys):
  workdir = tmp_path / "nope"
  if which == "no_checkpoint":
    workdir = tmp_path / "empty"
    workdir.mkdir()
    shutil.copy(s2s[0] / "config.json", workdir / "config.json")
  capsys.readouterr()
  out = io.StringIO()
  rc = sample.main(["--workdir", str(workdir), "--input", "hi"], out=out)
  _one_line_error(capsys, rc, out.getvalue(), message)


def test_readers_leave_a_writers_unfinished_checkpoint_alone(tmp_path):
  """A trainer's checkpoint being written (orbax's ``<step>.orbax-checkpoint-tmp-*``
  folder) is not cleaned up by a reader that opens the run: ``vedgan.sample`` /
  ``vedgan.chat`` (``open_generator``) and ``vedgan.evaluate`` (``run_suites``) open
  checkpoints read-only (a reader that cleaned it crashed the writer, issue 21)."""
  from vedgan import eval_suites, sample  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / "run"
  shutil.copytree(tiny_runs.seq2seq_chat_run(), workdir)
  unfinished = workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1764972000"
  (unfinished / "state").mkdir(parents=True)
  (unfinished / "state" / "partial").write_text("being written")
  before = tiny_runs.snapshot(workdir)
  gen = sample.open_generator(str(workdir))
  gen.close()
  eval_suites.run_suites(str(workdir), "likelihood", echo=None)
  assert (unfinished / "state" / "partial").read_text() == "being written"
  after = {p for p in tiny_runs.snapshot(workdir) if not p[0].startswith("eval/")}
  assert after == set(before)
