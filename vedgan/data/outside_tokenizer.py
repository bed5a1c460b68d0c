"""Outside tokenizers: a Hugging Face ``tokenizer.json`` or any SentencePiece ``.model``.

A run uses a tokenizer made elsewhere with ``config.tokenizer.kind = "file"`` and
``config.data.tokenizer_file`` (a ``tokenizer.json`` read by the ``tokenizers``
package, or a SentencePiece model whatever its special ids). vedgan's six roles are
found in its vocabulary BY NAME (``config.tokenizer.special_tokens``):

=========  ==========================================  =================================
role       HF ``tokenizer.json`` default               SentencePiece default
=========  ==========================================  =================================
``pad``    ``<pad>``                                   the model's pad piece (``<pad>``)
``unk``    the model's ``unk_token``, else ``<unk>``   the model's unk piece
``bos``    ``<s>``                                     the model's bos piece (``<s>``)
``eos``    ``</s>``                                    the model's eos piece (``</s>``)
``eou``    ``config.data.eou`` (``<eou>``)             ``config.data.eou``
``blank``  ``<blank>``                                 ``<blank>``
=========  ==========================================  =================================

A role whose default name is not in the vocabulary gets a NEW id of vedgan's own when
it is in ``config.tokenizer.add_roles`` (default ``("pad", "eou", "blank")``: pad is
only ever written by vedgan, and ``<eou>`` / ``<blank>`` are recognised in text by their
name as one id each, whether in the vocabulary or added); otherwise, and always for a
name set explicitly, a missing token is a one-line :class:`~vedgan.errors.ConfigError`
naming the role, the name looked for, the file's special tokens and close names, and the
flag to set. A byte-level BPE without an unk token reads e.g.
``add_roles=("pad", "unk", "eou", "blank")`` (its unk id is then never produced by the
tokenizer; word dropout still writes it).

Ids: remapped at the boundary. The model sees vedgan's fixed layout (pad 0, unk 1, bos 2,
eos 3, eou 4, blank 5; :mod:`vedgan.data.tokenizer`), then every other id of the outside
vocabulary in its order::

  vedgan id = ROLE_ID[role]            for the token of a role
            = 6 + rank among the rest  for any other outside id
  vocab_size = 6 + outside size - (roles found in the vocabulary)

Remapping, rather than exposing the outside ids as ``pad_id`` / ``bos_id`` / ..., because
vedgan reads the fixed ids as constants in several places: the pipeline pads with
``PAD_ID`` and writes ``BOS_ID`` / ``EOS_ID`` itself (``pipeline._pad_rows``,
``_decoder_rows``), ``decode.greedy`` / ``sample`` / ``beam_search`` default
``pad_id=0``, ``rewards.strip_eos`` writes 0, ``mojitalk.networks.strip_eos`` defaults
to ``EOS_ID``, ``rewards._eou_id`` falls back to 4, ``content_ids`` (every decode) reads
the constants, and the padding masks are ``tokens != 0`` (seq2seq, collaborative_ved,
happybot, mojitalk, ``nn.topk_gan``). With the remap all of these hold for any
outside tokenizer, and ``encode``/``decode`` are the library's own (``encode(text) ==
[to_vedgan[i] for i in library.encode(text)]`` for text without an eou/blank name). A
tokenizer whose roles already are ids 0-5 maps every id to itself.

>>> tok = from_file("tokenizer.json", {"bos": "<s>", "eos": "</s>"})
>>> tok.encode("hello there <eou> hi")       # vedgan ids, no bos/eos added
>>> tok.save(workdir); load_tokenizer(workdir).fingerprint == tok.fingerprint
True

``save`` copies the file byte for byte (``outside_tokenizer.json`` or
``outside_tokenizer.model``) beside ``tokenizer.json`` (vedgan's description: kind
``"outside"``, the role names, the added roles, the fingerprint), so the run never reads
``config.data.tokenizer_file`` again after its first start. The fingerprint hashes the
file's bytes, its format and the role mapping.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from typing import Mapping, Optional, Sequence

import numpy as np

from vedgan.data.batch_encode import encode_segments, usable_cpus
from vedgan.data.tokenizer import (BLANK_ID, BOS_ID, EOS_ID, EOU_ID, META_FILENAME, PAD_ID,
                                   UNK_ID, SpecialIds, _atomic_write, content_ids)
from vedgan.errors import ConfigError, DataError

OUTSIDE_KIND = "outside"
HF, SENTENCEPIECE = "hf", "sentencepiece"
FILENAMES = {HF: "outside_tokenizer.json", SENTENCEPIECE: "outside_tokenizer.model"}
ROLES = ("pad", "unk", "bos", "eos", "eou", "blank")
ROLE_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "eou": EOU_ID,
            "blank": BLANK_ID}
ROLE_USE = {"pad": "padding", "unk": "unknown", "bos": "decoder start",
            "eos": "end of sequence", "eou": "end of utterance", "blank": "word dropout / blank"}
DEFAULT_ADD_ROLES = ("pad", "eou", "blank")
#: changes if the id layout above ever changes (part of the fingerprint)
LAYOUT_VERSION = 1
_HF_EXTRA = 'pip install "vedgan[hf]"'


class _HFBackend:
  """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` bytes (padding and truncation off)."""

  fmt = HF

  def __init__(self, data: bytes, source: str):
    try:
      import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ConfigError(f"reading a Hugging Face tokenizer.json needs the tokenizers package "
                        f"({_HF_EXTRA}): {source}") from None
    try:
      text = data.decode("utf-8")
      spec = json.loads(text)
      self._tok = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # pylint: disable=broad-except  (JSON, UTF-8 or Rust errors)
      why = " ".join(str(e).split())[:120] or type(e).__name__
      raise DataError(f"tokenizer file {source} is not a Hugging Face tokenizer.json "
                      f"({why})") from None
    self._tok.no_padding()
    self._tok.no_truncation()
    self.version = tokenizers.__version__
    model = spec.get("model") or {}
    self.model_type = str(model.get("type", "unknown"))
    self.vocab = dict(self._tok.get_vocab(with_added_tokens=True))
    self.size = max(self.vocab.values(), default=-1) + 1
    unk = model.get("unk_token")
    if unk is None and isinstance(model.get("unk_id"), int):  # Unigram: an index of its vocab
      unk = self._tok.id_to_token(int(model["unk_id"]))
    self.defaults = {"pad": "<pad>", "unk": unk or "<unk>", "bos": "<s>", "eos": "</s>",
                     "blank": "<blank>"}
    self.specials = [t["content"] for t in spec.get("added_tokens") or ()
                     if t.get("special")]

  def encode(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
    del num_threads  # the tokenizers package chooses its own
    return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    piece = self._tok.id_to_token(int(i))
    return "" if piece is None else piece


class _SPBackend:
  """A SentencePiece model from its serialized bytes (any special ids)."""

  fmt = SENTENCEPIECE

  def __init__(self, data: bytes, source: str):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
    try:
      proto = sentencepiece_model_pb2.ModelProto()
      proto.ParseFromString(data)
      self._sp = spm.SentencePieceProcessor()
      self._sp.LoadFromSerializedProto(data)
    except Exception as e:  # pylint: disable=broad-except  (protobuf / sentencepiece errors)
      why = " ".join(str(e).split())[:120] or type(e).__name__
      raise DataError(f"tokenizer file {source} is not a SentencePiece model nor a "
                      f"tokenizer.json ({why})") from None
    self.version = spm.__version__
    self.model_type = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(
        proto.trainer_spec.model_type).lower()
    self.size = int(self._sp.GetPieceSize())
    self.vocab = {}
    for i in range(self.size):
      self.vocab.setdefault(self._sp.IdToPiece(i), i)
    spec = proto.trainer_spec
    self.defaults = {"pad": spec.pad_piece or "<pad>", "unk": spec.unk_piece or "<unk>",
                     "bos": spec.bos_piece or "<s>", "eos": spec.eos_piece or "</s>",
                     "blank": "<blank>"}
    normal = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
    self.specials = [p.piece for p in proto.pieces if p.type != normal][:32]

  def encode(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
    return self._sp.encode(texts, out_type=int, num_threads=int(num_threads) or usable_cpus())

  def decode(self, ids: list[int]) -> str:
    return self._sp.DecodeIds(ids)

  def id_to_piece(self, i: int) -> str:
    return self._sp.IdToPiece(int(i))


def detect_format(path: str, data: bytes) -> str:
  """``"hf"`` for a ``.json`` file or JSON text, else ``"sentencepiece"``."""
  if str(path).lower().endswith(".json") or data.lstrip()[:1] == b"{":
    return HF
  return SENTENCEPIECE


def _backend(data: bytes, fmt: str, source: str):
  if fmt == HF:
    return _HFBackend(data, source)
  if fmt == SENTENCEPIECE:
    return _SPBackend(data, source)
  raise ValueError(f"outside tokenizer format {fmt!r}; expected {HF!r} or {SENTENCEPIECE!r}")


class OutsideTokenizer(SpecialIds):
  """A Hugging Face or SentencePiece tokenizer behind vedgan's fixed special ids.

  Same interface as :class:`vedgan.data.tokenizer.Tokenizer`. Build one with
  :func:`from_file` (which resolves role names and their defaults); this constructor
  takes the roles already resolved.

  Attributes:
    vocab_size: number of vedgan ids (``6 + outside size - roles in the vocabulary``).
    fmt: ``"hf"`` or ``"sentencepiece"``.
    roles: role -> token name (``{"pad": "<pad>", "unk": "<unk>", ...}``, all six).
    added_roles: the roles whose token is not in the vocabulary (a new vedgan id).
    eou_piece, blank_piece: ``roles["eou"]``, ``roles["blank"]`` (one id each in text).
  """

  def __init__(self, data: bytes, fmt: str, roles: Mapping[str, str],
               added_roles: Sequence[str] = (), source: str = "", _backend_obj=None):
    """Wraps the file bytes ``data`` of format ``fmt``.

    Raises:
      ConfigError: if a role is missing or unknown, a role not in ``added_roles`` names no
        token of the vocabulary, an added one names a token that is there, or two roles
        share a name.
      DataError: if ``data`` cannot be read as ``fmt``.
    """
    self._data = bytes(data)
    self.fmt = fmt
    self.source = source or FILENAMES.get(fmt, "?")
    be = _backend_obj or _backend(self._data, fmt, self.source)
    self._be = be
    if set(roles) != set(ROLES):
      raise ConfigError(f"outside tokenizer roles {sorted(roles)} must be exactly {ROLES}")
    self.roles = {r: str(roles[r]) for r in ROLES}
    self.added_roles = tuple(r for r in ROLES if r in set(added_roles))
    names = list(self.roles.values())
    if "" in names or len(set(names)) != len(names):
      raise ConfigError(f"tokenizer file {self.source}: each role needs its own non-empty "
                        f"token name, got {self.roles}; set --config.tokenizer.special_tokens")
    outside = {}
    for role in ROLES:
      i = be.vocab.get(self.roles[role])
      if role in self.added_roles:
        if i is not None:
          raise ConfigError(f"tokenizer file {self.source}: role {role!r} is added but "
                            f"{self.roles[role]!r} is in the vocabulary (id {i})")
      elif i is None:
        raise ConfigError(missing_role_message(be, self.source, role, self.roles[role],
                                               explicit=True))
      else:
        outside[role] = i
    self.outside_ids = outside
    role_of = {i: ROLE_IDS[r] for r, i in outside.items()}
    rest = [i for i in range(be.size) if i not in role_of]
    self.vocab_size = len(ROLES) + len(rest)
    self._to_vedgan = np.zeros(be.size, np.int64)
    self._to_vedgan[rest] = np.arange(len(ROLES), self.vocab_size)
    for i, v in role_of.items():
      self._to_vedgan[i] = v
    self._from_vedgan = np.full(self.vocab_size, -1, np.int64)
    self._from_vedgan[self._to_vedgan] = np.arange(be.size)
    self.eou_piece, self.blank_piece = self.roles["eou"], self.roles["blank"]
    self._symbols = {self.eou_piece: EOU_ID, self.blank_piece: BLANK_ID}
    self._symbol_re = re.compile("(" + "|".join(
        re.escape(p) for p in sorted(self._symbols, key=len, reverse=True)) + ")")

  # -- description ----------------------------------------------------------------------
  @property
  def model_type(self) -> str:
    """``"hf:BPE"``, ``"hf:WordLevel"``, ``"sentencepiece:unigram"``, ..."""
    return f"{self.fmt}:{self._be.model_type}"

  @property
  def user_symbols(self) -> dict[str, int]:
    """The names encoded as one id in text: ``{eou_piece: 4, blank_piece: 5}``."""
    return dict(self._symbols)

  @property
  def file_bytes(self) -> bytes:
    """The outside file, byte for byte (what ``save`` copies)."""
    return self._data

  @property
  def to_vedgan(self) -> np.ndarray:
    """int64 ``[outside size]``: outside id -> vedgan id."""
    return self._to_vedgan.copy()

  @property
  def fingerprint(self) -> str:
    """sha256 hex digest of the file's bytes, its format and the role mapping."""
    return hashlib.sha256(json.dumps(
        {"kind": OUTSIDE_KIND, "format": self.fmt, "layout": LAYOUT_VERSION,
         "file_sha256": hashlib.sha256(self._data).hexdigest(), "roles": self.roles,
         "added_roles": list(self.added_roles)}, sort_keys=True).encode("utf-8")).hexdigest()

  # -- text <-> ids ----------------------------------------------------------------------
  def encode(self, text: str) -> list[int]:
    """``text`` -> vedgan ids (no bos/eos added); the eou/blank names are one id each."""
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
    """``[encode(t) for t in texts]`` with one library call for every stretch of text
    between the eou/blank names (each stripped, as :class:`~vedgan.data.tokenizer.Tokenizer`
    does); the library adds no special tokens."""
    to_v = self._to_vedgan

    def pieces(parts):
      return [to_v[np.asarray(ids, np.int64)].tolist() if len(ids) else []
              for ids in self._be.encode(list(parts), num_threads)]
    return encode_segments(texts, self._symbol_re, self._symbols, pieces)

  def decode(self, ids) -> str:
    """vedgan ids (list / 1-D array) -> text: stops at the first ``eos_id``, drops
    ``pad_id``/``bos_id``; the stretches between eou/blank (and added roles) are decoded by
    the library, those ids are their names, and the pieces are joined by single spaces.

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``.
    """
    segments, current = [], []
    for i in content_ids(ids, self.vocab_size):
      j = int(self._from_vedgan[i])
      if i in (EOU_ID, BLANK_ID) or j < 0:
        if current:
          segments.append(self._be.decode(current))
          current = []
        segments.append(self.id_to_piece(i))
      else:
        current.append(j)
    if current:
      segments.append(self._be.decode(current))
    return " ".join(s for s in (s.strip() for s in segments) if s)

  def id_to_piece(self, i) -> str:
    """The token of vedgan id ``i`` (a role's name for ids 0-5)."""
    i = int(i)
    j = int(self._from_vedgan[i])
    if j < 0:
      return self.roles[ROLES[i]]
    return self._be.id_to_piece(j)

  def piece_to_id(self, piece: str) -> int:
    """vedgan id of ``piece`` (``unk_id`` if not in the vocabulary)."""
    for role, name in self.roles.items():
      if name == piece:
        return ROLE_IDS[role]
    j = self._be.vocab.get(piece)
    return UNK_ID if j is None else int(self._to_vedgan[j])

  # -- saving ----------------------------------------------------------------------------
  def meta(self) -> dict:
    """JSON-serialisable description (written as tokenizer.json)."""
    return {
        "kind": OUTSIDE_KIND, "format": self.fmt, "file": FILENAMES[self.fmt],
        "source": os.path.basename(self.source), "vocab_size": self.vocab_size,
        "outside_vocab_size": int(self._be.size), "model_type": self.model_type,
        "special_tokens": dict(self.roles), "added_roles": list(self.added_roles),
        "outside_ids": dict(self.outside_ids), "layout": LAYOUT_VERSION,
        "file_sha256": hashlib.sha256(self._data).hexdigest(),
        "fingerprint": self.fingerprint, "library_version": self._be.version,
        "pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "eou_id": EOU_ID, "blank_id": BLANK_ID,
    }

  def save(self, directory) -> None:
    """Writes ``directory/outside_tokenizer.{json,model}`` (the file's bytes) and
    ``tokenizer.json``, each atomically."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _atomic_write(os.path.join(directory, FILENAMES[self.fmt]), self._data)
    _atomic_write(os.path.join(directory, META_FILENAME),
                  (json.dumps(self.meta(), indent=2, sort_keys=True) + "\n").encode("utf-8"))

  @classmethod
  def load(cls, directory) -> "OutsideTokenizer":
    """Reads what :meth:`save` wrote; checks the stored fingerprint.

    Raises:
      ValueError: if the copied file or ``tokenizer.json`` was edited (fingerprints differ).
    """
    directory = os.fspath(directory)
    with open(os.path.join(directory, META_FILENAME), encoding="utf-8") as f:
      meta = json.load(f)
    fmt = meta.get("format")
    if fmt not in FILENAMES:
      raise ValueError(f"outside tokenizer in {directory}: unknown format {fmt!r}")
    path = os.path.join(directory, FILENAMES[fmt])
    with open(path, "rb") as f:
      data = f.read()
    tok = cls(data, fmt, meta["special_tokens"], meta.get("added_roles", ()), source=path)
    if meta.get("fingerprint") != tok.fingerprint:
      raise ValueError(f"outside tokenizer in {directory} does not match its {META_FILENAME} "
                       "fingerprint (edited?)")
    return tok

  def __repr__(self) -> str:
    return (f"OutsideTokenizer({self.model_type}, vocab_size={self.vocab_size}, "
            f"added={list(self.added_roles)}, fingerprint={self.fingerprint[:12]})")


def similar_tokens(be, name: str, count: int = 3) -> list[str]:
  """Up to ``count`` vocabulary tokens closest to ``name`` (difflib's ratio): the file's
  special tokens first (ratio >= 0.3), then any token (ratio >= 0.5)."""
  out = difflib.get_close_matches(name, be.specials, n=count, cutoff=0.3)
  more = difflib.get_close_matches(name, list(be.vocab), n=count + len(out), cutoff=0.5)
  return (out + [t for t in more if t not in out])[:count]


def missing_role_message(be, source: str, role: str, name: str, explicit: bool) -> str:
  """The one-line error for a role whose token ``name`` is not in the vocabulary."""
  specials = ", ".join(repr(s) for s in be.specials[:8]) or "none"
  close = ", ".join(repr(s) for s in similar_tokens(be, name)) or "none"
  fix = f"set --config.tokenizer.special_tokens.{role}=TOKEN"
  if not explicit:
    fix += f", or add {role!r} to --config.tokenizer.add_roles to give it a new id"
  return (f"tokenizer file {source}: no token {name!r} for role {role!r} "
          f"({ROLE_USE[role]}) in its vocabulary of {be.size}; its special tokens: "
          f"{specials}; similar: {close}; {fix}")


def from_file(path, special_tokens: Optional[Mapping[str, str]] = None,
              add_roles: Sequence[str] = DEFAULT_ADD_ROLES, eou: str = "<eou>"
              ) -> OutsideTokenizer:
  """The tokenizer in ``path`` (``tokenizer.json`` or a SentencePiece ``.model``).

  Args:
    path: the file; JSON (or a ``.json`` name) is read with ``tokenizers``, anything else
      as a SentencePiece model.
    special_tokens: role -> token name; a missing or empty entry takes the default of the
      module docstring's table. A name given here must be in the vocabulary.
    add_roles: roles that get a new id when their DEFAULT name is not in the vocabulary.
    eou: the default name of the ``eou`` role (the run's ``config.data.eou``).

  Raises:
    DataError: the file is missing or unreadable.
    ConfigError: an unknown role, or a role's token missing (one line: role, name,
      the file's special tokens, similar names, the flag to set).
  """
  path = os.fspath(path)
  special_tokens = {k: str(v) for k, v in dict(special_tokens or {}).items() if v}
  unknown = sorted(set(special_tokens) - set(ROLES)) + sorted(set(add_roles) - set(ROLES))
  if unknown:
    raise ConfigError(f"tokenizer special_tokens / add_roles name unknown role(s) {unknown}; "
                      f"the roles are {list(ROLES)}")
  if not os.path.isfile(path):
    raise DataError(f"tokenizer file {path} does not exist; set --config.data.tokenizer_file "
                    "to a tokenizer.json or a SentencePiece .model")
  with open(path, "rb") as f:
    data = f.read()
  fmt = detect_format(path, data)
  be = _backend(data, fmt, path)
  defaults = dict(be.defaults, eou=str(eou))
  roles, added = {}, []
  for role in ROLES:
    name = special_tokens.get(role) or defaults[role]
    roles[role] = name
    if name not in be.vocab:
      if role in special_tokens or role not in add_roles:
        raise ConfigError(missing_role_message(be, path, role, name,
                                               explicit=role in special_tokens))
      added.append(role)
  return OutsideTokenizer(data, fmt, roles, added, source=path, _backend_obj=be)


def from_config(config) -> OutsideTokenizer:
  """:func:`from_file` of ``config.data.tokenizer_file`` with ``config.tokenizer``'s
  ``special_tokens`` and ``add_roles`` (``config.tokenizer.kind == "file"``).

  Raises:
    ConfigError: no file set, or ``special_tokens.eou`` differs from ``data.eou`` (the
      marker that joins context turns must be the eou token).
  """
  path = str(config.data.get("tokenizer_file", "") or "")
  if not path:
    raise ConfigError("config.tokenizer.kind='file' needs --config.data.tokenizer_file=PATH "
                      "(a Hugging Face tokenizer.json or a SentencePiece .model)")
  tc = config.tokenizer
  special = tc.get("special_tokens", None)
  special = dict(special.to_dict() if hasattr(special, "to_dict") else special or {})
  eou = str(config.data.get("eou", "<eou>"))
  if special.get("eou") and special["eou"] != eou:
    raise ConfigError(f"config.tokenizer.special_tokens.eou={special['eou']!r} but "
                      f"config.data.eou={eou!r} joins the context turns; set both to the "
                      "same token")
  return from_file(path, special, tuple(tc.get("add_roles", DEFAULT_ADD_ROLES)), eou)


def is_outside(directory) -> bool:
  """Whether ``directory`` holds a saved outside tokenizer."""
  path = os.path.join(os.fspath(directory), META_FILENAME)
  if not os.path.isfile(path):
    return False
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("kind") == OUTSIDE_KIND
  except (OSError, ValueError):
    return False
