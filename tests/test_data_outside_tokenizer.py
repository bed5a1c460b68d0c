"""Tests for vedgan.data.outside_tokenizer: tokenizer.json / SentencePiece files from elsewhere.

Both kinds are built here: a BPE ``tokenizer.json`` trained with the ``tokenizers``
package whose specials are ``[UNK] <s> </s> <pad>`` (outside ids 0-3), and a SentencePiece
unigram model with SentencePiece's own default ids (unk 0, bos 1, eos 2, no pad).
"""
import io
import json
import os
import sys

import numpy as np
import pytest
import sentencepiece as spm

from vedgan.data import outside_tokenizer as ot
from vedgan.data import tokenizer as tokenizer_lib
from vedgan.data.chatterbot_corpus.chatterbot_corpus import read_conversations
from vedgan.errors import ConfigError, DataError

tokenizers = pytest.importorskip("tokenizers")

#: the vedgan vocabulary of both files below: the tiny seq2seq config's (tests/conftest.py),
#: so the training runs reuse the programs other tests compiled
VOCAB = 300
HF_SPECIALS = ["[UNK]", "<s>", "</s>", "<pad>"]


@pytest.fixture(scope="module")
def texts():
  return [t for _, _, turns in read_conversations() for t in turns]


@pytest.fixture(scope="module")
def files(texts, tmp_path_factory):
  """``{"hf": path of tokenizer.json, "sp": path of a .model}``, both VOCAB vedgan ids."""
  root = tmp_path_factory.mktemp("outside")
  from tokenizers import decoders, models, pre_tokenizers, trainers
  hf = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
  hf.pre_tokenizer = pre_tokenizers.Whitespace()
  hf.decoder = decoders.BPEDecoder(suffix="</w>")
  # 2 roles are added (eou, blank): VOCAB - 2 outside ids
  hf.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=VOCAB - 2, special_tokens=HF_SPECIALS, end_of_word_suffix="</w>",
      show_progress=False))
  hf.save(str(root / "tokenizer.json"))
  writer = io.BytesIO()
  # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad; pad, eou, blank added
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=writer,
                                 vocab_size=VOCAB - 3, minloglevel=2, num_threads=1)
  (root / "sp.model").write_bytes(writer.getvalue())
  return {"hf": str(root / "tokenizer.json"), "sp": str(root / "sp.model"), "root": root}


@pytest.fixture(scope="module")
def hf_lib(files):
  return tokenizers.Tokenizer.from_file(files["hf"])


@pytest.fixture(scope="module")
def sp_lib(files):
  return spm.SentencePieceProcessor(model_file=files["sp"])


def test_hf_layout_roles_by_name(files, hf_lib):
  tok = ot.from_file(files["hf"])
  assert hf_lib.get_vocab_size() == VOCAB - 2 and tok.vocab_size == VOCAB
  assert tok.model_type == "hf:BPE"
  # unk from the model's unk_token, pad/bos/eos by their default names, eou/blank added
  assert tok.roles == {"pad": "<pad>", "unk": "[UNK]", "bos": "<s>", "eos": "</s>",
                       "eou": "<eou>", "blank": "<blank>"}
  assert tok.added_roles == ("eou", "blank")
  assert tok.outside_ids == {"unk": 0, "bos": 1, "eos": 2, "pad": 3}
  # hand-computed: [UNK] <s> </s> <pad> -> 1 2 3 0; outside 4.. -> 6.. (+2)
  want = np.concatenate([[1, 2, 3, 0], np.arange(4, VOCAB - 2) + 2])
  np.testing.assert_array_equal(tok.to_vedgan, want)
  assert [tok.id_to_piece(i) for i in range(6)] == [
      "<pad>", "[UNK]", "<s>", "</s>", "<eou>", "<blank>"]
  assert tok.id_to_piece(6) == hf_lib.id_to_token(4)
  assert tok.piece_to_id("<pad>") == 0 and tok.piece_to_id("<eou>") == 4
  assert tok.piece_to_id(hf_lib.id_to_token(10)) == 12
  assert tok.piece_to_id("not-a-token") == tok.unk_id == 1
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.eou_id, tok.blank_id) == (
      0, 1, 2, 3, 4, 5)


