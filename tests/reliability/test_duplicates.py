"""Issue 16 item 5 (second half): a row two processes both answered is one row when the answers agree."""

from __future__ import annotations

import json

import pytest

from vlmeval_ivcp.runner.store import PredictionStore, merge_shards


def _record(index, prediction="A", seconds=1.0):
    return {"index": index, "prediction": prediction, "row_seconds": seconds, "generate_seconds": seconds}


def _write(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_merge_accepts_a_row_stored_twice_with_only_its_timings_differing(tmp_path):
    _write(tmp_path / "rank0.jsonl", [_record(1), _record(2, seconds=1.0)])
    _write(tmp_path / "rank1.jsonl", [_record(2, seconds=3.5), _record(3)])
    merged = merge_shards([tmp_path / "rank0.jsonl", tmp_path / "rank1.jsonl"], [1, 2, 3], tmp_path / "out.jsonl")
    assert [record["index"] for record in merged] == [1, 2, 3]


def test_merge_still_refuses_a_row_stored_twice_with_different_answers(tmp_path):
    _write(tmp_path / "rank0.jsonl", [_record(1), _record(2, "A")])
    _write(tmp_path / "rank1.jsonl", [_record(2, "B")])
    with pytest.raises(ValueError, match=r"1 stored more than once with different answers: \[2\]"):
        merge_shards([tmp_path / "rank0.jsonl", tmp_path / "rank1.jsonl"], [1, 2], tmp_path / "out.jsonl")


def test_a_file_with_a_row_appended_twice_by_racing_processes_still_resumes(tmp_path):
    path = tmp_path / "preds.jsonl"
    _write(path, [_record(1, seconds=1.0), _record(1, seconds=2.0), _record(2)])
    assert sorted(PredictionStore(path).done()) == [1, 2]


def test_a_float_index_names_the_file_and_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    _write(path, [_record(1), _record(2.0)])
    with pytest.raises(ValueError, match=r"preds\.jsonl:2: a row index must be an int or a str, got float 2\.0"):
        PredictionStore(path).done()
