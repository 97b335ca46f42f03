"""Issue 16 items 8-13, 15, 21, 22 and the IoU note: bad rows, cells and files are named, never scored silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from datasets.fixtures import write_benchmark
from PIL import Image

from vlmeval_ivcp.datasets.judged import labels_of, mathvista_options
from vlmeval_ivcp.datasets.tsv import encode_image_to_base64, load_tsv, tsv_path
from vlmeval_ivcp.evaluation.grounding import iou, parse_box
from vlmeval_ivcp.evaluation.vqa import parse_answers
from vlmeval_ivcp.datasets.tsv import dump_images
from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def _edit(path: Path, change) -> None:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(path, sep="\t", index=False)


def _run(tmp_path, data, *extra):
    return main(["--model", "TinyQwen2.5-VL", "--data", data, "--work-dir", str(tmp_path / "results"), *extra])


def test_a_row_without_a_gold_answer_is_refused_naming_the_file_and_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMUData", str(tmp_path / "data"))
    path = write_benchmark("POPE", tmp_path / "data")
    _edit(path, lambda frame: frame.__setitem__("answer", ["Yes", "No", "", "No", "Yes", "No"]))
    assert _run(tmp_path, "POPE", "--limit", "6") == 0  # inference needs no answers
    assert _run(tmp_path, "POPE") == 2
    error = capsys.readouterr().err
    assert f"{path}: 1 row(s) have no gold answer" in error and "index [2]" in error


def test_a_scoring_error_names_the_dataset_and_its_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMUData", str(tmp_path / "data"))
    path = write_benchmark("POPE", tmp_path / "data")
    _edit(path, lambda frame: frame.__setitem__("answer", ["Yes", "No", "Maybe", "No", "Yes", "No"]))
    assert _run(tmp_path, "POPE") == 2
    assert f"POPE ({path}): " in capsys.readouterr().err


def test_an_image_the_model_cannot_take_names_the_dataset_and_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMUData", str(tmp_path / "data"))
    path = write_benchmark("POPE", tmp_path / "data")
    strip = encode_image_to_base64(Image.new("RGB", (3000, 10)))
    _edit(path, lambda frame: frame.__setitem__("image", [frame["image"][0], "0", strip, "2", "0", "0"]))
    assert _run(tmp_path, "POPE") == 2
    error = capsys.readouterr().err
    assert f"POPE ({path}) row index 2: " in error and "aspect ratio" in error
    rows = (tmp_path / "results" / "TinyQwen2.5-VL" / "none" / "TinyQwen2.5-VL_POPE.jsonl").read_text()
    assert len(rows.splitlines()) == 2  # the rows before it are kept


def test_a_header_only_tsv_is_refused_at_load(tmp_path):
    path = tsv_path("POPE", tmp_path)
    path.write_text("index\timage\tquestion\tanswer\n")
    with pytest.raises(ValueError, match=r"POPE\.tsv: the file has a header but no rows"):
        load_tsv("POPE", tmp_path)


def test_a_missing_tsv_under_a_config_data_root_names_data_root_not_lmudata(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set the config's data_root") as info:
        load_tsv("POPE", tmp_path)
    assert "LMUData" not in str(info.value)


def test_unhashable_literals_are_the_documented_value_errors():
    with pytest.raises(ValueError, match=r"row index 7: column 'image' is not a valid list literal"):
        dump_images(pd.DataFrame({"index": [7], "image": ["[{[]: 1}]"]}), "X", "/nonexistent")
    assert parse_answers("[{[]: 1}]") == ["[{[]: 1}]"]  # not a list after all: one answer, as documented
    assert labels_of("[{[]: 1}]") == ["[{[]: 1}]"]
    with pytest.raises(ValueError, match=r"row 9: `choices` must be a list literal"):
        mathvista_options({"index": 9, "choices": "[{[]: 1}]"})


def test_a_yaml_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("work_dir: a\nmodels: [{name: TinyQwen2.5-VL}]\ndatasets: [DemoMCQ]\nmethods: [{method: none}]\n"
                    "work_dir: b\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"key 'work_dir' given twice \(first on line 1\)[\s\S]*line 5"):
        load_config(path)


def test_ratio_one_and_one_point_zero_are_one_run():
    raw = {"models": [{"name": "TinyQwen2.5-VL"}], "datasets": ["DemoMCQ"]}
    names = [parse_config({**raw, "methods": [{"method": "random", "ratio": ratio}]}).points[0].name
             for ratio in (1, 1.0, [1])]  # fmt: skip
    assert names == ["random_r1.0"] * 3


def test_boxes_whose_area_overflows_are_unparsed_and_never_make_iou_nan():
    assert parse_box("[-1e308, -1e308, 1e308, 1e308]") is None
    assert iou((0.0, 0.0, 2.0, 2.0), (1.0, 1.0, 3.0, 3.0)) == pytest.approx(1 / 7)


def test_a_corrupt_score_file_names_the_file(tmp_path):
    run_dir = tmp_path / "M" / "none"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"model": "M", "method": "none", "options": {}}))
    (run_dir / "M_POPE_score.json").write_text('{"overall": 0.')
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tables.py"), str(tmp_path)], capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 2 and f"{run_dir / 'M_POPE_score.json'}: not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unknown_last_flag_of_the_grounding_script_is_called_unknown():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_grounding.sh"), "--bogus"], capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr
