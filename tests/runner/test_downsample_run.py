"""`downsample` through the harness on real tiny models: fewer visual tokens than the unpruned run, the achieved
count and the full-resolution count recorded per row, shares and FLOPs against the full resolution; refused on
LLaVA-1.5 before any model loads; validated like every method."""

from __future__ import annotations

import json

import pytest
import yaml

from support.tiny import tiny_wrapper
from vlmeval_ivcp.runner.cli import build_parser, config_from_args, main
from vlmeval_ivcp.runner.config import ConfigError, parse_config

BASE = {"models": [{"name": "TinyQwen2.5-VL"}], "datasets": ["DemoMCQ"]}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_downsampled_runs_make_fewer_visual_tokens_and_record_the_full_resolution(tmp_path, capsys):
    config = {
        "work_dir": str(tmp_path / "results"),
        "data_root": str(tmp_path / "data"),
        "models": [
            # Pictures at their own size (400 to 576 tokens), not the tiny default budget of 64; two rows at a time.
            {"name": "TinyQwen2.5-VL", "kwargs": {"max_new_tokens": 1, "max_pixels": 576 * 28 * 28}, "batch_size": 2},
            # 112-pixel tiles of 16 tokens, up to 12 tiles and a thumbnail: the square DemoMCQ pictures take 3 x 3 + 1.
            {"name": "TinyInternVL", "kwargs": {"max_new_tokens": 1}},
        ],
        "datasets": ["DemoMCQ"],
        "methods": [{"method": "none"}, {"method": "downsample", "ratio": 0.25},
                    {"method": "downsample", "ratio": 0.01}],
    }
    path = tmp_path / "downsample.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--mode", "infer"]) == 0
    table = capsys.readouterr().out
    root = tmp_path / "results"

    qwen = {run: _rows(root / "TinyQwen2.5-VL" / run / "TinyQwen2.5-VL_DemoMCQ.jsonl")
            for run in ("none", "downsample_r0.25", "downsample_r0.01")}
    for full, half, tenth in zip(*qwen.values(), strict=True):
        assert full["visual_tokens"] == full["full_visual_tokens"] == full["kept_visual_tokens"] >= 400
        for row in (half, tenth):
            # The achieved count is what the model made and kept; the full-resolution count is the unpruned run's.
            assert row["kept_visual_tokens"] == row["visual_tokens"] < row["full_visual_tokens"]
            assert row["full_visual_tokens"] == full["visual_tokens"]
            # Efficiency against the full-resolution run: its FLOPs are the "unpruned" ones of the downsampled row.
            assert row["prefill_flops_unpruned"] == full["prefill_flops"] > row["prefill_flops"]
        # Both sides halved, rounded to 28-pixel cells: about a quarter of the tokens (22% to 28% here).
        assert 0.22 <= half["visual_tokens"] / full["visual_tokens"] <= 0.28
        assert tenth["visual_tokens"] == 4, "a tenth of each side falls under min_pixels (4 tokens)"
    share = sum(row["visual_tokens"] for row in qwen["downsample_r0.25"]) / sum(
        row["visual_tokens"] for row in qwen["none"])
    assert "| TinyQwen2.5-VL | downsample | 0.25 | - |" in table and f"({share:.1%})" in table

    internvl = {run: _rows(root / "TinyInternVL" / run / "TinyInternVL_DemoMCQ.jsonl")
                for run in ("none", "downsample_r0.25", "downsample_r0.01")}
    for full, half, tenth in zip(*internvl.values(), strict=True):
        assert full["visual_tokens"] == 10 * 16, "3 x 3 tiles and the thumbnail"
        # The tiling is coarse: halved (200 to 288 pixels) the pictures still take 3 x 3 tiles; a tenth, one tile.
        assert (half["visual_tokens"], half["full_visual_tokens"]) == (160, 160)
        assert (tenth["visual_tokens"], tenth["full_visual_tokens"]) == (16, 160)
    summary = json.loads((root / "TinyInternVL" / "downsample_r0.01" / "run.json").read_text())
    assert summary["kept_visual_fraction"] == pytest.approx(16 / 160)
    assert summary["options"] == {"ratio": 0.01}


def test_llava_1_5_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("vlmeval_ivcp.runner.run.build_model", no_model)
    argv = ["--model", "TinyLLaVA-1.5", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--method", "downsample",
            "--ratio", "0.25", "--work-dir", str(tmp_path / "results")]
    assert main(argv) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0] == (
        "run.py: error: method downsample_r0.25 on model TinyLLaVA-1.5: downsample changes the pictures' size, but "
        "Llava makes 576 visual tokens whatever the size: the baseline does not exist there (N/A, "
        "docs/methods/downsample.md)"
    )
    assert len(error) == 2 and "1 problem(s) found before loading any model" in error[1]
    assert not (tmp_path / "results").exists()


def test_the_llava_wrapper_refuses_it_too():
    wrapper = tiny_wrapper(family="llava")
    with pytest.raises(ValueError, match=r"Llava makes 576 visual tokens whatever the size"):
        wrapper.set_method("downsample", ratio=0.25)
    assert wrapper.pruner is None and wrapper.input_method is None


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"method": "downsample", "ratio": 0.5}, r"x.methods\[0\]: ratio 0.5 is not an official downsampling label"),
        ({"method": "downsample", "preset": "fine"}, r"x.methods\[0\]: preset must be one of"),
        ({"method": "downsample", "ratio": 0.25, "layer": 2}, r"x.methods\[0\]: .*layer must be 0"),
        ({"method": "downsample", "factor": 2}, r"x.methods\[0\].factor: unknown option of method 'downsample'"),
    ],
)
def test_bad_downsample_entries_are_refused_with_their_path(entry, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(dict(BASE, methods=[entry]), "x")


def test_runs_are_named_by_label_and_preset_from_a_config_or_the_command_line():
    raw = dict(BASE, methods=[{"method": "downsample", "ratio": [0.25, 0.1111]},
                              {"method": "downsample", "ratio": [0.5, 0.3333], "preset": "continuous"}])
    names = [point.name for point in parse_config(raw).points]
    assert names == ["downsample_r0.25", "downsample_r0.1111", "downsample_r0.5_presetcontinuous",
                     "downsample_r0.3333_presetcontinuous"]
    args = build_parser().parse_args(["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--method", "downsample",
                                      "--ratio", "0.2222", "--method-args", "preset=continuous,jpeg=false"])
    assert [point.name for point in config_from_args(args).points] == ["downsample_r0.2222_jpegFalse_presetcontinuous"]
