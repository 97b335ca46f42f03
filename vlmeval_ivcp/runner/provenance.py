"""What shaped each prediction row, recorded beside it, and the refusal to resume with rows made otherwise.

Every row records `settings` (a hash of the model entry, the method config and the dataset: everything of the
config that changes an answer), `data` (a hash of the row's own TSV cells), and the toolkit's `version` and
`commit`. The run folder's `settings.json` maps each settings hash to the settings themselves, so a refusal can
say what differs. Resuming into rows of other settings or other TSV content is refused unless the user chooses
`rerun` (set the old files aside and start again) or `reuse` (keep them anyway); another code version only warns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..datasets.tsv import atomic_write_bytes
from .config import ModelSpec, RunPoint

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
POLICIES = ("refuse", "rerun", "reuse")
# Where the model runs, not what it computes: a change of these does not make other answers.
PLACEMENT_KWARGS = frozenset({"device_map"})


class MixedSettingsError(ValueError):
    """Finished rows of a run were made with other settings or from other TSV rows."""


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """`git rev-parse HEAD` of the package checkout, or `None` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_digests(data: pd.DataFrame) -> list[str]:
    """A hash of each row's cells as text (images included), in row order."""
    columns = list(data.columns)
    return [_digest(dict(zip(columns, map(str, values), strict=True))) for values in data.itertuples(index=False)]


@dataclass(frozen=True)
class Provenance:
    """The settings of one run point on one dataset, and the policy for finished rows made otherwise."""

    settings: dict[str, Any]
    policy: str = "refuse"

    @classmethod
    def of(cls, model: ModelSpec, point: RunPoint, dataset: str, policy: str = "refuse") -> Provenance:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        kwargs = {key: value for key, value in model.kwargs.items() if key not in PLACEMENT_KWARGS}
        settings = {
            "model": {"name": model.name, "class": model.cls, "kwargs": kwargs},
            "method": {"method": point.method, **point.options},
            "dataset": dataset,
        }
        return cls(settings, policy)

    @property
    def hash(self) -> str:
        return _digest(self.settings)

    def fields(self, data_digest: str) -> dict[str, Any]:
        """What a row records about how it was made."""
        return {"settings": self.hash, "data": data_digest, "version": __version__, "commit": git_commit()}

    def record(self, run_dir: Path) -> None:
        """Adds these settings to the run folder's `settings.json` (hash -> settings)."""
        path = run_dir / SETTINGS_FILE
        known = _read_settings(path)
        if known.get(self.hash) != self.settings:
            known[self.hash] = self.settings
            atomic_write_bytes(path, (json.dumps(known, indent=2, sort_keys=True, default=str) + "\n").encode())

    def check(self, done: dict[Any, dict], digests: dict[Any, str], jsonl: Path) -> bool:
        """Checks the finished rows of `jsonl`; returns whether they must be set aside (policy `rerun`).

        Args:
            done: finished records by index. digests: each dataset row's data hash by index.

        Raises:
            MixedSettingsError: some rows were made with other settings or TSV rows, and the policy is `refuse`.
        """
        other_settings = sorted({r["settings"] for r in done.values() if r.get("settings", self.hash) != self.hash})
        changed = [i for i, r in done.items() if "data" in r and i in digests and r["data"] != digests[i]]
        self._warn_versions(done, jsonl)
        if not other_settings and not changed:
            return False
        if self.policy == "reuse":
            logger.warning("%s: keeping finished rows made with other settings or data (--reuse)", jsonl)
            return False
        if self.policy == "rerun":
            return True
        problems = []
        if other_settings:
            known = _read_settings(jsonl.parent / SETTINGS_FILE)
            problems += [f"settings {describe_difference(known.get(h), self.settings)}" for h in other_settings]
        if changed:
            problems.append(f"the TSV rows of {len(changed)} indices changed since they were answered, e.g. "
                            f"{changed[:5]}")  # fmt: skip
        raise MixedSettingsError(
            f"{jsonl}: finished rows were made differently ({'; '.join(problems)}); run with --rerun to start this "
            "run again (the old files are moved aside, not deleted) or --reuse to keep those rows anyway"
        )

    def _warn_versions(self, done: dict[Any, dict], jsonl: Path) -> None:
        current = (__version__, git_commit())
        others = {(r["version"], r.get("commit")) for r in done.values() if "version" in r} - {current}
        if others:
            logger.warning("%s: some rows were made by another version of the toolkit %s (now %s)", jsonl,
                           sorted(others, key=str), current)  # fmt: skip


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); remove it to record settings again") from None


def describe_difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """`key.path: old -> new` for each leaf that differs, or a note that the old settings were not recorded."""
    if old is None:
        return "not recorded in settings.json"
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return ", ".join(
        f"{key}: {flat_old.get(key, '(unset)')!r} -> {flat_new.get(key, '(unset)')!r}"
        for key in keys
        if flat_old.get(key, "(unset)") != flat_new.get(key, "(unset)")
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def set_aside(files: list[Path]) -> Path | None:
    """Moves the existing `files` into `replaced-<UTC time>/` of their folder; returns that folder (or None)."""
    existing = [path for path in files if path.exists()]
    if not existing:
        return None
    folder = existing[0].parent / time.strftime("replaced-%Y%m%dT%H%M%SZ", time.gmtime())
    folder.mkdir(exist_ok=True)
    for path in existing:
        path.rename(folder / path.name)
    logger.warning("moved %d earlier file(s) to %s (--rerun)", len(existing), folder)
    return folder
