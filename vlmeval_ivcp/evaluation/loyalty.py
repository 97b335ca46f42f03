"""Loyalty: how often a pruned run answers what the unpruned run answered (per benchmark).

Agreement is on the *extracted* answer when the benchmark has one (the option letter, yes/no) and on the
normalised reply text otherwise, so that a pruned model that says "B." where the unpruned one said "B" is loyal.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd


def _normalised(text: object) -> str:
    return " ".join(str(text).lower().split()).strip(" .") if not pd.isna(text) else ""


def loyalty(
    pruned: pd.DataFrame,
    reference: pd.DataFrame,
    answer_of: Callable[[pd.Series], object] | None = None,
    index_col: str = "index",
    prediction_col: str = "prediction",
) -> dict[str, float | int]:
    """Fraction of the shared rows on which `pruned` gives the same answer as `reference` (the unpruned run).

    Args:
        pruned, reference (`pd.DataFrame`): prediction tables with `index` and `prediction` columns.
        answer_of (`Callable`, *optional*): maps a row to its answer (e.g. the extracted option letter); the
            normalised prediction text when omitted.
    Returns:
        `dict`: `{"loyalty": fraction in [0, 1], "count": shared rows, "missing": reference rows without a pruned
        answer}`.
    Raises:
        ValueError: no shared row, or an index repeated in either table.
    """
    for name, table in (("pruned", pruned), ("reference", reference)):
        repeated = table[index_col][table[index_col].duplicated()].tolist()
        if repeated:
            raise ValueError(f"the {name} predictions repeat index {repeated[0]!r}")
    key = answer_of or (lambda row: _normalised(row[prediction_col]))
    ours = {row[index_col]: key(row) for _, row in pruned.iterrows()}
    theirs = {row[index_col]: key(row) for _, row in reference.iterrows()}
    shared = [index for index in theirs if index in ours]
    if not shared:
        raise ValueError("the pruned and the reference predictions share no index")
    same = sum(ours[index] == theirs[index] for index in shared)
    return {"loyalty": same / len(shared), "count": len(shared), "missing": len(theirs) - len(shared)}
