"""Bad inputs and faults (issue #13): each one gives one clear line or a counted skip.

Every case checks what a user sees and what is left on disk:

* a run that cannot continue exits with status 2 and prints exactly one line
  ``vedgan: error: ...`` that names the bad thing and says how to fix it (no
  traceback);
* a bad line in a data file that the run can live without is skipped (or cut
  short) and counted, and the counts are logged;
* the workdir is left as it was: every file's relative path, size and sha256
  are the same before and after (a workdir that did not exist is not created).

The CLI cases run ``vedgan.main.run_cli(argv)`` in-process; a few run as real
``python -m vedgan.main`` subprocesses to prove the exit code and stderr. The
checkpoint cases work on copies of one tiny trained workdir (2 steps) shared by
the module. ``docs/reliability.md`` lists every case with what happens.

Time budget: 60 s for the whole file on an idle 2-core machine.
"""
import dataclasses
import errno
import gc
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from conftest import REPO, make_config, tiny_overrides

from vedgan import checkpoint, train
from vedgan.data import custom, inputs, pipeline, sources
from vedgan.data.tokenizer import train_word_vocab
from vedgan.errors import CheckpointError, ConfigError, DataError

TRAINED_STEP = 2


# -- helpers -----------------------------------------------------------------------------------
def snapshot(root) -> dict | None:
  """``{relative path: (size, sha256)}`` of every file under ``root`` (folders as ``None``);
  ``None`` if ``root`` does not exist. A file ``root`` maps ``"."`` to its size and hash."""
  root = str(root)
  if not os.path.exists(root):
    return None

  def digest(path):
    with open(path, "rb") as f:
      return os.path.getsize(path), hashlib.sha256(f.read()).hexdigest()

  if os.path.isfile(root):
    return {".": digest(root)}
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
    for name in filenames:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = digest(path)
  return out


def _flag(key, value):
  if isinstance(value, tuple):
    value = "(" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + ",)"
  return f"--config.{key}={value}"


def tsv_overrides(path) -> dict:
  """The module's run: word vocabulary on a small TSV file with bad lines in it."""
  return {"data.format": "tsv_pairs", "data.path": str(path), "data.validation_percent": 20,
          "tokenizer.kind": "word", "tokenizer.vocab_size": 64}


def tiny_flags(data_path=None, **extra) -> list[str]:
  """CLI flags of the tiny seq2seq run (on the TSV at ``data_path``, else the embedded corpus)."""
  values = tiny_overrides()
  values.update({"stages.mle.num_steps": TRAINED_STEP + 2, "train.eval_batches": 1,
                 "train.num_samples": 0})
  if data_path:
    values.update(tsv_overrides(data_path))
  values.update({k.replace("__", "."): v for k, v in extra.items()})
  return [_flag(k, v) for k, v in values.items()]


def cli(argv, monkeypatch, capsys) -> tuple[int, str, str]:
  """Runs ``python -m vedgan.main ARGV`` in this process: ``(exit code, stdout, stderr)``."""
  from vedgan import main as vmain  # pylint: disable=import-outside-toplevel

  full = ["vedgan.main"] + list(argv)
  monkeypatch.setattr(sys, "argv", full)  # ml_collections reads overrides from sys.argv
  monkeypatch.chdir(REPO)
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # per-parse override flags would be defined twice
  capsys.readouterr()
  with pytest.raises(SystemExit) as exc:
    vmain.run_cli(full)
  out = capsys.readouterr()
  return int(exc.value.code or 0), out.out, out.err


def assert_one_error_line(code, err, *fragments):
  assert code == 2, err
  assert "Traceback" not in err, err
  lines = [line for line in err.splitlines() if line.startswith("vedgan: error: ")]
  assert len(lines) == 1, err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  return lines[0]


# -- shared tiny trained workdir ---------------------------------------------------------------
# 40 good pairs, then a row without a tab, a row that is not UTF-8, an empty line and a
# context longer than data.max_context_len (16 words).
GOOD_ROWS = "".join(f"how is item {i} doing today\tit is doing fine {i} thanks\n"
                    for i in range(40))
BAD_ROWS = (b"no tab here\ncaf\xe9\tbad bytes\n\n"
            b"a b c d e f g h i j k l m n o p q r s t u v w x y z\tok\n")


@dataclasses.dataclass
class Trained:
  workdir: str    # the run after TRAINED_STEP steps (do not modify: copy it)
  state: object   # its TrainState (a restore target)
  data: str       # the TSV file it was trained on
  log: list       # the warnings logged while it ran


