"""benchmarks/selection_time.py end to end at shrunken widths: every method's row, the LLM-only prefill and the
vision encoder's estimate (the script's own code; only the model widths are made small)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import selection_time  # noqa: E402

# head width 128 as the real one: its M-RoPE sections (16, 24, 24) fill half of it
SMALL_QWEN_TEXT = dict(hidden_size=256, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)
SMALL_QWEN_VISION = dict(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=256)
SMALL_LLAMA = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4)
SMALL_CLIP = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)


@pytest.fixture
def small_widths(monkeypatch):
    for name, widths in [("QWEN_7B_TEXT", SMALL_QWEN_TEXT), ("QWEN_7B_VISION", SMALL_QWEN_VISION),
                         ("VICUNA_7B", SMALL_LLAMA), ("CLIP_L", SMALL_CLIP)]:
        monkeypatch.setattr(selection_time, name, widths)


def table_rows(output: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}


@pytest.mark.parametrize("model, grid", [("qwen2.5-vl-7b", 4), ("llava-1.5-7b", 4)])
def test_every_method_gets_a_row_with_the_encoder_column(small_widths, capsys, model, grid):
    selection_time.main(["--model", model, "--layers", "2", "--grid", str(grid), "--repeats", "1"])
    output = capsys.readouterr().out
    assert "float32" in output.splitlines()[0], "--dtype auto is float32 on a CPU"
    assert "the full vision encoder" in output.splitlines()[0]
    rows = table_rows(output)
    assert set(rows) == set(selection_time.method_options(2, 0.5))
    for method, cells in rows.items():
        assert len(cells) == 7, (method, cells)
        assert all(cell.endswith("%") for cell in cells[4:]), (method, cells)
        kept, total = map(int, cells[2].split(" / "))
        assert total == grid * grid and 0 < kept <= total, (method, cells)


def test_the_encoder_estimate_counts_each_layer_as_the_layers_it_stands_for(small_widths):
    bench = selection_time.BENCH_MODELS["qwen2.5-vl-7b"]
    model = bench.build(2, torch.float32, "cpu", 4)
    pixels = bench.vision_inputs(model, bench.inputs(model, 4))
    tower = selection_time.vision_tower(model)
    with selection_time.Stopwatch([tower, *tower.blocks], torch.device("cpu")) as watch:
        selection_time.prefill_seconds(model, pixels)
    whole, windowed, full = watch.seconds
    assert 0 < windowed + full < whole
    estimate = selection_time.encoder_seconds(model, pixels, (28, 4))
    assert estimate > whole, "32 blocks take longer than the benchmark's 2"


def test_the_llm_prefill_leaves_out_the_tower(small_widths):
    bench = selection_time.BENCH_MODELS["llava-1.5-7b"]
    model = bench.build(2, torch.float32, "cpu", 4)
    inputs = bench.inputs(model, 4)
    tower = selection_time.vision_tower(model)
    seen = []
    handle = tower.register_forward_hook(lambda *_: seen.append(True))
    try:
        llm = selection_time.llm_prefill_seconds(model, inputs)
    finally:
        handle.remove()
    assert seen == [True] and llm > 0
