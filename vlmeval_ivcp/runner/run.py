"""Inference and scoring of a run config: every model × grid point × dataset, resumable row by row.

Layout: `<work_dir>/<model>/<run>/` holds, per dataset, `<model>_<dataset>.jsonl` (one line per finished row,
appended and fsynced), `<model>_<dataset>.tsv` (the TSV's columns but `image`, plus `prediction`) and
`<model>_<dataset>_score.json`; and one `run.json` (config, versions, git commit, timings).
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import transformers
from tqdm import tqdm

from .. import __version__
from ..datasets.demo import DEMO_MCQ_NAME, write_demo_mcq
from ..datasets.registry import build_dataset
from ..datasets.tsv import atomic_write_bytes, lmu_root
from ..models.registry import build_model
from .config import RunConfig, RunPoint
from .store import PredictionStore

logger = logging.getLogger(__name__)

# Per-row costs recorded beside each prediction.
ROW_STATS = ("visual_tokens", "kept_visual_tokens", "select_seconds", "generate_seconds", "new_tokens")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def infer_dataset(wrapper: Any, dataset: Any, store: PredictionStore, desc: str) -> dict[Any, dict]:
    """Answer every row not yet in `store`; returns all records by index."""
    done = store.done()
    pending = [position for position, index in enumerate(dataset.data["index"]) if index not in done]
    for position in tqdm(pending, desc=desc, unit="row", disable=not pending):
        index = dataset.data["index"].iloc[position]
        prediction = wrapper.generate(dataset.message(position), dataset=dataset.name)
        stats = wrapper.stats
        record = {"index": index, "prediction": prediction, **{key: getattr(stats, key) for key in ROW_STATS}}
        store.append(record)
        done[index] = record
    return done


def predictions_table(dataset: Any, records: dict[Any, dict]) -> pd.DataFrame:
    table = dataset.data.drop(columns=[c for c in ("image",) if c in dataset.data.columns]).copy()
    for key in ("prediction",) + ROW_STATS:
        table[key] = [records[index][key] for index in table["index"]]
    return table


def run_point(wrapper: Any, model_name: str, point: RunPoint, config: RunConfig, judge: Any = None) -> dict:
    """One grid point over every dataset; returns its summary row."""
    run_dir = Path(config.work_dir) / model_name / point.name
    run_dir.mkdir(parents=True, exist_ok=True)
    wrapper.set_method(point.method, **point.options)
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    kept, total = 0, 0
    for name in config.datasets:
        if name == DEMO_MCQ_NAME:
            write_demo_mcq(config.data_root or lmu_root())
        dataset = build_dataset(name, config.data_root)
        stem = run_dir / f"{model_name}_{name}"
        records = infer_dataset(wrapper, dataset, PredictionStore(f"{stem}.jsonl"), f"{point.name} {name}")
        table = predictions_table(dataset, records)
        atomic_write_bytes(Path(f"{stem}.tsv"), table.to_csv(sep="\t", index=False).encode())
        scores[name] = dataset.evaluate(table, judge=judge)
        _write_json(Path(f"{stem}_score.json"), scores[name])
        kept += int(table["kept_visual_tokens"].sum())
        total += int(table["visual_tokens"].sum())
    summary = {
        "model": model_name,
        "run": point.name,
        "method": point.method,
        "options": point.options,
        "kept_visual_fraction": kept / total if total else None,
        "scores": scores,
        "seconds": time.perf_counter() - started,
    }
    _write_json(
        run_dir / "run.json",
        {
            **summary,
            "config": config.source,
            "versions": {
                "vlmeval_ivcp": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
            "git_commit": _git_commit(),
            "seed": point.options.get("seed", 0),
        },
    )
    return summary


def run(config: RunConfig, judge: Any = None) -> list[dict]:
    """Run every model × grid point; returns one summary per run, in order."""
    summaries = []
    for model in config.models:
        wrapper = build_model(model.name, **model.kwargs)
        for point in config.points:
            summaries.append(run_point(wrapper, model.name, point, config, judge))
    return summaries


def headline(scores: dict[str, Any]) -> float | None:
    """The one number of a dataset's report: `overall` when the family reports one."""
    value = scores.get("overall")
    return float(value) if isinstance(value, (int, float)) else None


def format_table(summaries: list[dict]) -> str:
    """A markdown table: one row per run, one column per dataset's headline score."""
    datasets = list(dict.fromkeys(name for summary in summaries for name in summary["scores"]))
    header = ["model", "method", "ratio", "layer", "kept visual", *datasets, "time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        options = summary["options"]
        kept = summary["kept_visual_fraction"]
        cells = [
            summary["model"],
            summary["method"],
            str(options.get("ratio", "-")),
            str(options.get("layer", "-")),
            f"{kept:.1%}" if kept is not None else "-",
            *(_cell(headline(summary["scores"].get(name, {}))) for name in datasets),
            f"{summary['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
