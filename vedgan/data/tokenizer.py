"""Tokenizers with fixed special ids: SentencePiece (unigram / BPE) and word-level.

Every tokenizer vedgan trains has the same special ids, whatever its kind
(SentencePiece ``unigram`` or ``bpe``: :class:`Tokenizer`; a most-frequent-N
word vocabulary as the papers use: :class:`WordTokenizer`):

====  ===========  ==========================================
id    piece        use
====  ===========  ==========================================
0     ``<pad>``    padding (``Tokenizer.pad_id``)
1     ``<unk>``    unknown (``Tokenizer.unk_id``)
2     ``<s>``      decoder start (``Tokenizer.bos_id``)
3     ``</s>``     end of sequence (``Tokenizer.eos_id``)
4     ``<eou>``    end of utterance, joins dialogue turns (``eou_id``)
5     ``<blank>``  word-dropout / masked token (``blank_id``)
====  ===========  ==========================================

``<eou>`` and ``<blank>`` are user-defined symbols: they are always exactly one
id when they occur in text. ``encode`` splits the text at these symbols and
encodes the pieces in between separately, so ``"a <eou> b"`` is
``enc("a") + [4] + enc("b")`` (no stray ``"▁"`` piece before the symbol), and
``decode`` joins the segments with single spaces.

>>> tok = train_sentencepiece(texts, vocab_size=1000)
>>> ids = tok.encode("hello there <eou> hi")      # no bos/eos added
>>> tok.decode(ids + [tok.eos_id, 7, 7])           # stops at the first eos
'hello there <eou> hi'
>>> tok.save(workdir); load_tokenizer(workdir).fingerprint == tok.fingerprint
True

Both kinds share one interface (``vocab_size``, the ``*_id`` attributes,
``encode``, ``encode_batch``, ``decode``, ``id_to_piece``, ``piece_to_id``,
``fingerprint``, ``meta``, ``save``), and :func:`load_tokenizer` reloads
whichever kind a directory holds.

>>> words = train_word_vocab(texts, vocab_size=20000, lowercase=True)
>>> words.encode("Hello there <eou> hi")   # unknown words -> unk_id (1)
>>> words.decode(ids)                       # 'hello there <eou> hi'

Vocabulary size: ``vocab_size`` is a hard limit (``hard_vocab_limit=True``),
so the embedding shapes in a config are exactly what the model gets. A value
larger than the corpus supports is a one-line ``ValueError`` that says the
maximum; pass ``hard_vocab_limit=False`` to let SentencePiece shrink the
vocabulary instead (then read ``tokenizer.vocab_size`` for model shapes).
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import re
import tempfile
from typing import Iterable, Sequence, Union

import numpy as np
import sentencepiece as spm

from vedgan.data.batch_encode import encode_segments, usable_cpus  # noqa: F401

MODEL_FILENAME = "tokenizer.model"      # SentencePiece model
VOCAB_FILENAME = "tokenizer.vocab"      # word vocabulary, one piece per line
META_FILENAME = "tokenizer.json"

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
EOU_PIECE, BLANK_PIECE = "<eou>", "<blank>"
EOU_ID, BLANK_ID = 4, 5
_SPECIAL_PIECES = {PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>",
                   EOS_ID: "</s>", EOU_ID: EOU_PIECE, BLANK_ID: BLANK_PIECE}

# SentencePiece's "word" trainer mis-orders user-defined symbols (it adds
# "▁<eou>" pieces among the fixed ids) and "char" ignores vocab_size, so only
# subword models are offered here.
MODEL_TYPES = ("unigram", "bpe")



def content_ids(ids, vocab_size: int) -> list[int]:
  """The ids a text is decoded from: up to the first ``eos_id``, without ``pad_id`` and
  ``bos_id``.

  Raises:
    ValueError: for an id outside ``[0, vocab_size)``.
  """
  out = []
  for i in np.asarray(ids).reshape(-1).tolist():
    i = int(i)
    if i == EOS_ID:
      break
    if i in (PAD_ID, BOS_ID):
      continue
    if not 0 <= i < vocab_size:
      raise ValueError(f"token id {i} outside [0, {vocab_size})")
    out.append(i)
  return out


class SpecialIds:
  """The fixed special ids and pieces every vedgan tokenizer shares."""
  pad_id = PAD_ID
  unk_id = UNK_ID
  bos_id = BOS_ID
  eos_id = EOS_ID
  eou_id = EOU_ID
  blank_id = BLANK_ID
  eou_piece = EOU_PIECE
  blank_piece = BLANK_PIECE


class Tokenizer(SpecialIds):
  """A SentencePiece model with the fixed special ids above.

  Attributes:
    vocab_size: number of ids; valid ids are ``0 .. vocab_size - 1``.
  """

  def __init__(self, model_proto: bytes):
    """Wraps a serialized SentencePiece ``ModelProto``.

    Raises:
      ValueError: if the model's special ids are not the fixed ones.
    """
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
    self._model_proto = bytes(model_proto)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(self._model_proto)
    self._model_type = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(
        proto.trainer_spec.model_type).lower()
    user_type = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    self._symbols = {p.piece: i for i, p in enumerate(proto.pieces)
                     if p.type == user_type}
    # Longest first so that a symbol that prefixes another cannot win.
    self._symbol_re = re.compile("(" + "|".join(
        re.escape(p) for p in sorted(self._symbols, key=len, reverse=True))
                                 + ")")
    self._symbol_ids = frozenset(self._symbols.values())
    self._sp = spm.SentencePieceProcessor()
    self._sp.LoadFromSerializedProto(self._model_proto)
    self.vocab_size = int(self._sp.GetPieceSize())
    found = {i: self._sp.IdToPiece(i) for i in _SPECIAL_PIECES
             if i < self.vocab_size}
    if found != _SPECIAL_PIECES:
      raise ValueError(f"tokenizer special pieces {found} != the fixed "
                       f"{_SPECIAL_PIECES}; train it with train_sentencepiece")

  @property
  def model_type(self) -> str:
    """``"unigram"`` or ``"bpe"``."""
    return self._model_type

  @property
  def user_symbols(self) -> dict[str, int]:
    """User-defined symbols -> ids (``{"<eou>": 4, "<blank>": 5, ...}``)."""
    return dict(self._symbols)

  @property
  def model_proto(self) -> bytes:
    """The serialized SentencePiece model (what ``save`` writes)."""
    return self._model_proto

  @property
  def fingerprint(self) -> str:
    """sha256 hex digest of the serialized model."""
    return hashlib.sha256(self._model_proto).hexdigest()

  def encode(self, text: str) -> list[int]:
    """``text`` -> ids (no bos/eos added). ``<eou>``/``<blank>`` are 1 id."""
    ids = []
    for k, part in enumerate(self._symbol_re.split(text)):
      if k % 2:  # odd parts are the separators the regex captured
        ids.append(self._symbols[part])
      elif part.strip():
        ids.extend(self._sp.EncodeAsIds(part.strip()))
    return ids

  def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
    """``[encode(t) for t in texts]``, the same ids, with ONE multi-threaded SentencePiece
    call for every piece of every text (:func:`vedgan.data.batch_encode.encode_segments`).

    ``num_threads``: SentencePiece's encoding threads; 0 = the CPUs this process may use.
    """
    threads = int(num_threads) or usable_cpus()
    return encode_segments(texts, self._symbol_re, self._symbols, lambda pieces: self._sp.encode(
        pieces, out_type=int, num_threads=threads))

  def decode(self, ids) -> str:
    """ids (list / 1-D array) -> text.

    Stops at the first ``eos_id``; ``pad_id`` and ``bos_id`` are dropped.
    ``unk_id`` decodes to `` ⁇ ``.

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``.
    """
    out = content_ids(ids, self.vocab_size)
    segments, current = [], []
    for i in out:
      if i in self._symbol_ids:
        if current:
          segments.append(self._sp.DecodeIds(current))
          current = []
        segments.append(self._sp.IdToPiece(i))
      else:
        current.append(i)
    if current:
      segments.append(self._sp.DecodeIds(current))
    return " ".join(s for s in segments if s)

  def id_to_piece(self, i) -> str:
    """The vocabulary piece of id ``i`` (e.g. ``"▁hello"``, ``"<eou>"``)."""
    return self._sp.IdToPiece(int(i))

  def piece_to_id(self, piece: str) -> int:
    """Id of ``piece`` (``unk_id`` if not in the vocabulary)."""
    return int(self._sp.PieceToId(piece))

  def meta(self) -> dict:
    """Small JSON-serialisable description (written as tokenizer.json)."""
    return {
        "kind": "sentencepiece",
        "vocab_size": self.vocab_size,
        "model_type": self.model_type,
        "fingerprint": self.fingerprint,
        "pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "eou_id": EOU_ID, "blank_id": BLANK_ID,
        "sentencepiece_version": spm.__version__,
    }

  def save(self, directory) -> None:
    """Writes ``directory/tokenizer.model`` and ``tokenizer.json``.

    Each file is written to a temporary file in ``directory`` and renamed into
    place, so a reader never sees a partial file.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _atomic_write(os.path.join(directory, MODEL_FILENAME), self._model_proto)
    _atomic_write(os.path.join(directory, META_FILENAME),
                  (json.dumps(self.meta(), indent=2, sort_keys=True) + "\n"
                   ).encode("utf-8"))

  def __repr__(self) -> str:
    return (f"Tokenizer(vocab_size={self.vocab_size}, "
            f"fingerprint={self.fingerprint[:12]})")


