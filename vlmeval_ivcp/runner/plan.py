"""How long a run config will take, without loading a model: per model, run and dataset, the rows of the benchmark,
the rows already answered, and the wall time per row measured on them (`row_seconds` of the stored predictions).

A run that has answered no row yet borrows the mean of the model's other runs on that dataset: pruned runs only
remove work, so the unpruned run's timing is an upper bound for them. `python run.py --config X --limit 20` answers
20 rows of every run to time them; the full run later resumes after those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..datasets.tsv import tsv_path
from .config import RunConfig
from .run import prediction_files, prediction_stem
from .store import stored_records


@dataclass(frozen=True)
class PlanRow:
    """One dataset of one run: its size, its progress and the time it still needs on one process."""

    model: str
    run: str
    dataset: str
    rows: int | None  # None: the benchmark's TSV is not under the data root yet
    done: int
    seconds_per_row: float | None  # None: no row of this model and dataset has been timed
    borrowed: bool = False  # the timing comes from the model's other runs on this dataset

    @property
    def remaining_seconds(self) -> float | None:
        if self.rows is None or self.seconds_per_row is None:
            return None
        return max(self.rows - self.done, 0) * self.seconds_per_row


def count_rows(dataset: str, data_root: str | None) -> int | None:
    """Rows of `<data_root>/<dataset>.tsv` (reads only its `index` column); `None` when the file is not there.

    Raises:
        ValueError: the file has no `index` column (names the file).
    """
    path = tsv_path(dataset, data_root)
    if not path.is_file():
        return None
    try:
        return len(pd.read_csv(path, sep="\t", usecols=["index"]))
    except ValueError as error:
        raise ValueError(f"{path}: cannot count its rows ({error})") from error


def _row_seconds(stem: Path) -> list[float | None]:
    """`row_seconds` of every answered row of a dataset (all ranks' files); `None` for a row stored without it."""
    return [record.get("row_seconds") for path in prediction_files(stem) for record in stored_records(path)]


def plan(config: RunConfig) -> list[PlanRow]:
    """One `PlanRow` per model × run × dataset of `config`, in the order `run` works through them."""
    sizes = {name: count_rows(name, config.data_root) for name in config.datasets}
    rows: list[PlanRow] = []
    for model in config.models:
        answered = {
            (point.name, name): _row_seconds(prediction_stem(config.work_dir, model.name, point.name, name))
            for point in config.points
            for name in config.datasets
        }
        timed = {key: [s for s in seconds if s is not None] for key, seconds in answered.items()}
        for point in config.points:
            for name in config.datasets:
                own = timed[point.name, name]
                source = own or [s for other in config.points for s in timed[other.name, name]]
                rows.append(
                    PlanRow(
                        model=model.name,
                        run=point.name,
                        dataset=name,
                        rows=sizes[name],
                        done=len(answered[point.name, name]),
                        seconds_per_row=sum(source) / len(source) if source else None,
                        borrowed=bool(source) and not own,
                    )
                )
    return rows


def format_duration(seconds: float) -> str:
    """`0.4 s`, `42 s`, `17 min`, `3.2 h`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(rows: list[PlanRow]) -> str:
    """A markdown table of `rows` and the expected total on one process."""
    lines = ["| model | run | dataset | rows | done | s/row | left |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        per_row = "-" if row.seconds_per_row is None else f"{row.seconds_per_row:.2f}" + ("*" if row.borrowed else "")
        left = row.remaining_seconds
        cells = [
            row.model, row.run, row.dataset, "-" if row.rows is None else str(row.rows), str(row.done), per_row,
            "-" if left is None else format_duration(left),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    known = [row.remaining_seconds for row in rows if row.remaining_seconds is not None]
    unknown = len(rows) - len(known)
    lines.append("")
    lines.append(f"expected time left on one process: {format_duration(sum(known))}" + (
        f", plus {unknown} dataset run(s) not timed or without their TSV (time some rows with --limit N)"
        if unknown else ""
    ))
    if any(row.borrowed for row in rows):
        lines.append("*: timed on the model's other runs of that dataset (an upper bound when those are unpruned)")
    lines.append("Under torchrun the ranks share the rows: divide by their number.")
    return "\n".join(lines)
