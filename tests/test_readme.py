"""The README's Python code blocks run as written, and its Quick start has two commands."""
import os
import re

from conftest import REPO


def _blocks(lang):
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_python_blocks_run():
  blocks = _blocks("python")
  assert blocks
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})  # pylint: disable=exec-used


def test_quick_start_is_exactly_two_commands():
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
  assert len(commands) == 2
  assert "vedgan.main" in commands[0] and "pytest" in commands[1]
  ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
  assert commands[1] in ci
