"""Run configs are validated by path; the demo config runs end to end, resumes, and writes the results layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.runs import write_shipped_demo

from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
BASE = {"models": [{"name": "TinyQwen2.5-VL"}], "datasets": ["DemoMCQ"], "methods": [{"method": "none"}]}


def test_the_shipped_configs_validate():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        config = load_config(path)
        assert config.points and config.models and config.datasets


def test_list_valued_ratio_and_layer_expand_into_their_product():
    raw = dict(BASE, methods=[{"method": "none"}, {"method": "random", "ratio": [0.25, 0.5], "layer": [1, 2]}])
    names = [point.name for point in parse_config(raw).points]
    assert names == ["none", "random_r0.25_k1", "random_r0.25_k2", "random_r0.5_k1", "random_r0.5_k2"]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"colour": "red"}, r"x.yaml.colour: unknown key"),
        ({"datasets": "DemoMCQ"}, r"x.yaml.datasets: expected list, got str"),
        ({"datasets": ["NoSuchSet"]}, r"x.yaml.datasets\[0\]: unknown dataset 'NoSuchSet'"),
        ({"models": [{"name": "NoSuchModel"}]}, r"x.yaml.models\[0\].name: unknown model 'NoSuchModel'"),
        ({"models": [{"name": "TinyQwen2.5-VL", "kwarg": {}}]}, r"x.yaml.models\[0\].kwarg: unknown key"),
        ({"models": [{"kwargs": {}}]}, r"x.yaml.models\[0\].name: required"),
        ({"models": [{"name": "m", "class": "Nope"}]}, r"x.yaml.models\[0\].class: unknown adapter 'Nope'"),
        ({"models": [{"name": "m", "class": "InternVL"}]}, r"x.yaml.models\[0\].kwargs.model_path: required"),
        ({"methods": [{"method": "nope"}]}, r"x.yaml.methods\[0\].method: unknown pruning method 'nope'"),
        ({"methods": [{"method": "random", "ratio": 2.0}]}, r"x.yaml.methods\[0\]: ratio must be in \(0, 1\]"),
        ({"methods": [{"method": "random", "depth": 3}]}, r"x.yaml.methods\[0\].depth: unknown option"),
        ({"methods": [{"method": "random"}, {"method": "random"}]}, r"runs \['random'\] appear more than"),
    ],
)
def test_bad_configs_are_refused_with_their_path(tmp_path, change, match):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(dict(BASE, **change)))
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_the_demo_runs_resumes_and_writes_the_results_layout(tmp_path, capsys):
    path = write_shipped_demo(tmp_path, [{"method": "none"}, {"method": "ivc_prune", "ratio": 0.5, "layer": 2}])

    assert main(["--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "| TinyQwen2.5-VL | ivc_prune | 0.5 | 2 |" in table
    run_dir = tmp_path / "results" / "TinyQwen2.5-VL" / "ivc_prune_r0.5_k2"
    lines = (run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_text().splitlines()
    assert len(lines) == 8
    rows = [json.loads(line) for line in lines]
    assert all(0 < row["prefill_seconds"] <= row["generate_seconds"] for row in rows)
    assert all(0 < row["prefill_flops"] < row["prefill_flops_unpruned"] and row["kv_cache_bytes"] > 0 for row in rows)
    kept = [json.loads(line)["kept_visual_tokens"] for line in lines]
    visual = [json.loads(line)["visual_tokens"] for line in lines]
    assert kept == [round(0.5 * n) for n in visual]
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["versions"]["transformers"] and run_json["options"] == {"ratio": 0.5, "layer": 2}
    score = json.loads((run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").read_text())
    assert 0.0 <= score["overall"] <= 1.0
    assert score["loyalty"]["count"] == 8 and 0.0 <= score["loyalty"]["loyalty"] <= 1.0  # the `none` run exists
    # Pictures big enough for pruning to matter: at ratio 0.5 IVC-Prune's KV cache is at least 30% smaller.
    assert min(visual) >= 256
    reference = run_dir.parent / "none" / "TinyQwen2.5-VL_DemoMCQ.jsonl"
    unpruned = [json.loads(line) for line in reference.read_text().splitlines()]
    assert sum(row["kv_cache_bytes"] for row in rows) <= 0.7 * sum(row["kv_cache_bytes"] for row in unpruned)

    # A re-run answers nothing again: the predictions file is untouched, and the table says the rows were reused.
    before = (run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_bytes()
    assert main(["--config", str(path)]) == 0
    assert (run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_bytes() == before
    assert capsys.readouterr().out.count("| reused 8 rows |") == 2


def test_the_command_line_names_what_is_wrong(capsys):
    assert main(["--model", "TinyQwen2.5-VL"]) == 2
    assert "give --config, or both --model and --data" in capsys.readouterr().err


def test_infer_mode_writes_predictions_only_and_eval_mode_scores_them_without_a_model(tmp_path, monkeypatch):
    config = dict(BASE, work_dir=str(tmp_path / "results"), data_root=str(tmp_path / "data"))
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "results" / "TinyQwen2.5-VL" / "none"

    assert main(["--config", str(path), "--mode", "infer"]) == 0
    assert len((run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_text().splitlines()) == 8
    assert (run_dir / "TinyQwen2.5-VL_DemoMCQ.tsv").exists()
    assert not (run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").exists()
    assert json.loads((run_dir / "run.json").read_text())["scores"] == {}

    def no_model(*args, **kwargs):
        raise AssertionError("eval mode loaded a model")

    monkeypatch.setattr("vlmeval_ivcp.runner.run.build_model", no_model)
    assert main(["--config", str(path), "--mode", "eval"]) == 0
    score = json.loads((run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["scores"] == {"DemoMCQ": score}


def test_eval_mode_without_predictions_names_the_missing_file_in_one_line(tmp_path, capsys):
    argv = ["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--work-dir", str(tmp_path), "--mode", "eval"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "TinyQwen2.5-VL_DemoMCQ.jsonl; run with --mode infer or all" in error
    assert "Traceback" not in error and error.count("\n") == 1
    with pytest.raises(FileNotFoundError, match=r"TinyQwen2.5-VL_DemoMCQ.jsonl"):
        main(argv + ["--traceback"])


def test_a_judge_without_an_api_key_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = ["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--work-dir", str(tmp_path), "--judge", "gpt-4o-mini"]
    assert main(argv) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_model_entry_can_name_an_adapter_class_and_its_checkpoint(tmp_path):
    from support.tiny import tiny_path

    config = dict(
        BASE,
        work_dir=str(tmp_path / "results"),
        data_root=str(tmp_path / "data"),
        models=[{"name": "MyInternVL", "class": "InternVL",
                 "kwargs": {"model_path": str(tiny_path("internvl")), "dtype": "float32", "max_new_tokens": 2}}],
    )
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--mode", "infer"]) == 0
    run_dir = tmp_path / "results" / "MyInternVL" / "none"
    assert len((run_dir / "MyInternVL_DemoMCQ.jsonl").read_text().splitlines()) == 8
