"""Short-answer VQA benchmarks (VLMEvalKit's `ImageVQADataset` and `OCRBench` conventions), scored by rules.

VLMEvalKit's `ImageVQADataset` (TextVQA, ChartQA, DocVQA, InfoVQA, GQA) appends `SHORT_ANSWER_SUFFIX` to the
question; its `OCRBench` class sends the question as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..evaluation.metrics import GROUP_COLUMNS
from ..evaluation.vqa import ocrbench_scores, vqa_accuracy
from .base import ImageDataset, Message

SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
# VLMEvalKit reports VQA scores per `split` when the column exists, else per category; we report every one present.
VQA_GROUP_COLUMNS = ("split", *GROUP_COLUMNS)


@dataclass(frozen=True)
class VQASpec:
    """How one benchmark is asked and scored.

    Args:
        metric (`str`): a key of `vlmeval_ivcp.evaluation.vqa.VQA_METRICS`, or "ocrbench" for `ocrbench_scores`.
        suffix (`str`): text appended to the question.
    """

    metric: str
    suffix: str = SHORT_ANSWER_SUFFIX


SPECS: dict[str, VQASpec] = {
    "TextVQA_VAL": VQASpec("vqa_score"),
    "ChartQA_TEST": VQASpec("relaxed_accuracy"),
    "DocVQA_VAL": VQASpec("anls"),
    "InfoVQA_VAL": VQASpec("anls"),
    # VLMEvalKit scores GQA by its "accuracy" rule: a case-insensitive exact match, without VQA normalisation.
    "GQA_TestDev_Balanced": VQASpec("case_insensitive_match"),
    "OCRBench": VQASpec("ocrbench", suffix=""),
}


class VQADataset(ImageDataset):
    """TextVQA_VAL (VQA score), ChartQA_TEST (relaxed accuracy), DocVQA_VAL / InfoVQA_VAL (ANLS),
    GQA_TestDev_Balanced (case-insensitive exact match) and OCRBench (substring hits).

    `evaluate` returns `{"overall", "count", <group column>: {group: score}}` with scores in [0, 1]; for OCRBench
    `overall` is the hit count (VLMEvalKit's "Final Score", out of 1000 on the full set) and `fraction` the hit rate.
    The `answer` cell holds one answer or a Python list literal of answers.
    """

    TYPE = "VQA"
    SUPPORTED = tuple(SPECS)

    def build_prompt(self, row: pd.Series) -> Message:
        return [{"type": "text", "value": str(row["question"]) + SPECS[self.name].suffix}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Rule-based scores of a predictions table (`judge` is not used: these metrics need none)."""
        metric = SPECS[self.name].metric
        if metric == "ocrbench":
            report = ocrbench_scores(predictions)
            return {"overall": report["hits"], **report}
        return vqa_accuracy(predictions, metric, group_columns=VQA_GROUP_COLUMNS)
