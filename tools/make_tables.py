"""Paper-style tables and plots from a results tree written by `run.py`.

    python tools/make_tables.py results [--out results/tables]

Reads every `<results>/<model>/<run>/run.json` with the `<model>_<dataset>_score.json` and `<model>_<dataset>.jsonl`
files beside it, and writes to `--out` (default `<results>/tables`):

- `results.md`, `results.tex`, `results.csv`: one row per model × method × ratio × layer (the unpruned `none` run
  first), one column per benchmark's headline score in percent, then `Avg`, `Rel. (%)` (the average relative to the
  same model's `none` run) and, when the predictions record them, the mean kept visual tokens per row and the mean
  selection and generation time per row in milliseconds. HallusionBench's column is this project's summary (the
  mean of aAcc, fAcc and qAcc); the three figures VLMEvalKit reports follow as their own columns, outside `Avg`.
- `accuracy_vs_ratio_<dataset>.png`: headline score against retention ratio, one line per model × method × layer,
  the unpruned score as a dashed line.

See docs/results.md for the results layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# Headlines that are not fractions in [0, 1]: the factor that turns them into percent of the maximum.
PERCENT_FACTOR = {"MME": 100 / 2800, "OCRBench": 100 / 1000}
KEY_COLUMNS = ["model", "method", "ratio", "layer"]
# Figures printed beside a benchmark's headline (as "<dataset> <key>", in percent), not counted in `Avg`.
DETAIL_FIGURES = {"HallusionBench": ("aAcc", "fAcc", "qAcc")}
# Per-row cost in the predictions jsonl -> (table column, scale), shown when recorded.
EFFICIENCY_COLUMNS = {
    "kept_visual_tokens": ("kept tokens", 1),
    "select_seconds": ("select (ms)", 1000),
    "prefill_seconds": ("prefill (ms)", 1000),
    "generate_seconds": ("generate (ms)", 1000),
    "kv_cache_bytes": ("KV (MiB)", 1 / 2**20),
}


@dataclass
class RunResult:
    """One run folder: what ran, its headline score per dataset (percent) and its mean per-row costs."""

    model: str
    method: str
    ratio: float | None
    layer: int | None
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)


def percent(dataset: str, report: dict[str, Any]) -> float | None:
    """A dataset's headline (`overall`) in percent, or `None` when the report has no numeric `overall`."""
    value = report.get("overall")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) * PERCENT_FACTOR.get(dataset, 100.0)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); re-score the run with --mode eval") from None


def read_run(run_json: Path) -> RunResult:
    """Reads one run folder.

    Raises:
        ValueError: `run.json` is not valid JSON or lacks `model`/`method` (the message names the file).
    """
    try:
        info = json.loads(run_json.read_text(encoding="utf-8"))
        model, method, options = info["model"], info["method"], info.get("options", {})
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{run_json}: not a run.json written by run.py ({error!r})") from None
    result = RunResult(model, method, options.get("ratio"), options.get("layer"))
    prefix = f"{model}_"
    for score_file in sorted(run_json.parent.glob(f"{prefix}*_score.json")):
        dataset = score_file.name[len(prefix) : -len("_score.json")]
        report = _read_json(score_file)
        value = percent(dataset, report)
        if value is not None:
            result.scores[dataset] = value
        for key in DETAIL_FIGURES.get(dataset, ()):
            detail = percent(dataset, {"overall": report.get(key)})
            if detail is not None:
                result.details[f"{dataset} {key}"] = detail
    rows = [
        json.loads(line)
        for predictions in sorted(run_json.parent.glob(f"{prefix}*.jsonl"))
        if ".rank" not in predictions.name  # unmerged shards of an unfinished launch
        for line in predictions.read_text(encoding="utf-8").splitlines()
    ]
    for key in EFFICIENCY_COLUMNS:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if values:
            result.costs[key] = sum(values) / len(values)
    return result


def collect_runs(root: Path) -> list[RunResult]:
    """Every `<root>/<model>/<run>/run.json`.

    Raises:
        FileNotFoundError: `root` holds no run.json.
    """
    files = sorted(root.glob("*/*/run.json"))
    if not files:
        raise FileNotFoundError(f"no <model>/<run>/run.json under {root}")
    return [read_run(path) for path in files]


def _sort_key(run: RunResult) -> tuple:
    return (run.model, run.method != "none", run.method, run.ratio or 0.0, run.layer or 0)