class _ListHandler(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The tiny seq2seq run trained for 2 steps on a TSV file holding bad lines."""
  root = tmp_path_factory.mktemp("trained")
  data = root / "pairs.tsv"
  data.write_bytes(GOOD_ROWS.encode() + BAD_ROWS)
  workdir = str(root / "run")
  config = make_config(stages__mle__num_steps=TRAINED_STEP, train__eval_batches=1,
                       train__num_samples=0,
                       **{k.replace(".", "__"): v for k, v in tsv_overrides(data).items()})
  handler = _ListHandler()
  logging.getLogger().addHandler(handler)
  try:
    trainer = train.Trainer(config, train.check_workdir(workdir))
    trainer.setup()
    trainer.train()
    state = trainer.state
    trainer.close()
  finally:
    logging.getLogger().removeHandler(handler)
  return Trained(workdir, state, str(data), handler.messages)


@pytest.fixture
def trained_copy(trained, tmp_path):
  path = str(tmp_path / "copy")
  shutil.copytree(trained.workdir, path)
  return path


# -- the command line: config mistakes, one line each, nothing written -----------------------
# (case id, argv after the config file and workdir, fragments of the error line).
CONFIG_CASES = [
    ("batch_size_negative", ["--config.train.batch_size=-8"],
     ["config.train.batch_size=-8 is out of range", "must be > 0"]),
    ("batch_size_wrong_type", ["--config.train.batch_size=abc"],
     ["--config.train.batch_size=abc", "type"]),
    ("dropout_not_below_1", ["--config.model.dropout=1.0"],
     ["config.model.dropout=1.0", "[0, 1)"]),
    ("zero_steps", ["--config.stages.mle.num_steps=0"],
     ["0 steps in total", "num_steps"]),
    ("negative_learning_rate", ["--config.stages.mle.learning_rate=-0.001"],
     ["config.stages.mle.learning_rate=-0.001 must be >= 0"]),
    ("vocab_smaller_than_specials", ["--config.tokenizer.vocab_size=4"],
     ["config.tokenizer.vocab_size=4", "special"]),
    ("unknown_objective", ["--config.objective=seq2sek"],
     ["unknown objective 'seq2sek'", "seq2seq"]),
    ("unknown_stage_in_order", ["--config.stage_order=('mle','polish')"],
     ["unknown stage(s) ['polish']", "['mle']"]),
    ("unknown_step_name", ["--config.stages.mle.step=mel"],
     ["unknown step function 'mel'", "['mle']"]),
    ("malformed_cycle", ["--config.stages.mle.step=mle*two"],
     ["'mle*two' is malformed", "name*count"]),
    ("typo_override", ["--config.train.batchsize=8"],
     ["--config.train.batchsize", "did you mean 'batch_size'"]),
    ("repeated_tuple_override", ["--config.data.buckets=(8,16)", "--config.data.buckets=(32,)"],
     ["--config.data.buckets is given more than once", "two tuple values would be joined"]),
    ("unknown_flag", ["--max_steps=3"],
     ["Unknown command line flag 'max_steps'", "--helpfull"]),
    ("zero_hidden_size", ["--config.model.hidden=0"],      # was a JAX traceback
     ["config.model.hidden=0 is out of range", "must be an integer >= 1"]),
    ("nan_weight_decay", ["--config.optimizer.weight_decay=nan"],
     ["config.optimizer.weight_decay=nan is out of range", "must be a finite number"]),
    ("zero_beam_width", ["--config.decode.beam_width=0"],  # was accepted, crashed sampling
     ["config.decode.beam_width=0 is out of range", "must be an integer >= 1"]),
    ("unknown_decode_mode", ["--config.decode.mode=nucleus"],  # was refused after training
     ["decoding mode 'nucleus' must be one of greedy, sample, beam"]),
    ("incompatible_config_on_resume", ["--config.model.hidden=48"],
     ["was started with a different config", "model.hidden: 32 -> 48", "new --workdir"]),
]


@pytest.mark.parametrize("case,argv,fragments", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_mistakes(case, argv, fragments, trained, trained_copy, monkeypatch, capsys):
  del case
  before = snapshot(trained_copy)
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", trained_copy]
                     + tiny_flags(trained.data) + argv, monkeypatch, capsys)
  assert_one_error_line(code, err, *fragments)
  assert snapshot(trained_copy) == before


@pytest.mark.parametrize("config_arg,fragments", [
    ("configs/seq2seq.py:dmeo", ["unknown variant 'dmeo' of configs/seq2seq.py", "'demo'"]),
    ("configs/seq2sq.py:demo", ["--config configs/seq2sq.py", "no such config file",
                                "did you mean seq2seq?", "--config seq2seq:demo"]),
], ids=["unknown_variant", "missing_config_file"])
def test_config_file_mistakes(config_arg, fragments, tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "never"
  code, _, err = cli(["--config", config_arg, "--workdir", str(workdir)], monkeypatch, capsys)
  assert_one_error_line(code, err, *fragments)
  assert not workdir.exists()


@pytest.mark.parametrize("extra,fragments", [
    ({"tokenizer__kind": "sentencepiece", "tokenizer__model_type": "wordpiece"},  # tracebacks
     ["tokenizer model_type='wordpiece'; expected one of ('unigram', 'bpe')",
      "(config.tokenizer)"]),
    ({"tokenizer__kind": "sentencepiece", "tokenizer__vocab_size": 20000},
     ["tokenizer.vocab_size=20000 is too large for this corpus (max ", "lower it"]),
    ({"model__attention": "bahdanau"},                             # was a traceback
     ["model.attention='bahdanau' must be one of ('dot', 'general', 'scaled_dot')"]),
    ({"data__validation_split": "dev"},                            # was a traceback
     ["has no split 'dev' (it has ['train', 'validation'])", "--config.data.validation_split"]),
], ids=["unknown_model_type", "vocabulary_too_large_for_the_corpus", "unknown_attention_score",
        "unknown_validation_split"])
def test_mistakes_on_a_new_run(extra, fragments, tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "never"
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", str(workdir)]
                     + tiny_flags(**extra), monkeypatch, capsys)
  assert_one_error_line(code, err, *fragments)
  assert not workdir.exists()


def test_dry_run_reads_the_data_and_catches_what_only_the_data_decides(tmp_path, monkeypatch,
                                                                        capsys):
  """--dry_run read no data, so an impossible tokenizer size passed it and failed the run."""
  workdir = tmp_path / "never"
  argv = ["--config", "configs/seq2seq.py:demo", "--workdir", str(workdir), "--dry_run"]
  code, _, err = cli(argv + tiny_flags(tokenizer__kind="sentencepiece",
                                       tokenizer__vocab_size=20000), monkeypatch, capsys)
  assert_one_error_line(code, err, "tokenizer.vocab_size=20000 is too large for this corpus")
  code, out, _ = cli(argv + tiny_flags(), monkeypatch, capsys)
  assert code == 0 and "data: training streams train 1080; validation train 99; tokenizer " \
      "sentencepiece, 300 ids (new)" in out, out
  assert not workdir.exists()


# -- the workdir itself ------------------------------------------------------------------------
def test_workdir_that_is_a_file(tmp_path, monkeypatch, capsys):
  path = tmp_path / "run"
  path.write_text("not a folder\n")
  before = snapshot(path)
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", str(path / "sub")]
                     + tiny_flags(), monkeypatch, capsys)
  assert_one_error_line(code, err, f"{path} is not a directory", "choose another path")
  assert snapshot(path) == before


def test_unwritable_workdir(monkeypatch, capsys):
  # /proc refuses new files even to root, unlike a chmod-ed folder.
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", "/proc/vedgan-bad/run"]
                     + tiny_flags(), monkeypatch, capsys)
  assert_one_error_line(code, err, "/proc/vedgan-bad/run is not writable",
                        "choose a directory you can write to")
  assert not os.path.exists("/proc/vedgan-bad")


# -- missing or damaged datasets --------------------------------------------------------------
def _prepared_copy(tmp_path) -> str:
  """A copy of the session's prepared chatterbot corpus (prepared if needed)."""
  builder = sources.prepare_builder(make_config().data)
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(os.path.dirname(str(builder.data_path)), os.path.join(data_dir,
                                                                        "chatterbot_corpus"))
  return data_dir


def _data_case(tmp_path, kind):
  """``(extra flags, error fragments)`` of a missing/damaged data case."""
  if kind == "unknown_dataset":
    return ["--config.data.name=daily_dialogue"], ["unknown data.name='daily_dialogue'",
                                                   "daily_dialog"]
  if kind == "manual_dir_missing":
    missing = tmp_path / "downloads" / "dailydialog"
    return (["--config.data.name=daily_dialog", f"--config.data.manual_dir={missing}",
             f"--config.data.data_dir={tmp_path / 'tfds'}"],
            [f"config.data.manual_dir={missing} does not exist", "http://yanran.li/dailydialog",
             "ijcnlp_dailydialog.zip"])
  if kind == "manual_dir_without_the_files":
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "readme.txt").write_text("the zip is not here\n")
    return (["--config.data.name=daily_dialog", f"--config.data.manual_dir={manual}",
             f"--config.data.data_dir={tmp_path / 'tfds'}"],
            [f"manual directory {manual} does not hold", "ijcnlp_dailydialog.zip",
             "http://yanran.li/dailydialog"])
  if kind == "custom_file_missing":
    return (["--config.data.format=tsv_pairs", f"--config.data.path={tmp_path}/{{split}}.tsv"],
            [f"{tmp_path}/train.tsv does not exist", "tsv_pairs"])
  if kind == "custom_file_empty":
    (tmp_path / "empty.tsv").write_bytes(b"")
    return (["--config.data.format=tsv_pairs", f"--config.data.path={tmp_path}/empty.tsv"],
            ["has no (context, response) pairs", "check config.data"])
  if kind == "truncated_array_record":
    data_dir = _prepared_copy(tmp_path)
    (path,) = glob.glob(f"{data_dir}/chatterbot_corpus/*/*-train.array_record*")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) * 3 // 4)
    return ([f"--config.data.data_dir={data_dir}"],
            ["are damaged", "Corrupted", "python -m vedgan.data.prepare chatterbot_corpus"])
  raise AssertionError(kind)


