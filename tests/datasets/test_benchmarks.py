"""The yes/no, VQA and judged benchmark families on small generated TSVs: registry, prompts, hand-computed scores,
a real local judge server, and an end-to-end pass of every benchmark through the tiny Qwen2.5-VL."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from PIL import Image

from tests.datasets.fixtures import BENCHMARK_ROWS, judge_server, write_benchmark
from vlmeval_ivcp.datasets.judged import (
    LLAVABENCH_SYSTEM,
    JudgedDataset,
    labels_of,
    mathvista_correct,
    mmvet_reference,
    parse_score_pair,
)
from vlmeval_ivcp.datasets.registry import build_dataset, dataset_class
from vlmeval_ivcp.datasets.vqa import VQADataset
from vlmeval_ivcp.datasets.yorn import YesNoDataset

FAMILIES = {
    YesNoDataset: ("MME", "POPE", "HallusionBench"),
    VQADataset: ("TextVQA_VAL", "ChartQA_TEST", "DocVQA_VAL", "InfoVQA_VAL", "GQA_TestDev_Balanced", "OCRBench"),
    JudgedDataset: ("MMVet", "MathVista_MINI", "LLaVABench"),
}
NAMES = [name for names in FAMILIES.values() for name in names]
SHORT = "\nAnswer the question using a single word or phrase."

# (row position, exact prompt text) per benchmark.
PROMPTS = {
    "MME": (1, "Is there a blue square in the image? Please answer yes or no."),
    "POPE": (0, "Is there a circle in the image?"),
    "HallusionBench": (2, "Is the shape red?"),
    "TextVQA_VAL": (0, "What color is the circle?" + SHORT),
    "ChartQA_TEST": (1, "What share is blue?" + SHORT),
    "DocVQA_VAL": (0, "What kind of document is this?" + SHORT),
    "InfoVQA_VAL": (2, "How many icons are there?" + SHORT),
    "GQA_TestDev_Balanced": (1, "What is the square on?" + SHORT),
    "OCRBench": (0, "what is written in the image?"),
    "MMVet": (0, "What are the roots of the equation?"),
    "MathVista_MINI": (0, "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
                          "at the end.\nQuestion: What fraction of the circle is red?\nChoices:\n(A) 1/4\n(B) 1\n"
                          "(C) 1/2\n(D) 3/4"),
    "LLaVABench": (1, "Describe the picture in detail."),
}  # fmt: skip


def _dataset(name, tmp_path):
    write_benchmark(name, tmp_path)
    return build_dataset(name, tmp_path)


def _predictions(dataset, replies):
    table = dataset.data.drop(columns=["image"]).iloc[: len(replies)].copy()
    table["prediction"] = replies
    return table


def _last_user_text(messages):
    return messages[-1]["content"]


def _reply_after(marker, answers):
    """A responder that looks up the text after the last `marker` of the prompt's last line holding it."""

    def respond(messages):
        text = _last_user_text(messages)
        key = text.rsplit(marker, 1)[1].split("\n", 1)[0].strip()
        return answers[key]

    return respond


# ---- registry and prompts ----


@pytest.mark.parametrize(("family", "name"), [(family, name) for family, names in FAMILIES.items() for name in names])
def test_each_name_is_registered_to_its_family(family, name):
    assert dataset_class(name) is family
    assert name in family.SUPPORTED


def test_unknown_name_raises_listing_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown dataset 'MMEE'.*'HallusionBench'.*'OCRBench'"):
        dataset_class("MMEE")


@pytest.mark.parametrize("name", NAMES)
def test_prompt_snapshot_and_message(name, tmp_path):
    dataset = _dataset(name, tmp_path)
    assert len(dataset) == len(BENCHMARK_ROWS[name])
    position, text = PROMPTS[name]
    assert dataset.build_prompt(dataset.data.iloc[position]) == [{"type": "text", "value": text}]
    image, prompt = dataset.message(position)
    assert prompt == {"type": "text", "value": text}
    assert image["type"] == "image"
    with Image.open(image["value"]) as picture:
        assert picture.size[0] in (28, 32, 40, 56)


@pytest.mark.parametrize("name", ["TextVQA_VAL", "MME", "OCRBench"])
def test_the_question_alone_is_the_question_cell_without_the_answer_format_suffix(name, tmp_path):
    dataset = _dataset(name, tmp_path)
    position, text = PROMPTS[name]
    question = str(dataset.data.iloc[position]["question"])
    assert dataset.question_text(position) == question and text.startswith(question)


def test_mme_rows_of_one_picture_share_its_file(tmp_path):
    dataset = _dataset("MME", tmp_path)
    assert dataset.image_paths(0) == dataset.image_paths(1) == [str(tmp_path / "images/MME/existence/1.png")]


# ---- yes/no ----

