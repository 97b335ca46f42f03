import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vlmeval_ivcp.runner.store import PredictionStore, merge_shards, shard_indices, to_json_line


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_append_then_resume(tmp_path):
    path = tmp_path / "sub" / "preds.jsonl"
    store = PredictionStore(path)
    assert store.done() == {}
    store.append({"index": 1, "prediction": "A"})
    store.append({"index": "x", "prediction": "B"})
    assert PredictionStore(path).done() == {
        1: {"index": 1, "prediction": "A"},
        "x": {"index": "x", "prediction": "B"},
    }


def test_append_rejects_repeats_and_records_without_index(tmp_path):
    path = tmp_path / "preds.jsonl"
    PredictionStore(path).append({"index": 3, "prediction": "A"})
    store = PredictionStore(path)  # a fresh store knows what the file already holds
    with pytest.raises(ValueError, match=r"preds\.jsonl: index 3 is already stored"):
        store.append({"index": np.int64(3), "prediction": "B"})
    with pytest.raises(KeyError, match="needs an 'index'"):
        store.append({"prediction": "B"})
    with pytest.raises(TypeError, match="float"):
        store.append({"index": 4.0})
    assert len(_lines(path)) == 1


def test_append_syncs_before_returning(tmp_path, monkeypatch):
    path = tmp_path / "preds.jsonl"
    synced = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced.append(path.read_bytes())  # what is on disk when the sync is asked for
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    PredictionStore(path).append({"index": 1})
    assert synced[0] == b'{"index": 1}\n'


def test_extend_writes_a_batch_with_one_sync_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "preds.jsonl"
    synced = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced.append(path.read_bytes())
        real_fsync(descriptor)

    store = PredictionStore(path)
    store.append({"index": 0, "prediction": "A"})
    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.extend([{"index": 1, "prediction": "B"}, {"index": "y", "prediction": "C"}])
    assert synced == [b'{"index": 0, "prediction": "A"}\n{"index": 1, "prediction": "B"}\n'
                      b'{"index": "y", "prediction": "C"}\n']
    for refused in ([{"index": 2}, {"index": 1}], [{"index": 2}, {"index": np.int64(2)}], [{"index": 2}, {}]):
        with pytest.raises((ValueError, KeyError)):
            store.extend(refused)
    assert len(synced) == 1 and [line["index"] for line in _lines(path)] == [0, 1, "y"]
    assert PredictionStore(path).done() == store.done()


def test_numpy_and_nan_are_stored_as_plain_json(tmp_path):
    record = {
        "index": np.int64(7),
        "score": np.float32(0.5),
        "nan": float("nan"),
        "np_nan": np.float64("nan"),
        "inf": float("-inf"),
        "flags": np.array([True, False]),
        "nested": {"kept": [np.int32(2), (1.5, None)]},
    }
    path = tmp_path / "preds.jsonl"
    PredictionStore(path).append(record)
    assert _lines(path) == [
        {
            "index": 7,
            "score": 0.5,
            "nan": None,
            "np_nan": None,
            "inf": None,
            "flags": [True, False],
            "nested": {"kept": [2, [1.5, None]]},
        }
    ]
    with pytest.raises(TypeError, match=r"record\.bad: set"):
        to_json_line({"index": 1, "bad": {1}})
    with pytest.raises(TypeError, match="keys must be strings"):
        to_json_line({"index": 1, "by_id": {1: "a"}})


@pytest.mark.parametrize("tail", [b'{"index": 3, "predic', b'{"index": 3}', b'{"index": 3, "pred\n'])
def test_torn_last_line_is_cut_and_redone(tmp_path, caplog, tail):
    path = tmp_path / "preds.jsonl"
    good = b'{"index": 1}\n{"index": 2}\n'
    path.write_bytes(good + tail)
    store = PredictionStore(path)
    with caplog.at_level(logging.WARNING, logger="vlmeval_ivcp.runner.store"):
        assert sorted(store.done()) == [1, 2]
    assert "preds.jsonl:3: dropping a half-written last line" in caplog.text
    assert path.read_bytes() == good
    store.append({"index": 3})
    assert [record["index"] for record in _lines(path)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"index": 1}\n{"index": 2, \n{"index": 3}\n', r"preds\.jsonl:2: corrupt prediction line"),
        (b'{"index": 1}\n\n{"index": 3}\n', r"preds\.jsonl:2: corrupt prediction line"),
        (b'{"index": 1}\n{"prediction": "A"}\n', r"preds\.jsonl:2: .*'index' key"),
        (b'{"index": 1, "prediction": "A"}\n{"index": 1, "prediction": "B"}\n', r"preds\.jsonl:2: index 1 appears a"),
        (b'{"index": 1}\n{"index": 1.5}\n', r"preds\.jsonl:2: a row index must be an int or a str, got float 1.5"),
    ],
)
def test_damage_before_the_last_line_is_an_error(tmp_path, content, message):
    path = tmp_path / "preds.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        PredictionStore(path).done()
    assert path.read_bytes() == content  # nothing is dropped silently