DATA_CASES = ["unknown_dataset", "manual_dir_missing", "manual_dir_without_the_files",
              "custom_file_missing", "custom_file_empty", "truncated_array_record"]


@pytest.mark.parametrize("kind", DATA_CASES)
def test_missing_or_damaged_data(kind, tmp_path, monkeypatch, capsys):
  argv, fragments = _data_case(tmp_path, kind)
  workdir = tmp_path / "run"
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", str(workdir)]
                     + tiny_flags() + argv, monkeypatch, capsys)
  assert_one_error_line(code, err, *fragments)
  assert not workdir.exists()


# -- bad lines in your own files: skipped and counted -----------------------------------------
def _data_config(path, fmt="tsv_pairs", **extra):
  overrides = {"data__format": fmt, "data__path": str(path), "data__validation_percent": 0}
  overrides.update(extra)
  return make_config(**overrides).data


GOOD_TSV = "".join(f"hello number {i}\tfine thanks {i}\n" for i in range(6)).encode()


@pytest.mark.parametrize("kind,content,counts", [
    # A row with one or three columns.
    ("tsv_wrong_column_count", GOOD_TSV + b"only a context\nx\ty\tz\n",
     {"malformed_lines": 2, "records": 6}),
    # The file was cut mid-row: the last row has no tab and no newline.
    ("tsv_truncated_last_row", GOOD_TSV + b"how are y", {"malformed_lines": 1, "records": 6}),
    # Latin-1 bytes in a UTF-8 file.
    ("invalid_utf8", GOOD_TSV + b"caf\xe9 au lait\tmerci\n",
     {"undecodable_lines": 1, "records": 6}),
    ("empty_lines_and_fields", GOOD_TSV + b"\n   \n\tonly a response\n",
     {"empty_lines": 2, "empty_pairs": 1, "records": 6}),
], ids=lambda v: v if isinstance(v, str) and "\n" not in v else "")
def test_bad_tsv_lines_are_skipped_and_counted(kind, content, counts, tmp_path, caplog):
  del kind
  path = tmp_path / "pairs.tsv"
  path.write_bytes(content)
  records = custom.load_split(_data_config(path), "train")
  assert {k: records.counts.get(k) for k in counts} == counts
  with caplog.at_level(logging.WARNING):
    pairs = inputs.load_pairs(_data_config(path), "train")
  assert len(pairs) == 6
  skipped = {k: v for k, v in counts.items() if k != "records"}
  logged = " ".join(r.getMessage() for r in caplog.records)
  for key, value in skipped.items():
    assert f"'{key}': {value}" in logged, logged


