"""The README's Python quickstart runs as written on a CPU and draws a picture of the kept tokens."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from vlmeval_ivcp.visualize import PART_COLORS

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API on a CPU", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quickstart(), "README.md", "exec"), namespace)
    pruner, vlm = namespace["pruner"], namespace["vlm"]
    assert pruner.last.n_visual == [256] and len(pruner.last.kept[0]) == 128
    assert namespace["answer"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    assert not any(module._forward_pre_hooks or module._forward_hooks for module in vlm.model.modules())
    with Image.open(tmp_path / "kept.png") as picture:
        colours = {color for _, color in picture.convert("RGB").getcolors(maxcolors=1_000_000)}
    assert {PART_COLORS[0], PART_COLORS[2]} <= colours  # the legend's IVC and foreground swatches