_APPEND_FOREVER = textwrap.dedent(
    """
    import sys
    from vlmeval_ivcp.runner.store import PredictionStore

    store = PredictionStore(sys.argv[1])
    index = 0
    while True:
        store.append({"index": index, "prediction": "x" * 5000})
        index += 1
    """
)


def test_a_killed_writer_leaves_a_readable_file(tmp_path):
    path = tmp_path / "preds.jsonl"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    writer = subprocess.Popen([sys.executable, "-c", _APPEND_FOREVER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 20
        while (not path.exists() or path.stat().st_size < 50_000) and time.monotonic() < deadline:
            assert writer.poll() is None, "the writer died on its own"
            time.sleep(0.01)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    finished = PredictionStore(path).done()
    assert len(finished) >= 10
    assert sorted(finished) == list(range(len(finished)))  # rows 0..n-1, none lost in the middle
    assert path.read_bytes().endswith(b"\n")


def _write_shard(path: Path, indices: list) -> None:
    store = PredictionStore(path)
    for index in indices:
        store.append({"index": index, "prediction": f"p{index}"})


def test_merge_orders_rows_as_expected(tmp_path):
    expected = [5, 3, 9, 1, 7]
    shards = [tmp_path / f"rank{rank}.jsonl" for rank in range(2)]
    for rank, shard in enumerate(shards):
        _write_shard(shard, shard_indices(expected, rank, 2))
    out = tmp_path / "merged.jsonl"
    merged = merge_shards(shards, np.array(expected), out)
    assert [record["index"] for record in merged] == expected
    assert _lines(out) == merged
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged.jsonl", "rank0.jsonl", "rank1.jsonl"]


def test_merge_lists_missing_duplicated_and_unexpected_rows(tmp_path):
    _write_shard(tmp_path / "rank0.jsonl", [1, 2, 99])
    _write_shard(tmp_path / "rank1.jsonl", [*range(10, 30)])
    PredictionStore(tmp_path / "rank1.jsonl").append({"index": 2, "prediction": "another answer"})
    shards = [tmp_path / "rank0.jsonl", tmp_path / "rank1.jsonl", tmp_path / "rank2.jsonl"]
    out = tmp_path / "merged.jsonl"
    with pytest.raises(ValueError) as info:
        merge_shards(shards, [1, 2, 3, 4], out)
    message = str(info.value)
    assert "2 missing: [3, 4]" in message
    assert "1 stored more than once with different answers: [2]" in message
    assert "21 not expected: [99, 10, 11, 12, 13, 14, 15, 16, 17, 18] (+11 more)" in message
    assert "rank2.jsonl" in message  # the shard file that was not there
    assert not out.exists()
    with pytest.raises(ValueError, match=r"expected_indices repeats \[1\]"):
        merge_shards(shards, [1, 1], out)


def test_merge_reads_shards_without_repairing_them(tmp_path):
    shard = tmp_path / "rank0.jsonl"
    _write_shard(shard, [1])
    with open(shard, "ab") as handle:
        handle.write(b'{"index": 2, "pre')
    before = shard.read_bytes()
    with pytest.raises(ValueError, match=r"1 missing: \[2\]"):
        merge_shards([shard], [1, 2], tmp_path / "merged.jsonl")
    assert shard.read_bytes() == before


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_row_exactly_once(world_size):
    indices = list(range(100, 111))
    shards = [shard_indices(indices, rank, world_size) for rank in range(world_size)]
    assert sorted(index for shard in shards for index in shard) == indices
    assert shards[0][:2] == indices[: 2 * world_size : world_size]  # rank r takes rows r, r+W, ...


@pytest.mark.parametrize(("rank", "world_size"), [(0, 0), (2, 2), (-1, 2)])
def test_bad_rank_or_world_size(rank, world_size):
    with pytest.raises(ValueError, match="rank|world_size"):
        shard_indices([1, 2], rank, world_size)
