"""Inference and scoring of a run config: every model × grid point × dataset, resumable row by row.

Layout: `<work_dir>/<model>/<run>/` holds, per dataset, `<model>_<dataset>.jsonl` (one line per finished row,
appended and fsynced), `<model>_<dataset>.tsv` (the TSV's columns but `image`, plus `prediction` and the row costs)
and `<model>_<dataset>_score.json`; and one `run.json` (config, versions, git commit, timings). Under torchrun,
rank r first appends to `<model>_<dataset>.rank<r>.jsonl`; rank 0 merges those and scores. See docs/results.md.
"""

from __future__ import annotations

import glob
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
from ..datasets.registry import dataset_class
from ..evaluation.loyalty import loyalty
from ..datasets.tsv import atomic_write_bytes, lmu_root
from ..models.registry import MODEL_CLASSES, build_model
from .batching import group_rows
from .config import ModelSpec, RunConfig, RunPoint
from .distributed import Ranks, close_ranks, init_ranks, rank_model_kwargs
from .store import PredictionStore, merge_shards, normalize_index, shard_indices

logger = logging.getLogger(__name__)

# Per-row costs recorded beside each prediction.
ROW_STATS = (
    "visual_tokens",
    "kept_visual_tokens",
    "select_seconds",
    "prefill_seconds",
    "generate_seconds",
    "new_tokens",
    "kv_cache_bytes",
    "prefill_flops",
    "prefill_flops_unpruned",
    "batch_size",
    "decision_margin",
)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


MODES = ("all", "infer", "eval")


def prediction_stem(work_dir: str, model_name: str, run_name: str, dataset: str) -> Path:
    """`<work_dir>/<model>/<run>/<model>_<dataset>`: the stem of a dataset's prediction, table and score files."""
    return Path(work_dir) / model_name / run_name / f"{model_name}_{dataset}"


def prediction_files(stem: Path) -> list[Path]:
    """`<stem>.jsonl` and the per-rank files of a dataset, including those left by a launch with another world
    size."""
    return [Path(f"{stem}.jsonl"), *_shard_files(stem)]


def _shard_files(stem: Path) -> list[Path]:
    return sorted(stem.parent.glob(f"{glob.escape(stem.name)}.rank*.jsonl"))


