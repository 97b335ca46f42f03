"""Multiple-choice benchmarks (VLMEvalKit's `ImageMCQDataset` conventions)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..evaluation.mcq import circular_accuracy, extract_choices, mcq_accuracy, options_from_row
from ..evaluation.metrics import GROUP_COLUMNS, require_columns
from .base import ImageDataset, Message, present

CIRCULAR = ("MMBench_DEV_EN_V11",)
# VLMEvalKit reports accuracy per `split` when the column exists; MMMU_DEV_VAL mixes MMMU's dev and validation
# questions, and the number quoted as "MMMU (val)" is the accuracy of its validation split.
MCQ_GROUP_COLUMNS = ("split", *GROUP_COLUMNS)
HEADLINE_SPLIT = {"MMMU_DEV_VAL": "validation"}
# VLMEvalKit's stand-in option for MMMU's open questions (rows without options): option A is the gold answer.
MMMU_OTHER_OPTION = "Other Answers"


def mmmu_open_questions_as_choices(predictions: pd.DataFrame) -> pd.DataFrame:
    """MMMU's open questions (no option A) turned into two-option questions, as VLMEvalKit scores them: option A
    is the gold answer text, option B "Other Answers", and the answer letter A. Other rows are unchanged."""
    require_columns(predictions, ["A", "answer"], "MMMU scores")
    table = predictions.copy()
    open_rows = ~table["A"].map(present)
    if "B" not in table.columns:
        table["B"] = None
    table["A"] = table["A"].astype(object)
    table["B"] = table["B"].astype(object)
    table.loc[open_rows, "A"] = table.loc[open_rows, "answer"]
    table.loc[open_rows, "B"] = MMMU_OTHER_OPTION
    table["answer"] = table["answer"].astype(object)
    table.loc[open_rows, "answer"] = "A"
    return table


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

    def question_text(self, position: int) -> str:
        """Hint, question and options, one per line, without the answer-format line (CDPruner's MMBench loader,
        `model_vqa_mmbench.py`, passes this text)."""
        row = self.data.iloc[position]
        lines = [str(row["hint"])] if "hint" in row and present(row["hint"]) else []
        lines.append(str(row["question"]))
        lines += [f"{letter}. {text}" for letter, text in options_from_row(row).items()]
        return "\n".join(lines)

    def build_prompt(self, row: pd.Series) -> Message:
        options = options_from_row(row)
        prompt = ""
        if "hint" in row and present(row["hint"]):
            prompt += f"Hint: {row['hint']}\n"
        prompt += f"Question: {row['question']}\n"
        if options:  # MMMU's open questions have none: VLMEvalKit then asks the question alone
            prompt += "Options:\n" + "".join(f"{letter}. {text}\n" for letter, text in options.items())
            prompt += "Please select the correct answer from the options above. \n"
        return [{"type": "text", "value": prompt}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Accuracy (circular for MMBench); a reply the letter rules cannot read goes to `judge` when given.

        Reported per `split` too when the column exists; for MMMU_DEV_VAL `overall` is the validation split's
        accuracy (VLMEvalKit's headline for it) and `all_splits` the accuracy over every row. `unreadable` counts
        the replies left without a letter (wrong), `judge_failures` those the judge was asked about but did not
        answer.
        """
        scored = predictions.copy()
        if self.name.startswith("MMMU"):
            scored = mmmu_open_questions_as_choices(scored)
        scored["extracted"] = extract_choices(scored)
        unreadable = scored["extracted"].isna()
        judge_failures = 0
        if judge is not None and unreadable.any():
            positions = list(scored.index[unreadable])
            results = judge.map(
                lambda row: judge.extract_choice(str(row["question"]), options_from_row(row), str(row["prediction"])),
                [scored.loc[position] for position in positions],
            )
            for position, result in zip(positions, results, strict=True):
                scored.at[position, "extracted"] = result.value if result.ok else None
                judge_failures += not result.ok
        if self.name in CIRCULAR:
            report = circular_accuracy(scored, group_columns=MCQ_GROUP_COLUMNS)
        else:
            report = mcq_accuracy(scored, group_columns=MCQ_GROUP_COLUMNS)
        headline = HEADLINE_SPLIT.get(self.name)
        if headline is not None and headline in report.get("split", {}):
            report["all_splits"] = report["overall"]
            report["overall"] = report["split"][headline]
        report["unreadable"] = int(scored["extracted"].isna().sum())
        report["judge_failures"] = judge_failures
        return report
