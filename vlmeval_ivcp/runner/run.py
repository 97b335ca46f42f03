"""Inference and scoring of a run config: every model × grid point × dataset, resumable row by row.

Layout: `<work_dir>/<model>/<run>/` holds, per dataset, `<model>_<dataset>.jsonl` (one line per finished row,
appended and fsynced), `<model>_<dataset>.tsv` (the TSV's columns but `image`, plus `prediction` and the row costs)
and `<model>_<dataset>_score.json`; and one `run.json` (config, versions, git commit, timings). Under torchrun,
rank r first appends to `<model>_<dataset>.rank<r>.jsonl`; rank 0 merges those and scores. See docs/results.md.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from .. import __version__
from ..datasets.base import present
from ..datasets.demo import DEMO_MCQ_NAME, write_demo_mcq
from ..datasets.registry import dataset_class
from ..evaluation.loyalty import loyalty
from ..datasets.tsv import atomic_write_bytes, lmu_root, tsv_path
from ..models.registry import MODEL_CLASSES, build_model, has_random_weights
from .batching import group_rows
from .config import ModelSpec, RunConfig, RunPoint
from ..locking import RunFolderLock
from .distributed import Ranks, close_ranks, init_ranks, launch_token, rank_model_kwargs
from .provenance import Provenance, git_commit, row_digests, set_aside
from .store import PredictionStore, merge_shards, normalize_index, shard_indices, stored_records

logger = logging.getLogger(__name__)

# Per-row costs recorded beside each prediction; the summary of a run adds up those in SUMMED_COSTS.
SUMMED_COSTS = (
    "visual_tokens", "full_visual_tokens", "kept_visual_tokens", "prefill_seconds", "kv_cache_bytes", "prefill_flops",
    "prefill_flops_unpruned",
)
ROW_STATS = (
    "visual_tokens",
    "full_visual_tokens",
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
    wrapper: Any,
    dataset: Any,
    stem: Path,
    ranks: Ranks,
    desc: str,
    limit: int | None = None,
    provenance: Provenance | None = None,
    batch_size: int = 1,
) -> int:
    """Answers this rank's share of the rows not yet stored (only `limit` of them, spread evenly), `batch_size` at a
    time (grouped by size, runner/batching.py), then waits for every rank to finish its share. Returns how many rows
    this rank answered.

    A single process appends to `<stem>.jsonl` itself; rank r of a torchrun launch appends to `<stem>.rank<r>.jsonl`.
    Rows already in any of these files (from an earlier, killed or `limit`ed run of any world size) are skipped.
    With `provenance`, each row records what shaped it, and finished rows made otherwise are refused or set aside
    (`Provenance.check`).

    Raises:
        MixedSettingsError: finished rows were made with other settings or TSV rows (policy `refuse`).
    """
    done: dict[Any, dict] = {}
    for path in prediction_files(stem):
        done.update(PredictionStore(path).done())
    indices = dataset.data["index"].tolist()
    digests = dict(zip(map(normalize_index, indices), row_digests(dataset.data))) if provenance else {}
    if provenance is not None and provenance.check(done, digests, Path(f"{stem}.jsonl")):
        ranks.barrier()  # every rank has read the files before rank 0 moves them
        if ranks.is_main:
            set_aside([*prediction_files(stem), Path(f"{stem}.tsv"), Path(f"{stem}_score.json")])
        done = {}
    ranks.barrier()  # every rank has read (and trimmed) the files before any rank appends to them
    own = Path(f"{stem}.jsonl") if ranks.world_size == 1 else Path(f"{stem}.rank{ranks.rank}.jsonl")
    store = PredictionStore(own)
    positions = shard_indices(range(len(indices)), ranks.rank, ranks.world_size)
    pending = [position for position in positions if normalize_index(indices[position]) not in done]
    if limit is not None:
        # Spread over the dataset, which is often ordered by category: a fairer sample of the per-row time.
        pending = [pending[i * len(pending) // limit] for i in range(min(limit, len(pending)))]
    messages = []
    for position in pending:  # the first message decodes the dataset's images: a one-time cost
        with row_context(dataset, indices[position]):
            messages.append(dataset.message(position, wrapper))

    def fields(index: Any) -> dict[str, Any]:
        return provenance.fields(digests[normalize_index(index)]) if provenance else {}

    progress = tqdm(total=len(pending), desc=desc, unit="row", disable=not pending or not ranks.is_main)
    answer_rows(wrapper, dataset, messages, [indices[position] for position in pending], store, batch_size, fields,
                [dataset.question_text(position) for position in pending], progress.update)
    progress.close()
    ranks.barrier()  # every shard is complete before rank 0 merges them
    return len(pending)


def answer_rows(
    wrapper: Any, dataset: Any, messages: list, rows: list, store: PredictionStore, batch_size: int,
    fields: Callable[[Any], dict[str, Any]] = lambda index: {}, questions: list[str] | None = None,
    done: Callable[[int], Any] = lambda count: None,
) -> dict[Any, tuple[str, Any]]:
    """The harness's loop (which benchmarks/throughput.py times): answers the `messages` of dataset rows `rows`,
    `batch_size` at a time grouped by size (`answer_batch` each), calling `done(rows answered)` after each batch.
    Returns each row's answer and `GenerationStats` by row."""
    answered = {}
    for batch in group_rows(rows, messages, batch_size):
        batch_rows = [rows[item] for item in batch]
        answers, stats = answer_batch(wrapper, dataset, [messages[item] for item in batch], batch_rows, store, fields,
                                      None if questions is None else [questions[item] for item in batch])
        answered.update(zip(batch_rows, zip(answers, stats)))
        done(len(batch))
    return answered


