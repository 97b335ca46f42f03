"""Answering rows N at a time: batches of rows of mixed image sizes answer as one row at a time (greedy, wherever no
step came within float32 noise of another token), per-row figures stay per row, and every benchmark type runs with
--batch-size 8 through the harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.tiny import FAMILIES, tiny_wrapper
from tests.datasets.fixtures import BENCHMARK_ROWS, write_benchmark
from tests.scripts.test_run_grounding import make_lmudata

from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.runner.batching import group_rows, message_size
from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import ConfigError, parse_config
from vlmeval_ivcp.runner.run import answer_rows
from vlmeval_ivcp.runner.store import PredictionStore

# Smallest gap between the two highest logits under which batched and single runs may pick different tokens.
NOISE = 1e-4
# Per-row figures that must not depend on the batch.
PER_ROW = ("visual_tokens", "kept_visual_tokens", "kv_cache_bytes", "prefill_flops", "prefill_flops_unpruned")


def _clear(margin: float | None) -> bool:
    return margin is None or margin > NOISE  # None: stored infinity (no step had a runner-up)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_of_mixed_image_sizes_answers_as_one_row_at_a_time(family, tmp_path):
    wrapper = tiny_wrapper(family=family)
    dataset = build_dataset("DemoMCQ", write_demo_mcq(tmp_path).parent)
    messages = [dataset.message(position) for position in range(len(dataset.data))]
    assert len({message_size(message)[2] for message in messages}) > 3, "the pictures have different sizes"
    budget = wrapper.max_new_tokens
    wrapper.max_new_tokens = 4
    wrapper.set_method("ivc_prune", ratio=0.5, layer=2)
    try:
        single = []
        for message in messages:
            single.append((wrapper.generate(message, dataset.name), wrapper.stats))
        batched = wrapper.generate_batch(messages, dataset.name)
        stats = wrapper.batch_stats
    finally:
        wrapper.set_method("none")
        wrapper.max_new_tokens = budget
    for (answer, alone), got, row in zip(single, batched, stats, strict=True):
        if _clear(alone.decision_margin):
            assert got == answer
        assert {key: getattr(row, key) for key in PER_ROW} == {key: getattr(alone, key) for key in PER_ROW}
        assert row.kept_visual == alone.kept_visual and row.batch_size == len(messages) and alone.batch_size == 1
    assert len({row.kept_visual_tokens + row.prompt_tokens for row in stats}) > 1, "the rows keep different counts"


def test_rows_are_grouped_by_size_and_batch_size_1_keeps_their_order(tmp_path):
    dataset = build_dataset("DemoMCQ", write_demo_mcq(tmp_path).parent)
    messages = [dataset.message(position) for position in range(len(dataset.data))]
    positions = list(range(len(messages)))
    assert group_rows(positions, messages, 1) == [[position] for position in positions]
    batches = group_rows(positions, messages, 3)
    assert sorted(item for batch in batches for item in batch) == positions and [len(b) for b in batches] == [3, 3, 2]
    sizes = [message_size(messages[item]) for batch in batches for item in batch]
    assert sizes == sorted(sizes)


def test_batch_size_is_a_model_key_and_a_flag():
    base = {"models": [{"name": "TinyQwen2.5-VL", "batch_size": 4}], "datasets": ["DemoMCQ"],
            "methods": [{"method": "none"}]}
    assert parse_config(base).models[0].batch_size == 4
    assert parse_config({**base, "models": [{"name": "TinyQwen2.5-VL"}]}).models[0].batch_size == 1
    with pytest.raises(ConfigError, match=r"models\[0\].batch_size"):
        parse_config({**base, "models": [{"name": "TinyQwen2.5-VL", "batch_size": 0}]})


def _stored(work: Path, dataset: str) -> dict:
    path = work / "TinyQwen2.5-VL" / "ivc_prune_r0.5_k2" / f"TinyQwen2.5-VL_{dataset}.jsonl"
    return {row["index"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_every_benchmark_type_runs_with_batch_size_8_as_with_1(tmp_path):
    data = make_lmudata(tmp_path, qwen25=True)  # the RefCOCO splits (grounding)
    for name in BENCHMARK_ROWS:  # yes/no, VQA and judged benchmarks
        write_benchmark(name, data)
    datasets = ["DemoMCQ", *BENCHMARK_ROWS, "RefCOCO_val_for_qwen25vl"]
    for batch_size in (1, 8):
        config = {"work_dir": str(tmp_path / f"b{batch_size}"), "data_root": str(data), "datasets": datasets,
                  "models": [{"name": "TinyQwen2.5-VL", "kwargs": {"max_new_tokens": 3}}],
                  "methods": [{"method": "ivc_prune", "ratio": 0.5, "layer": 2}]}
        path = tmp_path / f"b{batch_size}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["--config", str(path), "--mode", "infer", "--batch-size", str(batch_size)]) == 0
    for name in datasets:
        alone, batched = _stored(tmp_path / "b1", name), _stored(tmp_path / "b8", name)
        assert alone.keys() == batched.keys(), name
        for index, row in alone.items():
            if _clear(row["decision_margin"]):
                assert batched[index]["prediction"] == row["prediction"], (name, index)
            assert {key: batched[index][key] for key in PER_ROW} == {key: row[key] for key in PER_ROW}, (name, index)
            assert row["batch_size"] == 1
        assert max(row["batch_size"] for row in batched.values()) == min(8, len(batched)), name


def test_a_bad_picture_in_a_later_batch_names_its_row_and_keeps_the_batches_before(tmp_path):
    wrapper = tiny_wrapper()
    dataset = build_dataset("DemoMCQ", write_demo_mcq(tmp_path).parent)
    messages = [dataset.message(position) for position in range(len(dataset.data))]
    rows = list(dataset.data["index"])
    order = group_rows(rows, messages, 2)
    bad = order[-1][0]
    # Its header reads (so it is grouped as before), its pixels do not.
    picture = next(item["value"] for item in messages[bad] if item["type"] == "image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(picture).read_bytes()[:200])
    messages[bad] = [dict(item, value=str(truncated)) if item["type"] == "image" else item for item in messages[bad]]
    assert group_rows(rows, messages, 2) == order
    store = PredictionStore(tmp_path / "predictions.jsonl")
    with pytest.raises(OSError, match=f"row index \\[{rows[order[-1][0]]}, {rows[order[-1][1]]}\\]"):
        answer_rows(wrapper, dataset, messages, rows, store, 2)
    assert set(store.done()) == {rows[item] for batch in order[:-1] for item in batch}


def test_a_picture_whose_header_cannot_be_read_sorts_first_and_fails_named(tmp_path):
    wrapper = tiny_wrapper()
    dataset = build_dataset("DemoMCQ", write_demo_mcq(tmp_path).parent)
    messages = [dataset.message(position) for position in range(len(dataset.data))]
    rows = list(dataset.data["index"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    messages[3] = [dict(item, value=str(broken)) if item["type"] == "image" else item for item in messages[3]]
    assert group_rows(rows, messages, 2)[0][0] == 3
    with pytest.raises(OSError, match=f"row index \\[{rows[3]}, "):
        answer_rows(wrapper, dataset, messages, rows, PredictionStore(tmp_path / "predictions.jsonl"), 2)
