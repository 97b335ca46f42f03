"""A checkpoint that cannot be loaded is one line with a hint (exit 1); `--traceback` shows the rest; hub
warnings print once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_ivcp.models.load_error import ModelLoadError, load_error
from vlmeval_ivcp.runner.cli import main

REPO = Path(__file__).resolve().parents[2]


def config_without_weights(tmp_path: Path) -> Path:
    """A run config whose checkpoint folder has the tiny Qwen2.5-VL's config.json and no weights."""
    from support.tiny import tiny_path

    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(tiny_path() / "config.json", folder / "config.json")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "work_dir": str(tmp_path / "results"), "data_root": str(tmp_path / "data"),
        "models": [{"name": "Mine", "class": "Qwen2_5_VL", "kwargs": {"model_path": str(folder)}}],
        "datasets": ["DemoMCQ"], "methods": [{"method": "none"}]}))
    return config


def test_a_checkpoint_without_weights_is_one_line_and_traceback_shows_it(tmp_path, capsys):
    config = config_without_weights(tmp_path)
    assert main(["--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"run.py: error: cannot load model {tmp_path}/ckpt: ")
    assert "(hint: " in err[0]
    with pytest.raises(ModelLoadError, match="cannot load model"):
        main(["--config", str(config), "--traceback"])


@pytest.mark.parametrize(
    "text,hint",
    [
        ("You are trying to access a gated repo. Make sure to have access to it.", "hf auth login"),
        ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached "
         "files.", "HF_HUB_OFFLINE"),
        ("x is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
         "check the hub id or the path"),
    ],
)
def test_the_hint_fits_the_failure(text, hint):
    error = load_error("org/model", OSError(text))
    assert isinstance(error, OSError) and "\n" not in str(error) and hint in str(error)
    assert str(error).startswith("cannot load model org/model: ")


def test_a_hub_warning_is_printed_once():
    # A fresh interpreter: the hub installs its own stderr handler at import, as in a real run.
    code = ("import logging, huggingface_hub.utils\n"
            "from vlmeval_ivcp.runner.logs import configure_logging\n"
            "configure_logging()\n"
            "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr.count("Retrying in 1s") == 1, done.stderr
