"""Batched tokenisation: every piece of a list of texts through one encoder call.

A vedgan SentencePiece :class:`~vedgan.data.tokenizer.Tokenizer` encodes a text by
splitting it at its user symbols (``<eou>``, ``<blank>``: one id each) and encoding
each stripped stretch between them. :func:`encode_segments` does this for a whole list
of texts with ONE call of the encoder for all stretches (SentencePiece's batched,
multi-threaded ``encode``), giving the same ids as the text-by-text ``encode``.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Sequence


def usable_cpus() -> int:
  """How many CPUs this process may run on (its affinity mask, e.g. under ``taskset``;
  ``os.cpu_count()`` where the platform has none)."""
  try:
    return max(len(os.sched_getaffinity(0)), 1)
  except AttributeError:  # macOS, Windows
    return max(os.cpu_count() or 1, 1)


def encode_segments(texts: Sequence[str], symbol_re: re.Pattern, symbols: dict[str, int],
                    encode_pieces: Callable[[list[str]], list]) -> list[list[int]]:
  """Token ids of each of ``texts`` (a list of int lists, one per text).

  Args:
    texts: the strings to encode.
    symbol_re: a regex with ONE capturing group matching the user symbols;
      ``symbol_re.split(text)`` alternates stretches of text and symbols.
    symbols: user symbol -> its id.
    encode_pieces: ``list[str] -> list[list[int]]``, called once with every
      non-blank stretch (stripped) of every text, in order; not called when
      there is none.
  """
  # per text: None = one stretch and no symbol (the common case), else a list of symbol ids
  # and None where a stretch's ids go
  layouts, pieces = [], []
  for text in texts:
    parts = symbol_re.split(text)
    if len(parts) == 1:
      piece = text.strip()
      if piece:
        pieces.append(piece)
      layouts.append(None if piece else [])
      continue
    layout = []
    for k, part in enumerate(parts):
      if k % 2:  # odd parts are the separators the regex captured
        layout.append(symbols[part])
      elif part.strip():
        layout.append(None)
        pieces.append(part.strip())
    layouts.append(layout)
  encoded = iter(encode_pieces(pieces) if pieces else ())
  out = []
  for layout in layouts:
    if layout is None:
      out.append(next(encoded))
      continue
    ids = []
    for item in layout:
      if item is None:
        ids.extend(next(encoded))
      else:
        ids.append(item)
    out.append(ids)
  return out
