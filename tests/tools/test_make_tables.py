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
    assert half["kept tokens"] == pytest.approx(50.5) and half["kept (%)"] == pytest.approx(50.5)
    assert half["select (ms)"] == pytest.approx(2.0) and half["generate (ms)"] == pytest.approx(100.0)
    fastv = table[table["method"] == "fastv"].iloc[0]
    assert pd.isna(fastv["MME"]) and pd.isna(fastv["Avg"]) and pd.isna(fastv["Rel. (%)"])
    quarter = table[table["ratio"] == 0.25].iloc[0]
    assert pd.isna(quarter["kept tokens"]), "no predictions file: no efficiency numbers"


def test_a_run_with_compact_positions_is_its_own_row_named_so(tmp_path):
    root = tmp_path / "results"
    write_run(root, "cdpruner_r0.5_k0", "cdpruner", {"ratio": 0.5, "layer": 0}, {"MMStar": {"overall": 0.5}})
    write_run(root, "cdpruner_r0.5_k0_positionscompact", "cdpruner", {"ratio": 0.5, "layer": 0, "positions": "compact"},
              {"MMStar": {"overall": 0.55}})
    table = make_tables.build_table(make_tables.collect_runs(root))
    assert list(table["method"]) == ["cdpruner", "cdpruner (compact positions)"]
    assert list(table["MMStar"]) == pytest.approx([50.0, 55.0])


def test_hallusionbench_prints_aacc_facc_qacc_beside_its_summary(tmp_path):
    # VLMEvalKit reports HallusionBench as aAcc, fAcc and qAcc; `overall` (their mean) is this project's summary.
    report = {"overall": 0.6, "aAcc": 0.75, "fAcc": 0.5, "qAcc": 0.55}
    write_run(tmp_path, "none", "none", {}, {"HallusionBench": report, "MMStar": {"overall": 0.4}})
    table = make_tables.build_table(make_tables.collect_runs(tmp_path))
    row = table.iloc[0]
    assert row["HallusionBench aAcc"] == pytest.approx(75.0) and row["HallusionBench fAcc"] == pytest.approx(50.0)
    assert row["HallusionBench qAcc"] == pytest.approx(55.0)
    assert row["Avg"] == pytest.approx(50.0), "the three figures are shown, not averaged in again"
    assert "HallusionBench qAcc" in make_tables.render(table, "markdown")


def cells(markdown: str, first: str) -> list[str]:
    """The cells of the markdown row whose first cells are `first`, stripped."""
    for line in markdown.splitlines():
        row = [cell.strip() for cell in line.strip("|").split("|")]
        if row[: len(first.split())] == first.split():
            return row
    raise AssertionError(f"no row {first!r} in\n{markdown}")