def answer_batch(
    wrapper: Any, dataset: Any, messages: list, rows: list, store: PredictionStore,
    fields: Callable[[Any], dict[str, Any]] = lambda index: {}, questions: list[str] | None = None,
) -> tuple[list[str], list[Any]]:
    """The harness's step: answers the `messages` of dataset rows `rows` in one `generate_batch` (with each row's
    question alone, for methods that read it) and stores them, with `fields(index)` added to each record, in one
    disk sync. A kill loses at most this batch. Returns the answers and their `GenerationStats`.
    """
    started = time.perf_counter()
    with row_context(dataset, rows[0] if len(rows) == 1 else rows):
        predictions = wrapper.generate_batch(messages, dataset=dataset.name, questions=questions)
    # Wall time of the batch, image loading and processing included, shared by its rows: what `--plan`
    # extrapolates from.
    seconds = (time.perf_counter() - started) / len(rows)
    records = [
        {"index": index, "prediction": prediction, "row_seconds": seconds,
         **{key: getattr(stats, key) for key in ROW_STATS}, **fields(index)}
        for index, prediction, stats in zip(rows, predictions, wrapper.batch_stats, strict=True)
    ]
    store.extend(records)
    return predictions, wrapper.batch_stats


@contextlib.contextmanager
def row_context(dataset: Any, index: Any) -> Iterator[None]:
    """Names the dataset, its TSV and the row in an error raised while answering that row (a bad image, say).

    The run stops there rather than recording the row as failed: a failed row would be scored as a wrong answer and
    a fixed TSV would not be retried. The finished rows are kept, so fixing the row and re-running resumes.
    """
    where = f"{dataset.name} ({tsv_path(dataset.name, dataset.root)}) row index {index}"
    try:
        yield
    except OSError as error:  # keeps its kind: a missing file is the input's fault, a full disk the machine's
        raise OSError(error.errno, f"{where}: {error}") from error
    except (ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: {error}") from error


def score_dataset(dataset: Any, table: pd.DataFrame, judge: Any) -> dict[str, Any]:
    """`dataset.evaluate(table)`, after checking that every row has a gold `answer` when the benchmark has that column.

    Raises:
        ValueError: rows without an answer (an empty cell, or a truncated last line), or an error of the scoring
            itself; the message names the dataset and its TSV.
    """
    tsv = tsv_path(dataset.name, dataset.root)
    if "answer" in table.columns:
        empty = [index for index, answer in zip(table["index"], table["answer"], strict=True) if not present(answer)]
        if empty:
            raise ValueError(
                f"{tsv}: {len(empty)} row(s) have no gold answer (an empty cell, or a truncated last line), e.g. "
                f"index {empty[:5]}; fix the file, then score again with --mode eval"
            )
    try:
        return dataset.evaluate(table, judge=judge)
    except (KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ValueError(f"{dataset.name} ({tsv}): {message}") from error


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
    # Rows recorded before `full_visual_tokens` existed were all answered on unchanged pictures.
    table["full_visual_tokens"] = table["full_visual_tokens"].fillna(table["visual_tokens"])
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
    model: ModelSpec,
    point: RunPoint,
    config: RunConfig,
    ranks: Ranks,
    mode: str = "all",
    judge: Any = None,
    limit: int | None = None,
    resume: str = "refuse",
    launch: str = "",
) -> dict | None:
    """One grid point over every dataset; returns its summary row on rank 0 (`None` on the other ranks).

    `wrapper` is `None` in `eval` mode, which only scores stored predictions. With `limit`, at most that many rows of
    each dataset are answered (per rank) and nothing is merged, scored or written to `run.json`. `resume` is the
    policy for finished rows made with other settings (`provenance.POLICIES`). The run folder is locked for
    launch `launch` while this runs (`RunFolderLock`).

    Raises:
        RunFolderBusy: a live process of another launch is writing the run folder.
    """
    run_dir = Path(config.work_dir) / model.name / point.name
    with RunFolderLock(run_dir, launch):
        return _run_point(wrapper, model, point, config, ranks, mode, judge, limit, resume, run_dir)


def _run_point(wrapper, model, point, config, ranks, mode, judge, limit, resume, run_dir) -> dict | None:
    model_name = model.name
    settings: dict[str, str] = {}
    if wrapper is not None:
        wrapper.set_method(point.method, **point.options)
    started = time.perf_counter()
    scores: dict[str, Any] = {}
    kept, total = 0, 0
    costs = dict.fromkeys(("rows", "answered", *SUMMED_COSTS), 0)
    for name in config.datasets:
        if name == DEMO_MCQ_NAME and ranks.is_main:
            write_demo_mcq(config.data_root or lmu_root())
        ranks.barrier()  # the demo data exists before other ranks read it
        dataset = _build_dataset(name, config.data_root, wrapper)
        stem = prediction_stem(config.work_dir, model_name, point.name, name)
        if mode in ("all", "infer"):
            provenance = Provenance.of(model, point, name, resume)
            settings[name] = provenance.hash
            if ranks.is_main:
                provenance.record(run_dir)
            costs["answered"] += infer_dataset(
                wrapper, dataset, stem, ranks, f"{point.name} {name}", limit, provenance, model.batch_size
            )
        if not ranks.is_main or limit is not None:
            continue
        indices = dataset.data["index"].tolist()
        merge_predictions(stem, indices)  # eval mode may find shards of an inference that was not merged
        table = predictions_table(dataset, load_predictions(stem, indices))
        atomic_write_bytes(Path(f"{stem}.tsv"), table.to_csv(sep="\t", index=False).encode())
        kept += int(table["kept_visual_tokens"].sum())
        total += int(table["full_visual_tokens"].sum())  # a downsampled run's share is of the full resolution
        costs["rows"] += len(table)
        for key in SUMMED_COSTS:
            costs[key] += float(table[key].sum())
        if mode in ("all", "eval"):
            scores[name] = score_dataset(dataset, table, judge)
            reference = prediction_stem(config.work_dir, model_name, "none", name)
            if point.method != "none" and Path(f"{reference}.jsonl").is_file():
                scores[name]["loyalty"] = loyalty_to_reference(table, reference)
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
        "random_weights": has_random_weights(model_name),
        "costs": costs,
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
                "torch": version("torch"),
                "transformers": version("transformers"),
                "python": platform.python_version(),
            },
            "git_commit": git_commit(),
            "seed": point.options.get("seed", 0),
            "settings": settings,
        },
    )
    return summary


