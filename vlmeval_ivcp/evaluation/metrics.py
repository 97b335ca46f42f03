"""Building blocks shared by the metric modules (`mcq`, `yorn`, `vqa`): column checks and per-group means.

Every score here is a fraction in [0, 1]; only MME's perception/cognition totals use MME's own 0-2000 / 0-800 scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

# The grouping columns of VLMEvalKit's TSVs, reported when present.
GROUP_COLUMNS = ("category", "l2-category")


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise if `df` lacks any of `columns`, or has no rows.

    Args:
        df (`pd.DataFrame`): the predictions table.
        columns (`Iterable[str]`): the columns the caller reads.
        what (`str`): what is being scored, for the message (e.g. "MME scores").

    Raises:
        KeyError: a column is missing; the message lists the missing and the present ones.
        ValueError: the table has no rows.
    """
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise KeyError(f"{what} need column(s) {missing}; the table has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError(f"{what}: the table has no rows to score")


def present_group_columns(df: pd.DataFrame, group_columns: Sequence[str] = GROUP_COLUMNS) -> list[str]:
    """The entries of `group_columns` that `df` has, in order."""
    return [column for column in group_columns if column in df.columns]


def mean_by_group(
    values: pd.Series, df: pd.DataFrame, group_columns: Sequence[str] = GROUP_COLUMNS
) -> dict[str, float | int | dict[str, float]]:
    """Mean of per-row `values` overall and within each group of each grouping column present in `df`.

    Args:
        values (`pd.Series`): one number (or bool) per row of `df`, aligned on its index.
        df (`pd.DataFrame`): the table `values` belongs to; only its grouping columns are read.
        group_columns (`Sequence[str]`): grouping columns to report when present (missing ones are skipped);
            rows whose group value is missing (NaN) count in "overall" only.

    Returns:
        `dict`: `{"overall": mean, "count": n_rows, <column>: {group: mean, ...}, ...}`, groups sorted by name.
    """
    if not values.index.equals(df.index):
        raise ValueError(f"the per-row values ({len(values)} rows) are not aligned with the table ({len(df)} rows)")
    numeric = values.astype(float)
    report: dict[str, float | int | dict[str, float]] = {"overall": float(numeric.mean()), "count": int(len(numeric))}
    for column in present_group_columns(df, group_columns):
        means = numeric.groupby(df[column], dropna=True).mean()
        report[column] = {str(group): float(mean) for group, mean in sorted(means.items(), key=lambda kv: str(kv[0]))}
    return report