def test_sentencepiece_default_ids_layout(files, sp_lib):
  assert (sp_lib.unk_id(), sp_lib.bos_id(), sp_lib.eos_id(), sp_lib.pad_id()) == (0, 1, 2, -1)
  tok = ot.from_file(files["sp"])
  assert tok.model_type == "sentencepiece:unigram" and tok.vocab_size == VOCAB
  assert tok.roles == {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>",
                       "eou": "<eou>", "blank": "<blank>"}
  assert tok.added_roles == ("pad", "eou", "blank")
  want = np.concatenate([[1, 2, 3], np.arange(3, VOCAB - 3) + 3])
  np.testing.assert_array_equal(tok.to_vedgan, want)
  assert tok.id_to_piece(6) == sp_lib.id_to_piece(3) and tok.id_to_piece(0) == "<pad>"
  # the vedgan SentencePiece Tokenizer refuses this layout
  with pytest.raises(ValueError, match="special pieces"):
    tokenizer_lib.Tokenizer(open(files["sp"], "rb").read())


@pytest.mark.parametrize("kind", ["hf", "sp"])
def test_encode_decode_match_the_library(kind, files, hf_lib, sp_lib, texts):
  tok = ot.from_file(files[kind])
  to_v = tok.to_vedgan
  sample = texts[::7][:40] + ["zzqx ünïcödé 123"]
  for text in sample:
    if kind == "hf":
      lib_ids = hf_lib.encode(text.strip(), add_special_tokens=False).ids
      lib_text = hf_lib.decode(lib_ids, skip_special_tokens=False)
    else:
      lib_ids = sp_lib.encode(text.strip())
      lib_text = sp_lib.decode(lib_ids)
    ids = tok.encode(text)
    assert ids == [int(to_v[i]) for i in lib_ids], text
    assert tok.decode(ids) == lib_text.strip(), text
  assert tok.encode_batch(sample) == [tok.encode(t) for t in sample]
  assert tok.unk_id in tok.encode("zzqx ünïcödé 123") or kind == "hf"


def test_hf_padding_and_truncation_in_the_file_are_off(files, hf_lib, tmp_path):
  """A tokenizer.json saved with truncation / padding on encodes whole texts, unpadded."""
  lib = tokenizers.Tokenizer.from_file(files["hf"])
  lib.enable_truncation(max_length=2)
  lib.enable_padding(length=40, pad_id=3, pad_token="<pad>")
  lib.save(str(tmp_path / "cut.json"))
  text = "what is your name and what do you do"
  want = [int(i) + 2 for i in hf_lib.encode(text, add_special_tokens=False).ids]
  assert len(want) > 2 and ot.from_file(tmp_path / "cut.json").encode(text) == want


@pytest.mark.parametrize("kind", ["hf", "sp"])
def test_eou_blank_one_id_and_decode_stops_at_eos(kind, files):
  tok = ot.from_file(files[kind])
  a, b = tok.encode("how are you"), tok.encode("fine")
  ids = tok.encode("how are you <eou> fine<blank>")
  assert ids == a + [4] + b + [5]
  assert tok.decode(ids) == f"{tok.decode(a)} <eou> {tok.decode(b)} <blank>"
  # pad and bos dropped, eos ends the text; out-of-range ids refused
  assert tok.decode([2] + a + [3] + b + [0, 0]) == tok.decode(a)
  assert tok.decode(np.asarray([0] + a, np.int32)) == tok.decode(a)
  with pytest.raises(ValueError, match="outside"):
    tok.decode([tok.vocab_size])


def test_own_layout_maps_to_itself(texts, tmp_path):
  """A model with vedgan's layout (as train_sentencepiece makes) keeps every id."""
  own = tokenizer_lib.train_sentencepiece(texts, vocab_size=300)
  (tmp_path / "own.model").write_bytes(own.model_proto)
  tok = ot.from_file(tmp_path / "own.model")
  assert tok.added_roles == () and tok.vocab_size == own.vocab_size
  np.testing.assert_array_equal(tok.to_vedgan, np.arange(own.vocab_size))
  for text in texts[:30] + ["hi <eou> there <blank>"]:
    assert tok.encode(text) == own.encode(text)
    assert tok.decode(own.encode(text)) == own.decode(own.encode(text))