def test_the_command_writes_markdown_latex_csv_and_the_plots_of_each_model(results, tmp_path):
    out = tmp_path / "tables"
    assert make_tables.main([str(results), "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    # Best pruned values are bold per column (fastv has no MME, so ivc_prune's 78.0 is alone and still the best).
    half = ["Qwen2.5-VL-7B-Instruct", "ivc_prune", "0.5", "16", "**78.0**", "**58.0**", "**68.0**", "**97.1**",
            "50.5", "50.5", "2.0", "100.0"]
    assert cells(markdown, "Qwen2.5-VL-7B-Instruct ivc_prune 0.5") == half
    assert cells(markdown, "Qwen2.5-VL-7B-Instruct fastv")[:8] == [
        "Qwen2.5-VL-7B-Instruct", "fastv", "0.5", "2", "-", "40.0", "-", "-"]
    assert cells(markdown, "Qwen2.5-VL-7B-Instruct none")[4] == "80.0", "the unpruned run is never marked"
    latex = (out / "results.tex").read_text()
    assert latex.startswith("\\begin{tabular}{llrr") and "\\toprule" in latex and "\\bottomrule" in latex
    assert "ivc\\_prune & 0.5 & 16 & \\bfseries 78.0" in latex and "Rel. (\\%)" in latex
    csv = pd.read_csv(out / "results.csv")
    assert csv.shape[0] == 4 and csv.loc[csv["method"] == "none", "Avg"].item() == pytest.approx(70.0)
    for suffix in ("ratio", "tokens"):
        png = out / f"{MODEL}_vs_{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert not (out / f"{MODEL}_vs_tflops.png").exists(), "no run records its FLOPs"


def test_loyalty_flops_kv_and_hallusionbench_parts_are_columns(tmp_path):
    root = tmp_path / "results"
    row = {"prediction": "A", "visual_tokens": 100, "new_tokens": 1, "select_seconds": 0.0, "generate_seconds": 0.1,
           "prefill_seconds": 0.05, "prefill_flops_unpruned": 4e12}
    hallusion = {"overall": 0.5, "aAcc": 0.7, "fAcc": 0.4, "qAcc": 0.4}
    write_run(root, "none", "none", {}, {"MMStar": {"overall": 0.6}, "HallusionBench": hallusion},
              [dict(row, index=0, kept_visual_tokens=100, prefill_flops=4e12, kv_cache_bytes=8 * 2**20)])
    for run, layer, kept, flops, loyal in (("ivc_prune_r0.5_k2", 2, 50, 2.2e12, 0.9),
                                           ("ivc_prune_r0.5_k0", 0, 50, 2e12, 0.8)):
        scores = {"MMStar": {"overall": 0.58, "loyalty": {"loyalty": loyal}},
                  "HallusionBench": dict(hallusion, aAcc=0.6, loyalty={"loyalty": loyal - 0.1})}
        write_run(root, run, "ivc_prune", {"ratio": 0.5, "layer": layer}, scores,
                  [dict(row, index=0, kept_visual_tokens=kept, prefill_flops=flops, kv_cache_bytes=4 * 2**20)])
    table = make_tables.build_table(make_tables.collect_runs(root))
    assert list(table.columns[4:8]) == ["HallusionBench", "HallusionBench aAcc", "HallusionBench fAcc",
                                        "HallusionBench qAcc"]
    k2 = table[table["layer"] == 2].iloc[0]
    assert k2["HallusionBench aAcc"] == pytest.approx(60.0) and k2["loyalty (%)"] == pytest.approx(85.0)
    assert k2["prefill FLOPs ×"] == pytest.approx(0.55) and k2["KV (MiB)"] == pytest.approx(4.0)
    assert k2["prefill TFLOPs"] == pytest.approx(2.2)
    assert pd.isna(table[table["method"] == "none"].iloc[0]["loyalty (%)"])
    markdown = make_tables.render(table, "markdown")
    header = cells(markdown, "model method")
    k0 = dict(zip(header, cells(markdown, "Qwen2.5-VL-7B-Instruct ivc_prune 0.5 0")))
    k2 = dict(zip(header, cells(markdown, "Qwen2.5-VL-7B-Instruct ivc_prune 0.5 2")))
    assert k0["prefill FLOPs ×"] == "**0.50**" and k0["prefill TFLOPs"] == "**2.0**"
    assert k2["loyalty (%)"] == "**85.0**"
    assert k0["KV (MiB)"] == k2["KV (MiB)"] == "4.0" and k0["MMStar"] == "58.0", "a tie of every pruned run: no mark"
    out = tmp_path / "tables"
    assert make_tables.main([str(root), "--out", str(out)]) == 0
    assert (out / f"{MODEL}_vs_tflops.png").stat().st_size > 1000


def test_a_tree_without_runs_and_a_broken_run_json_are_named(tmp_path, capsys):
    assert make_tables.main([str(tmp_path)]) == 2
    assert f"no <model>/<run>/run.json under {tmp_path}" in capsys.readouterr().err
    broken = tmp_path / "M" / "none" / "run.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"M/none/run.json: not a run.json"):
        make_tables.collect_runs(tmp_path)


def test_a_downsample_row_shows_its_achieved_share_of_the_full_resolution_tokens_beside_its_label(tmp_path):
    """`downsample` keeps every token of its smaller pictures: `kept (%)` is achieved / full-resolution tokens."""
    rows = [{"index": i, "prediction": "A", "visual_tokens": achieved, "kept_visual_tokens": achieved,
             "full_visual_tokens": full, "prefill_flops": 1e12, "prefill_flops_unpruned": 4e12}
            for i, (achieved, full) in enumerate([(30, 100), (20, 100)])]
    write_run(tmp_path, "downsample_r0.25", "downsample", {"ratio": 0.25}, {"MMStar": {"overall": 0.5}}, rows)
    row = make_tables.build_table(make_tables.collect_runs(tmp_path)).iloc[0]
    assert (row["ratio"], row["kept tokens"], row["kept (%)"]) == (0.25, 25.0, pytest.approx(25.0))
    assert row["prefill FLOPs ×"] == pytest.approx(0.25)
