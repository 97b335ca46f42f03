"""scripts/run_grounding.sh: split TSVs made by tools/convert_to_tsv.py, run end to end on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_grounding.sh"
# (annotation file stem, entries): each entry is (id, picture, width, height, caption, [x, y, w, h]).
SPLITS = {
    "finetune_refcoco_val": [
        (1, "a.png", 98, 70, "left half", [0, 0, 49, 70]),
        (2, "a.png", 98, 70, "top right", [49, 0, 49, 35]),
    ],
    "finetune_refcoco+_testA": [
        (7, "b.png", 84, 56, "the whole thing", [0, 0, 84, 56]),
        (8, "a.png", 98, 70, "bottom", [0, 35, 98, 35]),
        (9, "b.png", 84, 56, "corner", [0, 0, 28, 28]),
    ],
}


def make_lmudata(tmp_path: Path, qwen25: bool) -> Path:
    """Pictures and MDETR json in tmp_path, converted into `tmp_path/LMUData` by tools/convert_to_tsv.py."""
    pictures, annotations, lmudata = tmp_path / "train2014", tmp_path / "mdetr", tmp_path / "LMUData"
    pictures.mkdir()
    annotations.mkdir()
    for name, size, colour in (("a.png", (98, 70), (200, 30, 30)), ("b.png", (84, 56), (30, 30, 200))):
        Image.new("RGB", size, colour).save(pictures / name)
    files = []
    for stem, entries in SPLITS.items():
        images = [{"id": i, "file_name": f, "width": w, "height": h, "caption": c} for i, f, w, h, c, _ in entries]
        boxes = [{"id": i, "image_id": i, "bbox": box} for i, *_, box in entries]
        files.append(annotations / f"{stem}.json")
        files[-1].write_text(json.dumps({"images": images, "annotations": boxes}), encoding="utf-8")
    command = [sys.executable, str(REPO / "tools" / "convert_to_tsv.py"), "--images_folder", str(pictures),
               "--annotations_files", *map(str, files), "--output_dir", str(lmudata)]
    subprocess.run(command + (["--qwen25"] if qwen25 else []), check=True, capture_output=True, text=True)
    return lmudata


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=600)


def test_the_tiny_model_runs_two_splits_and_writes_predictions_and_scores(tmp_path):
    lmudata, work = make_lmudata(tmp_path, qwen25=True), tmp_path / "work"
    env = {"MODEL": "TinyQwen2.5-VL", "LMUData": str(lmudata), "WORK_DIR": str(work),
           "SPLITS": "RefCOCO_val RefCOCO+_testA"}
    done = run_script(env)
    assert done.returncode == 0, done.stderr
    data = "--data RefCOCO_val_for_qwen25vl RefCOCO+_testA_for_qwen25vl"
    assert f"LMUData={lmudata} " in done.stdout and f"{data} --method none --work-dir {work}" in done.stdout
    run_dir = work / "TinyQwen2.5-VL" / "none"
    for name, rows in (("RefCOCO_val_for_qwen25vl", 2), ("RefCOCO+_testA_for_qwen25vl", 3)):
        predictions = (run_dir / f"TinyQwen2.5-VL_{name}.tsv").read_text().splitlines()
        assert len(predictions) == rows + 1 and "prediction" in predictions[0].split("\t")
        score = json.loads((run_dir / f"TinyQwen2.5-VL_{name}_score.json").read_text())
        assert score["num_samples"] == rows and 0 <= score["num_unparsed"] <= rows
        assert 0.0 <= score["acc@0.5"] == score["overall"] <= 1.0 and 0.0 <= score["mean_iou"] <= 1.0


def test_flags_win_and_ratio_and_layer_reach_the_runner(tmp_path):
    lmudata, work = make_lmudata(tmp_path, qwen25=False), tmp_path / "work"
    done = run_script({"MODEL": "NoSuchModel", "SPLITS": "RefCOCO_val"}, "--model", "TinyQwen2.5-VL", "--suffix", "",
                      "--data-root", str(lmudata), "--work-dir", str(work), "--method", "random", "--ratio", "0.5",
                      "--layer", "1")
    assert done.returncode == 0, done.stderr
    assert "--data RefCOCO_val --method random --ratio 0.5 --layer 1" in done.stdout
    score_file = work / "TinyQwen2.5-VL" / "random_r0.5_k1" / "TinyQwen2.5-VL_RefCOCO_val_score.json"
    score = json.loads(score_file.read_text())
    assert score["num_samples"] == 2


def test_every_missing_split_names_its_file_and_the_conversion_command(tmp_path):
    done = run_script({"MODEL": "Qwen2.5-VL-7B-Instruct", "LMUData": str(tmp_path), "WORK_DIR": str(tmp_path / "w"),
                       "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
                      "--method", "ivc_prune", "--layer", "40")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("run.py: error:")]
    missing = [line for line in errors if "does not exist" in line]
    assert len(missing) == 8 and f"{tmp_path}/RefCOCO_val_for_qwen25vl.tsv does not exist" in missing[0]
    assert "tools/convert_to_tsv.py" in missing[0] and "finetune_refcoco_val.json" in missing[0]
    assert all("--qwen25" in line for line in missing)
    assert any("layer 40 is not within Qwen2.5-VL-7B-Instruct's 28 decoder layers" in line for line in errors)
    assert not (tmp_path / "w").exists()


def test_a_model_of_another_family_reads_the_plain_splits(tmp_path):
    done = run_script({"MODEL": "llava-1.5-7b-hf", "LMUData": str(tmp_path), "SPLITS": "RefCOCO+_testB"})
    assert done.returncode == 2
    assert f"{tmp_path}/RefCOCO+_testB.tsv does not exist" in done.stderr
    assert "finetune_refcoco+_testB.json" in done.stderr and "--qwen25" not in done.stderr


def test_an_unknown_flag_is_refused():
    done = run_script({}, "--modle", "x")
    assert done.returncode == 2 and "unknown option --modle" in done.stderr
