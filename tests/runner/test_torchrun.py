"""A real two-process torchrun launch on CPU (gloo) shards the rows, merges each once, and scores like one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.runs import write_demo_config

from vlmeval_ivcp.runner.run import merge_predictions
from vlmeval_ivcp.runner.store import PredictionStore

REPO = Path(__file__).resolve().parents[2]
RUN = "ivc_prune_r0.5_k2"


def write_config(tmp_path: Path, name: str) -> Path:
    return write_demo_config(tmp_path, name, [{"method": "ivc_prune", "ratio": 0.5, "layer": 2}])


def predictions(work_dir: Path) -> list[dict]:
    return predictions_of(work_dir / "TinyQwen2.5-VL" / RUN / "TinyQwen2.5-VL_DemoMCQ")


@pytest.mark.slow
def test_two_ranks_merge_every_row_once_and_score_like_one_process(tmp_path):
    # Both runs use one CPU thread each: a random model's near-tied logits can flip with the thread count.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # The single-process run goes first: it also builds the tiny checkpoint, which two ranks must not race to build.
    single = [sys.executable, "run.py", "--config", str(write_config(tmp_path, "single"))]
    subprocess.run(single, cwd=REPO, env=env, capture_output=True, timeout=300, check=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "run.py"]
    done = subprocess.run(
        [*launch, "--config", str(write_config(tmp_path, "ranks"))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = tmp_path / "ranks" / "TinyQwen2.5-VL" / RUN
    merged = predictions(tmp_path / "ranks")
    assert [row["index"] for row in merged] == [row["index"] for row in predictions(tmp_path / "single")]
    assert len({row["index"] for row in merged}) == len(merged) == 8
    assert not list(run_dir.glob("*.rank*.jsonl")), "rank files are removed once merged"
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    single_dir = tmp_path / "single" / "TinyQwen2.5-VL" / RUN
    score = json.loads((run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").read_text())
    assert score == json.loads((single_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").read_text())
    assert [row["prediction"] for row in merged] == [row["prediction"] for row in predictions(tmp_path / "single")]
    assert done.stdout.count("| TinyQwen2.5-VL | ivc_prune |") == 1, "only rank 0 prints the table"


def test_shards_left_by_a_killed_launch_are_merged_and_removed(tmp_path):
    stem = tmp_path / "M_D"
    PredictionStore(f"{stem}.jsonl").append({"index": 1, "prediction": "A"})
    PredictionStore(f"{stem}.rank0.jsonl").append({"index": 2, "prediction": "B"})
    PredictionStore(f"{stem}.rank2.jsonl").append({"index": 3, "prediction": "C"})
    merge_predictions(stem, [1, 2, 3])
    assert [row["index"] for row in predictions_of(stem)] == [1, 2, 3]
    assert not list(tmp_path.glob("*.rank*"))


def test_a_merge_that_was_killed_before_removing_the_shards_is_not_redone(tmp_path):
    stem = tmp_path / "M_D"
    for index in (1, 2):
        PredictionStore(f"{stem}.jsonl").append({"index": index, "prediction": "A"})
    PredictionStore(f"{stem}.rank1.jsonl").append({"index": 2, "prediction": "A"})
    merge_predictions(stem, [1, 2])
    assert [row["index"] for row in predictions_of(stem)] == [1, 2]
    assert not list(tmp_path.glob("*.rank*"))


def test_a_row_missing_from_every_shard_is_a_clear_error(tmp_path):
    stem = tmp_path / "M_D"
    PredictionStore(f"{stem}.rank0.jsonl").append({"index": 1, "prediction": "A"})
    with pytest.raises(ValueError, match=r"1 missing: .*2"):
        merge_predictions(stem, [1, 2])
    assert (tmp_path / "M_D.rank0.jsonl").exists(), "shards are kept when the merge fails"


def predictions_of(stem: Path) -> list[dict]:
    return [json.loads(line) for line in Path(f"{stem}.jsonl").read_text().splitlines()]
