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
COLOURS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}
PLANETS = {"A": "Mercury", "B": "Venus", "C": "Earth", "D": "Mars", "E": "Jupiter"}  # a five-option ScienceQA row
MMMU_OPEN = {"A": "42", "B": "Other Answers"}  # an MMMU open question as VLMEvalKit rewrites it

# Expected letters derived by reading VLMEvalKit's `can_infer` (vlmeval/utils/matching_util.py, commit e8e78f0):
# the option rule (punctuation ".()[],:;!*#{}" to spaces, split at whitespace; exactly one option letter, among the
# last four words; else "Z" as a word or a refusal; else "answer is X" for X in A-D), then the option-text rule
# (case-insensitive substring, exactly one option, reply at most twice the options' total length).
VLMEVALKIT_TABLE = [
    ("A", COLOURS, "A"),
    ("B.", COLOURS, "B"),
    ("(C)", COLOURS, "C"),
    ("**D**", COLOURS, "D"),
    ("[D]", COLOURS, "D"),
    ("{A}", COLOURS, "A"),
    ("A!", COLOURS, "A"),
    ("B;", COLOURS, "B"),
    ("#C", COLOURS, "C"),
    ("Answer: C", COLOURS, "C"),
    ("Option (B)", COLOURS, "B"),
    ("I think it's B", COLOURS, "B"),
    ("It's B", COLOURS, "B"),
    ("The answer is B", COLOURS, "B"),
    ("Sure! The answer is D.", COLOURS, "D"),
    ("A A A", COLOURS, "A"),  # one letter, counted once; its first place is among the last four words
    ("Answer: A) red", COLOURS, "A"),
    ("The image shows a red car parked on the street, so the answer is C", COLOURS, "C"),
    ("B. Because A is wrong", COLOURS, None),  # two letters, no "answer is", no option text
    ("B is the correct answer.", COLOURS, None),  # B is the fifth word from the end
    ("The answer is A, because the sky is blue and clear today", COLOURS, "A"),  # A too early; "answer is A"
    ("The answer is B or C", COLOURS, "B"),  # two letters; "answer is B"
    ("answer is c", COLOURS, "C"),  # no upper-case letter word; the pattern ignores case
    ("A or B", COLOURS, None),
    ("A B C D", COLOURS, None),
    ("A is correct. B is not. C is not. D is not.", COLOURS, None),
    ("Between A and B, I pick A", COLOURS, None),
    ("B/C", COLOURS, None),  # "/" is not a separator: one word, no letter
    ("a", COLOURS, None),  # letters are upper case
    ("E", COLOURS, None),  # not an option of a four-option row
    ("", COLOURS, None),
    ("Z", COLOURS, "Z"),
    ("I choose Z", COLOURS, "Z"),
    ("Z. None of these options", COLOURS, "Z"),
    ("Cannot determine the answer", COLOURS, "Z"),
    ("Sorry, I can't help with images of people yet.", COLOURS, "Z"),
    ("I'm sorry, but without the image provided I cannot say. A", COLOURS, "Z"),  # refusal beats the letter
    ("Failed to obtain answer via API", COLOURS, None),
    ("blue", COLOURS, "B"),
    ("YELLOW", COLOURS, "D"),
    ("The color is blue.", COLOURS, "B"),
    ("The answer is yellow", COLOURS, "D"),  # "answer is y": not A-D; the text rule reads yellow
    ("I see red and blue", COLOURS, None),  # two option texts
    ("I am bored", COLOURS, "A"),  # "red" occurs in "bored"
    ("C\n\nExplanation: the green leaf shows chlorophyll at work here today", COLOURS, None),  # too long for text
    ("The answer is a dog.", ANIMALS, "A"),  # "answer is a" reads letter A before any option text
    ("A cat sits on the mat near the door.", ANIMALS, None),  # A too early; too long for the text rule
    ("cat", ANIMALS, "B"),
    ("It is clearly a cat.", ANIMALS, "B"),
    ("catalogue", ANIMALS, "B"),  # substring
    ("E", PLANETS, "E"),
    ("The answer is E", PLANETS, "E"),
    ("The correct answer is **E**. It is the only option that fits the picture.", PLANETS, None),
    ("The correct answer is **D**. It is the only option that fits the picture.", PLANETS, "D"),
    ("The result is 42", MMMU_OPEN, "A"),
    ("The answer is 42 meters, derived from the formula for the area", MMMU_OPEN, None),  # too long
]


def test_the_table_is_large_enough():
    assert len(VLMEVALKIT_TABLE) >= 40


@pytest.mark.parametrize(("prediction", "options", "expected"), VLMEVALKIT_TABLE)
def test_extract_choice_reads_letters_as_vlmevalkit(prediction, options, expected):
    assert extract_choice(prediction, dict(options)) == expected


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
