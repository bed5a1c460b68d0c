"""Test doubles shared by the tests: one configurable fake tokenizer.

:class:`FakeTokenizer` has the fixed special ids of :mod:`vedgan.data.tokenizer`
(``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, ``<eou>`` 4, ``<blank>`` 5) and the
interface the code under test reads (``vocab_size``, the ``*_id`` attributes,
``user_symbols``, ``model_type``, ``encode``, ``encode_batch``, ``decode``,
``id_to_piece``, ``piece_to_id``, ``fingerprint``), without training anything. Three
kinds:

* ``"word"``: whitespace-separated words over a given vocabulary (ids 6, 7, ... in
  order), then generated words ``f"{prefix}{i}"`` for the remaining ids up to
  ``vocab_size``: ``FakeTokenizer(vocab_size=40)`` decodes id 7 to ``"w7"``.
* ``"char"``: each non-space character is a token; ``vocab`` lists the characters.
* ``"ids"``: a text is its ids written out: ``"7 8 3"`` is ``[7, 8, 3]`` (special ids
  included); id ``i > 5`` decodes to ``str(i)``.

Unknown words and characters encode to ``unk_id``; ``<eou>`` and ``<blank>`` in a text
are their ids. ``decode`` follows the real tokenizers: it stops at the first ``eos_id``,
drops ``pad_id`` and ``bos_id``, writes the other specials as their pieces
(``<unk>``, ``<eou>``, ``<blank>``) and joins pieces with one space (no space for
``"char"``).

>>> tok = FakeTokenizer(vocab=["hello", "there"])
>>> tok.encode("hello you there <eou>"), tok.vocab_size
([6, 1, 7, 4], 8)
>>> tok.decode([2, 6, 1, 7, 3, 6])
'hello <unk> there'
>>> FakeTokenizer("ids", vocab_size=50).encode("17 3")
[17, 3]
"""
import hashlib
import json

from vedgan.data.tokenizer import SpecialIds, content_ids

#: The fixed special pieces, id -> piece (as in vedgan.data.tokenizer).
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>", "<eou>", "<blank>")
KINDS = ("word", "char", "ids")


class FakeTokenizer(SpecialIds):
  """A deterministic tokenizer for tests (see the module docstring).

  Args:
    kind: ``"word"``, ``"char"`` or ``"ids"``.
    vocab: the words (``"word"``) or characters (``"char"``, a string or a sequence of
      one-character strings) after the 6 specials, ids 6, 7, ...; not for ``"ids"``.
    vocab_size: total ids. ``"word"``: ids past ``vocab`` are the generated words
      ``f"{prefix}{i}"`` (default: exactly ``6 + len(vocab)``); ``"ids"``: required, the
      bound on the ids; ``"char"``: ``6 + len(vocab)`` if not given.
    prefix: the generated words' prefix (``"word"`` only).

  Raises:
    ValueError: for an unknown kind, a repeated piece, or a ``vocab_size`` that does not
      hold the vocabulary.
  """

  def __init__(self, kind="word", vocab=(), vocab_size=None, prefix="w"):
    if kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    self.kind = kind
    self.model_type = kind
    vocab = list(vocab)
    if kind == "ids":
      if vocab or vocab_size is None:
        raise ValueError("kind='ids' takes vocab_size and no vocab")
      self.vocab_size = int(vocab_size)
      self._pieces = None
      return
    if kind == "char" and any(len(c) != 1 or c.isspace() for c in vocab):
      raise ValueError("kind='char' needs single non-space characters")
    size = len(SPECIAL_PIECES) + len(vocab) if vocab_size is None else int(vocab_size)
    if size < len(SPECIAL_PIECES) + len(vocab):
      raise ValueError(f"vocab_size={size} cannot hold 6 specials and {len(vocab)} pieces")
    pieces = list(SPECIAL_PIECES) + vocab
    pieces += [f"{prefix}{i}" for i in range(len(pieces), size)]
    if len(set(pieces)) != len(pieces):
      raise ValueError("the vocabulary repeats a piece")
    self.vocab_size = size
    self._pieces = pieces
    self._ids = {p: i for i, p in enumerate(pieces)}

  @property
  def user_symbols(self) -> dict:
    return {SPECIAL_PIECES[self.eou_id]: self.eou_id,
            SPECIAL_PIECES[self.blank_id]: self.blank_id}

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(json.dumps([self.kind, self.vocab_size, self._pieces])
                          .encode()).hexdigest()

  def encode(self, text):
    """``text`` -> ids (no bos/eos added).

    Raises:
      ValueError: (``"ids"``) for a word that is not an id in ``[0, vocab_size)``.
    """
    if self.kind == "ids":
      out = []
      for word in str(text).split():
        if not word.isdigit() or int(word) >= self.vocab_size:
          raise ValueError(f"{word!r} is not a token id in [0, {self.vocab_size})")
        out.append(int(word))
      return out
    out = []
    for word in str(text).split():
      if word in self.user_symbols:
        out.append(self.user_symbols[word])
      elif self.kind == "char":
        out.extend(self.piece_to_id(c) for c in word)
      else:
        out.append(self.piece_to_id(word))
    return out

  def encode_batch(self, texts):
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    """ids -> text: up to the first ``eos_id``, without ``pad_id`` and ``bos_id``.

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``.
    """
    sep = "" if self.kind == "char" else " "
    return sep.join(self.id_to_piece(i) for i in content_ids(ids, self.vocab_size))

  def id_to_piece(self, i) -> str:
    i = int(i)
    if self._pieces is None:
      return SPECIAL_PIECES[i] if i < len(SPECIAL_PIECES) else str(i)
    return self._pieces[i]

  def piece_to_id(self, piece) -> int:
    """Id of ``piece`` (``unk_id`` if not in the vocabulary)."""
    if self._pieces is None:
      if piece in SPECIAL_PIECES:
        return SPECIAL_PIECES.index(piece)
      return int(piece) if piece.isdigit() and int(piece) < self.vocab_size else self.unk_id
    return self._ids.get(piece, self.unk_id)

  def __repr__(self) -> str:
    return f"FakeTokenizer({self.kind!r}, vocab_size={self.vocab_size})"
