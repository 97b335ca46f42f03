"""`--limit` times a few rows of every run, `--plan` turns the stored timings into the time a config still needs."""

from __future__ import annotations

import json

import pytest
from support.runs import write_demo_config

from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import load_config
from vlmeval_ivcp.runner.plan import count_rows, format_plan, plan
from vlmeval_ivcp.runner.store import PredictionStore

METHODS = [{"method": "none"}, {"method": "random", "ratio": 0.5, "layer": 2}]


def _store(config, run: str, seconds: list[float | None]) -> PredictionStore:
    store = PredictionStore(f"{config.work_dir}/TinyQwen2.5-VL/{run}/TinyQwen2.5-VL_DemoMCQ.jsonl")
    for index, value in enumerate(seconds):
        store.append({"index": index, "prediction": "A", "row_seconds": value})
    return store


def test_limit_times_some_rows_of_every_run_and_the_full_run_resumes_after_them(tmp_path, capsys):
    path = write_demo_config(tmp_path, "timed", METHODS)
    assert main(["--config", str(path), "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    for run in ("none", "random_r0.5_k2"):
        run_dir = tmp_path / "timed" / "TinyQwen2.5-VL" / run
        rows = [json.loads(line) for line in (run_dir / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_text().splitlines()]
        assert [row["index"] for row in rows] == [0, 2, 5]  # spread over the 8 rows
        assert all(row["row_seconds"] >= row["generate_seconds"] > 0 for row in rows)
        assert not (run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").exists() and not (run_dir / "run.json").exists()
        assert f"| TinyQwen2.5-VL | {run} | DemoMCQ | 8 | 3 |" in printed
    assert "expected time left on one process" in printed

    assert main(["--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["--config", str(path), "--plan"]) == 0
    assert "| TinyQwen2.5-VL | none | DemoMCQ | 8 | 8 |" in capsys.readouterr().out
    rows = plan(load_config(path))
    finished = [(row.run, row.done, row.remaining_seconds) for row in rows]
    assert finished == [("none", 8, 0.0), ("random_r0.5_k2", 8, 0.0)]
    assert (tmp_path / "timed" / "TinyQwen2.5-VL" / "none" / "TinyQwen2.5-VL_DemoMCQ_score.json").exists()


def test_a_run_not_timed_yet_borrows_the_mean_of_the_models_other_runs(tmp_path):
    config = load_config(write_demo_config(tmp_path, "plan", METHODS))
    write_demo_mcq(config.data_root)
    _store(config, "none", [2.0, 4.0, None])  # a row stored without a timing counts as done, not as timed

    none, pruned = plan(config)
    assert (none.rows, none.done, none.seconds_per_row, none.borrowed) == (8, 3, 3.0, False)
    assert none.remaining_seconds == 15.0
    assert (pruned.done, pruned.seconds_per_row, pruned.borrowed, pruned.remaining_seconds) == (0, 3.0, True, 24.0)
    text = format_plan([none, pruned])
    assert "| TinyQwen2.5-VL | random_r0.5_k2 | DemoMCQ | 8 | 0 | 3.00* | 24 s |" in text
    assert "expected time left on one process: 39 s" in text and "*: timed on the model's other runs" in text


def test_without_a_tsv_or_any_timing_the_plan_says_what_is_unknown(tmp_path):
    config = load_config(write_demo_config(tmp_path, "plan", METHODS))
    rows = plan(config)
    assert all(row.rows is None and row.seconds_per_row is None and row.remaining_seconds is None for row in rows)
    assert "plus 2 dataset run(s) not timed or without their TSV (time some rows with --limit N)" in format_plan(rows)


def test_the_plan_only_reads_a_file_that_a_run_is_appending_to(tmp_path):
    config = load_config(write_demo_config(tmp_path, "plan", METHODS))
    store = _store(config, "none", [1.0, 1.0])
    with open(store.path, "a") as handle:
        handle.write('{"index": 2, "predic')  # the row a live run is writing right now
    before = store.path.read_bytes()
    assert plan(config)[0].done == 2
    assert store.path.read_bytes() == before


def test_a_tsv_without_an_index_column_is_named(tmp_path):
    (tmp_path / "MMStar.tsv").write_text("question\tanswer\nWhat?\tA\n")
    with pytest.raises(ValueError, match=r"MMStar.tsv: cannot count its rows"):
        count_rows("MMStar", str(tmp_path))


def test_bad_limits_are_refused_before_anything_runs(tmp_path, capsys):
    path = write_demo_config(tmp_path, "bad", METHODS)
    with pytest.raises(SystemExit):
        main(["--config", str(path), "--limit", "0"])
    assert "must be a whole number >= 1, got 0" in capsys.readouterr().err
    assert main(["--config", str(path), "--limit", "2", "--mode", "eval"]) == 2
    assert "--limit answers rows: it goes with --mode all or infer, not eval" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