def test_roles_by_name_and_their_checks(files):
  """special_tokens picks the token of each role by name; swapping two swaps the ids."""
  swapped = ot.from_file(files["hf"], {"bos": "</s>", "eos": "<s>"})
  assert swapped.outside_ids["bos"] == 2 and swapped.outside_ids["eos"] == 1
  assert list(swapped.to_vedgan[:4]) == [1, 3, 2, 0]
  # any token of the vocabulary can take a role; an eou in the vocabulary is used, not
  # added, and is still one id in text
  eou_in = ot.from_file(files["sp"], {"eou": "</s>", "eos": "<unk>", "unk": "<s>",
                                      "bos": "▁the"})
  the = eou_in._be.vocab["▁the"]  # pylint: disable=protected-access
  assert eou_in.outside_ids == {"unk": 1, "bos": the, "eos": 0, "eou": 2}
  assert eou_in.to_vedgan[2] == 4 and eou_in.to_vedgan[the] == 2
  assert eou_in.added_roles == ("pad", "blank") and eou_in.vocab_size == VOCAB - 1
  assert eou_in.encode("a </s> b").count(4) == 1
  with pytest.raises(ConfigError, match="its own non-empty token name"):
    ot.from_file(files["hf"], {"bos": "<s>", "eos": "<s>"})
  with pytest.raises(ConfigError, match=r"unknown role\(s\) \['start'\]"):
    ot.from_file(files["hf"], {"start": "<s>"})
  with pytest.raises(ConfigError, match=r"unknown role\(s\) \['sep'\]"):
    ot.from_file(files["hf"], add_roles=("pad", "sep"))


def test_missing_role_is_one_line_error(files):
  with pytest.raises(ConfigError) as e:
    ot.from_file(files["hf"], {"bos": "[CLS]"})
  msg = str(e.value)
  assert "\n" not in msg and "role 'bos'" in msg and "'[CLS]'" in msg
  # the file's special tokens, and the flag to set (explicit name: no add_roles advice)
  assert "'[UNK]', '<s>', '</s>', '<pad>'" in msg
  assert "--config.tokenizer.special_tokens.bos=TOKEN" in msg and "add_roles" not in msg
  # a default name that is missing, for a role that may not be added
  with pytest.raises(ConfigError) as e:
    ot.from_file(files["sp"], add_roles=("eou", "blank"))
  msg = str(e.value)
  assert "role 'pad'" in msg and "'<pad>'" in msg and "similar: '<s>'" in msg
  assert "add 'pad' to --config.tokenizer.add_roles" in msg
  # an explicit name is never added, even for a role in add_roles
  with pytest.raises(ConfigError, match="no token '<sep>' for role 'eou'"):
    ot.from_file(files["sp"], {"eou": "<sep>"})


