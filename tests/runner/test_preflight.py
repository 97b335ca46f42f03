"""Pre-flight checks: every problem a run config has is reported, one line each, before any weights load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_ivcp.runner.checkpoints import config_depth, inspect_checkpoint
from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import parse_config
from vlmeval_ivcp.runner.preflight import preflight

REPO = Path(__file__).resolve().parents[2]
README_COMMAND = ["--model", "Qwen2.5-VL-7B-Instruct", "--data", "MMStar", "POPE", "--method", "ivc_prune",
                  "--ratio", "0.5"]


def run_offline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """run.py with an empty LMUData, an empty hub cache and the hub offline."""
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMUData": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub")}
    command = [sys.executable, str(REPO / "run.py"), *args, "--work-dir", str(tmp_path / "results")]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_the_readme_command_without_data_or_weights_names_every_problem_and_loads_nothing(tmp_path):
    done = run_offline(tmp_path, *README_COMMAND, "--layer", "16")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("run.py: error:")]
    assert len(errors) == 3, done.stderr
    mmstar, pope, model = errors
    assert f"{tmp_path}/data/MMStar.tsv does not exist" in mmstar and "python tools/fetch_data.py MMStar" in mmstar
    assert "VLMEvalKit's https://opencompass.openxlab.space/utils/VLMEval/MMStar.tsv" in mmstar
    assert "POPE.tsv does not exist" in pope and "python tools/fetch_data.py POPE" in pope
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in model and "local checkpoint" in model
    assert not (tmp_path / "results").exists() and not (tmp_path / "hub").exists()


def test_a_layer_beyond_the_depth_is_named_from_the_built_in_table(tmp_path):
    done = run_offline(tmp_path, *README_COMMAND, "--layer", "40")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if "layer 40" in line)
    assert "method ivc_prune_r0.5_k40: layer 40 is not within Qwen2.5-VL-7B-Instruct's 28 decoder layers" in line
    assert "built-in table" in line


# What the checks never need: transformers (its model, attention and cache code take seconds to import), the model
# adapters, the pruning engine and the judge's client.
MODEL_CODE = ("transformers", "openai", "vlmeval_ivcp.models.base", "vlmeval_ivcp.pruning.engine")


@pytest.mark.parametrize(
    "args", [[*README_COMMAND, "--layer", "40"], ["list", "models"], ["list", "methods"], ["--help"]],
    ids=["pre-flight failure", "list models", "list methods", "help"],
)
def test_the_checks_listings_and_help_import_no_model_code(tmp_path, args):
    (tmp_path / "data").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMUData": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub")}
    command = [sys.executable, "-X", "importtime", str(REPO / "run.py"), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == (2 if args[0] == "--model" else 0), done.stderr[-2000:]
    # `-X importtime` writes one line per module imported: "import time: <self us> | <cumulative us> | <name>".
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "vlmeval_ivcp.runner.cli" in imported
    assert sorted(name for name in imported if name.startswith(MODEL_CODE)) == []


def checkpoint(tmp_path: Path, config: dict) -> str:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def own_model(path: str, methods: list[dict], datasets=("DemoMCQ",)):
    raw = {"models": [{"name": "Mine", "class": "Qwen2_5_VL", "kwargs": {"model_path": path}}],
           "datasets": list(datasets), "methods": methods}
    return parse_config(raw, "x.yaml")


def test_the_depth_is_read_from_a_local_config_json(tmp_path):
    path = checkpoint(tmp_path, {"text_config": {"num_hidden_layers": 6}})
    assert preflight(own_model(path, [{"method": "random", "layer": 5}])) == []
    [problem] = preflight(own_model(path, [{"method": "random", "layer": 6}]))
    assert problem.startswith("method random_k6: layer 6 is not within Mine's 6 decoder layers (K must be in [1, 5]")
    assert f"from {path}/config.json" in problem
    # PyramidDrop's later stages are checked too; a before-LLM method (K = 0) fits every model.
    [problem] = preflight(own_model(path, [{"method": "pdrop", "layers": [2, 4, 8]}, {"method": "uniform"}]))
    assert "layer 8 is not within" in problem


@pytest.mark.parametrize(
    "config,layers",
    [({"text_config": {"num_hidden_layers": 28}}, 28), ({"language_config": {"num_hidden_layers": 12}}, 12),
     ({"llm_config": {"num_hidden_layers": 24}}, 24), ({"num_hidden_layers": 36}, 36), ({}, None)],
)
def test_the_depth_keys_of_each_family(config, layers):
    assert config_depth(config) == layers


def test_a_hub_checkpoint_is_read_from_the_cache_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "models--org--vlm" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 3}}))
    (tmp_path / "models--org--vlm" / "refs").mkdir()
    (tmp_path / "models--org--vlm" / "refs" / "main").write_text("abc123")
    found = inspect_checkpoint("org/vlm", cache_dir=tmp_path)
    assert found.problem is None and found.config == {"text_config": {"num_hidden_layers": 3}}
    missing = inspect_checkpoint("org/other", cache_dir=tmp_path)
    assert missing.config is None and "HF_HUB_OFFLINE" in missing.problem


def test_a_missing_local_checkpoint_and_a_folder_without_config_are_named(tmp_path):
    assert "model path /no/such/folder does not exist" in inspect_checkpoint("/no/such/folder").problem
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path}/empty/config.json does not exist" in inspect_checkpoint(str(tmp_path / "empty")).problem


def test_a_tsv_without_the_columns_of_its_benchmark_is_named(tmp_path):
    (tmp_path / "MMStar.tsv").write_text("index\tquestion\tA\tanswer\n0\tq\ta\tA\n")
    (tmp_path / "POPE.tsv").write_text("index\timage\tquestion\tanswer\n0\tx\tq\tyes\n")
    raw = {"data_root": str(tmp_path), "models": [{"name": "TinyQwen2.5-VL"}], "datasets": ["MMStar", "POPE"],
           "methods": [{"method": "none"}]}
    [problem] = preflight(parse_config(raw))
    assert problem.startswith(f"MMStar: {tmp_path}/MMStar.tsv lacks column(s) ['B', 'image (or image_path)']")


def test_a_judged_benchmark_needs_a_judge_and_its_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "MMVet.tsv").write_text("index\timage\tquestion\tanswer\n0\tx\tq\ta\n")
    raw = {"data_root": str(tmp_path), "models": [{"name": "TinyQwen2.5-VL"}], "datasets": ["MMVet"],
           "methods": [{"method": "none"}]}
    config = parse_config(raw)
    [problem] = preflight(config)
    assert "datasets ['MMVet'] are scored by a judge: give --judge MODEL" in problem
    assert preflight(config, mode="infer") == []
    assert "OPENAI_API_KEY is not set" in preflight(config, judge="gpt-4o")[0]
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    assert preflight(config, judge="gpt-4o") == []


def test_all_problems_are_printed_together_and_nothing_is_written(tmp_path, capsys):
    path = checkpoint(tmp_path, {"text_config": {"num_hidden_layers": 4}})
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "work_dir": str(tmp_path / "results"), "data_root": str(tmp_path / "data"),
        "models": [{"name": "Mine", "class": "Qwen2_5_VL", "kwargs": {"model_path": path}}],
        "datasets": ["POPE", "RefCOCO_val_for_qwen25vl"], "methods": [{"method": "random", "layer": 4}]}))
    assert main(["--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and lines[-1].endswith("3 problem(s) found before loading any model; nothing was run")
    assert "POPE.tsv does not exist" in lines[0]
    assert "finetune_refcoco_val.json" in lines[1] and "--qwen25" in lines[1]
    assert "layer 4 is not within Mine's 4 decoder layers" in lines[2]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("name", "layers"), [("TinyQwen2.5-VL", 4), ("TinyQwen3-VL", 6)])
def test_a_tiny_checkpoint_not_built_yet_has_its_builders_depth(tmp_path, monkeypatch, name, layers):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    def problems(layer: int) -> list[str]:
        raw = {"models": [{"name": name}], "datasets": ["DemoMCQ"], "methods": [{"method": "random", "layer": layer}]}
        return preflight(parse_config(raw, "x.yaml"))

    assert problems(layers - 1) == []
    [problem] = problems(layers)
    assert f"layer {layers} is not within {name}'s {layers} decoder layers" in problem
    assert not (tmp_path / "empty-cache").exists(), "nothing is built by a check"
