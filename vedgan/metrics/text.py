"""How texts become words for every text metric (BLEU, Self-BLEU, distinct-n,
embedding similarity, paper reports): the one normalisation in vedgan.

* :func:`words` (``"word"``): NFKC, lower-cased, the regex
  ``\\w+(?:'\\w+)*|[^\\w\\s]``: words keep inner apostrophes ("don't" is one
  word), every other symbol is a token of its own;
* :func:`whitespace_words` (``"whitespace"``): NFKC, case kept, ``str.split()``.

>>> words("Don't panic, Bob!")
["don't", 'panic', ',', 'bob', '!']
>>> whitespace_words("Don't panic, Bob!")
["Don't", 'panic,', 'Bob!']
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def words(text: str) -> list[str]:
  """NFKC, lower-cased word tokens (see the module docstring)."""
  return _WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())


def whitespace_words(text: str) -> list[str]:
  """NFKC whitespace tokens, case kept."""
  return unicodedata.normalize("NFKC", text).split()


#: name -> (function text -> tokens, label recorded in metric settings).
TOKENIZATIONS: dict[str, tuple[Callable[[str], list[str]], str]] = {
    "word": (words, r"word: NFKC, lowercased, regex \w+(?:'\w+)*|[^\w\s] "
                    "(words with inner apostrophes, each other symbol a token)"),
    "whitespace": (whitespace_words, "whitespace: NFKC, case kept, str.split()"),
}