MME_REPLIES = ["Yes", "No", "Yes", "Yes, there are two.", "yes and no", "No"]


def test_mme_scores_without_judge(tmp_path):
    dataset = _dataset("MME", tmp_path)
    report = dataset.evaluate(_predictions(dataset, MME_REPLIES))
    # existence: both right -> 200; count: one of two right, no image fully right -> 50; commonsense: "yes and no"
    # is Unknown -> 50.
    assert report["categories"]["existence"]["score"] == 200
    assert report["categories"]["count"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0}
    assert report["perception"] == 250 and report["cognition"] == 50 and report["overall"] == 300
    assert report["unknown"] == 1 and report["judge_failures"] == 0


def test_mme_judge_resolves_unknown(tmp_path):
    dataset = _dataset("MME", tmp_path)
    with judge_server(lambda messages: "Yes") as server:
        report = dataset.evaluate(_predictions(dataset, MME_REPLIES), judge=server.judge())
    (request,) = server.requests  # only the Unknown reply goes to the judge
    assert "yes and no" in _last_user_text(request["messages"])
    assert report["cognition"] == 200 and report["overall"] == 450
    assert report["unknown"] == 0 and report["judge_failures"] == 0


def test_mme_judge_failure_is_counted_not_scored(tmp_path):
    dataset = _dataset("MME", tmp_path)
    with judge_server(lambda messages: 500) as server:
        report = dataset.evaluate(_predictions(dataset, MME_REPLIES), judge=server.judge())
    assert report["judge_failures"] == 1 and report["unknown"] == 1 and report["overall"] == 300


def test_pope_f1_overall_and_per_subset(tmp_path):
    dataset = _dataset("POPE", tmp_path)
    replies = ["Yes", "Yes", "No", "No", "Yes, there is.", None]  # a missing reply reads as Unknown: "no" for F1
    report = dataset.evaluate(_predictions(dataset, replies))
    # TP 2, FP 1, FN 1, TN 2 (the Unknown); accuracy counts the Unknown wrong, as VLMEvalKit's POPE_rating does.
    assert report["overall"] == report["f1"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(3 / 6) and report["precision"] == pytest.approx(2 / 3)
    assert report["category"]["adversarial"]["f1"] == pytest.approx(2 / 3)
    assert report["category"]["popular"]["f1"] == 0.0 and report["category"]["random"]["f1"] == 1.0
    assert report["unknown"] == 1


def test_hallusionbench_question_figure_and_all_accuracy(tmp_path):
    dataset = _dataset("HallusionBench", tmp_path)
    report = dataset.evaluate(_predictions(dataset, ["Yes", "No", "Yes", "Yes"]))
    assert (report["aAcc"], report["fAcc"], report["qAcc"]) == pytest.approx((3 / 4, 2 / 3, 2 / 3))
    assert report["overall"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert report["category"]["VS"] == pytest.approx({"aAcc": 2 / 3, "fAcc": 1 / 2, "qAcc": 1 / 2})
    assert report["l2-category"]["map"] == {"aAcc": 1.0, "fAcc": 1.0, "qAcc": 1.0}


# ---- VQA ----


@pytest.mark.parametrize(
    ("name", "replies", "expected"),
    [
        # 10 x "red"; "stop" is 2 of 10 answers: each left-out set scores min(1, matches / 3) -> 0.6; "ten" -> "10".
        ("TextVQA_VAL", ["Red", "stop", "ten"], (1 + 0.6 + 1) / 3),
        # 12.5 is within 5% of 12; 0.46 within 5% of 45%; "no" is not "Yes".
        ("ChartQA_TEST", ["12.5", "0.46", "no"], 2 / 3),
        # ANLS: 1 - 1/8 for "invoices"; 1 - 1/4 for "2018"; "none" is below the 0.5 threshold.
        ("DocVQA_VAL", ["invoices", "2018", "none"], (7 / 8 + 3 / 4 + 0) / 3),
        ("InfoVQA_VAL", ["42%", "Asia", "fife"], (1 + 1 + 3 / 4) / 3),
        # VLMEvalKit's GQA rule: exact match up to case and surrounding spaces, no VQA normalisation, so "the table"
        # is not "table" and "left." is not "left".
        ("GQA_TestDev_Balanced", [" LEFT ", "the table", "left."], 1 / 3),
    ],
)
def test_vqa_scores(name, replies, expected, tmp_path):
    dataset = _dataset(name, tmp_path)
    report = dataset.evaluate(_predictions(dataset, replies))
    assert report["overall"] == pytest.approx(expected)
    assert report["count"] == 3


def test_ocrbench_hits(tmp_path):
    dataset = _dataset("OCRBench", tmp_path)
    report = dataset.evaluate(_predictions(dataset, ["The sign says stop", "x^{2} + 1", "tea"]))
    assert report["overall"] == report["hits"] == 2
    assert report["fraction"] == pytest.approx(2 / 3)
    assert report["category"] == {
        "Handwritten Mathematical Expression Recognition": 1,
        "Regular Text Recognition": 1,
        "Scene Text-centric VQA": 0,
    }


# ---- judged ----


@pytest.mark.parametrize("name", FAMILIES[JudgedDataset])
def test_judged_sets_refuse_to_score_without_a_judge(name, tmp_path):
    dataset = _dataset(name, tmp_path)
    with pytest.raises(
        ValueError, match=rf"{name} is scored by an LLM judge.*--judge.*OPENAI_API_KEY.*OPENAI_API_BASE"
    ):
        dataset.evaluate(_predictions(dataset, ["x", "y", "z"]))


def test_mmvet_mean_grade_and_failures(tmp_path):
    dataset = _dataset("MMVet", tmp_path)
    grades = {"x = -1": "0.5", "four": "1.0", "a circle": "I cannot grade this"}
    with judge_server(_reply_after("Model answer:", grades)) as server:
        report = dataset.evaluate(_predictions(dataset, list(grades)), judge=server.judge())
    # The judge asks several questions at once: the requests arrive in any order.
    assert any("-1 <AND> -5 (<AND>: every part is needed" in _last_user_text(r["messages"]) for r in server.requests)
    assert report["overall"] == pytest.approx(0.75)
    assert (report["count"], report["judged"], report["judge_failures"], report["failed_indices"]) == (3, 2, 1, [2])
    assert report["capability"] == {"math": 0.75, "rec": 0.5}
    assert report["category"] == {"math": 1.0, "rec_math": 0.5}


def test_mathvista_judge_extraction_then_rules(tmp_path):
    dataset = _dataset("MathVista_MINI", tmp_path)
    replies = [
        "The correct answer is (B) 1.",  # the rules read B: right without asking the judge
        "A square has four corners.",  # judge: "4" -> right
        "About a third of it.",  # judge: "0.33" -> 0.3 at one decimal -> right
        "It points up, to the south.",  # judge: "south" -> wrong
    ]
    extractions = {replies[1]: "Extracted answer: 4", replies[2]: "0.33", replies[3]: "south"}
    with judge_server(_reply_after("Model reply:", extractions)) as server:
        report = dataset.evaluate(_predictions(dataset, replies), judge=server.judge())
    assert len(server.requests) == 3
    texts = [_last_user_text(request["messages"]) for request in server.requests]
    assert any("Question: How many corners does the shape have?" in text for text in texts)
    assert report["overall"] == 0.75 and report["prefetched"] == 1 and report["judge_failures"] == 0
    assert report["task"] == {"figure question answering": 1.0, "geometry problem solving": 0.5}
    assert report["skills"] == {"arithmetic reasoning": 1.0, "geometry reasoning": 0.5}


def test_mathvista_choice_read_by_the_rules_is_not_sent_to_the_judge(tmp_path):
    # VLMEvalKit's prefetch: once the rules read an option letter from a multiple-choice reply, that letter is the
    # answer, right or wrong; the judge is asked only about replies the rules cannot read.
    dataset = _dataset("MathVista_MINI", tmp_path)
    with judge_server(lambda messages: "B") as server:
        wrong = dataset.evaluate(_predictions(dataset, ["The answer is (C)."]), judge=server.judge())
        unread = dataset.evaluate(_predictions(dataset, ["Half of it, I think."]), judge=server.judge())
    assert len(server.requests) == 1 and "Half of it" in _last_user_text(server.requests[0]["messages"])
    assert (wrong["overall"], wrong["prefetched"], wrong["judged"]) == (0.0, 1, 1)
    assert (unread["overall"], unread["prefetched"]) == (1.0, 0)


def test_mathvista_judge_failure_leaves_the_row_out(tmp_path):
    dataset = _dataset("MathVista_MINI", tmp_path)
    with judge_server(lambda messages: 503) as server:
        report = dataset.evaluate(_predictions(dataset, ["(B)", "four", "a third", "south"]), judge=server.judge())
    assert report["overall"] == 1.0 and report["judged"] == 1 and report["failed_indices"] == [2, 3, 4]


@pytest.mark.parametrize(
    ("row", "answer", "expected"),
    [
        ({"question_type": "multi_choice", "choices": "['3', '4']", "answer": "4"}, "4", True),  # text -> letter B
        ({"question_type": "multi_choice", "choices": "['3', '4']", "answer": "4"}, "A", False),
        ({"question_type": "free_form", "answer_type": "integer", "answer": "1000"}, "1,000", True),
        ({"question_type": "free_form", "answer_type": "integer", "answer": "7"}, "seven", False),
        ({"question_type": "free_form", "answer_type": "float", "answer": "1.45", "precision": "2"}, "1.449", True),
        ({"question_type": "free_form", "answer_type": "float", "answer": "1.45", "precision": "2"}, "1.5", False),
        ({"question_type": "free_form", "answer_type": "list", "answer": "[2007, 2008]"}, "[2007,2008]", True),
        ({"question_type": "free_form", "answer_type": "text", "answer": "Nile"}, " nile ", True),
    ],
)
def test_mathvista_comparison_rules(row, answer, expected):
    assert mathvista_correct({"index": 7, **row}, answer) is expected


def test_mathvista_non_numeric_gold_is_named():
    row = {"index": 7, "question_type": "free_form", "answer_type": "integer", "answer": "many"}
    with pytest.raises(ValueError, match=r"row 7.*'many'"):
        mathvista_correct(row, "3")


def test_mathvista_unreadable_choices_are_named():
    row = {"index": 9, "question_type": "multi_choice", "choices": "3/4", "answer": "3/4"}
    with pytest.raises(ValueError, match=r"row 9: `choices` must be a list literal, got '3/4'"):
        mathvista_correct(row, "A")


def test_llavabench_relative_score(tmp_path):
    dataset = _dataset("LLaVABench", tmp_path)
    reviews = {"A circle.": "8 6\nAssistant 2 is brief.", "A square.": "10, 5\nShort.", "Practice.": "6 6\nBoth ok."}
    with judge_server(_reply_after("[Assistant 2]\n", reviews)) as server:
        report = dataset.evaluate(_predictions(dataset, list(reviews)), judge=server.judge())
    (first,) = [r["messages"] for r in server.requests if "A red circle on white." in r["messages"][1]["content"]]
    assert first[0] == {"role": "system", "content": LLAVABENCH_SYSTEM}
    assert "[Image description]\nA red circle on white." in first[1]["content"]
    assert "[Assistant 1]\nA red circle on a white background.\n" in first[1]["content"]
    assert report["overall"] == pytest.approx(17 / 24)
    assert report["prediction_score"] == pytest.approx(17 / 3) and report["reference_score"] == 8
    assert report["category"] == pytest.approx({"complex": 1.0, "conv": 0.75, "detail": 0.5})


def test_llavabench_unreadable_reviews_are_failures(tmp_path):
    dataset = _dataset("LLaVABench", tmp_path)
    with judge_server(lambda messages: "Assistant 1 is better.") as server:
        report = dataset.evaluate(_predictions(dataset, ["a", "b", "c"]), judge=server.judge())
    assert report["overall"] is None and report["judge_failures"] == 3 and report["category"] == {}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("8 6\nwhy", (8.0, 6.0)), ("7.5,9", (7.5, 9.0)), ("8\n6", None), ("8 6 7", None), ("0 5", None), ("", None)],
)
def test_parse_score_pair(reply, expected):
    assert parse_score_pair(reply) == expected


