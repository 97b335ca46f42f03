"""Issue 16 items 16 and 17: atomic writes leave no orphaned temporary files and respect the umask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from vlmeval_ivcp.datasets.tsv import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]

# Writes a file but SIGKILLs itself between writing the temporary file and renaming it.
KILLED_WRITE = """
import os, signal, sys
from vlmeval_ivcp.datasets import tsv
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
tsv.atomic_write_bytes(sys.argv[1], b"half")
"""


def test_a_write_killed_before_its_rename_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "scores.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert [path.name.endswith(".tmp") for path in tmp_path.iterdir()] == [True]
    atomic_write_bytes(target, b"whole")
    assert [path.name for path in tmp_path.iterdir()] == ["scores.json"]
    assert target.read_bytes() == b"whole"


def test_new_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.tsv", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.tsv", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.tsv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.tsv").stat().st_mode & 0o777 == 0o600
