"""Issue 16 items 2, 6, 7: every failure a user can cause or meet is one line naming the file or value."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.run import loyalty_to_reference
from vlmeval_ivcp.runner.store import PredictionStore

DEMO = ["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ"]


def _one_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("run.py: error") == 1 and "Traceback" not in error, error
    return error


def test_an_environment_failure_is_one_line_with_exit_1(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    assert main(DEMO + ["--work-dir", str(blocker)]) == 1
    assert str(blocker) in _one_line(capsys)
    with pytest.raises(OSError):
        main(DEMO + ["--work-dir", str(blocker), "--traceback"])


def test_a_float_index_in_a_predictions_file_names_file_and_line(tmp_path, capsys):
    run_dir = tmp_path / "TinyQwen2.5-VL" / "none"
    run_dir.mkdir(parents=True)
    (run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").write_text('{"index": 0, "prediction": "A"}\n{"index": 1.5}\n')
    assert main(DEMO + ["--work-dir", str(tmp_path), "--mode", "eval"]) == 2
    assert "TinyQwen2.5-VL_DemoMCQ.jsonl:2: a row index must be an int or a str, got float 1.5" in _one_line(capsys)


def test_an_unknown_model_kwarg_is_refused_with_its_path_before_any_model_loads(tmp_path, capsys):
    config = {"models": [{"name": "TinyQwen2.5-VL", "kwargs": {"max_new_token": 2}}], "datasets": ["DemoMCQ"],
              "methods": [{"method": "none"}], "work_dir": str(tmp_path / "results")}  # fmt: skip
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 2
    assert "typo.yaml.models[0].kwargs.max_new_token: unknown option of Qwen2_5_VL" in _one_line(capsys)
    assert not (tmp_path / "results").exists()


def test_loyalty_reads_the_reference_predictions_as_the_text_they_are(tmp_path):
    replies = {"001": "None", "002": "NA", "010": "null", "011": "B"}
    store = PredictionStore(tmp_path / "none_Set.jsonl")
    for index, reply in replies.items():
        store.append({"index": index, "prediction": reply})
    pruned = pd.DataFrame({"index": list(replies), "prediction": list(replies.values())})
    assert loyalty_to_reference(pruned, tmp_path / "none_Set") == {"loyalty": 1.0, "count": 4, "missing": 0}
    assert json.loads((tmp_path / "none_Set.jsonl").read_text().splitlines()[0])["index"] == "001"
