"""Yes/no benchmarks (VLMEvalKit's `ImageYORNDataset` conventions): MME, POPE and HallusionBench.

The prompt is the row's question as is: VLMEvalKit appends nothing for these three (MME's questions already end in
"Please answer yes or no."). Replies are read as Yes/No/Unknown by rules; with a judge, every Unknown is asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ..evaluation.metrics import require_columns
from ..evaluation.yorn import UNKNOWN, add_hallusion_ids, extract_yes_no, hallusion_scores, mme_scores, pope_scores
from .base import ImageDataset, Message, present


def _mme_report(scored: pd.DataFrame) -> dict[str, Any]:
    report = mme_scores(scored)
    # VLMEvalKit's headline for MME: perception (max 2000) + cognition (max 800).
    return {"overall": report["perception"] + report["cognition"], **report}


def _pope_report(scored: pd.DataFrame) -> dict[str, Any]:
    report = pope_scores(scored)
    overall = report.pop("overall")
    return {"overall": overall["f1"], **overall, **report}


def _hallusion_report(scored: pd.DataFrame) -> dict[str, Any]:
    if not {"set_id", "figure_id", "question_id"} <= set(scored.columns):
        scored = add_hallusion_ids(scored)
    report = hallusion_scores(scored)
    overall = report.pop("overall")
    # This project's one-number summary: VLMEvalKit reports aAcc, fAcc and qAcc only (tables print all three).
    return {"overall": sum(overall.values()) / len(overall), **overall, **report}


REPORTS: dict[str, Callable[[pd.DataFrame], dict[str, Any]]] = {
    "MME": _mme_report,
    "POPE": _pope_report,
    "HallusionBench": _hallusion_report,
}


class YesNoDataset(ImageDataset):
    """MME (perception + cognition), POPE (F1) and HallusionBench (aAcc, fAcc, qAcc; `overall` is their mean, this
    project's summary, not a VLMEvalKit figure).

    `evaluate` returns the metric's report with a numeric `overall` headline, plus `unknown` (replies still read as
    Unknown after the judge, scored as VLMEvalKit scores them: wrong, and "no" for POPE's F1) and `judge_failures` (Unknown
    replies the judge was asked about but did not answer).
    """

    TYPE = "Y/N"
    SUPPORTED = tuple(REPORTS)

    def build_prompt(self, row: pd.Series) -> Message:
        return [{"type": "text", "value": str(row["question"])}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Scores of a predictions table; `judge` (a `Judge`), when given, reads the replies the rules cannot."""
        require_columns(predictions, ["question", "prediction"], f"{self.name} scores")
        scored = predictions.copy()
        scored["extracted"] = [
            extract_yes_no(str(text)) if present(text) else UNKNOWN for text in scored["prediction"]
        ]
        judge_failures = 0
        if judge is not None:
            positions = list(scored.index[scored["extracted"] == UNKNOWN])
            results = judge.map(
                lambda row: judge.extract_yes_no(
                    str(row["question"]), str(row["prediction"]) if present(row["prediction"]) else ""
                ),
                [scored.loc[position] for position in positions],
            )
            for position, result in zip(positions, results, strict=True):
                if result.ok:
                    scored.at[position, "extracted"] = result.value
                else:
                    judge_failures += 1
        report = REPORTS[self.name](scored)
        report["unknown"] = int((scored["extracted"] == UNKNOWN).sum())
        report["judge_failures"] = judge_failures
        return report