def _atomic_write(path: str, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                             prefix=f".{os.path.basename(path)}.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def tokenizer_exists(directory) -> bool:
  """Whether ``directory`` holds a saved tokenizer of either kind."""
  directory = os.fspath(directory)
  from vedgan.data import outside_tokenizer  # pylint: disable=import-outside-toplevel
  return (os.path.isfile(os.path.join(directory, MODEL_FILENAME)) or
          os.path.isfile(os.path.join(directory, VOCAB_FILENAME)) or
          identity_tokenizer.is_identity(directory) or outside_tokenizer.is_outside(directory))


def load_tokenizer(directory) -> Union["Tokenizer", "WordTokenizer",
                                      "identity_tokenizer.IdentityTokenizer"]:
  """Loads the tokenizer saved by ``save`` in ``directory`` (either kind).

  ``tokenizer.model`` means SentencePiece, ``tokenizer.vocab`` (+
  ``tokenizer.json``) a word vocabulary; ``tokenizer.json`` alone the identity kind
  or (kind ``"outside"``) a copied Hugging Face / SentencePiece file
  (:mod:`vedgan.data.outside_tokenizer`).

  Raises:
    FileNotFoundError: one line, if ``directory`` holds neither.
    ValueError: if a word vocabulary's files disagree (edited by hand).
  """
  directory = os.fspath(directory)
  path = os.path.join(directory, MODEL_FILENAME)
  if os.path.isfile(path):
    with open(path, "rb") as f:
      return Tokenizer(f.read())
  if os.path.isfile(os.path.join(directory, VOCAB_FILENAME)):
    return WordTokenizer.load(directory)
  if identity_tokenizer.is_identity(directory):
    return identity_tokenizer.IdentityTokenizer.load(directory)
  from vedgan.data import outside_tokenizer  # pylint: disable=import-outside-toplevel
  if outside_tokenizer.is_outside(directory):  # a tokenizer.json / .model from elsewhere
    return outside_tokenizer.OutsideTokenizer.load(directory)
  raise FileNotFoundError(f"no tokenizer at {path} (train one with "
                          "train_sentencepiece(...) or train_word_vocab(...) "
                          "and .save(directory))")


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed_sentencepiece_size: int = 1_000_000,
    hard_vocab_limit: bool = True,
    user_defined_symbols: Sequence[str] = (),
    max_sentence_length: int = 4192,
    **spm_kwargs,
) -> Tokenizer:
  """Trains a SentencePiece model in memory (no files are written).

  Deterministic: the same texts (same order) and arguments give the same
  model bytes, hence the same ``fingerprint``.

  Args:
    texts: training sentences (each item one sentence; empty ones skipped).
    vocab_size: total number of ids, including the 6 fixed specials.
    model_type: ``"unigram"`` or ``"bpe"``.
    character_coverage: fraction of characters covered by the vocabulary.
    seed_sentencepiece_size: unigram seed vocabulary size.
    hard_vocab_limit: if False, SentencePiece may return fewer than
      ``vocab_size`` pieces instead of failing on a small corpus.
    user_defined_symbols: extra always-one-piece symbols, ids 6, 7, ...
    max_sentence_length: longer sentences (in bytes) are skipped.
    **spm_kwargs: passed on to ``SentencePieceTrainer.train``.

  Raises:
    ValueError: one line, for a bad ``model_type``, no text, or a
      ``vocab_size`` too large for the corpus (the message says the maximum).
  """
  if model_type not in MODEL_TYPES:
    raise ValueError(f"tokenizer model_type={model_type!r}; expected one of "
                     f"{MODEL_TYPES}")
  minimum = len(_SPECIAL_PIECES) + len(user_defined_symbols) + 1
  if vocab_size < minimum:
    raise ValueError(f"tokenizer.vocab_size={vocab_size} is too small "
                     f"(min {minimum})")
  sentences = [t for t in (str(t).strip() for t in texts) if t]
  if not sentences:
    raise ValueError("train_sentencepiece got no non-empty text")
  writer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        seed_sentencepiece_size=seed_sentencepiece_size,
        hard_vocab_limit=hard_vocab_limit,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>",
        eos_piece="</s>",
        user_defined_symbols=[EOU_PIECE, BLANK_PIECE,
                              *user_defined_symbols],
        max_sentence_length=max_sentence_length,
        num_threads=2,
        # input_sentence_size=0: use every sentence (no random sampling).
        input_sentence_size=0,
        minloglevel=2,
        **spm_kwargs,
    )
  except RuntimeError as e:
    match = re.search(r"Vocabulary size (?:is )?too high.*?<= (\d+)", str(e))
    if match:
      raise ValueError(
          f"tokenizer.vocab_size={vocab_size} is too large for this corpus "
          f"(max {match.group(1)}); lower it") from None
    raise
  return Tokenizer(writer.getvalue())