def test_unreadable_files(files, tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    ot.from_file(tmp_path / "nope.json")
  (tmp_path / "bad.json").write_text('{"model": ')
  with pytest.raises(DataError, match="not a Hugging Face tokenizer.json"):
    ot.from_file(tmp_path / "bad.json")
  (tmp_path / "bad.model").write_bytes(b"\x00\x01garbage")
  with pytest.raises(DataError, match="not a SentencePiece model"):
    ot.from_file(tmp_path / "bad.model")
  # JSON content is read as tokenizer.json whatever the file is called
  (tmp_path / "tok.bin").write_bytes(open(files["hf"], "rb").read())
  assert ot.from_file(tmp_path / "tok.bin").fmt == "hf"


def test_hf_without_the_tokenizers_package(files, monkeypatch):
  monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
  with pytest.raises(ConfigError, match=r'needs the tokenizers package \(pip install "vedgan\[hf\]"\)'):
    ot.from_file(files["hf"])
  assert ot.from_file(files["sp"]).vocab_size == VOCAB  # SentencePiece needs no extra


@pytest.mark.parametrize("kind", ["hf", "sp"])
def test_save_reload_fingerprint(kind, files, tmp_path, texts):
  tok = ot.from_file(files[kind])
  tok.save(tmp_path / "tokenizer")
  assert tokenizer_lib.tokenizer_exists(tmp_path / "tokenizer")
  back = tokenizer_lib.load_tokenizer(tmp_path / "tokenizer")
  assert isinstance(back, ot.OutsideTokenizer)
  assert back.fingerprint == tok.fingerprint and back.roles == tok.roles
  assert back.added_roles == tok.added_roles and back.vocab_size == tok.vocab_size
  assert [back.encode(t) for t in texts[:20]] == [tok.encode(t) for t in texts[:20]]
  meta = json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())
  assert meta["kind"] == "outside" and meta["fingerprint"] == tok.fingerprint
  copied = tmp_path / "tokenizer" / ot.FILENAMES[tok.fmt]
  assert copied.read_bytes() == open(files[kind], "rb").read()
  # the fingerprint covers the role mapping ...
  other = ot.from_file(files[kind], {"bos": "</s>", "eos": "<s>"})
  assert other.fingerprint != tok.fingerprint
  # ... and the file's bytes: an edited copy no longer loads
  copied.write_bytes(copied.read_bytes() + (b" " if kind == "hf" else b"\n\x00"))
  with pytest.raises(ValueError, match="edited|not a SentencePiece"):
    tokenizer_lib.load_tokenizer(tmp_path / "tokenizer")


def test_config_checks(files, tmp_path):
  from conftest import make_config
  from vedgan.data import inputs
  with pytest.raises(ConfigError, match="needs --config.data.tokenizer_file"):
    inputs.train_tokenizer(make_config(tokenizer__kind="file"), [])
  with pytest.raises(ConfigError, match="only read with tokenizer.kind='file'"):
    inputs.train_tokenizer(make_config(data__tokenizer_file=files["hf"]), ["hi"])
  with pytest.raises(ConfigError, match="special_tokens.eou='</s>' but config.data.eou"):
    inputs.train_tokenizer(make_config(tokenizer__kind="file", data__tokenizer_file=files["sp"],
                                       tokenizer__special_tokens__eou="</s>"), [])
  tok = inputs.train_tokenizer(make_config(
      tokenizer__kind="file", data__tokenizer_file=files["sp"], data__eou="</s>",
      tokenizer__special_tokens__eos="<unk>", tokenizer__special_tokens__unk="<s>",
      tokenizer__special_tokens__bos="▁the", tokenizer__add_roles=("pad", "blank")), [])
  assert tok.roles["eou"] == "</s>" and tok.added_roles == ("pad", "blank")


@pytest.mark.parametrize("kind", ["hf", "sp"])
def test_tiny_training_run(kind, files, tmp_path):
  """Two seq2seq steps with the outside tokenizer: samples decode to text, and the
  checkpoint records the tokenizer the reloaded workdir holds."""
  from conftest import make_config
  from vedgan import train
  from vedgan.checkpoint import Checkpointer
  config = make_config(stages__mle__num_steps=2, tokenizer__kind="file",
                       data__tokenizer_file=files[kind], decode__min_len=2)
  workdir = str(tmp_path / "run")
  result = train.run(config, workdir)
  assert result["step"] == 2
  tok = tokenizer_lib.load_tokenizer(os.path.join(workdir, "tokenizer"))
  assert isinstance(tok, ot.OutsideTokenizer) and tok.vocab_size == VOCAB
  assert tok.fingerprint == ot.from_file(files[kind]).fingerprint
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), 2, read_only=True)
  assert ckpt.read_meta(ckpt.latest_step())["tokenizer_fingerprint"] == tok.fingerprint
  samples = [json.loads(l) for l in open(os.path.join(workdir, "samples.jsonl"))]
  assert samples and all(isinstance(s["response"], str) and s["response"].strip()
                         for s in samples)
  if kind == "sp":  # resumed elsewhere: the file's path may differ (WORKDIR/tokenizer is read)
    config = make_config(stages__mle__num_steps=3, tokenizer__kind="file",
                         data__tokenizer_file="/elsewhere/sp.model", decode__min_len=2)
    assert train.run(config, workdir)["step"] == 3
