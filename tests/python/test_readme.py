"""Every ```python block of README.md, and every ```sh block of its "Command line" section, runs as written.

The blocks are found by their fences, wherever they are (indented ones in lists too), so a block added to the
README is run without touching this file. They run in a scratch folder that holds what the README's snippets
name, and nothing is substituted in their text:

- ``Qwen2-Audio-7B-Instruct``: a link to the built-in demo checkpoint (real architecture, names and tokenizer;
  random weights, so answers are noise);
- ``clip.wav``: a spoken sentence (espeak-ng); ``clips/``: two more; ``manifest.csv``: ``id,path,prompt`` rows
  for those two.

Python blocks run in order in one namespace, as a reader pastes them into one session: block N runs after
blocks 1..N-1. Shell blocks run with bash (``-e -o pipefail``) and a ``qwen2audio`` command on PATH that is this
interpreter's ``python -m qwen2audio``. A block that cannot run on the demo checkpoint (a real download, a
cluster) belongs in a plain ``` fence, which is shown but not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from qwen2audio.demo import demo_checkpoint, synthesize_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
SHELL_SECTION = "Command line"
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")

@dataclass(frozen=True)
class Block:
    language: str
    line: int  # where the block starts in README.md (1-based)
    section: str  # the "## " heading it is under
    code: str

    @property
    def id(self) -> str:
        return f"{self.language}-line{self.line}"


_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*$")


def readme_blocks(text: str) -> list[Block]:
    """Each fenced code block: its language, first line, section and dedented code."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        opening = _FENCE.match(line)
        if opening is None:
            index += 1
            continue
        indent = opening["indent"]
        opened = index + 1  # 1-based line of the opening fence
        body: list[str] = []
        index += 1
        while index < len(lines) and not re.fullmatch(re.escape(indent) + r"```[ \t]*", lines[index]):
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"README.md: the code block opened on line {opened} is never closed")
        blocks.append(Block(opening["language"].lower(), opened, section, textwrap.dedent("\n".join(body)) + "\n"))
        index += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [block for block in BLOCKS if block.language in ("python", "py")]
SHELL_BLOCKS = [block for block in BLOCKS if block.language in SHELL_LANGUAGES and block.section == SHELL_SECTION]


def test_the_readme_has_what_these_tests_run() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    assert SHELL_BLOCKS, f"no ```sh block in the README's {SHELL_SECTION!r} section"


def test_block_extraction_handles_indented_and_plain_fences() -> None:
    text = "## A\n```python\nx = 1\n```\n- item\n\n  ```python\n  if x:\n      y = 2\n  ```\n```\nnot run\n```\n"
    blocks = readme_blocks(text)
    assert [(b.language, b.line, b.code) for b in blocks] == [
        ("python", 2, "x = 1\n"), ("python", 7, "if x:\n    y = 2\n"), ("", 11, "not run\n")]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "Qwen2-Audio-7B-Instruct").symlink_to(demo_checkpoint(tmp_path_factory.mktemp("demo") / "model"))
    synthesize_speech("The quick brown fox jumps over the lazy dog.", folder / "clip.wav")
    (folder / "clips").mkdir()
    synthesize_speech("Please set a timer for ten minutes.", folder / "clips" / "timer.wav")
    synthesize_speech("It will rain tomorrow afternoon.", folder / "clips" / "weather.wav")
    (folder / "manifest.csv").write_text("id,path,prompt\ntimer,clips/timer.wav,What should be done?\n"
                                         "weather,clips/weather.wav,What is the forecast?\n")
    return folder


@pytest.mark.parametrize("block", [pytest.param(block, id=block.id) for block in PYTHON_BLOCKS])
def test_python_block(block: Block, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(scratch)
    namespace: dict = {"__name__": "__readme__"}
    for earlier in PYTHON_BLOCKS[: PYTHON_BLOCKS.index(block)]:
        exec(compile(earlier.code, f"README.md:{earlier.line}", "exec"), namespace)
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)


@pytest.fixture(scope="module")
def shell_env(scratch: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    bin_dir = tmp_path_factory.mktemp("bin")
    command = bin_dir / "qwen2audio"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qwen2audio "$@"\n')
    command.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")))
    return env


@pytest.mark.parametrize("block", [pytest.param(block, id=block.id) for block in SHELL_BLOCKS])
def test_command_line_block(block: Block, scratch: Path, shell_env: dict[str, str]) -> None:
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=scratch, env=shell_env,
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"README.md:{block.line}\n{block.code}\nstderr:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr
