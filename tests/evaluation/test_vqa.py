"""VQA normalisation and scores (VQA score, relaxed accuracy, ANLS, exact match, OCRBench) on hand-computed cases."""

from __future__ import annotations

import pandas as pd
import pytest

from vlmeval_ivcp.evaluation.vqa import (
    OCRBENCH_FORMULA_CATEGORY,
    anls,
    case_insensitive_match,
    exact_match,
    levenshtein,
    normalize_vqa_answer,
    ocrbench_hit,
    ocrbench_scores,
    parse_answers,
    relaxed_accuracy,
    score_vqa,
    vqa_accuracy,
    vqa_score,
)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two dogs!", "2 dogs"),
        ("The Cat.", "cat"),
        ("an apple", "apple"),
        ("none", "0"),
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),
        # VLMEvalKit's contraction table, quirks included: one apostrophe missing only, no "im", "somebodyd"
        ("couldntve", "couldntve"),
        ("im", "im"),
        ("somebody'd", "somebodyd"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("black-white", "black white"),
        ("yes, sir", "yes sir"),
        ("left\nside\t", "left side"),
        ("o'clock", "o'clock"),
        ("10.", "10."),  # VLMEvalKit's process_punctuation keeps a period that follows a digit
        ("It is 3. Maybe", "it is 3. maybe"),
        ("." * 40 + "a", "." * 8 + "a"),  # ... and deletes at most 32 periods (it passes re.UNICODE as the count)
    ],
)
def test_normalize_vqa_answer(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


@pytest.mark.parametrize(
    ("value", "answers"),
    [
        ("['a', 'b']", ["a", "b"]),
        (["x", 3], ["x", "3"]),
        ("cat", ["cat"]),
        (7, ["7"]),
        ("[not a list", ["[not a list"]),
    ],
)
def test_parse_answers(value, answers):
    assert parse_answers(value) == answers


@pytest.mark.parametrize("value", [None, float("nan"), "[]"])
def test_parse_answers_refuses_missing_gold(value):
    with pytest.raises(ValueError, match="no gold answer"):
        parse_answers(value)


def test_vqa_score_leave_one_out_average():
    # 3 of 10 humans said "cat": a "cat" left out leaves 2 matches (2/3), a "dog" left out leaves 3 (1).
    assert vqa_score("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_score("Cat.", ["cat"] * 4 + ["dog"] * 6) == 1.0
    assert vqa_score("cat", ["cat"] + ["dog"] * 9) == pytest.approx(9 / 30)
    assert vqa_score("bird", ["cat"] * 10) == 0.0


def test_vqa_score_single_answer_is_normalised_exact_match():
    assert vqa_score("Two.", ["2"]) == 1.0
    assert vqa_score("three", ["2"]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "answers", "score"),
    [
        ("10.4", ["10"], 1.0),  # 4% off
        ("10.6", ["10"], 0.0),  # 6% off
        ("9.5", ["10"], 1.0),  # exactly 5% off
        ("45%", ["0.45"], 1.0),
        ("0.0", ["0"], 0.0),  # VLMEvalKit: a gold 0 is falsy, so "0.0" is compared as text
        ("0", ["0"], 1.0),
        ("0.01", ["0"], 0.0),
        (" Yes ", ["yes"], 1.0),
        ("yes", [" yes"], 0.0),  # the prediction is stripped, the gold answer is not
        ("Yes.", ["yes"], 0.0),
        ("blue", ["12"], 0.0),
        ("12", ["blue", "12.3"], 1.0),
    ],
)
def test_relaxed_accuracy(prediction, answers, score):
    assert relaxed_accuracy(prediction, answers) == score


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0


@pytest.mark.parametrize(
    ("prediction", "answers", "score"),
    [
        ("hallo", ["hello"], 0.8),
        ("  HELLO  world ", ["hello world"], 1.0),
        ("abc", ["xyz"], 0.0),
        ("ax", ["ab"], 0.5),  # similarity exactly at the threshold is kept
        ("abcd", ["axyz"], 0.0),  # similarity 0.25
        ("hallo", ["nothing alike", "hello"], 0.8),  # best gold answer
        ("", [""], 1.0),
        # VLMEvalKit divides the distance of the normalised strings by the longer raw length: 1 - 1/12, not 1/11
        ("hallo  world", ["hello world"], 11 / 12),
    ],
)
def test_anls(prediction, answers, score):
    assert anls(prediction, answers) == pytest.approx(score)


def test_exact_match_normalises_both_sides():
    assert exact_match("The Table.", ["table"]) == 1.0
    assert exact_match("two", ["chair", "2"]) == 1.0
    assert exact_match("tables", ["table"]) == 0.0


def test_case_insensitive_match_is_vlmevalkits_gqa_rule():
    # VLMEvalKit's "accuracy" method: strip and lower-case both sides, nothing else.
    assert case_insensitive_match("  Table\n", ["table"]) == 1.0
    assert case_insensitive_match("no", ["yes", "NO"]) == 1.0
    assert case_insensitive_match("The table.", ["table"]) == 0.0
    assert case_insensitive_match("two", ["2"]) == 0.0


def test_score_vqa_over_a_table_with_groups():
    df = pd.DataFrame(
        {
            "prediction": ["cat", "dog", None],
            "answer": ["['cat', 'cat', 'cat', 'cat']", "cat", "x"],
            "category": ["a", "a", "b"],
        }
    )
    assert score_vqa(df, "vqa_score").tolist() == [1.0, 0.0, 0.0]
    assert vqa_accuracy(df, "exact_match") == {
        "overall": pytest.approx(1 / 3),
        "count": 3,
        "category": {"a": 0.5, "b": 0.0},
    }


def test_score_vqa_errors_name_the_metric_or_row():
    df = pd.DataFrame({"prediction": ["a"], "answer": [None]}, index=["row-9"])
    with pytest.raises(KeyError, match="unknown VQA metric 'bleu'"):
        score_vqa(df, "bleu")
    with pytest.raises(ValueError, match="row 'row-9'"):
        score_vqa(df, "anls")


def test_ocrbench_hit_rules():
    assert ocrbench_hit("The sign says  STOP here", ["stop"])
    assert ocrbench_hit("line one\nline two", ["two lines"]) is False
    assert ocrbench_hit("x^{2}+ 1", ["x ^ {2} + 1"], OCRBENCH_FORMULA_CATEGORY)
    assert ocrbench_hit("X^{2}+1", ["x^{2}+1"], OCRBENCH_FORMULA_CATEGORY) is False  # case matters for formulas


def test_ocrbench_hit_keeps_inner_whitespace_as_vlmevalkit_does():
    # VLMEvalKit lower-cases, strips and turns newlines into spaces; it does not collapse runs of whitespace.
    assert ocrbench_hit("Total\namount: 5", ["total amount"])
    assert ocrbench_hit("total  amount", ["total amount"]) is False
    assert ocrbench_hit("total amount", ["total  amount"]) is False
    assert ocrbench_hit("a\tb", ["a b"]) is False
    # Formulas: spaces and newlines go, case stays.
    assert ocrbench_hit("x^{2}\n+1", ["x ^ {2} + 1"], OCRBENCH_FORMULA_CATEGORY)
    assert ocrbench_hit("X^{2}+1", ["x^{2}+1"], OCRBENCH_FORMULA_CATEGORY) is False


def test_ocrbench_scores_count_and_fraction():
    df = pd.DataFrame(
        {
            "prediction": ["It reads HELLO", "nothing", "a+b", float("nan")],
            "answer": ["['hello', 'hi']", "['world']", "['a + b']", "['x']"],
            "category": ["Text Recognition", "Text Recognition", OCRBENCH_FORMULA_CATEGORY, "Scene Text-centric VQA"],
        }
    )
    report = ocrbench_scores(df)
    assert report["hits"] == 2 and report["count"] == 4 and report["fraction"] == 0.5
    assert report["category"] == {OCRBENCH_FORMULA_CATEGORY: 1, "Scene Text-centric VQA": 0, "Text Recognition": 1}