def infer_dataset(
    wrapper: Any, dataset: Any, stem: Path, ranks: Ranks, desc: str, limit: int | None = None, batch_size: int = 1
) -> None:
    """Answers this rank's share of the rows not yet stored (only `limit` of them, spread evenly), `batch_size` at a
    time (grouped by size, runner/batching.py), then waits for every rank to finish its share.

    A single process appends to `<stem>.jsonl` itself; rank r of a torchrun launch appends to `<stem>.rank<r>.jsonl`.
    Rows already in any of these files (from an earlier, killed or `limit`ed run of any world size) are skipped.
    """
    done: dict[Any, dict] = {}
    for path in prediction_files(stem):
        done.update(PredictionStore(path).done())
    ranks.barrier()  # every rank has read (and trimmed) the files before any rank appends to them
    own = Path(f"{stem}.jsonl") if ranks.world_size == 1 else Path(f"{stem}.rank{ranks.rank}.jsonl")
    store = PredictionStore(own)
    indices = dataset.data["index"].tolist()
    positions = shard_indices(range(len(indices)), ranks.rank, ranks.world_size)
    pending = [position for position in positions if normalize_index(indices[position]) not in done]
    if limit is not None:
        # Spread over the dataset, which is often ordered by category: a fairer sample of the per-row time.
        pending = [pending[i * len(pending) // limit] for i in range(min(limit, len(pending)))]
    messages = [dataset.message(position) for position in pending]  # the first decodes the images: once
    progress = tqdm(total=len(pending), desc=desc, unit="row", disable=not pending or not ranks.is_main)
    for batch in group_rows(pending, messages, batch_size):
        started = time.perf_counter()
        predictions = wrapper.generate_batch([messages[item] for item in batch], dataset=dataset.name)
        # Wall time of the batch, image loading and processing included, shared by its rows: what `--plan`
        # extrapolates from. A kill loses at most the batch in flight.
        seconds = (time.perf_counter() - started) / len(batch)
        for item, prediction, stats in zip(batch, predictions, wrapper.batch_stats, strict=True):
            record = {"index": indices[pending[item]], "prediction": prediction, "row_seconds": seconds}
            store.append({**record, **{key: getattr(stats, key) for key in ROW_STATS}})
        progress.update(len(batch))
    progress.close()
    ranks.barrier()  # every shard is complete before rank 0 merges them


def merge_predictions(stem: Path, indices: list[Any]) -> None:
    """Folds the per-rank files of `stem` into `<stem>.jsonl` (every index exactly once) and removes them.

    Raises:
        ValueError: a row is missing or stored twice across the files (from `merge_shards`).
    """
    merged = Path(f"{stem}.jsonl")
    shards = _shard_files(stem)
    if not shards:
        return
    # A run killed after writing the merged file but before removing the shards: the merge is already done.
    if set(PredictionStore(merged).done()) != {normalize_index(index) for index in indices}:
        merge_shards([merged, *shards], indices, merged)
    for shard in shards:
        shard.unlink()


def load_predictions(stem: Path, indices: list[Any]) -> dict[Any, dict]:
    """The stored record of every row, by index.

    Raises:
        FileNotFoundError: `<stem>.jsonl` does not exist (run inference first).
        ValueError: it lacks some rows (the message counts and names a few).
    """
    path = Path(f"{stem}.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}; run with --mode infer or all first")
    records = PredictionStore(path).done()
    missing = [index for index in indices if normalize_index(index) not in records]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of {len(indices)} rows have no prediction, e.g. {missing[:5]}")
    return {index: records[normalize_index(index)] for index in indices}


def predictions_table(dataset: Any, records: dict[Any, dict]) -> pd.DataFrame:
    """The dataset's columns but `image`, plus the prediction and the per-row costs."""
    table = dataset.data.drop(columns=[c for c in ("image",) if c in dataset.data.columns]).copy()
    for key in ("prediction", "row_seconds") + ROW_STATS:
        table[key] = [records[index].get(key) for index in table["index"]]
    return table


def _build_wrapper(model: ModelSpec, kwargs: dict[str, Any]) -> Any:
    """A registry model by name, or a config's adapter class with its own `model_path`."""
    if model.cls is not None:
        return MODEL_CLASSES[model.cls](**kwargs)
    return build_model(model.name, **kwargs)


def _build_dataset(name: str, root: str | None, wrapper: Any) -> Any:
    """The dataset; grounding sets take the model family's box frame (their default in `eval` mode)."""
    cls = dataset_class(name)
    frame = getattr(wrapper, "grounding_frame", None)
    return cls(name, root, frame=frame) if cls.TYPE == "GROUNDING" and frame else cls(name, root)


def run_point(
    wrapper: Any,
    model_name: str,
    point: RunPoint,
    config: RunConfig,
    ranks: Ranks,
    mode: str = "all",
    judge: Any = None,
    limit: int | None = None,
    batch_size: int = 1,
) -> dict | None:
    """One grid point over every dataset; returns its summary row on rank 0 (`None` on the other ranks).

    `wrapper` is `None` in `eval` mode, which only scores stored predictions. With `limit`, at most that many rows of
    each dataset are answered (per rank) and nothing is merged, scored or written to `run.json`.
    """
    run_dir = Path(config.work_dir) / model_name / point.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if wrapper is not None:
        wrapper.set_method(point.method, **point.options)
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    kept, total = 0, 0
    for name in config.datasets:
        if name == DEMO_MCQ_NAME and ranks.is_main:
            write_demo_mcq(config.data_root or lmu_root())
        ranks.barrier()  # the demo data exists before other ranks read it
        dataset = _build_dataset(name, config.data_root, wrapper)
        stem = prediction_stem(config.work_dir, model_name, point.name, name)
        if mode in ("all", "infer"):
            infer_dataset(wrapper, dataset, stem, ranks, f"{point.name} {name}", limit, batch_size)
        if not ranks.is_main or limit is not None:
            continue
        indices = dataset.data["index"].tolist()
        merge_predictions(stem, indices)  # eval mode may find shards of an inference that was not merged
        table = predictions_table(dataset, load_predictions(stem, indices))
        atomic_write_bytes(Path(f"{stem}.tsv"), table.to_csv(sep="\t", index=False).encode())
        kept += int(table["kept_visual_tokens"].sum())
        total += int(table["visual_tokens"].sum())
        if mode in ("all", "eval"):
            scores[name] = dataset.evaluate(table, judge=judge)
            reference = Path(config.work_dir) / model_name / "none" / f"{model_name}_{name}.tsv"
            if point.method != "none" and reference.is_file():
                scores[name]["loyalty"] = loyalty(table, pd.read_csv(reference, sep="\t"))
            _write_json(Path(f"{stem}_score.json"), scores[name])
    if not ranks.is_main:
        return None
    summary = {
        "model": model_name,
        "run": point.name,
        "method": point.method,
        "options": point.options,
        "mode": mode,
        "world_size": ranks.world_size,
        "kept_visual_fraction": kept / total if total else None,
        "scores": scores,
        "seconds": time.perf_counter() - started,
    }
    if limit is not None:
        return summary
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


def run(config: RunConfig, mode: str = "all", judge: Any = None, limit: int | None = None) -> list[dict]:
    """Runs every model × grid point; returns one summary per run, in order, on rank 0 (an empty list elsewhere).

    Args:
        config (`RunConfig`): what to run.
        mode (`str`): `"all"` (infer, then score), `"infer"` (predictions only) or `"eval"` (score stored
            predictions; no model is loaded).
        judge (`Judge`, *optional*): grader for the free-form answers; `None` scores by exact matching only.
        limit (`int`, *optional*): answer at most this many new rows of each dataset per run and rank, and score
            nothing: a short timing for `runner.plan`, which a later full run resumes from.

    Raises:
        ValueError: `mode` is not one of `MODES`, or `limit` is given with `eval` or is below 1.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if limit is not None and (limit < 1 or mode == "eval"):
        raise ValueError(f"limit must be a whole number >= 1 and comes with mode all or infer, got {limit} ({mode})")
    ranks = init_ranks()
    try:
        if mode == "eval":  # scoring needs no model and no other rank: rank 0 does it alone
            if not ranks.is_main:
                return []
            ranks = Ranks()
        summaries = []
        for model in config.models:
            wrapper = None if mode == "eval" else _build_wrapper(model, rank_model_kwargs(model.kwargs, ranks))
            for point in config.points:
                summary = run_point(wrapper, model.name, point, config, ranks, mode, judge, limit, model.batch_size)
                if summary is not None:
                    summaries.append(summary)
        return summaries
    finally:
        close_ranks()


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
