"""Issue 16 item 5: a run folder is written by one launch at a time; a dead writer's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_ivcp.locking import RunFolderBusy, RunFolderLock
from vlmeval_ivcp.runner.cli import main

ROOT = Path(__file__).resolve().parents[2]
# Claims a run folder for another launch (as a live orphaned torchrun worker would), says so, and waits.
HOLDER = """
import sys
from vlmeval_ivcp.locking import RunFolderLock
lock = RunFolderLock(sys.argv[1], "another-launch")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def _hold(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_live_writer_of_another_launch_is_named_and_a_killed_one_taken_over(tmp_path, capsys):
    work_dir = tmp_path / "results"
    folder = work_dir / "TinyQwen2.5-VL" / "none"
    holder = _hold(folder)
    argv = ["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--work-dir", str(work_dir), "--mode", "eval"]
    try:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert f"is being written by PID {holder.pid}" in error and error.count("run.py: error") == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunFolderLock(folder, "this-launch"):  # the dead holder's lock file is taken over
        assert [path.name for path in folder.glob(".writer.*")] == [RunFolderLock(folder, "x").path.name]
    assert not list(folder.glob(".writer.*"))


def test_processes_of_one_launch_share_the_folder_and_others_are_refused(tmp_path):
    holder = _hold(tmp_path)
    try:
        with RunFolderLock(tmp_path, "another-launch"):  # a second rank of the holder's launch
            pass
        with pytest.raises(RunFolderBusy, match=f"PID {holder.pid}"):
            RunFolderLock(tmp_path, "a-third-launch").acquire()
        assert len(list(tmp_path.glob(".writer.*"))) == 1  # the refused claim left nothing behind
    finally:
        holder.stdin.close()
        holder.wait()