def test_labels_and_mmvet_reference():
    assert labels_of("rec, ocr") == ["rec", "ocr"]
    assert labels_of("['geometry reasoning', 'algebra']") == ["geometry reasoning", "algebra"]
    assert labels_of(float("nan")) == []
    assert mmvet_reference("cat") == "cat"
    assert mmvet_reference("a<OR>b").startswith("a <OR> b (")


# ---- end to end on the tiny model ----

E2E_JUDGE_REPLIES = {"MMVet": "0.5", "MathVista_MINI": "A", "LLaVABench": "7 7\nSimilar answers."}


def test_every_benchmark_end_to_end_on_the_tiny_model(tmp_path):
    from support.tiny import tiny_wrapper

    wrapper = tiny_wrapper()
    budget = wrapper.max_new_tokens
    wrapper.max_new_tokens = 3
    try:
        for name in NAMES:
            dataset = _dataset(name, tmp_path)
            replies = [wrapper.generate(dataset.message(position), dataset.name) for position in range(2)]
            assert all(isinstance(reply, str) for reply in replies)
            table = _predictions(dataset, replies)
            # A predictions file read back from disk (cells as text, blanks as NaN) must score the same.
            saved = tmp_path / f"{name}_predictions.tsv"
            table.to_csv(saved, sep="\t", index=False)
            reply = E2E_JUDGE_REPLIES.get(name, "No")
            with judge_server(lambda messages, reply=reply: reply) as server:
                report = dataset.evaluate(table, judge=server.judge())
                reloaded = dataset.evaluate(pd.read_csv(saved, sep="\t", dtype=str), judge=server.judge())
            assert isinstance(report["overall"], (int, float)) and math.isfinite(report["overall"]), name
            assert reloaded["overall"] == report["overall"], name
            assert report.get("judge_failures", 0) == 0 and report.get("unknown", 0) == 0, name
            if name in FAMILIES[JudgedDataset]:
                assert report["judged"] == 2, name
    finally:
        wrapper.max_new_tokens = budget
