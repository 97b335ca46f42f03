"""Open-ended VQA: the official VQA answer normalisation, VQA score, relaxed accuracy, ANLS, exact match, OCRBench.

Per-sample scorers take `(prediction, answers)` where `answers` is the list of gold answers and return a float in
[0, 1]; `score_vqa` applies one of them, chosen by name, to every row of a predictions table.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable, Sequence

import pandas as pd
from rapidfuzz.distance import Levenshtein

from .metrics import GROUP_COLUMNS, mean_by_group, require_columns
from .punctuation import process_punctuation

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# Contractions as they should be written; an answer word missing exactly one of their apostrophes is mapped back
# ("couldnt've" and "couldn'tve", not "couldntve"), as VLMEvalKit's table does. Its table restores no "im", "ive",
# "id've", "lets" or "shes" (their keys are capitalised or map to themselves), so those words are not listed.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've 'ow's'at "
    "might've mustn't must've needn't not've o'clock oughtn't shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll "
    "they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all "
    "y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()
# VLMEvalKit's table also turns "somebody'd" into "somebodyd" (sic).
_CONTRACTION_QUIRKS = {"somebody'd": "somebodyd"}


def _apostrophe_variants(word: str) -> set[str]:
    """`word` with exactly one of its apostrophes removed ("couldn't've" -> "couldnt've", "couldn'tve")."""
    return {word[:i] + word[i + 1 :] for i, char in enumerate(word) if char == "'"}


_CONTRACTION_FIXES = {
    **{variant: word for word in _CONTRACTIONS for variant in _apostrophe_variants(word)},
    **_CONTRACTION_QUIRKS,
}


def normalize_vqa_answer(text: str) -> str:
    """The official VQA answer normalisation.

    Newlines and tabs become spaces; punctuation is stripped; words are lower-cased; number words up to ten become
    digits; articles (a, an, the) are dropped; contractions missing apostrophes are restored.

    Args:
        text (`str`): an answer or a prediction.

    Returns:
        `str`: the normalised answer, words joined by single spaces.
    """
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    words = [_NUMBER_WORDS.get(word, word) for word in process_punctuation(text).lower().split()]
    return " ".join(_CONTRACTION_FIXES.get(word, word) for word in words if word not in _ARTICLES)


def parse_answers(value: object) -> list[str]:
    """The gold answers of a row: a list/tuple as is, a string holding a Python list literal (VLMEvalKit's TSVs
    store "['a', 'b']"), or a single answer.

    Raises:
        ValueError: the answer is missing (None/NaN) or an empty list.
    """
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(ValueError, SyntaxError, TypeError):  # else: a single answer that starts with "["
            value = ast.literal_eval(value.strip())
    if isinstance(value, (list, tuple)):
        answers = [str(answer) for answer in value]
    elif value is None or (isinstance(value, float) and pd.isna(value)):
        answers = []
    else:
        answers = [str(value)]
    if not answers:
        raise ValueError(f"no gold answer in {value!r}")
    return answers


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy: for each gold answer left out in turn, min(1, matches among the others / 3), averaged.

    With ten human answers this is the official VQA score; with a single answer it is exact match after
    normalisation.
    """
    gold = [normalize_vqa_answer(answer) for answer in answers]
    pred = normalize_vqa_answer(prediction)
    if len(gold) == 1:
        return float(pred == gold[0])
    matches = sum(answer == pred for answer in gold)
    # Leaving out a matching answer removes one match from the others.
    return sum(min(1.0, (matches - (answer == pred)) / 3) for answer in gold) / len(gold)


