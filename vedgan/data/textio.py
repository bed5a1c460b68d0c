"""Reading text files line by line without ever failing on bad bytes (no TFDS import)."""
from __future__ import annotations

import collections
import gzip
from typing import Iterator, Optional

from etils import epath


def clean(text: str) -> str:
  """Strips and folds runs of whitespace into single spaces."""
  return " ".join(text.split())


def read_lines(path, counter: Optional[collections.Counter] = None,
               what: str = "undecodable_lines") -> Iterator[Optional[str]]:
  """Yields every line of ``path`` without its line ending.

  A line that is not valid UTF-8 yields ``None`` (so parallel files stay
  aligned) and is counted in ``counter[what]``. A UTF-8 byte-order mark at the
  start of the file is dropped. A ``.gz`` file is decompressed on the fly.
  """
  path = epath.Path(path)
  with path.open("rb") as raw_file:
    f = gzip.open(raw_file, "rb") if path.name.endswith(".gz") else raw_file
    for number, raw in enumerate(f):
      if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
      try:
        line = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError:
        if counter is not None:
          counter[what] += 1
        line = None
      yield line
