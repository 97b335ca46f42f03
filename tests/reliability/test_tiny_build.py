"""Issue 16 item 1: a killed or concurrent first build of a tiny checkpoint never breaks later runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vlmeval_ivcp.models.tiny import CHECKPOINT_FILES, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# Builds LLaVA-1.5's tiny checkpoint, but SIGKILLs itself right after writing config.json: a build killed midway.
KILLED_BUILD = """
import os, signal, sys
from transformers import PretrainedConfig
from vlmeval_ivcp.models.tiny import tiny_checkpoint
saved = PretrainedConfig.save_pretrained
def save_then_die(self, *args, **kwargs):
    saved(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
PretrainedConfig.save_pretrained = save_then_die
tiny_checkpoint("llava", sys.argv[1])
"""
BUILD = (
    "import sys; from vlmeval_ivcp.models.tiny import tiny_checkpoint; print(tiny_checkpoint('llava', sys.argv[1]))"
)


def test_a_build_killed_midway_leaves_nothing_a_later_run_trusts(tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], env=ENV, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (tmp_path / "tiny-llava" / "config.json").exists()
    path = tiny_checkpoint("llava", tmp_path)
    assert all((path / name).is_file() for name in CHECKPOINT_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llava.lock", "tiny-llava"]  # no build leftovers


def test_a_partial_folder_of_an_older_in_place_build_is_rebuilt(tmp_path):
    partial = tmp_path / "tiny-llava"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    path = tiny_checkpoint("llava", tmp_path)
    assert all((path / name).is_file() for name in CHECKPOINT_FILES)


def test_concurrent_builders_on_an_empty_cache_all_succeed(tmp_path):
    builders = [
        subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [builder.communicate() for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert {out.decode().strip() for out, _ in outputs} == {str(tmp_path / "tiny-llava")}
    assert all((tmp_path / "tiny-llava" / name).is_file() for name in CHECKPOINT_FILES)