def loyalty_to_reference(table: pd.DataFrame, reference_stem: Path) -> dict[str, Any]:
    """Loyalty of `table` to the unpruned run's predictions, read from its jsonl as the text they are: its TSV read
    back would turn replies such as "None" or "NA" into NaN and an index such as "001" into 1."""
    records = stored_records(f"{reference_stem}.jsonl")
    reference = pd.DataFrame(
        {"index": [normalize_index(r["index"]) for r in records], "prediction": [r["prediction"] for r in records]}
    )
    return loyalty(table, reference)


def run(
    config: RunConfig, mode: str = "all", judge: Any = None, limit: int | None = None, resume: str = "refuse"
) -> list[dict]:
    """Runs every model × grid point; returns one summary per run, in order, on rank 0 (an empty list elsewhere).

    Args:
        config (`RunConfig`): what to run.
        mode (`str`): `"all"` (infer, then score), `"infer"` (predictions only) or `"eval"` (score stored
            predictions; no model is loaded).
        judge (`Judge`, *optional*): grader for the free-form answers; `None` scores by exact matching only.
        limit (`int`, *optional*): answer at most this many new rows of each dataset per run and rank, and score
            nothing: a short timing for `runner.plan`, which a later full run resumes from.
        resume (`str`): finished rows made with other settings or TSV rows are refused (`"refuse"`), set aside for
            a fresh start (`"rerun"`) or kept (`"reuse"`); see `runner.provenance`.

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
        launch = launch_token(ranks)
        summaries = []
        for model in config.models:
            wrapper = None if mode == "eval" else _build_wrapper(model, rank_model_kwargs(model.kwargs, ranks))
            for point in config.points:
                summary = run_point(wrapper, model, point, config, ranks, mode, judge, limit, resume, launch)
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
    """A markdown table, one row per run: what it kept, its loyalty to the unpruned run, its mean prefill costs per
    row, each dataset's headline score and the time of this invocation (or how many finished rows it reused)."""
    datasets = list(dict.fromkeys(name for summary in summaries for name in summary["scores"]))
    header = ["model", "method", "ratio", "layer", "kept visual (mean per row)", "loyalty", "prefill FLOPs",
              "KV MiB", "prefill ms", *datasets, "time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    noisy = False
    for summary in summaries:
        options, costs = summary["options"], summary.get("costs") or {}
        rows = costs.get("rows") or 0
        mean = {key: costs[key] / rows for key in SUMMED_COSTS} if rows else None
        unpruned_flops = mean["prefill_flops_unpruned"] if mean else 0
        flops = costs["prefill_flops"] / costs["prefill_flops_unpruned"] if unpruned_flops else None
        mark = "†" if summary.get("random_weights") else ""
        noisy |= bool(mark and summary["scores"])
        cells = [
            summary["model"],
            summary["method"],
            str(options.get("ratio", "-")),
            str(options.get("layer", "-")),
            _kept_cell(mean),
            _cell(_pooled_loyalty(summary["scores"]), "{:.1%}"),
            _cell(flops, "{:.2f}×"),
            _cell(mean["kv_cache_bytes"] / 2**20 if mean else None, "{:.2f}"),
            _cell(mean["prefill_seconds"] * 1000 if mean else None, "{:.0f}"),
            *(_cell(headline(summary["scores"].get(name, {})), "{:.3f}" + mark) for name in datasets),
            _time_cell(summary["seconds"], rows, costs.get("answered", rows)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if noisy:
        lines.append(
            "\n† random weights (a Tiny* model): its accuracy is noise; loyalty (same answer as the unpruned run) "
            "shows what pruning changes"
        )
    return "\n".join(lines)


def _kept_cell(mean: dict[str, float] | None) -> str:
    """Kept visual tokens of the full-resolution count (a pruned run: of its visual tokens; `downsample`: the
    achieved count of the unchanged pictures' count)."""
    if not mean or not mean["full_visual_tokens"]:
        return "-"
    kept, total = mean["kept_visual_tokens"], mean["full_visual_tokens"]
    return f"{kept:.0f} / {total:.0f} ({kept / total:.1%})"


def _pooled_loyalty(scores: dict[str, Any]) -> float | None:
    """Loyalty over all datasets of a run, each weighted by its shared rows."""
    found = [report["loyalty"] for report in scores.values() if isinstance(report.get("loyalty"), dict)]
    count = sum(item["count"] for item in found)
    return sum(item["loyalty"] * item["count"] for item in found) / count if count else None


def _time_cell(seconds: float, rows: int, answered: int) -> str:
    """This invocation's time, unless it reused stored rows (then its near-zero time would mislead)."""
    if answered >= rows:
        return f"{seconds:.1f}"
    if answered == 0:
        return f"reused {rows} rows"
    return f"{seconds:.1f} (+{rows - answered} reused rows)"


def _cell(value: float | None, form: str = "{:.3f}") -> str:
    return "-" if value is None else form.format(value)
