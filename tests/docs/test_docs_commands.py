"""Every command shown in README.md and docs/ still works: configs and run.py flags validate (without loading a
model), scripts, tools and benchmarks exist and answer --help, make targets and modules exist, Python snippets
compile."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_ivcp.runner.cli import build_parser, config_from_args, main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
EXTERNAL = {"pip", "git", "cd", "export"}  # commands of other tools, shown for context


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
            found.append((str(path.relative_to(REPO)), block))
    return found


def _commands() -> list[tuple[str, list[str]]]:
    commands = []
    for where, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
                words = words[1:]
            if words:
                commands.append((where, words))
    return commands


def _run_py_args(words: list[str]) -> list[str]:
    return words[words.index("run.py") + 1:]


def _check(words: list[str]) -> None:
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M)
        assert set(words[1:]) <= set(targets), f"no make target {words[1:]}"
    elif "run.py" in words and words[0] in ("python", "torchrun"):
        config_from_args(build_parser().parse_args(_run_py_args(words)))
    elif words[0] == "vlmeval-ivcp":  # the console script is runner.cli.main
        assert main(words[1:]) == 0
    elif words[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
    elif words[0] in ("python", "bash") and words[1].startswith(("tools/", "scripts/", "benchmarks/")):
        assert (REPO / words[1]).is_file(), f"{words[1]} does not exist"
        interpreter = [sys.executable] if words[0] == "python" else ["bash"]
        result = subprocess.run([*interpreter, words[1], "--help"], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    else:
        assert words[0] in EXTERNAL, f"the docs check does not know how to check {shlex.join(words)!r}"


@pytest.mark.parametrize("where,words", _commands(), ids=lambda value: value if isinstance(value, str) else None)
def test_documented_command_is_valid(where, words):
    _check(words)


@pytest.mark.parametrize("where,block", _blocks("python"))
def test_documented_python_compiles(where, block):
    compile(block, where, "exec")


def test_the_docs_show_commands_at_all():
    assert any(words[:2] == ["make", "test"] for _, words in _commands())