def test_bad_jsonl_lines_are_skipped_and_counted(tmp_path, caplog):
  good = "".join(json.dumps({"turns": [f"hi {i}", f"hello {i}", f"bye {i}"]}) + "\n"
                 for i in range(4))
  path = tmp_path / "dialogues.jsonl"
  path.write_text(good + "{this is not json}\n"                      # malformed
                  + '["a", "list"]\n'                                # not an object
                  + '{"utterances": ["a", "b"]}\n'                   # no "turns"
                  + '{"turns": ["only one turn"]}\n'                 # nothing to answer
                  + '{"turns": ["cut", "mid-li')                     # truncated last line
  records = custom.load_split(_data_config(path, "jsonl_dialogues"), "train")
  assert records.counts == {"malformed_json": 3, "missing_turns": 1, "too_few_turns": 1,
                            "records": 8}
  with caplog.at_level(logging.WARNING):
    assert len(inputs.load_pairs(_data_config(path, "jsonl_dialogues"), "train")) == 8
  assert "'malformed_json': 3" in " ".join(r.getMessage() for r in caplog.records)


def test_valid_json_that_is_no_usable_text_is_skipped_and_counted(tmp_path):
  """Valid JSON that crashed the loader (a lone surrogate escape: UnicodeEncodeError; nesting
  deeper than the parser's recursion: RecursionError) or trained on garbage (turns of control
  or zero-width characters only); control characters inside real text become spaces."""
  good = "".join(json.dumps({"turns": [f"hi {i}", f"hello {i}", f"bye {i}"]}) + "\n"
                 for i in range(4))
  path = tmp_path / "dialogues.jsonl"
  path.write_text(good
                  + '{"turns": ["lone \\ud800 surrogate", "ok"]}\n'   # undecodable
                  + "[" * 100_000 + "]" * 100_000 + "\n"                # too deep: malformed
                  + json.dumps({"turns": ["\u200b\u200b", "\u0000\u0001", "real"]}) + "\n"
                  + json.dumps({"turns": ["a\u0000b", "c\u001bd"]}) + "\n", encoding="utf-8")
  records = custom.load_split(_data_config(path, "jsonl_dialogues"), "train")
  assert records.counts == {"malformed_json": 1, "too_few_turns": 1, "undecodable_lines": 1,
                            "records": 9}
  assert records[-1]["history"] == ["a b"] and records[-1]["response"] == "c d"
  texts = tmp_path / "lines.txt"
  texts.write_text("a real line\n\u200b\u2060\n\u0007\n", encoding="utf-8")
  lines = custom.load_split(_data_config(texts, "text_lines"), "train")
  assert [r["text"] for r in lines] == ["a real line"] and lines.counts["empty_lines"] == 2


