"""The identity tokenizer: texts of token ids for the SeqGAN/Texygen synthetic oracle.

``"17 4051 3"`` <-> ids shifted past the six special ids every vedgan tokenizer has
(:mod:`vedgan.data.tokenizer`); saved as ``tokenizer.json`` alone, loaded by
:func:`vedgan.data.tokenizer.load_tokenizer`.
"""
import hashlib
import json
import os
from typing import Sequence

from vedgan.data.tokenizer import (_SPECIAL_PIECES, BLANK_ID, BLANK_PIECE, BOS_ID, EOS_ID, EOU_ID,
                                   EOU_PIECE, META_FILENAME, PAD_ID, UNK_ID, SpecialIds,
                                   _atomic_write, content_ids)

IDENTITY_KIND = "identity"


class IdentityTokenizer(SpecialIds):
  """Texts of token ids: ``"17 4051 3"`` <-> ids, for the SeqGAN/Texygen oracle corpus.

  The oracle's ``V`` tokens are the texts ``"0" .. "V-1"``. The models still need the six
  fixed special ids (``<s>`` as the first input, ``<blank>`` as the end and padding of the
  sentence objectives; :mod:`vedgan.data.pipeline` writes ``pad = 0``, ``bos = 2``, ``eos
  = 3`` itself), so token ``k`` is model id ``k + OFFSET`` (``OFFSET = 6``) and ids 0-5 are
  the specials as in every vedgan tokenizer: ``vocab_size = V + 6``. No special is ever
  added to a sequence's text; :meth:`encode` and :meth:`decode` are the identity on the
  oracle's ids, shifted by ``OFFSET``. A sequence of ``T`` tokens is encoded at
  ``data.max_len = T + 1`` (the models' final blank).

  Attributes:
    vocab_size: ``V + 6`` (``config.tokenizer.vocab_size``, total ids as for every kind).
    num_tokens: ``V``.
  """

  model_type = IDENTITY_KIND
  OFFSET = len(_SPECIAL_PIECES)

  def __init__(self, vocab_size: int):
    if int(vocab_size) <= self.OFFSET:
      raise ValueError(f"tokenizer.vocab_size={vocab_size} must exceed the {self.OFFSET} special "
                       "ids (identity kind: V + 6)")
    self.vocab_size = int(vocab_size)
    self.num_tokens = self.vocab_size - self.OFFSET

  @property
  def user_symbols(self) -> dict[str, int]:
    return {EOU_PIECE: EOU_ID, BLANK_PIECE: BLANK_ID}

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(json.dumps(
        {"kind": IDENTITY_KIND, "vocab_size": self.vocab_size}).encode()).hexdigest()

  def encode(self, text: str) -> list[int]:
    """``"17 4"`` -> ``[23, 10]`` (each id + 6).

    Raises:
      ValueError: for a word that is not an id in ``[0, V)``.
    """
    out = []
    for word in str(text).split():
      if not word.isdigit() or int(word) >= self.num_tokens:
        raise ValueError(f"identity tokenizer: {word!r} is not a token id in [0, {self.num_tokens})")
      out.append(int(word) + self.OFFSET)
    return out

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    """ids -> the tokens' ids joined by spaces (stops at ``eos_id``, drops pad/bos; other
    specials as their pieces)."""
    return " ".join(self.id_to_piece(i) for i in content_ids(ids, self.vocab_size))

  def id_to_piece(self, i) -> str:
    i = int(i)
    return _SPECIAL_PIECES[i] if i < self.OFFSET else str(i - self.OFFSET)

  def piece_to_id(self, piece: str) -> int:
    for i, p in _SPECIAL_PIECES.items():
      if p == piece:
        return i
    if piece.isdigit() and int(piece) < self.num_tokens:
      return int(piece) + self.OFFSET
    return UNK_ID

  def meta(self) -> dict:
    return {"kind": IDENTITY_KIND, "vocab_size": self.vocab_size, "model_type": IDENTITY_KIND,
            "offset": self.OFFSET, "fingerprint": self.fingerprint,
            "pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
            "eou_id": EOU_ID, "blank_id": BLANK_ID}

  def save(self, directory) -> None:
    """Writes ``directory/tokenizer.json`` (all it needs)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _atomic_write(os.path.join(directory, META_FILENAME),
                  (json.dumps(self.meta(), indent=2, sort_keys=True) + "\n").encode("utf-8"))

  @classmethod
  def load(cls, directory) -> "IdentityTokenizer":
    with open(os.path.join(os.fspath(directory), META_FILENAME), encoding="utf-8") as f:
      return cls(int(json.load(f)["vocab_size"]))

  def __repr__(self) -> str:
    return f"IdentityTokenizer(vocab_size={self.vocab_size})"


def is_identity(directory: str) -> bool:
  """Whether ``directory`` holds a saved identity tokenizer."""
  path = os.path.join(directory, META_FILENAME)
  if not os.path.isfile(path):
    return False
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("kind") == IDENTITY_KIND
  except (OSError, ValueError):
    return False
