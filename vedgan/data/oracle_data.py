"""The ``oracle`` data source (issue 18): SeqGAN/Texygen's synthetic corpus, sampled once
from the oracle LSTM (:mod:`vedgan.oracle`) and cached.

``config.data.name = "oracle"``. Splits ``train`` (``data.oracle_train_size``, 10,000 in
SeqGAN) and ``test`` (``data.oracle_test_size``, 10,000), each ``[N, T]`` oracle sequences
(``T = data.oracle_length``) drawn at temperature 1 with ``fold_in(key(data.oracle_data_seed),
0)`` (train) and ``.., 1)`` (test), :func:`vedgan.oracle.sample_many` in chunks of 1000.

Cache: ``DATA_DIR/oracle/<key>/`` (``DATA_DIR`` as the TFDS datasets:
``data.data_dir``, ``$VEDGAN_DATA_DIR``, ``$TFDS_DATA_DIR`` or ``~/.cache/vedgan/tfds``), where ``key`` hashes
the oracle's parameters (:func:`vedgan.oracle.fingerprint`), ``T``, the split sizes and the
data seed. It holds ``train.txt`` and ``test.txt`` (one sequence of space-separated ids per
line: what anyone can rescore), ``oracle.npz`` (the 15 arrays, :data:`vedgan.oracle.PARAM_NAMES`)
and ``meta.json``. It is written once under the same inter-process lock as the TFDS builds,
into a temporary folder renamed into place, so a reader never sees a partial cache.

Records are ``{"text": "17 4051 ..."}`` (so the sentence objectives read them through
:func:`vedgan.data.sources.sentences`); :class:`OracleRecords` sets ``distinct = False`` so
repeated sequences are kept (the corpus is a sample of the oracle, repeats included).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import jax
import numpy as np

from vedgan import oracle
from vedgan.data import sources
from vedgan.errors import ConfigError, DataError

NAME = "oracle"
SPLITS = ("train", "test")
CHUNK = 1000


class OracleRecords(list):
  """``[{"text": ids joined by spaces}, ...]`` plus ``tokens [N, T]``, ``counts`` and
  ``distinct = False`` (keep repeated sequences)."""

  distinct = False

  def __init__(self, tokens: np.ndarray):
    super().__init__({"text": " ".join(map(str, row))} for row in tokens.tolist())
    self.tokens = tokens
    self.counts = {"records": int(tokens.shape[0])}


def cache_key(params, data_config) -> str:
  """16 hex digits naming the cache folder of this oracle and these samples."""
  desc = json.dumps({"oracle": oracle.fingerprint(params), "length": int(data_config.oracle_length),
                     "train": int(data_config.oracle_train_size),
                     "test": int(data_config.oracle_test_size),
                     "seed": int(data_config.oracle_data_seed)}, sort_keys=True)
  return hashlib.sha256(desc.encode()).hexdigest()[:16]


def cache_dir(data_config, params=None) -> str:
  """Where the samples of ``data_config``'s oracle are cached."""
  params = oracle.from_config(data_config) if params is None else params
  root = sources.resolve_data_dir(sources.config_value(data_config, "data_dir"))
  return os.path.join(root, NAME, cache_key(params, data_config))


def write_tokens(path: str, tokens: np.ndarray) -> None:
  """``tokens [N, T]`` as lines of space-separated ids."""
  with open(path, "w", encoding="ascii") as f:
    f.writelines(" ".join(map(str, row)) + "\n" for row in np.asarray(tokens).tolist())


def read_tokens(path: str) -> np.ndarray:
  """The ``[N, T]`` int32 ids of a file :func:`write_tokens` wrote."""
  with open(path, encoding="ascii") as f:
    rows = [[int(t) for t in line.split()] for line in f if line.strip()]
  if not rows or len({len(r) for r in rows}) != 1:
    raise DataError(f"{path} is empty or its lines differ in length; delete "
                    f"{os.path.dirname(path)} to resample it")
  return np.asarray(rows, np.int32)


def prepare(data_config) -> str:
  """Samples and writes the cache once (a no-op when it exists); returns its folder."""
  for field in ("oracle_length", "oracle_train_size", "oracle_test_size"):
    if int(data_config[field]) < 1:
      raise ConfigError(f"config.data.{field}={data_config[field]} must be >= 1")
  params = oracle.from_config(data_config)
  folder = cache_dir(data_config, params)
  if os.path.isfile(os.path.join(folder, "meta.json")):
    return folder
  parent = os.path.dirname(folder)
  with sources._prepare_lock(parent, NAME):  # pylint: disable=protected-access
    if os.path.isfile(os.path.join(folder, "meta.json")):
      return folder
    tmp = os.path.join(parent, f".incomplete.{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
      key = jax.random.key(int(data_config.oracle_data_seed))
      length = int(data_config.oracle_length)
      for k, split in enumerate(SPLITS):
        n = int(data_config[f"oracle_{split}_size"])
        tokens = oracle.sample_many(params, jax.random.fold_in(key, k), n, length, CHUNK)
        write_tokens(os.path.join(tmp, f"{split}.txt"), tokens)
      oracle.save_params(os.path.join(tmp, "oracle.npz"), params)
      vocab, embed, hidden = oracle.dims(params)
      meta = {"oracle_fingerprint": oracle.fingerprint(params), "vocab": vocab, "embed": embed,
              "hidden": hidden, "length": length, "data_seed": int(data_config.oracle_data_seed),
              "oracle_seed": int(data_config.oracle_seed),
              "oracle_params": str(data_config.oracle_params),
              "sizes": {s: int(data_config[f"oracle_{s}_size"]) for s in SPLITS}}
      with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
      os.replace(tmp, folder)
    finally:
      if os.path.isdir(tmp):
        shutil.rmtree(tmp)
  return folder


def load_tokens(data_config, split: str) -> np.ndarray:
  """``[N, T]`` int32 oracle ids of ``split`` (``train`` or ``test``), sampled on first use."""
  if split not in SPLITS:
    raise ConfigError(f"the oracle data has splits {SPLITS}, not {split!r} (set "
                      "config.data.validation_split='test')")
  return read_tokens(os.path.join(prepare(data_config), f"{split}.txt"))


def load_split(data_config, split: str) -> OracleRecords:
  """``split`` as :class:`OracleRecords` (what :func:`vedgan.data.sources.load_split` returns
  for ``data.name = "oracle"``)."""
  return OracleRecords(load_tokens(data_config, split))