# -- word-level vocabulary ----------------------------------------------------

#: What a "word" is: runs of letters/digits (keeping inner apostrophes, as in
#: "don't"), or any single other non-space character (punctuation, emoji).
WORD_PATTERN = r"\w+(?:['\u2019]\w+)*|[^\w\s]"
_WORD_RE = re.compile(WORD_PATTERN)


class WordTokenizer(SpecialIds):
  """A word vocabulary with the fixed special ids (ids 0-5 as above).

  Text is split at the user symbols (``<eou>``, ``<blank>``, ...), optionally
  lower-cased, and cut into words by :data:`WORD_PATTERN`; a word outside the
  vocabulary is ``unk_id``. ``decode`` joins pieces with single spaces.

  Attributes:
    vocab_size: number of ids (``len(pieces)``).
    lowercase: whether ``encode`` lower-cases text first.
  """

  model_type = "word"

  def __init__(self, pieces: Sequence[str], lowercase: bool = True,
               num_symbols: int = 2):
    """Wraps a vocabulary ``pieces`` (id -> piece).

    Args:
      pieces: the 6 fixed specials, then ``num_symbols - 2`` extra user
        symbols, then words.
      lowercase: lower-case text before looking words up.
      num_symbols: how many user symbols follow the 4 control pieces
        (``<eou>``, ``<blank>`` and any extra ones).

    Raises:
      ValueError: if the specials are not the fixed ones, or a piece repeats.
    """
    pieces = [str(p) for p in pieces]
    found = {i: pieces[i] for i in _SPECIAL_PIECES if i < len(pieces)}
    if found != _SPECIAL_PIECES:
      raise ValueError(f"word vocabulary special pieces {found} != the fixed "
                       f"{_SPECIAL_PIECES}; build it with train_word_vocab")
    if len(set(pieces)) != len(pieces):
      dup = [p for p, n in collections.Counter(pieces).items() if n > 1]
      raise ValueError(f"word vocabulary repeats pieces {dup[:5]}")
    if num_symbols < 2 or 4 + num_symbols > len(pieces):
      raise ValueError(f"num_symbols={num_symbols} does not fit the vocabulary")
    self._pieces = pieces
    self._ids = {p: i for i, p in enumerate(pieces)}
    self.lowercase = bool(lowercase)
    self.vocab_size = len(pieces)
    self._symbols = {pieces[i]: i for i in range(4, 4 + num_symbols)}
    self._symbol_re = re.compile("(" + "|".join(
        re.escape(p) for p in sorted(self._symbols, key=len, reverse=True))
                                 + ")")

  @property
  def user_symbols(self) -> dict[str, int]:
    """User symbols -> ids (``{"<eou>": 4, "<blank>": 5, ...}``)."""
    return dict(self._symbols)

  @property
  def pieces(self) -> list[str]:
    """The vocabulary, id -> piece."""
    return list(self._pieces)

  def _canonical(self) -> bytes:
    return json.dumps({"kind": "word", "lowercase": self.lowercase,
                       "num_symbols": len(self._symbols),
                       "word_pattern": WORD_PATTERN, "pieces": self._pieces},
                      ensure_ascii=False, sort_keys=True).encode("utf-8")

  @property
  def fingerprint(self) -> str:
    """sha256 hex digest of the vocabulary and its settings."""
    return hashlib.sha256(self._canonical()).hexdigest()

  def words(self, text: str) -> list[str]:
    """``text`` -> word strings (user symbols kept whole, lower-cased if set)."""
    out = []
    for k, part in enumerate(self._symbol_re.split(text)):
      if k % 2:
        out.append(part)
      elif part.strip():
        out.extend(_WORD_RE.findall(part.lower() if self.lowercase else part))
    return out

  def encode(self, text: str) -> list[int]:
    """``text`` -> ids (no bos/eos added); unknown words -> ``unk_id``."""
    get = self._ids.get
    return [get(w, UNK_ID) for w in self.words(text)]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``[encode(t) for t in texts]``."""
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    """ids -> words joined by spaces; stops at the first ``eos_id``, drops
    ``pad_id``/``bos_id``; ``unk_id`` decodes to ``<unk>``.

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``.
    """
    return " ".join(self._pieces[i] for i in content_ids(ids, self.vocab_size))

  def id_to_piece(self, i) -> str:
    return self._pieces[int(i)]

  def piece_to_id(self, piece: str) -> int:
    """Id of ``piece`` (``unk_id`` if not in the vocabulary)."""
    return self._ids.get(piece, UNK_ID)

  def meta(self) -> dict:
    """JSON-serialisable description (written as tokenizer.json)."""
    return {
        "kind": "word",
        "vocab_size": self.vocab_size,
        "model_type": "word",
        "lowercase": self.lowercase,
        "num_symbols": len(self._symbols),
        "word_pattern": WORD_PATTERN,
        "fingerprint": self.fingerprint,
        "pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "eou_id": EOU_ID, "blank_id": BLANK_ID,
    }

  def save(self, directory) -> None:
    """Writes ``directory/tokenizer.vocab`` (one piece per line) and
    ``tokenizer.json``, each atomically."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _atomic_write(os.path.join(directory, VOCAB_FILENAME),
                  ("\n".join(self._pieces) + "\n").encode("utf-8"))
    _atomic_write(os.path.join(directory, META_FILENAME),
                  (json.dumps(self.meta(), indent=2, sort_keys=True) + "\n"
                   ).encode("utf-8"))

  @classmethod
  def load(cls, directory) -> "WordTokenizer":
    """Reads what :meth:`save` wrote; checks the stored fingerprint.

    Raises:
      ValueError: if ``tokenizer.json`` is missing or does not match the
        vocabulary file (e.g. one of them was edited).
    """
    directory = os.fspath(directory)
    meta_path = os.path.join(directory, META_FILENAME)
    if not os.path.isfile(meta_path):
      raise ValueError(f"word vocabulary in {directory} has no {META_FILENAME}")
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    with open(os.path.join(directory, VOCAB_FILENAME), encoding="utf-8") as f:
      pieces = f.read().split("\n")
    if pieces and pieces[-1] == "":
      pieces.pop()
    tok = cls(pieces, lowercase=bool(meta.get("lowercase", True)),
              num_symbols=int(meta.get("num_symbols", 2)))
    if meta.get("word_pattern", WORD_PATTERN) != WORD_PATTERN:
      raise ValueError(f"word vocabulary in {directory} was built with another "
                       "word pattern; rebuild it")
    if meta.get("fingerprint") not in (None, tok.fingerprint):
      raise ValueError(f"word vocabulary in {directory} does not match its "
                       f"{META_FILENAME} fingerprint (edited?)")
    return tok

  def __repr__(self) -> str:
    return (f"WordTokenizer(vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase}, fingerprint={self.fingerprint[:12]})")


