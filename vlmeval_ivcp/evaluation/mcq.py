"""Multiple choice: read the chosen letter out of a free-form reply, then plain and MMBench-circular accuracy.

The letter rules never guess: a reply that names two different options, or none, gives `None`, and the caller may
then ask the LLM judge (`Judge.extract_choice`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

import pandas as pd

from .metrics import GROUP_COLUMNS, mean_by_group, present_group_columns, require_columns

# MMBench stores the k-th rotation of question q under index q + k * CIRCULAR_OFFSET.
CIRCULAR_OFFSET = 1_000_000

# Surrounding decoration a reply may wrap a lone letter in: "(A)", "**A**", "A.", "[A]", "'A'".
_DECORATION = " \t\r\n.:;,!?()[]{}*#'\"`"

# Rules in order of strength. A rule that finds one letter decides; one that finds several different letters makes
# the reply ambiguous (None) without trying weaker rules; one that finds nothing hands over to the next rule.
_ANSWER_STATEMENT = re.compile(
    # "Answer: B", "the answer is **(B)**", "option B" ...
    r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?)[\s:：*(\[]*([A-Z])(?![A-Za-z0-9])"
    # ... or "B is the correct answer", "(B) is the best option"
    r"|\b([A-Z])[)\]*]*\s+(?i:is\s+(?:the\s+)?(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice)\b)"
)
_LETTER_MARKER = re.compile(r"\(([A-Z])\)|^[ \t*#]*([A-Z])(?:[.:)]|[ \t*]*$)", re.MULTILINE)


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


def _normalize_text(text: str) -> str:
    return " ".join(text.lower().split()).strip(_DECORATION)


def _unique_letter(found: set[str]) -> tuple[bool, str | None]:
    """(decided, letter): decided when the rule found anything; letter is None when it found several."""
    if not found:
        return False, None
    return True, (found.pop() if len(found) == 1 else None)


def _match_option_text(prediction: str, options: Mapping[str, str]) -> str | None:
    """The one option whose text the prediction states; longer texts are matched (and masked) first, so a reply
    "dark red" picks "dark red" over "red", while "dark red or red" names both."""
    text = _normalize_text(prediction)
    texts = {letter: _normalize_text(option) for letter, option in options.items()}
    exact = [letter for letter, option in texts.items() if option and option == text]
    if len(exact) == 1:
        return exact[0]
    found = set()
    for letter, option in sorted(texts.items(), key=lambda kv: -len(kv[1])):
        if not option:
            continue
        pattern = re.compile(rf"(?<!\w){re.escape(option)}(?!\w)")
        if pattern.search(text):
            found.add(letter)
            text = pattern.sub(" ", text)
    return found.pop() if len(found) == 1 else None


def extract_choice(prediction: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-form reply chose, by rules, or `None` when the reply is ambiguous or names none.

    Rules, strongest first (letters are upper case and must be keys of `options`):
    1. the whole reply is one letter, possibly decorated: "B", "B.", "(B)", "**B**";
    2. an answer statement: "Answer: B", "The answer is (B)", "option B", "B is the correct answer";
    3. letter markers: "(B)" anywhere, or a line starting with "B." / "B:" / "B)" or holding only "B";
    4. the reply states exactly one option's text (whole words, case-insensitive; longest text first).
    The first rule that finds anything decides; if it finds two different letters the result is `None`.

    Args:
        prediction (`str`): the model's reply.
        options (`Mapping[str, str]`): letter -> option text (see `options_from_row`).

    Returns:
        `str | None`: the letter, or `None`.
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}: {prediction!r}")
    letters = set(options)
    bare = prediction.strip(_DECORATION)
    if bare in letters:
        return bare
    for rule in (_ANSWER_STATEMENT, _LETTER_MARKER):
        found = {letter for match in rule.finditer(prediction) for letter in match.groups() if letter in letters}
        decided, letter = _unique_letter(found)
        if decided:
            return letter
    return _match_option_text(prediction, options)


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
