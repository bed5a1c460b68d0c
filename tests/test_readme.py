"""The README's Quick start is exactly the two commands the contract asks for (CI runs the second).

The README's other code blocks are exercised by ``tests/test_docs_blocks.py``.
"""
import os
import re

from conftest import REPO


def test_quick_start_is_exactly_two_commands():
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
  assert len(commands) == 2
  assert "vedgan.main" in commands[0] and "pytest" in commands[1]
  ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
  assert commands[1] in ci
