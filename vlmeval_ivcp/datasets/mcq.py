"""Multiple-choice benchmarks (VLMEvalKit's `ImageMCQDataset` conventions)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..evaluation.mcq import circular_accuracy, extract_choices, mcq_accuracy, options_from_row
from .base import ImageDataset, Message, present

CIRCULAR = ("MMBench_DEV_EN_V11",)


class MCQDataset(ImageDataset):
    """SEEDBench_IMG, MMBench (circular), MMStar, RealWorldQA, AI2D, ScienceQA, MMMU and the bundled DemoMCQ."""

    TYPE = "MCQ"
    SUPPORTED = (
        "SEEDBench_IMG",
        "MMBench_DEV_EN_V11",
        "MMStar",
        "RealWorldQA",
        "AI2D_TEST",
        "ScienceQA_TEST",
        "MMMU_DEV_VAL",
        "DemoMCQ",
    )
    REQUIRED_COLUMNS = ("index", "question", "A", "B")

    def build_prompt(self, row: pd.Series) -> Message:
        options = options_from_row(row)
        prompt = ""
        if "hint" in row and present(row["hint"]):
            prompt += f"Hint: {row['hint']}\n"
        prompt += f"Question: {row['question']}\n"
        prompt += "Options:\n" + "".join(f"{letter}. {text}\n" for letter, text in options.items())
        prompt += "Please select the correct answer from the options above. \n"
        return [{"type": "text", "value": prompt}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Accuracy (circular for MMBench); a reply the letter rules cannot read goes to `judge` when given."""
        scored = predictions.copy()
        scored["extracted"] = extract_choices(scored)
        unreadable = scored["extracted"].isna()
        if judge is not None and unreadable.any():
            for position in scored.index[unreadable]:
                row = scored.loc[position]
                result = judge.extract_choice(str(row["question"]), options_from_row(row), str(row["prediction"]))
                scored.at[position, "extracted"] = result.value if result.ok else None
        report = circular_accuracy(scored) if self.name in CIRCULAR else mcq_accuracy(scored)
        report["unreadable"] = int(scored["extracted"].isna().sum())
        return report