def _to_number(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: 1.0 if some gold answer matches, else 0.0.

    Numbers ("12", "3.5", "45%" = 0.45) match within `tolerance` relative error; anything else, and any answer
    against a gold 0 (VLMEvalKit tests the gold number for truth), needs a case-insensitive exact match of the
    stripped prediction with the gold answer as it is.
    """
    pred_text = str(prediction).strip()
    pred_number = _to_number(pred_text)
    for answer in answers:
        gold_number = _to_number(str(answer))
        if pred_number is not None and gold_number:
            if abs(pred_number - gold_number) <= tolerance * abs(gold_number):
                return 1.0
        elif pred_text.lower() == str(answer).lower():
            return 1.0
    return 0.0


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each), by rapidfuzz's C implementation:
    the same values as the textbook dynamic programme, thousands of times faster on long replies."""
    return Levenshtein.distance(a, b)


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS (DocVQA, InfoVQA): best over gold answers of 1 - normalised edit distance, 0 when below `threshold`.

    Both strings are lower-cased with whitespace collapsed for the distance, which is divided by the longer of the
    raw strings' lengths (upper-cased), as VLMEvalKit's `anls_compute` does. As in VLMEvalKit a similarity equal to
    the threshold is kept.
    """
    pred = " ".join(str(prediction).lower().split())
    best = 0.0
    for answer in answers:
        gold = " ".join(str(answer).lower().split())
        longest = max(len(str(answer).upper()), len(str(prediction).upper()))
        similarity = 1.0 if longest == 0 else 1.0 - levenshtein(gold, pred) / longest
        best = max(best, similarity)
    return best if best >= threshold else 0.0


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    pred = normalize_vqa_answer(prediction)
    return float(any(normalize_vqa_answer(answer) == pred for answer in answers))


def case_insensitive_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction equals some gold answer after stripping surrounding whitespace and lower-casing, else
    0.0: VLMEvalKit's "accuracy" rule for GQA (no VQA normalisation: "Left." does not match "left")."""
    pred = str(prediction).strip().lower()
    return float(any(str(answer).strip().lower() == pred for answer in answers))


def _gold_answers(df: pd.DataFrame, answer_col: str) -> list[list[str]]:
    """`parse_answers` of every row, naming the row on failure."""
    gold = []
    for row_index, answer in df[answer_col].items():
        try:
            gold.append(parse_answers(answer))
        except ValueError as error:
            raise ValueError(f"row {row_index!r}: {error}") from None
    return gold


VQA_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "vqa_score": vqa_score,
    "relaxed_accuracy": relaxed_accuracy,
    "anls": anls,
    "exact_match": exact_match,
    "case_insensitive_match": case_insensitive_match,
}


def score_vqa(
    df: pd.DataFrame, metric: str, prediction_col: str = "prediction", answer_col: str = "answer"
) -> pd.Series:
    """Per-row scores of `metric` (a key of `VQA_METRICS`); a missing prediction scores 0.

    Raises:
        KeyError: unknown metric (the message lists the known ones).
        ValueError: a row has no gold answer; the message names the row.
    """
    if metric not in VQA_METRICS:
        raise KeyError(f"unknown VQA metric {metric!r}; known: {sorted(VQA_METRICS)}")
    require_columns(df, [prediction_col, answer_col], f"{metric} scores")
    scorer = VQA_METRICS[metric]
    scores = [
        0.0 if pd.isna(prediction) else scorer(str(prediction), answers)
        for prediction, answers in zip(df[prediction_col], _gold_answers(df, answer_col), strict=True)
    ]
    return pd.Series(scores, index=df.index, dtype=float)


def vqa_accuracy(
    df: pd.DataFrame,
    metric: str,
    prediction_col: str = "prediction",
    answer_col: str = "answer",
    group_columns: tuple[str, ...] = GROUP_COLUMNS,
) -> dict:
    """Mean of `score_vqa` overall and per group: `{"overall", "count", "category": {...}, ...}`."""
    return mean_by_group(score_vqa(df, metric, prediction_col, answer_col), df, group_columns)


# OCRBench compares formulas with spaces removed and case kept.
OCRBENCH_FORMULA_CATEGORY = "Handwritten Mathematical Expression Recognition"


def ocrbench_hit(prediction: str, answers: Sequence[str], category: str | None = None) -> bool:
    """True if some gold answer occurs in the prediction, both stripped and with newlines read as spaces (VLMEvalKit's
    OCRBench rule): case-insensitive, other whitespace as it is, except in `OCRBENCH_FORMULA_CATEGORY`, where every
    space is removed and case matters."""
    formula = category == OCRBENCH_FORMULA_CATEGORY

    def prepare(text: str) -> str:
        text = text.strip().replace("\n", " ")
        return text.replace(" ", "") if formula else text.lower()

    pred = prepare(str(prediction))
    return any(prepare(str(answer)) in pred for answer in answers)


def ocrbench_scores(
    df: pd.DataFrame, prediction_col: str = "prediction", answer_col: str = "answer", category_col: str = "category"
) -> dict:
    """OCRBench: hit count (the reported score, out of 1000 on the full set), fraction, and hits per category.

    Returns:
        `dict`: `{"hits", "count", "fraction", "category": {name: hits}}` ("category" only when the column exists).
    """
    require_columns(df, [prediction_col, answer_col], "OCRBench scores")
    categories = df[category_col] if category_col in df.columns else pd.Series(None, index=df.index, dtype=object)
    hits = pd.Series(
        [
            not pd.isna(prediction) and ocrbench_hit(str(prediction), answers, category)
            for prediction, answers, category in zip(
                df[prediction_col], _gold_answers(df, answer_col), categories, strict=True
            )
        ],
        index=df.index,
        dtype=bool,
    )
    report: dict = {"hits": int(hits.sum()), "count": int(len(hits)), "fraction": float(hits.mean())}
    if category_col in df.columns:
        report["category"] = {str(name): int(count) for name, count in sorted(hits.groupby(categories).sum().items())}
    return report
