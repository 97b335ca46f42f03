"""Crash-safe predictions: one JSON line per finished row, appended and synced before the next row (or batch of
rows) starts.

Each rank appends to its own file, so a killed run loses at most the row (or batch) in flight: on restart, `done()`
returns the finished rows and trims a half-written last line. Rank 0 then merges the per-rank files with `merge_shards`.

JSON has no NaN or infinity: float NaN and +/-inf (Python or numpy) are stored as `null`. numpy scalars and arrays
are stored as the matching Python numbers and lists.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..datasets.tsv import atomic_write_bytes, summarize_values

logger = logging.getLogger(__name__)

Index = int | str
T = TypeVar("T")

# Wall times differ between two computations of the same answer; a row stored twice with only these differing (two
# processes raced on it) is one row.
TIMING_FIELDS = frozenset({"row_seconds", "select_seconds", "prefill_seconds", "generate_seconds"})


def normalize_index(value: Any) -> Index:
    """A row index as stored: an `int` (numpy integers included) or a `str`.

    Raises:
        TypeError: `value` is a bool, a float, or anything else that is not an integer or a string.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"a row index must be an int or a str, got the bool {value!r}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (int, str)):
        return value
    raise TypeError(f"a row index must be an int or a str, got {type(value).__name__} {value!r}")


def to_json_line(record: dict[str, Any]) -> str:
    """One record as a JSON line (with its newline); NaN/inf become `null`, numpy values become Python ones.

    Raises:
        TypeError: a key is not a string, or a value has a type JSON cannot hold (the message names its key path).
    """
    return json.dumps(_jsonable(record, "record"), ensure_ascii=False, allow_nan=False) + "\n"


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {type(key).__name__} {key!r}")
        return {key: _jsonable(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{position}]") for position, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} {value!r} cannot be stored as JSON")


@dataclass
class _Scan:
    """What a prediction file holds: its good records (with line numbers) and any torn tail."""

    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    good_bytes: int = 0  # length of the file up to the end of the last good line
    torn_line: int | None = None  # line number of a half-written last line, if any


def _scan(path: Path) -> _Scan:
    """Parses a prediction file; only its last line may be torn (then reported, not raised)."""
    scan = _Scan()
    if not path.exists():
        return scan
    *complete, tail = path.read_bytes().split(b"\n")
    for lineno, raw in enumerate(complete, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if lineno == len(complete) and not tail:
                scan.torn_line = lineno
                return scan
            raise ValueError(f"{path}:{lineno}: corrupt prediction line (not JSON: {err}); fix or remove it") from err
        if not isinstance(record, dict) or "index" not in record:
            raise ValueError(f"{path}:{lineno}: a prediction line must be a JSON object with an 'index' key")
        scan.records.append((lineno, record))
        scan.good_bytes += len(raw) + 1
    if tail:  # no trailing newline: the write of this line was interrupted
        scan.torn_line = len(complete) + 1
    return scan


def stored_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The finished rows of a prediction file, only read: a half-written last line is neither returned nor cut
    (a run may be appending to the file right now).

    Raises:
        ValueError: a line before the last is corrupt or lacks `index` (names file and line).
    """
    return [record for _, record in _scan(Path(path)).records]


class PredictionStore:
    """Append-only JSON-lines file of finished rows, one writer (rank) per file.

    Args:
        path (`str` or `os.PathLike`): the file; it and its folder are created by the first `append`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._records: dict[Index, dict[str, Any]] | None = None

    def done(self) -> dict[Index, dict[str, Any]]:
        """The finished rows, by index, read from the file.

        A torn last line (no trailing newline, or not valid JSON) is the row that was in flight when the process
        died: it is logged as a warning and cut from the file, so that row is simply redone.

        Raises:
            ValueError: a line before the last is corrupt, lacks `index`, has an index that is not an int or str, or
                repeats an index with a different record (timing fields aside; names file and line). A repeat that
                equals the first apart from `TIMING_FIELDS` is ignored.
        """
        scan = _scan(self.path)
        if scan.torn_line is not None:
            torn_bytes = self.path.stat().st_size - scan.good_bytes
            logger.warning(
                "%s:%d: dropping a half-written last line (%d bytes); that row will be redone",
                self.path,
                scan.torn_line,
                torn_bytes,
            )
            with open(self.path, "r+b") as handle:
                handle.truncate(scan.good_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        records: dict[Index, dict[str, Any]] = {}
        for lineno, record in scan.records:
            index = _line_index(record, self.path, lineno)
            if index in records and not same_answer(records[index], record):
                raise ValueError(f"{self.path}:{lineno}: index {index!r} appears a second time with another answer")
            records.setdefault(index, record)
        self._records = records
        return dict(records)

    def append(self, record: dict[str, Any]) -> None:
        """Writes one finished row and syncs it to disk before returning (`extend` with one record)."""
        self.extend([record])

    def extend(self, records: Sequence[dict[str, Any]]) -> None:
        """Writes finished rows (a batch's) in one write and syncs them to disk before returning: one `fsync` per
        batch, not per row (a sync costs milliseconds, as much as a tiny model's row); a kill loses at most the
        batch in flight. Nothing is written when a record is refused.

        Args:
            records: each must hold `index` (an int or str); see the module docstring for encoding.

        Raises:
            KeyError: a record has no `index`.
            ValueError: an index is already in the file, or twice in `records`.
            TypeError: an index or a value cannot be stored.
        """
        if self._records is None:
            self.done()
        lines: dict[Index, str] = {}
        for record in records:
            if "index" not in record:
                raise KeyError(f"a prediction record needs an 'index' key; got keys {sorted(record)}")
            index = normalize_index(record["index"])
            if index in self._records or index in lines:
                raise ValueError(f"{self.path}: index {index!r} is already stored; a row is predicted once")
            lines[index] = to_json_line({**record, "index": index})
        if not lines:
            return
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines.values()))
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_folder(self.path.parent)  # makes the new file's name itself durable
        self._records.update((index, json.loads(line)) for index, line in lines.items())


