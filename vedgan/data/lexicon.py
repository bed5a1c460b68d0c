"""Offline sentiment labels from the VADER lexicon (pure Python, no model, no download).

The HappyBot demo needs sentiment labels for the embedded chatterbot corpus,
which has none; the paper's BERT classifier fine-tuned on SST-2 cannot be
trained offline. :class:`Lexicon` reads ``vader_lexicon.txt`` (Hutto & Gilbert,
2014; shipped by the ``vaderSentiment`` package, MIT licence) and scores a text
by the **mean valence of its matched words** (valences lie in ``[-4, 4]``); a
text is positive when that mean exceeds a threshold::

    lex = Lexicon.load()
    lex.valence("what a lovely day")   # 2.8 (only "lovely" matches)
    lex.label("what a lovely day")     # 1
    lex.label("a terrible day")        # 0
    lex.label("the train is late")     # -1 (no word matched: no label)

This is deliberately simpler than VADER's rule set (no negation, intensifier,
capitalisation or "but" rules): it only has to give the in-project classifier
a consistent, documented target on the demo. The file is located with
``importlib.util.find_spec`` without importing ``vaderSentiment``'s module.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Iterable, Mapping

LEXICON_FILE = "vader_lexicon.txt"

# Word characters plus the apostrophe (keeps "don't"); emoticons are matched on
# the raw whitespace-separated token first.
_WORD = re.compile(r"[a-z0-9']+")


def lexicon_path() -> str:
  """Path of ``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package.

  Raises:
    FileNotFoundError: one line, if the package (or its lexicon) is missing.
  """
  spec = importlib.util.find_spec("vaderSentiment")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the sentiment lexicon needs the `vaderSentiment` package: "
                            "pip install vaderSentiment")
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, LEXICON_FILE)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"vaderSentiment is installed but has no {LEXICON_FILE}")


def parse_lexicon(lines: Iterable[str]) -> dict[str, float]:
  """``token<TAB>mean<TAB>std<TAB>[ratings]`` lines -> ``{token: mean valence}``."""
  table = {}
  for line in lines:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) < 2 or not parts[0]:
      continue
    try:
      table[parts[0].lower()] = float(parts[1])
    except ValueError:
      continue
  return table


class Lexicon:
  """A word -> valence table with the mean-valence scorer described above."""

  def __init__(self, table: Mapping[str, float], threshold: float = 0.0):
    self.table = dict(table)
    self.threshold = float(threshold)

  @classmethod
  def load(cls, path: str | None = None, threshold: float = 0.0) -> "Lexicon":
    """Reads the lexicon (the installed VADER file by default)."""
    return cls(_read(path or lexicon_path()), threshold)

  def matches(self, text: str) -> list[float]:
    """Valences of the tokens of ``text`` found in the table, in order.

    A whitespace token is looked up as is (lower-cased, which catches emoticons
    such as ``:)``) and otherwise split into its word pieces (``"great!"`` ->
    ``great``).
    """
    found = []
    for raw in text.lower().split():
      if raw in self.table:
        found.append(self.table[raw])
        continue
      for word in _WORD.findall(raw):
        if word in self.table:
          found.append(self.table[word])
    return found

  def valence(self, text: str) -> float:
    """Mean valence of the matched words (0.0 when nothing matches)."""
    found = self.matches(text)
    return sum(found) / len(found) if found else 0.0

  def label(self, text: str) -> int:
    """1 (positive) if :meth:`valence` > ``threshold``, 0 if not, -1 if no word matched.

    Texts without any lexicon word get no label (-1): like SST-2's binary task,
    the classifier is trained on opinionated sentences only.
    """
    found = self.matches(text)
    if not found:
      return -1
    return int(sum(found) / len(found) > self.threshold)

  def score(self, text: str) -> float:
    """Valence mapped to ``[0, 1]``: ``(valence + 4) / 8`` (0.5 = neutral / no match)."""
    return (self.valence(text) + 4.0) / 8.0


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict[str, float]:
  with open(path, encoding="utf-8") as f:
    return parse_lexicon(f)
