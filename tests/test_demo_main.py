"""`make demo` (python -m vlmeval_ivcp.demo): the table, then one picture per pruning method, and where they are."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image
from support.runs import write_shipped_demo

from vlmeval_ivcp.demo import main, pictured_points
from vlmeval_ivcp.runner.config import parse_config
from vlmeval_ivcp.visualize import PART_COLORS

REPO = Path(__file__).resolve().parents[1]


def test_one_picture_per_method_at_ratio_half_when_there_is_one():
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["methods"] = [{"method": "none"}, {"method": "random", "ratio": [0.25, 0.5], "layer": 2},
                      {"method": "fastv", "ratio": 0.25, "layer": 2}]
    points = pictured_points(parse_config(raw, "demo"))
    assert [(point.method, point.options["ratio"]) for point in points] == [("random", 0.5), ("fastv", 0.25)]


def test_the_demo_prints_its_table_and_draws_each_method(tmp_path, capsys):
    path = write_shipped_demo(tmp_path, [{"method": "none"}, {"method": "ivc_prune", "ratio": 0.5, "layer": 2}])

    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| TinyQwen2.5-VL | ivc_prune | 0.5 | 2 |" in out and "random weights" in out
    picture = tmp_path / "results" / "pictures" / "ivc_prune_r0.5_k2.png"
    assert f"  {picture}\n" in out
    assert f"python tools/make_tables.py {tmp_path / 'results'}" in out
    with Image.open(picture) as image:
        colours = {color for _, color in image.convert("RGB").getcolors(maxcolors=1_000_000)}
    assert {PART_COLORS[0], PART_COLORS[2]} <= colours  # IVC tokens and foreground in their own colours
