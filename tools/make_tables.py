"""Paper-style tables and plots from a results tree written by `run.py`.

    python tools/make_tables.py results [--out results/tables]

Reads every `<results>/<model>/<run>/run.json` with the `<model>_<dataset>_score.json` and `<model>_<dataset>.jsonl`
files beside it, and writes to `--out` (default `<results>/tables`):

- `results.md`, `results.tex`, `results.csv`: one row per model × method × ratio × layer (the unpruned `none` run
  first; a run with renumbered positions, `positions: compact`, is the method named with the suffix
  `(compact positions)`), one column per benchmark's headline score in percent (HallusionBench also with its aAcc, fAcc and qAcc),
  then `Avg`, `Rel. (%)` (the average relative to the same model's `none` run), `loyalty (%)` (agreement with the
  unpruned answers, mean over the benchmarks) and, when the predictions record them, the mean kept visual tokens per
  row, `kept (%)` (kept of the full-resolution visual tokens: a `downsample` run's achieved share beside its
  label), `prefill FLOPs ×` (of the unpruned prefill), prefill TFLOPs and KV-cache MiB per row, and the mean selection,
  prefill and generation time per row in milliseconds. Per model and column, the best pruned value is bold (the
  highest score, the lowest cost). The markdown and LaTeX come from one writer (`render`).
- `<model>_vs_ratio.png`, `<model>_vs_tokens.png`, `<model>_vs_tflops.png`: the headline score against the
  retention ratio, the kept visual tokens and the prefill TFLOPs, one panel per benchmark plus one averaged over
  the benchmarks; one colour per method, one line style per layer, the unpruned run as a black star and a dashed
  line.

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
# The metric each headline is (docs/datasets.md), for the plots' y axes; accuracy otherwise.
METRICS = {
    "MME": "perception + cognition (% of 2800)",
    "POPE": "F1 (%)",
    "HallusionBench": "mean of aAcc, fAcc, qAcc (%)",
    "TextVQA_VAL": "VQA score (%)",
    "ChartQA_TEST": "relaxed accuracy (%)",
    "DocVQA_VAL": "ANLS (%)",
    "InfoVQA_VAL": "ANLS (%)",
    "GQA_TestDev_Balanced": "exact match (%)",
    "OCRBench": "score (% of 1000)",
    "MMVet": "judge score (%)",
    "LLaVABench": "relative score (%)",
}
# Reports whose parts are shown beside the headline: dataset -> keys of its score.json (fractions).
DETAILS = {"HallusionBench": ("aAcc", "fAcc", "qAcc")}
KEY_COLUMNS = ["model", "method", "ratio", "layer"]
# Per-row cost in the predictions jsonl -> (table column, scale), shown when recorded.
EFFICIENCY_COLUMNS = {
    "kept_visual_tokens": ("kept tokens", 1),
    "select_seconds": ("select (ms)", 1000),
    "prefill_seconds": ("prefill (ms)", 1000),
    "generate_seconds": ("generate (ms)", 1000),
    "kv_cache_bytes": ("KV (MiB)", 1 / 2**20),
    "prefill_flops": ("prefill TFLOPs", 1e-12),
}
FLOPS_RATIO = "prefill FLOPs ×"
KEPT_SHARE = "kept (%)"
LOYALTY = "loyalty (%)"
# Columns where less is better; the other measured columns are scores (more is better), `kept tokens` is neither.
LOWER_IS_BETTER = {
    FLOPS_RATIO, *(column for key, (column, _) in EFFICIENCY_COLUMNS.items() if key != "kept_visual_tokens")
}
NOT_MARKED = {*KEY_COLUMNS, "kept tokens", KEPT_SHARE}


@dataclass
class RunResult:
    """One run folder: what ran, its headline score per dataset (percent) and its mean per-row costs."""

    model: str
    method: str
    ratio: float | None
    layer: int | None
    scores: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)
    loyalty: float | None = None


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
    if options.get("positions", "original") != "original":  # the same method and budget, other position ids
        method = f"{method} ({options['positions']} positions)"
    result = RunResult(model, method, options.get("ratio"), options.get("layer"))
    prefix = f"{model}_"
    loyalties = []
    for score_file in sorted(run_json.parent.glob(f"{prefix}*_score.json")):
        dataset = score_file.name[len(prefix) : -len("_score.json")]
        report = _read_json(score_file)
        value = percent(dataset, report)
        if value is not None:
            result.scores[dataset] = value
        for key in DETAILS.get(dataset, ()):
            if isinstance(report.get(key), (int, float)):
                result.details[f"{dataset} {key}"] = 100 * float(report[key])
        agreement = report.get("loyalty")
        if isinstance(agreement, dict) and isinstance(agreement.get("loyalty"), (int, float)):
            loyalties.append(100 * float(agreement["loyalty"]))
    result.loyalty = sum(loyalties) / len(loyalties) if loyalties else None
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
    # Of the unchanged pictures' tokens (recorded as `full_visual_tokens`; older rows: their `visual_tokens`).
    shares = [(row["kept_visual_tokens"], row.get("full_visual_tokens") or row.get("visual_tokens")) for row in rows
              if isinstance(row.get("kept_visual_tokens"), (int, float))]
    if shares and all(full for _, full in shares):
        result.costs["kept_share"] = sum(kept for kept, _ in shares) / sum(full for _, full in shares)
    pairs = [(row["prefill_flops"], row["prefill_flops_unpruned"]) for row in rows
             if isinstance(row.get("prefill_flops"), (int, float)) and row.get("prefill_flops_unpruned")]
    if pairs:  # a ratio of sums: long prompts weigh as much as they cost
        result.costs["flops_ratio"] = sum(done for done, _ in pairs) / sum(full for _, full in pairs)
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
    details = sorted({column for run in runs for column in run.details})
    baseline = {run.model: run for run in runs if run.method == "none"}
    records = []
    for run in runs:
        record: dict[str, Any] = {"model": run.model, "method": run.method, "ratio": run.ratio, "layer": run.layer}
        for name in datasets:
            record[name] = run.scores.get(name)
            record.update({column: run.details.get(column) for column in details if column.startswith(f"{name} ")})
        record["Avg"] = _average(run, datasets)
        unpruned = _average(baseline[run.model], datasets) if run.model in baseline else None
        record["Rel. (%)"] = 100 * record["Avg"] / unpruned if record["Avg"] is not None and unpruned else None
        record[LOYALTY] = run.loyalty
        for key, (column, scale) in EFFICIENCY_COLUMNS.items():
            if key in run.costs:
                record[column] = run.costs[key] * scale
            if key == "kept_visual_tokens" and "kept_share" in run.costs:
                record[KEPT_SHARE] = 100 * run.costs["kept_share"]
            if key == "kept_visual_tokens" and "flops_ratio" in run.costs:
                record[FLOPS_RATIO] = run.costs["flops_ratio"]
        records.append(record)
    table = pd.DataFrame.from_records(records)
    table["layer"] = table["layer"].astype("Int64")  # a layer stays 16, not 16.0, beside runs without one
    if table[LOYALTY].isna().all():
        table = table.drop(columns=[LOYALTY])
    return table


def _average(run: RunResult, datasets: list[str]) -> float | None:
    if not datasets or any(name not in run.scores for name in datasets):
        return None
    return sum(run.scores[name] for name in datasets) / len(datasets)


def _text(column: str, value: Any) -> str:
    if value is None or pd.isna(value):
        return "-"
    if column in ("ratio", "layer"):  # they name a setting, they are not measurements: 0.25, 16
        return str(value)
    if column == FLOPS_RATIO:
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def best_pruned(table: pd.DataFrame) -> pd.DataFrame:
    """True where a cell holds the best value of its column among the same model's pruned runs (ties for the best
    are all marked)."""
    best = pd.DataFrame(False, index=table.index, columns=table.columns)
    for _, group in table[table["method"] != "none"].groupby("model", sort=False):
        for column in table.columns:
            if column in NOT_MARKED or not pd.api.types.is_numeric_dtype(table[column]):
                continue
            values = group[column].dropna()
            if values.nunique() > 1:  # a column where every pruned run ties marks nothing
                target = values.min() if column in LOWER_IS_BETTER else values.max()
                best.loc[values.index[values == target], column] = True
    return best


def render(table: pd.DataFrame, fmt: str) -> str:
    """The table as GitHub markdown (`fmt="markdown"`, best values in `**bold**`) or a booktabs LaTeX `tabular`
    (`fmt="latex"`, best values in `\bfseries`), from the same cells."""
    cells = pd.DataFrame({column: [_text(column, value) for value in table[column].astype(object)]
                          for column in table.columns})
    best = best_pruned(table)
    if fmt == "markdown":
        marked = cells.where(~best, "**" + cells + "**")
        return marked.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"
    align = "".join("l" if column in ("model", "method") else "r" for column in table.columns)
    styler = cells.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    styler = styler.apply(lambda _: best.replace({True: "font-weight: bold;", False: ""}), axis=None)
    return styler.to_latex(column_format=align, hrules=True, convert_css=True)


# The x axes of the plots: table column (None: the ratio of the runs), axis label, file suffix.
X_AXES = [("ratio", "retention ratio (fraction of visual tokens kept)", "ratio"),
          ("kept tokens", "kept visual tokens per sample", "tokens"),
          ("prefill TFLOPs", "prefill TFLOPs per sample", "tflops")]
LINE_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]


def _layer_label(layer: Any) -> str:
    if pd.isna(layer):
        return "default layer"
    return "before LLM" if int(layer) == 0 else f"K={int(layer)}"


def plot_model(table: pd.DataFrame, model: str, datasets: list[str], x: str, x_label: str, path: Path) -> bool:
    """One panel per benchmark and one of their average, headline against `x`; False when nothing has an `x`."""
    rows = table[table["model"] == model].copy()
    if x == "ratio":
        rows.loc[rows["method"] == "none", "ratio"] = 1.0  # the unpruned run keeps every token
    if x not in rows.columns or rows[x].isna().all():
        return False
    panels = [*datasets, "Avg"] if len(datasets) > 1 else datasets
    columns = min(3, len(panels))
    lines = (len(panels) + columns - 1) // columns
    figure, axes_grid = plt.subplots(lines, columns, figsize=(4.2 * columns + 2.2, 3.3 * lines), squeeze=False)
    methods = sorted(set(rows.loc[rows["method"] != "none", "method"]))
    colours = {method: plt.get_cmap("tab10")(position % 10) for position, method in enumerate(methods)}
    layers = sorted(set(rows.loc[rows["method"] != "none", "layer"].dropna().astype(int)))
    styles = {layer: LINE_STYLES[position % len(LINE_STYLES)] for position, layer in enumerate(layers)}
    handles: dict[str, Any] = {}
    for axes, panel in zip(axes_grid.flat, panels):
        pruned = rows[rows["method"] != "none"].assign(_order=lambda frame: frame["layer"].fillna(-1))
        for (method, _, layer), group in pruned.groupby(["method", "_order", "layer"], dropna=False):
            group = group.dropna(subset=[x, panel]).sort_values(x)
            if len(group):
                style = "-" if pd.isna(layer) else styles[int(layer)]
                label = f"{method}, {_layer_label(layer)}"
                (handles[label],) = axes.plot(group[x], group[panel], marker="o", markersize=4, color=colours[method],
                                              linestyle=style, label=label)
        for _, row in rows[rows["method"] == "none"].dropna(subset=[panel]).iterrows():
            axes.axhline(row[panel], color="black", linestyle=(0, (2, 2)), linewidth=1)
            if pd.notna(row[x]):
                (handles["unpruned"],) = axes.plot([row[x]], [row[panel]], marker="*", markersize=13, color="black",
                                                   linestyle="none", label="unpruned")
        average = f"average of {len(datasets)} benchmarks"
        axes.set_title(average if panel == "Avg" else panel, fontsize="medium")
        axes.set_ylabel("mean score (%)" if panel == "Avg" else f"{panel} {METRICS.get(panel, 'accuracy (%)')}",
                        fontsize="small")
        axes.set_xlabel(x_label, fontsize="small")
        axes.grid(alpha=0.3)
    for axes in list(axes_grid.flat)[len(panels):]:
        axes.set_visible(False)
    order = list(handles)  # unpruned first, then by method and layer, in the order drawn
    order.sort(key=lambda label: label != "unpruned")
    figure.legend([handles[label] for label in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  fontsize="small", frameon=False)
    figure.suptitle(model)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return True


def write_outputs(table: pd.DataFrame, out: Path) -> list[Path]:
    """Writes the markdown, LaTeX and CSV tables and the plots of each model into `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.md", out / "results.tex", out / "results.csv"]
    written[0].write_text(render(table, "markdown"), encoding="utf-8")
    written[1].write_text(render(table, "latex"), encoding="utf-8")
    table.to_csv(written[2], index=False)
    not_datasets = {*KEY_COLUMNS, "Avg", "Rel. (%)", LOYALTY, FLOPS_RATIO,
                    *(column for column, _ in EFFICIENCY_COLUMNS.values())}
    datasets = [c for c in table.columns if c not in not_datasets and " " not in c]
    for model in dict.fromkeys(table["model"]):
        for x, label, suffix in X_AXES:
            path = out / f"{model}_vs_{suffix}.png"
            if plot_model(table, model, datasets, x, label, path):
                written.append(path)
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
