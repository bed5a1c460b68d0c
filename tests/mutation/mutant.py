"""One semantic mutant: a one-place edit of the library that breaks what a paper computes.

A mutant names the file it edits, the exact text it replaces (which must occur exactly
once in that file), the replacement, why the edit is wrong in terms of the paper, and the
fast tests (pytest node ids or files, relative to the repository root) that must fail.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
  name: str                 # unique, e.g. "latent_gan/gen_adv_sign"
  path: str                 # the edited file, e.g. "vedgan/papers/latent_gan/algorithm.py"
  old: str                  # text that occurs exactly once in ``path``
  new: str                  # what replaces it
  why: str                  # the paper's equation or decision this breaks
  tests: tuple[str, ...]    # node ids / files of the fast tests that should kill it

  def apply(self, text: str) -> str:
    """``text`` with the mutation applied; ``ValueError`` unless ``old`` occurs once."""
    count = text.count(self.old)
    if count != 1:
      raise ValueError(f"mutant {self.name}: the text to replace occurs {count} times in "
                       f"{self.path} (it must occur exactly once); update the mutant")
    return text.replace(self.old, self.new)
