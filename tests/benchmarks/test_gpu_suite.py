"""benchmarks/gpu_suite.sh without a GPU: every step's command is one its script accepts (the flags parse with the
script's own argument parser, whichever attention backend the suite picks), the tests it runs exist, and the time
limits add up to the suite's 8 minutes. A GPU session then spends its short lease measuring, not fixing typos."""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
BUDGET_SECONDS = 8 * 60


def suite_steps() -> list[tuple[str, int, list[str]]]:
    """(name, seconds, command after "$PYTHON") of each `step` line, continuation lines joined."""
    text = SUITE.read_text().replace("\\\n", " ")
    steps = []
    for line in text.splitlines():
        if line.startswith("step "):
            _, name, seconds, python, *command = shlex.split(line)
            assert python == "$PYTHON", f"{name}: runs {python}, not the suite's $PYTHON"
            steps.append((name, int(seconds), command))
    return steps


def test_the_steps_are_named_once_and_fit_the_budget():
    steps = suite_steps()
    names = [name for name, _, _ in steps]
    assert len(steps) >= 6 and len(set(names)) == len(names)
    assert sum(seconds for _, seconds, _ in steps) <= BUDGET_SECONDS


@pytest.mark.parametrize("attention", ["flash_attention_2", "sdpa"])
def test_every_benchmark_step_parses_with_its_script(attention, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    checked = 0
    for name, _, command in suite_steps():
        command = [attention if word == "$ATTN" else word for word in command]
        if command[:2] == ["-m", "pytest"]:
            assert (ROOT / command[2]).is_file(), f"{name}: no test file {command[2]}"
            assert "test_" in (ROOT / command[2]).read_text()
            continue
        script = Path(command[0])
        assert script.parent.name == "benchmarks" and (ROOT / script).is_file(), f"{name}: no script {script}"
        module = importlib.import_module(script.stem)
        module.argument_parser().parse_args(command[1:])  # exits with argparse's message on a bad flag
        checked += 1
    assert checked >= 5
    for module in ("selection_time", "prefill_speedup", "throughput"):
        sys.modules.pop(module, None)
