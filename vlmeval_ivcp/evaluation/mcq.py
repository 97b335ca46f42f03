"""Multiple choice: read the chosen letter out of a free-form reply, then plain and MMBench-circular accuracy.

The letter is read by VLMEvalKit's exact-matching rule (`can_infer` of `vlmeval/utils/matching_util.py`, commit
e8e78f0): the option rule, then the option-text rule. A reply neither rule reads gives `None`, and the caller may
then ask the LLM judge (`Judge.extract_choice`); a refusal reads as `NO_ANSWER` ("Z"), which is always wrong.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

import pandas as pd

from .metrics import GROUP_COLUMNS, mean_by_group, present_group_columns, require_columns

# MMBench stores the k-th rotation of question q under index q + k * CIRCULAR_OFFSET.
CIRCULAR_OFFSET = 1_000_000
# VLMEvalKit's letter for "no option": a refusal, or a lone "Z"; it never equals an answer.
NO_ANSWER = "Z"
# Replies VLMEvalKit reads as a refusal (substrings, case-sensitive), and the API-failure text it never reads.
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
# Characters read as spaces before a reply is cut into words.
_WORD_SEPARATORS = str.maketrans({char: " " for char in ".()[],:;!*#{}"})
# VLMEvalKit's verbose-answer pattern: "the correct answer is **B**"; it knows the letters A-D only.
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def options_from_row(row: Mapping) -> dict[str, str]:
    """The options of a VLMEvalKit multiple-choice row: columns `A`, `B`, ... whose value is present.

    Args:
        row (`Mapping`): a TSV row (a dict or a `pd.Series`).

    Returns:
        `dict[str, str]`: letter -> option text, in letter order; empty cells (NaN, None, "") are not options.
    """
    options = {}
    for letter in string.ascii_uppercase:
        value = row.get(letter)
        if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
            continue
        options[letter] = str(value)
    return options


def infer_option(prediction: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's option rule (`can_infer_option`): the letter a reply names, `NO_ANSWER`, or `None`.

    Punctuation in `.()[],:;!*#{}` becomes space and the reply is cut at whitespace. Exactly one option letter
    among the words, and its first occurrence among the last four words: that letter (so "I think it's B" reads B,
    "B. Because A is wrong" and "B is the correct answer." do not). No option letter but the word "Z", or a known
    refusal: `NO_ANSWER`. Otherwise "answer is X" (X in A-D, any case) when X is an option. VLMEvalKit's
    `VERBOSE` logging branch (which rejects any reply of more than three words holding "A") is not followed.
    """
    if API_FAILURE in prediction:
        return None
    if any(refusal in prediction for refusal in REFUSALS):
        return NO_ANSWER
    words = prediction.translate(_WORD_SEPARATORS).split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        if words.index(named[0]) > len(words) - 5:
            return named[0]
    elif not named and NO_ANSWER in words:
        return NO_ANSWER
    verbose = _VERBOSE_ANSWER.search(prediction)
    if verbose and verbose.group(1).upper() in options:
        return verbose.group(1).upper()
    return None


