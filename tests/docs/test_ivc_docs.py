"""docs/engine.md and docs/methods/ivc_prune.md say what the code does: the budget, the knobs, the deviations."""

from __future__ import annotations

import re
from pathlib import Path

from vlmeval_ivcp.pruning.methods.ivc_prune import OFFICIAL_PRESETS, SCORE_DTYPES, TILED_RULES

REPO = Path(__file__).resolve().parents[2]
ENGINE, IVC = (REPO / "docs" / "engine.md").read_text(), (REPO / "docs" / "methods" / "ivc_prune.md").read_text()


def test_the_budget_is_written_as_the_engine_computes_it():
    # pruning/selection.py: n_keep = max(1, round(ratio * L)); a bare round(ratio·L) would be wrong for tiny images.
    source = (REPO / "vlmeval_ivcp" / "pruning" / "selection.py").read_text()
    assert "max(1, round(cut.ratio * image_index.numel()))" in source
    for text in (ENGINE, IVC):
        budgets = re.findall(r"(.{0,7})round\(ratio ?·", text)
        assert budgets and all(before.endswith("max(1, ") for before in budgets), budgets


def test_the_deviations_name_the_per_image_budget_against_the_first_image_of_row_0():
    deviations = IVC[IVC.index("## Deviations from the release"):]
    assert "first\n    image of batch row 0" in deviations or "first image of batch row 0" in deviations
    assert "own budget" in deviations


def test_every_knob_value_and_preset_is_documented():
    for value in (*TILED_RULES, *SCORE_DTYPES):
        assert f'"{value}"' in IVC, value
    for key in OFFICIAL_PRESETS:
        assert f"| `{key}` |" in IVC, key