def train_word_vocab(texts: Iterable[str], vocab_size: int,
                     lowercase: bool = True, min_count: int = 1,
                     user_defined_symbols: Sequence[str] = ()
                     ) -> WordTokenizer:
  """Builds a most-frequent-N word vocabulary (the papers' ``<unk>`` setup).

  Deterministic: words are ranked by count, ties broken by the word itself.

  Args:
    texts: training sentences.
    vocab_size: total ids including the 6 fixed specials and
      ``user_defined_symbols``; if the corpus has fewer distinct words the
      vocabulary is smaller (read ``tokenizer.vocab_size`` for model shapes).
    lowercase: lower-case text before counting and encoding.
    min_count: words seen fewer times are left out (-> ``<unk>``).
    user_defined_symbols: extra always-one-id symbols, ids 6, 7, ...

  Raises:
    ValueError: one line, for a ``vocab_size`` below the minimum or no text.
  """
  symbols = [EOU_PIECE, BLANK_PIECE, *user_defined_symbols]
  specials = [_SPECIAL_PIECES[i] for i in range(4)] + symbols
  minimum = len(specials) + 1
  if vocab_size < minimum:
    raise ValueError(f"tokenizer.vocab_size={vocab_size} is too small "
                     f"(min {minimum})")
  probe = WordTokenizer(specials, lowercase=lowercase,
                        num_symbols=len(symbols))
  counts = collections.Counter()
  any_text = False
  for text in texts:
    words = [w for w in probe.words(str(text)) if w not in probe.user_symbols]
    any_text = any_text or bool(words)
    counts.update(words)
  if not any_text:
    raise ValueError("train_word_vocab got no non-empty text")
  reserved = set(specials)
  ranked = sorted((w for w, n in counts.items()
                   if n >= min_count and w not in reserved),
                  key=lambda w: (-counts[w], w))
  return WordTokenizer(specials + ranked[:vocab_size - len(specials)],
                       lowercase=lowercase, num_symbols=len(symbols))


#: The SentencePiece tokenizer under a name that says so.
SentencePieceTokenizer = Tokenizer


# The identity kind (the synthetic oracle) builds on the classes above.
from vedgan.data import identity_tokenizer  # noqa: E402  pylint: disable=wrong-import-position