def infer_text(prediction: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's option-text rule (`can_infer_text`): the one option whose text occurs in the reply.

    Case-insensitive substring test ("red" occurs in "bored"); a reply longer than twice the options' total text
    length reads nothing; two options found read nothing.
    """
    answer = prediction.lower()
    if len(answer) > 2 * sum(len(str(text)) for text in options.values()):
        return None
    found = [letter for letter, text in options.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def extract_choice(prediction: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-form reply chose, by VLMEvalKit's exact-matching rule (`can_infer`).

    `infer_option` first, then `infer_text`. See docs/datasets.md for the rule in words and its quirks.

    Args:
        prediction (`str`): the model's reply.
        options (`Mapping[str, str]`): letter -> option text (see `options_from_row`).

    Returns:
        `str | None`: an option letter, `NO_ANSWER` ("Z", a refusal), or `None` (nothing read).
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}: {prediction!r}")
    return infer_option(prediction, options) or infer_text(prediction, options)


def extract_choices(df: pd.DataFrame, prediction_col: str = "prediction") -> pd.Series:
    """`extract_choice` on every row of a predictions table, with each row's own options.

    Returns:
        `pd.Series`: the letter or `None` per row (a missing prediction gives `None`), aligned with `df`.
    """
    require_columns(df, [prediction_col], "multiple-choice extraction")
    letters = [
        None if pd.isna(row[prediction_col]) else extract_choice(str(row[prediction_col]), options_from_row(row))
        for _, row in df.iterrows()
    ]
    return pd.Series(letters, index=df.index, dtype=object)


def choice_hits(df: pd.DataFrame, choice_col: str = "extracted", answer_col: str = "answer") -> pd.Series:
    """Per-row correctness: the extracted letter equals the answer letter (a missing letter is wrong)."""
    require_columns(df, [choice_col, answer_col], "multiple-choice scores")
    answers = df[answer_col].astype(str).str.strip()
    return pd.Series(
        [isinstance(choice, str) and choice == answer for choice, answer in zip(df[choice_col], answers, strict=True)],
        index=df.index,
        dtype=bool,
    )


def mcq_accuracy(
    df: pd.DataFrame,
    choice_col: str = "extracted",
    answer_col: str = "answer",
    group_columns: tuple[str, ...] = GROUP_COLUMNS,
) -> dict:
    """Accuracy over rows, overall and per `category` / `l2-category` when present.

    Args:
        df (`pd.DataFrame`): predictions with an extracted-letter column and the answer column.
        choice_col (`str`): column of extracted letters (`None` counts as wrong).
        answer_col (`str`): column of answer letters.
        group_columns (`tuple[str, ...]`): grouping columns to report when present.

    Returns:
        `dict`: `{"overall", "count", "category": {...}, "l2-category": {...}}`, fractions in [0, 1].
    """
    return mean_by_group(choice_hits(df, choice_col, answer_col), df, group_columns)


def circular_accuracy(
    df: pd.DataFrame,
    choice_col: str = "extracted",
    answer_col: str = "answer",
    index_col: str = "index",
    group_columns: tuple[str, ...] = GROUP_COLUMNS,
) -> dict:
    """MMBench circular accuracy: a question is right only if every rotation of it is right.

    Rows whose `index % CIRCULAR_OFFSET` agree are rotations of one question (each row carries its own, rotated,
    answer letter). Each question takes its groups from its rows, which must agree.

    Args:
        df (`pd.DataFrame`): predictions of all rotations.
        choice_col (`str`): column of extracted letters.
        answer_col (`str`): column of answer letters.
        index_col (`str`): the integer row index column.
        group_columns (`tuple[str, ...]`): grouping columns to report when present.

    Returns:
        `dict`: `{"overall", "count" (questions), "category": {...}, "l2-category": {...}}`, fractions in [0, 1].

    Raises:
        ValueError: an index is not an integer, or rotations of one question disagree on a grouping column.
    """
    require_columns(df, [index_col], "circular accuracy")
    indices = pd.to_numeric(df[index_col], errors="coerce")
    bad = df[index_col][indices.isna() | (indices % 1 != 0)].tolist()
    if bad:
        raise ValueError(f"circular accuracy needs integer '{index_col}' values; got {bad[0]!r}")
    question = (indices.astype("int64") % CIRCULAR_OFFSET).rename("question")
    per_row = pd.DataFrame({"hit": choice_hits(df, choice_col, answer_col), "question": question})
    groups = present_group_columns(df, group_columns)
    for column in groups:
        per_row[column] = df[column]
        spread = per_row.groupby("question")[column].nunique(dropna=False)
        if (spread > 1).any():
            raise ValueError(f"rotations of question {int(spread[spread > 1].index[0])} disagree on '{column}'")
    per_question = per_row.groupby("question").agg({"hit": "all", **{column: "first" for column in groups}})
    return mean_by_group(per_question["hit"], per_question, groups)