def test_labels_mixing_integers_and_strings_are_refused(tmp_path):
  """String labels become ids 0, 1, ...: an integer label among those ids would merge two
  classes (integers beyond them are kept: tests/test_data_custom.py)."""
  path = tmp_path / "labelled.jsonl"
  path.write_text(json.dumps({"turns": ["a b", "c d", "e f"], "label": [0, "happy", 1]}) + "\n"
                  + json.dumps({"turns": ["g h", "i j"], "label": "sad"}) + "\n")
  config = _data_config(path, "jsonl_dialogues", data__label_field="label")
  with pytest.raises(DataError, match=r"the 'label' labels mix integers and strings, and the "
                     r"integer label 1 and the string label 'sad' would both be id 1 "):
    custom.load_split(config, "train")


def test_over_long_lines_are_truncated_or_skipped_and_counted(caplog):
  tok = train_word_vocab(["a b c d e f g h i j"] * 3, vocab_size=32)
  pairs = [("a b", "c d"), ("a b c d e f g h i j", "c d"), ("a", "b c d e f g h i j")]
  cut = pipeline.encode_pairs(pairs, tok, max_context_len=4, max_response_len=4,
                              too_long="truncate")
  assert (cut.counts["examples"], cut.counts["truncated_context"],
          cut.counts["truncated_response"], cut.counts["skipped_too_long"]) == (3, 1, 1, 0)
  skip = pipeline.encode_pairs(pairs, tok, max_context_len=4, max_response_len=4,
                               too_long="skip")
  assert (skip.counts["examples"], skip.counts["skipped_too_long"]) == (1, 2)
  with caplog.at_level(logging.WARNING):
    inputs.log_counts("tsv_pairs:x train (tokenised)", cut.counts)
    inputs.log_counts("tsv_pairs:x train (tokenised)", skip.counts)
  logged = " ".join(r.getMessage() for r in caplog.records)
  assert "'truncated_context': 1" in logged and "'skipped_too_long': 2" in logged
  with pytest.raises(ValueError, match="config.data.too_long='drop'"):
    pipeline.encode_pairs(pairs, tok, 4, 4, too_long="drop")


