"""Reading text files line by line without ever failing on bad bytes (no TFDS import)."""
from __future__ import annotations

import collections
import gzip
import re
import unicodedata
from typing import Iterator, Optional

from etils import epath

from vedgan.errors import DataError


#: Byte-order marks of the wide encodings (UTF-32 first: its little-endian mark starts
#: with UTF-16's).
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
              (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))


def clean(text: str) -> str:
  """Strips and folds runs of whitespace into single spaces."""
  return " ".join(text.split())


#: C0 and C1 control characters other than whitespace (NUL, ESC, DEL, ...).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
#: UTF-16 surrogate code points: a JSON string may hold one (``"\\ud800"``), no text can.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_user_text(text: str) -> str:
  """:func:`clean` for the users' own files: control characters become spaces, and a text
  of nothing but invisible characters (format characters such as zero-width spaces) is
  empty, so it is skipped and counted like an empty one instead of being trained on."""
  text = clean(_CONTROL.sub(" ", text))
  if text and all(unicodedata.category(ch)[0] in "CZ" for ch in text):
    return ""
  return text


def has_surrogates(text: str) -> bool:
  """Whether ``text`` holds a lone surrogate (it cannot be written as UTF-8)."""
  return _SURROGATE.search(text) is not None


def read_lines(path, counter: Optional[collections.Counter] = None,
               what: str = "undecodable_lines") -> Iterator[Optional[str]]:
  """Yields every line of ``path`` without its line ending.

  A line that is not valid UTF-8 yields ``None`` (so parallel files stay
  aligned) and is counted in ``counter[what]``. A UTF-8 byte-order mark at the
  start of the file is dropped. A ``.gz`` file is decompressed on the fly.

  Raises:
    DataError: one line, for a UTF-16 or UTF-32 file (its byte-order mark, or NUL bytes,
      which such text has in almost every line and UTF-8 text never has): read byte by
      byte it would decode as text with NULs between the letters and train silently on
      that.
  """
  path = epath.Path(path)
  with path.open("rb") as raw_file:
    f = gzip.open(raw_file, "rb") if path.name.endswith(".gz") else raw_file
    for number, raw in enumerate(f):
      if number == 0:
        for bom, encoding in _WIDE_BOMS:
          if raw.startswith(bom):
            raise DataError(f"{path} is {encoding} text (it starts with its byte-order mark); "
                            f"vedgan reads UTF-8: convert it, e.g. iconv -f {encoding} -t UTF-8")
        if raw.startswith(b"\xef\xbb\xbf"):
          raw = raw[3:]
      if b"\x00" in raw:
        raise DataError(f"line {number + 1} of {path} has NUL bytes: it is not UTF-8 text "
                        "(UTF-16 or UTF-32 without a byte-order mark, or a binary file?); "
                        "convert it to UTF-8, e.g. iconv -f UTF-16LE -t UTF-8")
      try:
        line = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        if counter is not None:
          counter[what] += 1
        line = None
      yield line