def same_answer(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two records of a row are equal apart from `TIMING_FIELDS`."""
    return {k: v for k, v in first.items() if k not in TIMING_FIELDS} == {
        k: v for k, v in second.items() if k not in TIMING_FIELDS
    }


def _line_index(record: dict[str, Any], path: Path, lineno: int) -> Index:
    try:
        return normalize_index(record["index"])
    except TypeError as error:
        raise ValueError(f"{path}:{lineno}: {error}") from None


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def shard_indices(indices: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The rows rank `rank` of `world_size` predicts: positions rank, rank + W, rank + 2W, ...

    Raises:
        ValueError: `world_size` < 1 or `rank` outside [0, world_size).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(indices)[rank::world_size]


def merge_shards(
    shard_paths: Iterable[str | os.PathLike], expected_indices: Sequence[Any], out_path: str | os.PathLike
) -> list[dict[str, Any]]:
    """Merges per-rank prediction files into one, after checking that every row is there exactly once.

    Shard files are only read (a torn last line is ignored with a warning, and its row counts as missing); a
    shard file that does not exist counts as empty. The merged file is written atomically, in the order of
    `expected_indices`.

    Args:
        shard_paths (`Iterable[str | os.PathLike]`): the per-rank files.
        expected_indices (`Sequence[Any]`): every row of the dataset, in output order.
        out_path (`str` or `os.PathLike`): the merged JSON-lines file.

    Returns:
        `list[dict[str, Any]]`: the merged records, in the order of `expected_indices`.

    Raises:
        ValueError: `expected_indices` repeats a value, or some expected index is missing, stored more than once
            with different records (a repeat equal apart from `TIMING_FIELDS` is merged into one row) or not
            expected at all (the message lists a few of each).
    """
    expected = [normalize_index(value) for value in expected_indices]
    repeated = [index for index, count in Counter(expected).items() if count > 1]
    if repeated:
        raise ValueError(f"expected_indices repeats {summarize_values(repeated)}")
    shard_paths = [Path(path) for path in shard_paths]
    by_index: dict[Index, dict[str, Any]] = {}
    counts: Counter[Index] = Counter()
    absent_files = []
    for shard in shard_paths:
        if not shard.exists():
            absent_files.append(str(shard))
        scan = _scan(shard)
        if scan.torn_line is not None:
            logger.warning("%s:%d: ignoring a half-written last line", shard, scan.torn_line)
        for lineno, record in scan.records:
            index = _line_index(record, shard, lineno)
            if index in by_index and same_answer(by_index[index], record):
                continue  # the same answer stored twice (two processes raced on the row): one row
            counts[index] += 1
            by_index[index] = record
    expected_set = set(expected)
    problems = []
    missing = [index for index in expected if index not in counts]
    if missing:
        problems.append(f"{len(missing)} missing: {summarize_values(missing)}")
    duplicated = [index for index, count in counts.items() if count > 1]
    if duplicated:
        problems.append(
            f"{len(duplicated)} stored more than once with different answers: {summarize_values(duplicated)}"
        )
    unexpected = [index for index in counts if index not in expected_set]
    if unexpected:
        problems.append(f"{len(unexpected)} not expected: {summarize_values(unexpected)}")
    if problems:
        absent = f"; shard files not found: {absent_files}" if absent_files else ""
        raise ValueError(
            f"cannot merge {[str(path) for path in shard_paths]} into {out_path}: indices "
            + "; ".join(problems)
            + absent
        )
    merged = [by_index[index] for index in expected]
    atomic_write_bytes(out_path, "".join(to_json_line(record) for record in merged).encode("utf-8"))
    return merged
