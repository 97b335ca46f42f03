"""Multiple-choice letter extraction, accuracy and MMBench circular accuracy on hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vlmeval_ivcp.evaluation.mcq import (
    CIRCULAR_OFFSET,
    choice_hits,
    circular_accuracy,
    extract_choice,
    extract_choices,
    mcq_accuracy,
    options_from_row,
)

ANIMALS = {"A": "dog", "B": "cat", "C": "bird", "D": "fish"}


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("  B.\n", "B"),
        ("(C)", "C"),
        ("**D**", "D"),
        ("Answer: A", "A"),
        ("The answer is (C) because birds fly.", "C"),
        ("The correct option is D.", "D"),
        ("The answer is: **C**", "C"),
        ("B is the correct answer.", "B"),
        ("(D) is the best option here.", "D"),
        ("B. cat", "B"),
        ("C\nThe picture shows a bird on a branch.", "C"),
        ("It is clearly a cat.", "B"),
        ("A cat sits on the sofa.", "B"),  # the article "A" is not a letter; the option text decides
        ("A. dog\nB. cat\nAnswer: B", "B"),  # an answer statement beats the recited options
        ("cat", "B"),
        ("CAT!", "B"),
    ],
)
def test_extract_choice_finds_the_letter(prediction, expected):
    assert extract_choice(prediction, ANIMALS) == expected


@pytest.mark.parametrize(
    "prediction",
    [
        "",
        "I cannot tell from the image.",
        "(A) or (B)",  # two markers
        "Answer: A. Answer: C",  # two statements
        "A. dog\nB. cat",  # recited options, no choice
        "a dog and a cat",  # two option texts
        "E",  # not an option
        "The answer is E",
        "The answer is not clear.",
        "A is the answer, or maybe C is the right answer",  # two statements
        "catalogue",  # option text only as part of a word
    ],
)
def test_extract_choice_never_guesses(prediction):
    assert extract_choice(prediction, ANIMALS) is None


def test_longer_option_text_wins_over_the_text_it_contains():
    colours = {"A": "red", "B": "dark red"}
    assert extract_choice("It is dark red.", colours) == "B"
    assert extract_choice("dark red or red", colours) is None
    assert extract_choice("red", colours) == "A"


def test_extract_choice_rejects_non_text():
    with pytest.raises(TypeError, match="prediction must be a str"):
        extract_choice(float("nan"), ANIMALS)


def test_options_from_row_skips_empty_cells():
    row = pd.Series({"question": "q", "A": "x", "B": "y", "C": float("nan"), "D": "", "E": None, "answer": "A"})
    assert options_from_row(row) == {"A": "x", "B": "y"}
    assert options_from_row({"A": 1, "B": 2}) == {"A": "1", "B": "2"}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_extract_choices_uses_each_rows_options():
    df = _table(
        [
            {"prediction": "cat", "A": "dog", "B": "cat", "answer": "B"},
            {"prediction": "cat", "A": "cat", "B": "dog", "answer": "A"},
            {"prediction": float("nan"), "A": "cat", "B": "dog", "answer": "A"},
        ]
    )
    assert extract_choices(df).tolist() == ["B", "A", None]


def test_accuracy_overall_and_per_category():
    df = _table(
        [
            {"extracted": "A", "answer": "A", "category": "x", "l2-category": "p"},
            {"extracted": "B", "answer": "A", "category": "x", "l2-category": "p"},
            {"extracted": None, "answer": "C", "category": "y", "l2-category": "p"},
            {"extracted": "D", "answer": "D", "category": "y", "l2-category": "q"},
        ]
    )
    report = mcq_accuracy(df)
    assert report["overall"] == 0.5 and report["count"] == 4
    assert report["category"] == {"x": 0.5, "y": 0.5}
    assert report["l2-category"] == pytest.approx({"p": 1 / 3, "q": 1.0})


def test_accuracy_without_groups_and_with_answer_whitespace():
    df = _table([{"extracted": "A", "answer": " A "}, {"extracted": "B", "answer": "C"}])
    assert choice_hits(df).tolist() == [True, False]
    assert mcq_accuracy(df) == {"overall": 0.5, "count": 2}


def test_accuracy_missing_column_is_named():
    with pytest.raises(KeyError, match="extracted"):
        mcq_accuracy(_table([{"prediction": "A", "answer": "A"}]))


def test_accuracy_of_an_empty_table_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        mcq_accuracy(pd.DataFrame(columns=["extracted", "answer"]))


def _rotations(question: int, category: str, hits: list[bool]) -> list[dict]:
    return [
        {
            "index": question + k * CIRCULAR_OFFSET,
            "extracted": "A" if hit else "B",
            "answer": "A",
            "category": category,
        }
        for k, hit in enumerate(hits)
    ]


def test_circular_needs_every_rotation_right():
    df = _table(
        _rotations(0, "x", [True, True, True, True])  # right
        + _rotations(1, "x", [True, True, True, False])  # one rotation wrong
        + _rotations(2, "y", [True, True])  # two-option question: two rotations, both right
        + _rotations(3, "y", [False, True])
    )
    report = circular_accuracy(df)
    assert report["overall"] == 0.5 and report["count"] == 4
    assert report["category"] == {"x": 0.5, "y": 0.5}
    assert mcq_accuracy(df)["overall"] == pytest.approx(10 / 12)


def test_circular_rows_in_any_order_and_string_indices():
    rows = _rotations(7, "x", [True, True, True]) + _rotations(8, "x", [True, False])
    df = _table(rows[::-1])
    df["index"] = df["index"].astype(str)
    assert circular_accuracy(df)["overall"] == 0.5


def test_circular_rotations_that_disagree_on_category_are_an_error():
    df = _table(_rotations(5, "x", [True]) + _rotations(5 + CIRCULAR_OFFSET, "y", [True]))
    with pytest.raises(ValueError, match="question 5 disagree on 'category'"):
        circular_accuracy(df)


def test_circular_rejects_non_integer_indices():
    df = _table([{"index": "q1", "extracted": "A", "answer": "A"}])
    with pytest.raises(ValueError, match="'q1'"):
        circular_accuracy(df)


def test_circular_single_copy_equals_plain_accuracy():
    df = _table(_rotations(0, "x", [True]) + _rotations(1, "x", [False]) + _rotations(2, "x", [True]))
    assert math.isclose(circular_accuracy(df)["overall"], mcq_accuracy(df)["overall"])
