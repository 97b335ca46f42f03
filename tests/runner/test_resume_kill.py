"""A run killed with SIGKILL mid-way resumes to the same predictions and scores as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.runs import write_demo_config

REPO = Path(__file__).resolve().parents[2]
RUNS = ("none", "ivc_prune_r0.5_k2")
ROWS = 8  # DemoMCQ


def write_config(tmp_path: Path, name: str) -> Path:
    return write_demo_config(tmp_path, name, [{"method": "none"}, {"method": "ivc_prune", "ratio": 0.5, "layer": 2}])


def prediction_files(work_dir: Path) -> list[Path]:
    return [work_dir / "TinyQwen2.5-VL" / run / "TinyQwen2.5-VL_DemoMCQ.jsonl" for run in RUNS]


def stored_lines(work_dir: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in prediction_files(work_dir) if path.exists())


def launch(config: Path) -> subprocess.Popen:
    # Every run uses one CPU thread: a random model's near-tied logits can flip with the thread count.
    command = [sys.executable, "run.py", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_after_two_rows(config: Path, work_dir: Path) -> None:
    process = launch(config)
    try:
        deadline = time.monotonic() + 240
        while stored_lines(work_dir) < 2:
            assert process.poll() is None, "the run ended before two rows were stored"
            assert time.monotonic() < deadline, "no two rows stored within the time limit"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_or_repeating_a_row(tmp_path):
    # The uninterrupted run goes first: it builds the tiny checkpoint, so the killed run spends its time on rows.
    assert launch(write_config(tmp_path, "whole")).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    config = write_config(tmp_path, "killed")
    kill_after_two_rows(config, killed)
    stored = stored_lines(killed)
    assert 2 <= stored < ROWS * len(RUNS), "the kill landed mid-way"
    # The row in flight at the kill may have been half-written; make sure one is, so the resume must trim it.
    in_flight = next(path for path in prediction_files(killed) if path.exists())
    with open(in_flight, "a", encoding="utf-8") as handle:
        handle.write('{"index": 9999, "predic')

    assert launch(config).wait(timeout=300) == 0

    for resumed, whole in zip(prediction_files(killed), prediction_files(tmp_path / "whole")):
        rows = [json.loads(line) for line in resumed.read_text().splitlines()]
        expected = [json.loads(line) for line in whole.read_text().splitlines()]
        assert sorted(row["index"] for row in rows) == sorted(row["index"] for row in expected)
        assert len(rows) == ROWS
        by_index = {row["index"]: row["prediction"] for row in rows}
        assert by_index == {row["index"]: row["prediction"] for row in expected}
        resumed_score, whole_score = (Path(str(path).replace(".jsonl", "_score.json")) for path in (resumed, whole))
        assert json.loads(resumed_score.read_text()) == json.loads(whole_score.read_text())