def build_table(runs: list[RunResult]) -> pd.DataFrame:
    """The results table: one row per run, ordered model, then `none` first, then method, ratio, layer.

    `Avg` is the mean over the benchmarks, missing when the run lacks one of them; `Rel. (%)` is `Avg` over the
    `Avg` of the same model's `none` run, missing when there is no such run.
    """
    runs = sorted(runs, key=_sort_key)
    datasets = sorted({name for run in runs for name in run.scores})
    details = sorted({name for run in runs for name in run.details})
    baseline = {run.model: run for run in runs if run.method == "none"}
    records = []
    for run in runs:
        record: dict[str, Any] = {"model": run.model, "method": run.method, "ratio": run.ratio, "layer": run.layer}
        record.update({name: run.scores.get(name) for name in datasets})
        record.update({name: run.details.get(name) for name in details})
        record["Avg"] = _average(run, datasets)
        unpruned = _average(baseline[run.model], datasets) if run.model in baseline else None
        record["Rel. (%)"] = 100 * record["Avg"] / unpruned if record["Avg"] is not None and unpruned else None
        for key, (column, scale) in EFFICIENCY_COLUMNS.items():
            if key in run.costs:
                record[column] = run.costs[key] * scale
        records.append(record)
    table = pd.DataFrame.from_records(records)
    table["layer"] = table["layer"].astype("Int64")  # a layer stays 16, not 16.0, beside runs without one
    return table


def _average(run: RunResult, datasets: list[str]) -> float | None:
    if not datasets or any(name not in run.scores for name in datasets):
        return None
    return sum(run.scores[name] for name in datasets) / len(datasets)


def _text(value: Any) -> str:
    if value is None or pd.isna(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _text_rows(table: pd.DataFrame) -> list[list[str]]:
    # Ratio and layer keep their own format (0.25, 16): they name a setting, they are not measurements.
    return [
        [str(value) if column in ("ratio", "layer") and pd.notna(value) else _text(value)
         for column, value in zip(table.columns, row)]
        for row in table.astype(object).itertuples(index=False)
    ]


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _text_rows(table)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    """The table as a LaTeX `tabular` (booktabs rules), text columns left-aligned and numbers right-aligned."""
    def escape(text: str) -> str:
        return "".join("\\" + char if char in "&%$#_{}" else char for char in text)

    align = "".join("l" if column in ("model", "method") else "r" for column in table.columns)
    header = " & ".join(map(escape, table.columns)) + " \\\\"
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", header, "\\midrule"]
    lines += [" & ".join(map(escape, cells)) + " \\\\" for cells in _text_rows(table)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_ratio(table: pd.DataFrame, dataset: str, path: Path) -> None:
    """Writes the headline score of `dataset` against the retention ratio as a PNG."""
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for (model, method, layer), group in table[table["ratio"].notna()].groupby(
        ["model", "method", "layer"], dropna=False, sort=True
    ):
        group = group.dropna(subset=[dataset]).sort_values("ratio")
        if len(group):
            label = f"{model} {method}" + ("" if pd.isna(layer) else f" K={int(layer)}")
            axes.plot(group["ratio"], group[dataset], marker="o", label=label)
    for _, row in table[table["method"] == "none"].dropna(subset=[dataset]).iterrows():
        axes.axhline(row[dataset], linestyle="--", color="grey", label=f"{row['model']} unpruned")
    axes.set_xlabel("retention ratio")
    axes.set_ylabel(f"{dataset} (%)")
    axes.set_title(dataset)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def write_outputs(table: pd.DataFrame, out: Path) -> list[Path]:
    """Writes the markdown, LaTeX and CSV tables and one plot per benchmark into `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.md", out / "results.tex", out / "results.csv"]
    written[0].write_text(to_markdown(table), encoding="utf-8")
    written[1].write_text(to_latex(table), encoding="utf-8")
    table.to_csv(written[2], index=False)
    not_datasets = {*KEY_COLUMNS, "Avg", "Rel. (%)", *(column for column, _ in EFFICIENCY_COLUMNS.values())}
    datasets = [c for c in table.columns if c not in not_datasets]
    for dataset in datasets:
        written.append(out / f"accuracy_vs_ratio_{dataset}.png")
        plot_accuracy_vs_ratio(table, dataset, written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tables and plots from a run.py results tree.")
    parser.add_argument("results", type=Path, help="the work_dir of the runs (holds <model>/<run>/run.json)")
    parser.add_argument("--out", type=Path, help="output folder (default: <results>/tables)")
    args = parser.parse_args(argv)
    try:
        table = build_table(collect_runs(args.results))
    except (FileNotFoundError, ValueError) as error:
        print(f"make_tables.py: error: {error}", file=sys.stderr)
        return 2
    for path in write_outputs(table, args.out or args.results / "tables"):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