def test_a_run_on_a_file_with_bad_lines_completes_and_logs_the_counts(trained):
  """End to end: the module's run trained on a TSV holding every kind of bad line."""
  assert os.path.isdir(os.path.join(trained.workdir, "checkpoints", str(TRAINED_STEP)))
  rows = [json.loads(line) for line in open(os.path.join(trained.workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows if r["split"] == "train"][-1] == TRAINED_STEP
  # Each split reads the whole file, so the lines that fit no split are counted in both.
  for split in ("train", "validation"):
    (line,) = [m for m in trained.log if f" {split} (reading): " in m]
    assert line.split(" (all counts")[0].endswith(
        "{'empty_lines': 1, 'malformed_lines': 1, 'undecodable_lines': 1}"), line
  assert "'truncated_context': 1" in " ".join(trained.log), trained.log


# -- batch sizes -------------------------------------------------------------------------------
def test_eval_batch_larger_than_the_validation_split_is_one_padded_batch():
  tok = train_word_vocab(["a b c d"], vocab_size=16)
  enc = pipeline.encode_pairs([("a b", "c d")] * 5, tok, 8, 8)
  batches = list(pipeline.BatchIterator(enc, 64, (8,), seed=0, shuffle=False,
                                        drop_remainder=False, repeat=False))
  assert len(batches) == 1
  assert batches[0]["weight"].shape == (64,)
  assert float(np.sum(batches[0]["weight"])) == 5.0  # padding rows have weight 0


def test_train_batch_larger_than_the_training_split():
  tok = train_word_vocab(["a b c d"], vocab_size=16)
  enc = pipeline.encode_pairs([("a b", "c d")] * 5, tok, 8, 8)
  with pytest.raises(DataError, match=r"5 examples are fewer than global_batch_size=8 .*"
                                      r"lower config.train.batch_size"):
    pipeline.BatchIterator(enc, 8, (8,), seed=0)


def _subprocess(args, devices=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if devices:
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  return subprocess.run([sys.executable, "-m", "vedgan.main"] + args, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_subprocess_batch_not_divisible_by_the_devices(trained, trained_copy):
  before = snapshot(trained_copy)
  proc = _subprocess(["--config", "configs/seq2seq.py:demo", "--workdir", trained_copy]
                     + tiny_flags(trained.data, **{"train.batch_size": 9}), devices=2)
  assert proc.stdout == ""
  assert proc.stderr.strip() == ("vedgan: error: train.batch_size=9 is not divisible by the 2 "
                                 "devices of the data mesh; use a multiple of 2 (e.g. "
                                 "--config.train.batch_size=8)")
  assert proc.returncode == 2
  assert snapshot(trained_copy) == before


def test_subprocess_typo_override(tmp_path):
  proc = _subprocess(["--config", "configs/seq2seq.py:demo", "--workdir", str(tmp_path / "run"),
                      "--config.train.eval_evry=10"])
  assert proc.stderr.strip() == ("vedgan: error: --config.train.eval_evry: the config has no "
                                 "field 'eval_evry' (did you mean 'eval_every'?); overrides can "
                                 "only set fields the config file defines")
  assert proc.returncode == 2
  assert not (tmp_path / "run").exists()


# -- checkpoints and the tokenizer -------------------------------------------------------------
def _state_files(workdir):
  return sorted(glob.glob(f"{workdir}/checkpoints/{TRAINED_STEP}/state/**/d/*", recursive=True))


def _damage(workdir, kind):
  if kind == "array_file_truncated":
    path = max(_state_files(workdir), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  elif kind == "array_file_removed":
    for path in _state_files(workdir):
      os.remove(path)
  elif kind == "array_metadata_garbage":
    with open(f"{workdir}/checkpoints/{TRAINED_STEP}/state/_METADATA", "w") as f:
      f.write("{garbage")
  elif kind == "meta_item_garbage":
    with open(f"{workdir}/checkpoints/{TRAINED_STEP}/meta/metadata", "w") as f:
      f.write("{garbage")
  elif kind == "tokenizer_of_another_run":
    shutil.rmtree(f"{workdir}/tokenizer")
    train_word_vocab(["another corpus entirely"] * 3, vocab_size=300).save(f"{workdir}/tokenizer")
  elif kind == "tokenizer_file_garbage":
    with open(f"{workdir}/tokenizer/tokenizer.model", "wb") as f:
      f.write(b"\x00garbage\xff" * 10)
  else:
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,fragments", [
    ("tokenizer_of_another_run", ["does not match the one the checkpoint was trained with"]),
    ("tokenizer_file_garbage", ["tokenizer cannot be read", "restore it or use a new --workdir"]),
])
def test_resuming_a_damaged_workdir(kind, fragments, trained, trained_copy, monkeypatch, capsys):
  _damage(trained_copy, kind)
  before = snapshot(trained_copy)
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", trained_copy]
                     + tiny_flags(trained.data), monkeypatch, capsys)
  line = assert_one_error_line(code, err, *fragments)
  assert trained_copy in line
  assert snapshot(trained_copy) == before


@pytest.mark.parametrize("edit, fragment", [
    ("a_word_changed", "data_hash="),         # same number of pairs, other content
    ("pairs_removed", "num_examples="),
])
def test_resuming_on_changed_data_files(edit, fragment, trained, trained_copy, tmp_path,
                                        monkeypatch, capsys):
  """The checkpoint's data position belongs to the encoded examples it was trained on: the
  same command on an edited file is one line before anything is written, not a run that
  silently continues on other data."""
  rows = GOOD_ROWS.splitlines(keepends=True)
  if edit == "a_word_changed":
    # "fine" -> "good" in the training pairs that stay in the training split (a pair's split
    # is a hash of its text), so that only the content differs, not the number of pairs
    def split(row):
      return custom._in_validation(row.rstrip("\n"), 20)  # pylint: disable=protected-access
    edited = [r.replace("fine", "good") for r in rows]
    rows = [e if not split(r) and not split(e) else r for r, e in zip(rows, edited)]
    assert rows != GOOD_ROWS.splitlines(keepends=True)
  else:
    del rows[:10]
  data = tmp_path / "pairs.tsv"
  data.write_bytes("".join(rows).encode() + BAD_ROWS)
  before = snapshot(trained_copy)
  code, _, err = cli(["--config", "configs/seq2seq.py:demo", "--workdir", trained_copy]
                     + tiny_flags(str(data)), monkeypatch, capsys)
  line = assert_one_error_line(code, err, "the training data differ from the data checkpoint",
                               fragment, "restore the original data files")
  assert trained_copy in line
  assert snapshot(trained_copy) == before
  # Readers (evaluate, sample, chat) do not continue the data position: they still open it.
  config = make_config(stages__mle__num_steps=TRAINED_STEP, train__num_samples=0,
                       **{k.replace(".", "__"): v for k, v in tsv_overrides(data).items()})
  reader = train.Trainer(config, trained_copy)
  try:
    reader.setup(write=False)
    assert reader.step == TRAINED_STEP
  finally:
    reader.close()
  assert snapshot(trained_copy) == before


@pytest.mark.parametrize("name", ["plots", "eval", "tensorboard", "checkpoints"])
def test_links_out_of_the_workdir_are_refused(name, trained, trained_copy, tmp_path):
  """A folder vedgan writes into that is a symbolic link leading outside the workdir is a
  one-line error before anything is written, for training and for evaluation; nothing
  lands outside. A link that stays inside the workdir is fine."""
  from vedgan import eval_suites  # pylint: disable=import-outside-toplevel

  outside = tmp_path / "outside"
  outside.mkdir()
  link = os.path.join(trained_copy, name)
  if os.path.exists(link):
    shutil.rmtree(link)
  os.symlink(outside, link)
  before = snapshot(trained_copy)
  config = make_config(stages__mle__num_steps=TRAINED_STEP + 1, train__num_samples=0,
                       **{k.replace(".", "__"): v for k, v in tsv_overrides(trained.data).items()})
  with pytest.raises(ConfigError, match=f"{name} is a symbolic link to .*outside the workdir"):
    train.run(config, trained_copy)
  if name != "checkpoints":  # evaluation reads checkpoints/, it writes eval/ and plots
    with pytest.raises(ConfigError, match="outside the workdir"):
      eval_suites.run_suites(trained_copy, "likelihood")
  assert os.listdir(outside) == [] and snapshot(trained_copy) == before
  os.unlink(link)
  inside = os.path.join(trained_copy, "inside-" + name)
  os.mkdir(inside)
  os.symlink(inside, link)
  if name == "plots":
    train.run(config, trained_copy)


@pytest.mark.parametrize("case, fragment", [
    ("checkpoints_is_a_file", "checkpoints is a file, where vedgan keeps its folder checkpoints"),
    ("metrics_is_a_folder", "metrics.jsonl is a folder, where vedgan keeps its file"),
    ("plots_link_to_nothing", "which does not exist; remove the link or create its target"),
    ("workdir_link_to_nothing", "is a symbolic link to"),
])
def test_workdir_paths_of_the_wrong_kind(case, fragment, trained, tmp_path):
  """Each used to end in "free space or fix permissions" (at the first checkpoint, after
  training) or a bare "File exists": now one line that names the path, before anything is
  written."""
  workdir = tmp_path / "run"
  if case == "workdir_link_to_nothing":
    os.symlink(tmp_path / "missing", workdir)
  else:
    workdir.mkdir()
    if case == "checkpoints_is_a_file":
      (workdir / "checkpoints").write_text("x")
    elif case == "metrics_is_a_folder":
      (workdir / "metrics.jsonl").mkdir()
    else:
      os.symlink(workdir / "missing", workdir / "plots")
  def names():  # every entry, links included (a link to nothing cannot be read)
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(tmp_path) for n in dirs + files)

  before = names()
  config = make_config(stages__mle__num_steps=2, train__num_samples=0,
                       **{k.replace(".", "__"): v for k, v in tsv_overrides(trained.data).items()})
  with pytest.raises(ConfigError) as exc:
    train.run(config, str(workdir))
  assert fragment in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
  assert "free space" not in str(exc.value)
  assert names() == before


@pytest.mark.parametrize("kind,fragments", [
    ("array_file_truncated", ["is damaged or incomplete", "delete that folder"]),
    ("array_file_removed", ["is damaged or incomplete", "NOT_FOUND"]),
    ("array_metadata_garbage", ["is damaged or incomplete"]),
    ("meta_item_garbage", ["has no readable metadata", "new --workdir"]),
])
def test_restoring_a_damaged_checkpoint(kind, fragments, trained, trained_copy):
  """What ``Trainer.setup`` calls on resume: ``read_meta`` (for the tokenizer check), then
  ``restore``; either must fail with one line, touch nothing, and leave no traceback behind
  (the reads still in flight when one fails report into orbax's closed event loop through
  ``sys.unraisablehook``: dozens of tracebacks after the one line, until vedgan dropped them)."""
  _damage(trained_copy, kind)
  before = snapshot(trained_copy)
  ckpt = checkpoint.Checkpointer(os.path.join(trained_copy, "checkpoints"))
  pytest_hook, reported = sys.unraisablehook, []
  sys.unraisablehook = reported.append
  try:
    with pytest.raises(CheckpointError) as exc:
      ckpt.read_meta(TRAINED_STEP)
      ckpt.restore(TRAINED_STEP, trained.state)
    time.sleep(0.5)                # the orphaned reads finish
    gc.collect()                   # and orbax's unfinished read coroutines are closed
  finally:
    sys.unraisablehook = pytest_hook
    ckpt.close()
  message = str(exc.value)
  assert "\n" not in message and all(f in message for f in fragments), message
  assert snapshot(trained_copy) == before
  assert not reported, [f"{type(u.exc_value).__name__}: {u.exc_value} ({u.object!r})"
                        for u in reported[:3]]


def test_checkpoint_of_another_shape(trained, trained_copy):
  # The state a config with hidden=48 instead of 32 would build (same tree, other shapes).
  target = jax.tree.map(lambda x: jax.numpy.zeros((48,) + x.shape[1:], x.dtype)
                        if x.ndim == 2 and x.shape[0] == 32 else x, trained.state)
  before = snapshot(trained_copy)
  ckpt = checkpoint.Checkpointer(os.path.join(trained_copy, "checkpoints"))
  try:
    with pytest.raises(CheckpointError) as exc:
      ckpt.restore(TRAINED_STEP, target)
  finally:
    ckpt.close()
  message = str(exc.value)
  assert "does not fit the model built from this config" in message, message
  assert "(48, " in message and "(32, " in message and "strict" not in message, message
  assert snapshot(trained_copy) == before


def test_garbage_manager_metadata_is_ignored(trained, trained_copy):
  # orbax's per-step _CHECKPOINT_METADATA (a timestamp) is optional: the step still restores.
  with open(f"{trained_copy}/checkpoints/{TRAINED_STEP}/_CHECKPOINT_METADATA", "w") as f:
    f.write("{garbage")
  ckpt = checkpoint.Checkpointer(os.path.join(trained_copy, "checkpoints"))
  try:
    assert ckpt.latest_step() == TRAINED_STEP
    state, meta = ckpt.restore(TRAINED_STEP, trained.state)
  finally:
    ckpt.close()
  assert meta["step"] == TRAINED_STEP
  np.testing.assert_array_equal(jax.tree.leaves(state.params)[0],
                                jax.tree.leaves(trained.state.params)[0])


def test_disk_full_while_checkpointing(trained, trained_copy, monkeypatch):
  """ENOSPC in the checkpoint write: one line, the previous checkpoint intact and the latest.

  The write is made to fail where orbax starts it (``CheckpointManager.save``), after leaving a
  half-written temporary folder as a real full disk would.
  """
  ckpt_dir = os.path.join(trained_copy, "checkpoints")
  before = snapshot(os.path.join(ckpt_dir, str(TRAINED_STEP)))

  def full_disk(self, step, *args, **kwargs):
    del args, kwargs
    os.makedirs(os.path.join(str(self.directory), f"{step}.orbax-checkpoint-tmp-1", "state"))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  ckpt = checkpoint.Checkpointer(ckpt_dir)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(ocp.CheckpointManager, "save", full_disk)
      with pytest.raises(CheckpointError) as exc:
        ckpt.save(TRAINED_STEP + 1, trained.state, {"step": TRAINED_STEP + 1})
  finally:
    ckpt.close()
  assert str(exc.value) == (
      f"writing checkpoint {ckpt_dir}/{TRAINED_STEP + 1} failed (No space left on device); "
      f"the checkpoint of step {TRAINED_STEP} is kept; free space or fix permissions and rerun "
      "the same command to resume")
  assert snapshot(os.path.join(ckpt_dir, str(TRAINED_STEP))) == before
  ckpt = checkpoint.Checkpointer(ckpt_dir)  # the next run: removes the temporary folder
  try:
    assert ckpt.latest_step() == TRAINED_STEP
    state, meta = ckpt.restore(TRAINED_STEP, trained.state)
  finally:
    ckpt.close()
  assert sorted(os.listdir(ckpt_dir)) == [str(TRAINED_STEP)]
  assert meta["step"] == TRAINED_STEP
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(trained.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
