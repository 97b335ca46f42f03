"""MCQDataset: VLMEvalKit's multiple-choice prompt, MMMU's open questions and splits, MMBench's circular scoring."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.datasets.fixtures import RED_CIRCLE, judge_server
from vlmeval_ivcp.datasets.mcq import MCQDataset, mmmu_open_questions_as_choices
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.datasets.tsv import encode_image_to_base64, tsv_path

INSTRUCTION = "Please select the correct answer from the options above. \n"


def write_mcq(root, name: str, rows: list[dict]) -> None:
    image = encode_image_to_base64(RED_CIRCLE.draw())
    frame = pd.DataFrame([{"image": image, **row} for row in rows])
    frame.to_csv(tsv_path(name, root), sep="\t", index=False)


def predictions_of(dataset: MCQDataset, replies: list) -> pd.DataFrame:
    table = dataset.data.drop(columns=["image"]).copy()
    table["prediction"] = replies
    return table


# MMMU_DEV_VAL as VLMEvalKit ships it: a `split` column, and open questions with empty option cells.
MMMU_ROWS = [
    {"index": 1, "question": "Which shape is red?", "A": "circle", "B": "square", "C": None, "answer": "A",
     "split": "dev", "category": "Art"},
    {"index": 2, "question": "How many sides has a square?", "A": None, "B": None, "C": None, "answer": "4",
     "split": "validation", "category": "Math"},
    {"index": 3, "question": "Which colour is the sky?", "A": "green", "B": "blue", "C": "red", "answer": "B",
     "split": "validation", "category": "Art"},
    {"index": 4, "question": "What is 2 + 3?", "A": None, "B": None, "C": None, "answer": "5",
     "split": "validation", "category": "Math"},
]  # fmt: skip


# Two ScienceQA rows: one with a hint and two options, one without a hint and three options.
SCIENCE_ROWS = [
    {"index": 0, "hint": "Look at the map.", "question": "Which state is shown?", "A": "Ohio", "B": "Utah", "C": None,
     "answer": "B"},
    {"index": 1, "hint": None, "question": "Which is a mammal?", "A": "cat", "B": "trout", "C": "owl", "answer": "A"},
]  # fmt: skip


def test_prompt_is_vlmevalkits_with_hint_options_and_instruction(tmp_path):
    write_mcq(tmp_path, "ScienceQA_TEST", SCIENCE_ROWS)
    dataset = build_dataset("ScienceQA_TEST", tmp_path)
    assert dataset.build_prompt(dataset.data.iloc[0]) == [
        {"type": "text", "value": "Hint: Look at the map.\nQuestion: Which state is shown?\nOptions:\nA. Ohio\n"
         "B. Utah\n" + INSTRUCTION}
    ]  # fmt: skip
    assert dataset.build_prompt(dataset.data.iloc[1])[0]["value"] == (
        "Question: Which is a mammal?\nOptions:\nA. cat\nB. trout\nC. owl\n" + INSTRUCTION
    )


def test_the_question_alone_holds_hint_question_and_options_without_the_instruction(tmp_path):
    write_mcq(tmp_path, "ScienceQA_TEST", SCIENCE_ROWS)
    dataset = build_dataset("ScienceQA_TEST", tmp_path)
    assert dataset.question_text(0) == "Look at the map.\nWhich state is shown?\nA. Ohio\nB. Utah"
    assert dataset.question_text(1) == "Which is a mammal?\nA. cat\nB. trout\nC. owl"


def test_a_question_without_options_is_asked_alone(tmp_path):
    # VLMEvalKit shows "Options:" and the instruction only when the row has options (MMMU's open questions do not).
    write_mcq(tmp_path, "MMMU_DEV_VAL", MMMU_ROWS)
    dataset = build_dataset("MMMU_DEV_VAL", tmp_path)
    assert dataset.build_prompt(dataset.data.iloc[1]) == [
        {"type": "text", "value": "Question: How many sides has a square?\n"}
    ]


def test_mmmu_open_questions_are_scored_as_vlmevalkit_scores_them(tmp_path):
    write_mcq(tmp_path, "MMMU_DEV_VAL", MMMU_ROWS)
    dataset = build_dataset("MMMU_DEV_VAL", tmp_path)
    # Row 2: the reply states the gold answer "4" (option A after VLMEvalKit's MMMU_preproc): right.
    # Row 4: "6" is neither "5" nor "Other Answers": wrong.
    report = dataset.evaluate(predictions_of(dataset, ["A", "A square has 4 sides.", "B", "6"]))
    # Validation split (rows 2, 3, 4): 2 of 3 right; the headline is the validation split, as VLMEvalKit reports it.
    assert report["split"] == pytest.approx({"dev": 1.0, "validation": 2 / 3})
    assert report["overall"] == pytest.approx(2 / 3)
    assert report["all_splits"] == pytest.approx(3 / 4) and report["count"] == 4
    assert report["category"] == pytest.approx({"Art": 1.0, "Math": 0.5})
    assert report["unreadable"] == 1


def test_mmmu_open_question_conversion_leaves_closed_rows_alone():
    table = pd.DataFrame(MMMU_ROWS)
    converted = mmmu_open_questions_as_choices(table)
    assert converted[["A", "B", "answer"]].values.tolist() == [
        ["circle", "square", "A"],
        ["4", "Other Answers", "A"],
        ["green", "blue", "B"],
        ["5", "Other Answers", "A"],
    ]
    assert table["A"].isna().sum() == 2  # the input is not modified
    with pytest.raises(KeyError, match="answer"):
        mmmu_open_questions_as_choices(table.drop(columns=["answer"]))


def test_mmbench_is_circular_and_reported_per_split(tmp_path):
    rows = []
    for question, answers, replies in ((7, "ABC", "ABC"), (8, "BCA", "BCB")):
        for k in range(3):
            options = {"A": "red", "B": "blue", "C": "green"}
            rows.append({"index": question + k * 1_000_000, "question": "Colour?", **options, "answer": answers[k],
                         "prediction": replies[k], "split": "dev", "category": "colour"})  # fmt: skip
    write_mcq(tmp_path, "MMBench_DEV_EN_V11", [{k: v for k, v in row.items() if k != "prediction"} for row in rows])
    dataset = build_dataset("MMBench_DEV_EN_V11", tmp_path)
    report = dataset.evaluate(predictions_of(dataset, [row["prediction"] for row in rows]))
    assert report["overall"] == 0.5 and report["count"] == 2
    assert report["split"] == {"dev": 0.5} and report["category"] == {"colour": 0.5}
    assert "all_splits" not in report


def test_plain_mcq_without_split_reports_no_split(tmp_path):
    write_mcq(tmp_path, "MMStar", [{"index": 0, "question": "q", "A": "x", "B": "y", "answer": "A"}])
    dataset = build_dataset("MMStar", tmp_path)
    report = dataset.evaluate(predictions_of(dataset, ["(A)"]))
    assert report == {"overall": 1.0, "count": 1, "unreadable": 0, "judge_failures": 0}


def test_pictures_are_attached_before_the_prompt(tmp_path):
    write_mcq(tmp_path, "MMStar", [{"index": 0, "question": "q", "A": "x", "B": "y", "answer": "A"}])
    dataset = build_dataset("MMStar", tmp_path)
    image, text = dataset.message(0)
    assert image["type"] == "image"
    assert text == {"type": "text", "value": "Question: q\nOptions:\nA. x\nB. y\n" + INSTRUCTION}


def test_the_judge_reads_what_the_rules_cannot_and_its_failures_are_counted(tmp_path):
    rows = [{"index": i, "question": "Colour?", "A": "red", "B": "blue", "answer": "B"} for i in range(2)]
    write_mcq(tmp_path, "SEEDBench_IMG", rows)
    dataset = build_dataset("SEEDBench_IMG", tmp_path)
    replies = ["B", "Hmm, hard to say, the sky's colour perhaps."]
    with judge_server(lambda messages: "B") as server:
        report = dataset.evaluate(predictions_of(dataset, replies), judge=server.judge())
    assert len(server.requests) == 1  # only the reply the rules cannot read
    assert (report["overall"], report["unreadable"], report["judge_failures"]) == (1.0, 0, 0)
    with judge_server(lambda messages: 500) as server:
        report = dataset.evaluate(predictions_of(dataset, replies), judge=server.judge())
    assert (report["overall"], report["unreadable"], report["judge_failures"]) == (0.5, 1, 1)
