"""tools/make_tables.py on a results tree written by hand: table values, the three formats, and the plots."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

# tools/ is not a package: load the script by its path, as `python tools/make_tables.py` would run it.
_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "make_tables.py"
_spec = importlib.util.spec_from_file_location("make_tables", _SCRIPT)
make_tables = importlib.util.module_from_spec(_spec)
sys.modules["make_tables"] = make_tables  # dataclasses look their module up by name
_spec.loader.exec_module(make_tables)

MODEL = "Qwen2.5-VL-7B-Instruct"


def write_run(root: Path, run: str, method: str, options: dict, scores: dict, rows: list[dict] | None = None) -> None:
    folder = root / MODEL / run
    folder.mkdir(parents=True)
    run_json = {"model": MODEL, "run": run, "method": method, "options": options, "scores": scores}
    (folder / "run.json").write_text(json.dumps(run_json))
    for dataset, report in scores.items():
        (folder / f"{MODEL}_{dataset}_score.json").write_text(json.dumps(report))
    if rows is not None:
        (folder / f"{MODEL}_MMStar.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    row = {"index": 0, "prediction": "A", "visual_tokens": 100, "new_tokens": 1}
    write_run(root, "none", "none", {}, {"MMStar": {"overall": 0.60}, "MME": {"overall": 2240.0}},
              [dict(row, kept_visual_tokens=100, select_seconds=0.0, generate_seconds=0.2)])
    write_run(root, "ivc_prune_r0.5_k16", "ivc_prune", {"ratio": 0.5, "layer": 16},
              {"MMStar": {"overall": 0.58}, "MME": {"overall": 2184.0}},
              [dict(row, index=i, kept_visual_tokens=50 + i, select_seconds=0.002, generate_seconds=0.1)
               for i in range(2)])
    write_run(root, "ivc_prune_r0.25_k16", "ivc_prune", {"ratio": 0.25, "layer": 16},
              {"MMStar": {"overall": 0.50}, "MME": {"overall": 1960.0}})
    write_run(root, "fastv_r0.5_k2", "fastv", {"ratio": 0.5, "layer": 2}, {"MMStar": {"overall": 0.40}})
    return root


def test_the_table_holds_percent_scores_average_and_relative_to_unpruned(results):
    table = make_tables.build_table(make_tables.collect_runs(results))
    assert list(table["method"]) == ["none", "fastv", "ivc_prune", "ivc_prune"]
    assert list(table.columns[:6]) == ["model", "method", "ratio", "layer", "MME", "MMStar"]
    none = table.iloc[0]
    assert none["MME"] == pytest.approx(80.0) and none["MMStar"] == pytest.approx(60.0)
    assert none["Avg"] == pytest.approx(70.0) and none["Rel. (%)"] == pytest.approx(100.0)
    half = table[(table["method"] == "ivc_prune") & (table["ratio"] == 0.5)].iloc[0]
    assert half["MME"] == pytest.approx(78.0) and half["Avg"] == pytest.approx(68.0)
    assert half["Rel. (%)"] == pytest.approx(100 * 68 / 70)
    assert half["kept tokens"] == pytest.approx(50.5)
    assert half["select (ms)"] == pytest.approx(2.0) and half["generate (ms)"] == pytest.approx(100.0)
    fastv = table[table["method"] == "fastv"].iloc[0]
    assert pd.isna(fastv["MME"]) and pd.isna(fastv["Avg"]) and pd.isna(fastv["Rel. (%)"])
    quarter = table[table["ratio"] == 0.25].iloc[0]
    assert pd.isna(quarter["kept tokens"]), "no predictions file: no efficiency numbers"


def test_hallusionbench_prints_aacc_facc_qacc_beside_its_summary(tmp_path):
    # VLMEvalKit reports HallusionBench as aAcc, fAcc and qAcc; `overall` (their mean) is this project's summary.
    report = {"overall": 0.6, "aAcc": 0.75, "fAcc": 0.5, "qAcc": 0.55}
    write_run(tmp_path, "none", "none", {}, {"HallusionBench": report, "MMStar": {"overall": 0.4}})
    table = make_tables.build_table(make_tables.collect_runs(tmp_path))
    row = table.iloc[0]
    assert row["HallusionBench aAcc"] == pytest.approx(75.0) and row["HallusionBench fAcc"] == pytest.approx(50.0)
    assert row["HallusionBench qAcc"] == pytest.approx(55.0)
    assert row["Avg"] == pytest.approx(50.0), "the three figures are shown, not averaged in again"
    assert "HallusionBench qAcc" in make_tables.to_markdown(table)


def test_the_command_writes_markdown_latex_csv_and_one_plot_per_benchmark(results, tmp_path):
    out = tmp_path / "tables"
    assert make_tables.main([str(results), "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    half = "| Qwen2.5-VL-7B-Instruct | ivc_prune | 0.5 | 16 | 78.0 | 58.0 | 68.0 | 97.1 | 50.5 | 2.0 | 100.0 |"
    assert half in markdown
    assert "| Qwen2.5-VL-7B-Instruct | fastv | 0.5 | 2 | - | 40.0 | - | - |" in markdown
    latex = (out / "results.tex").read_text()
    assert latex.startswith("\\begin{tabular}{llrr") and "ivc\\_prune & 0.5 & 16 & 78.0" in latex
    assert "Rel. (\\%)" in latex
    csv = pd.read_csv(out / "results.csv")
    assert csv.shape[0] == 4 and csv.loc[csv["method"] == "none", "Avg"].item() == pytest.approx(70.0)
    for dataset in ("MME", "MMStar"):
        png = out / f"accuracy_vs_ratio_{dataset}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_a_tree_without_runs_and_a_broken_run_json_are_named(tmp_path, capsys):
    assert make_tables.main([str(tmp_path)]) == 2
    assert f"no <model>/<run>/run.json under {tmp_path}" in capsys.readouterr().err
    broken = tmp_path / "M" / "none" / "run.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"M/none/run.json: not a run.json"):
        make_tables.collect_runs(tmp_path)
