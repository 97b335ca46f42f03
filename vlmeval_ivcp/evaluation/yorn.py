"""Yes/no benchmarks: read yes/no out of a reply, then MME, POPE and HallusionBench scores.

Answers are compared case-insensitively; an answer cell that is neither yes nor no is an error. A reply read as
"Unknown" is wrong (POPE's F1 counts it as a "no"); the caller may ask the LLM judge first (`Judge.extract_yes_no`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .metrics import GROUP_COLUMNS, mean_by_group, present_group_columns, require_columns
from .punctuation import process_punctuation

YES, NO, UNKNOWN = "Yes", "No", "Unknown"

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")

# VLMEvalKit's HallusionBench keys: a figure is (l2-category, set_id, figure_id), a question asked about several
# figures is (l2-category, set_id, question_id); the ids are fields 3, 4, 5 of the "_"-separated `index`.
HALLUSION_FIGURE_KEYS = ("l2-category", "set_id", "figure_id")
HALLUSION_QUESTION_KEYS = ("l2-category", "set_id", "question_id")


def extract_yes_no(prediction: str) -> str:
    """ "Yes" or "No" when the reply's words hold exactly one of yes/no, else "Unknown" (VLMEvalKit's
    `YOrN_Extraction`).

    Words are those of the lower-cased reply after VLMEvalKit's `process_punctuation`, cut at whitespace: "No,"
    and "no." read as "no", but "**No**" and "No:" are other words (markdown and colons are not punctuation there).

    Args:
        prediction (`str`): the model's reply.

    Returns:
        `str`: `YES`, `NO` or `UNKNOWN`.
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}: {prediction!r}")
    words = set(process_punctuation(prediction.lower()).split())
    if ("yes" in words) == ("no" in words):
        return UNKNOWN
    return YES if "yes" in words else NO


def _answers_are_yes(df: pd.DataFrame, answer_col: str) -> pd.Series:
    answers = df[answer_col].astype(str).str.strip().str.lower()
    bad = answers.index[~answers.isin(["yes", "no"])].tolist()
    if bad:
        raise ValueError(f"row {bad[0]!r}: '{answer_col}' must be Yes or No, got {df[answer_col][bad[0]]!r}")
    return answers == "yes"


def _extracted_is(df: pd.DataFrame, extracted_col: str, word: str) -> pd.Series:
    return df[extracted_col].map(lambda value: isinstance(value, str) and value.strip().lower() == word)


def yes_no_hits(df: pd.DataFrame, extracted_col: str = "extracted", answer_col: str = "answer") -> pd.Series:
    """Per-row correctness: the extracted Yes/No equals the answer (Unknown or missing is wrong)."""
    require_columns(df, [extracted_col, answer_col], "yes/no scores")
    truth = _answers_are_yes(df, answer_col)
    said_yes, said_no = _extracted_is(df, extracted_col, "yes"), _extracted_is(df, extracted_col, "no")
    return (truth & said_yes) | (~truth & said_no)


def mme_scores(
    df: pd.DataFrame,
    extracted_col: str = "extracted",
    answer_col: str = "answer",
    category_col: str = "category",
    image_key: str = "image_path",
) -> dict:
    """MME: per category acc and acc+ (all questions of one image right), and the perception/cognition totals.

    A category scores (acc + acc+) * 100, at most 200; perception sums `MME_PERCEPTION` (max 2000), cognition sums
    `MME_COGNITION` (max 800). Categories absent from `df` add nothing and are listed in "missing_categories".

    Args:
        df (`pd.DataFrame`): MME predictions (two questions per image).
        extracted_col (`str`): column of extracted Yes/No/Unknown.
        answer_col (`str`): column of Yes/No answers.
        category_col (`str`): column of MME category names.
        image_key (`str`): column identifying the image a question is about (VLMEvalKit: "image_path").

    Returns:
        `dict`: `{"perception", "cognition", "categories": {name: {"acc", "acc_plus", "score"}},
        "missing_categories": [...]}`.

    Raises:
        ValueError: a category is not one of MME's 14.
    """
    require_columns(df, [category_col, image_key], "MME scores")
    unknown = sorted(set(df[category_col].astype(str)) - set(MME_PERCEPTION) - set(MME_COGNITION))
    if unknown:
        raise ValueError(f"unknown MME categories {unknown}; known: {list(MME_PERCEPTION + MME_COGNITION)}")
    keyless = df.index[df[image_key].isna()].tolist()
    if keyless:
        raise ValueError(f"row {keyless[0]!r} has no '{image_key}': acc+ needs every question's image")
    per_row = pd.DataFrame(
        {
            "hit": yes_no_hits(df, extracted_col, answer_col),
            "category": df[category_col].astype(str),
            "image": df[image_key],
        }
    )
    categories = {}
    for category, rows in per_row.groupby("category"):
        acc = float(rows["hit"].mean())
        acc_plus = float(rows.groupby("image")["hit"].all().mean())
        categories[category] = {"acc": acc, "acc_plus": acc_plus, "score": (acc + acc_plus) * 100}
    return {
        "perception": sum(categories[name]["score"] for name in MME_PERCEPTION if name in categories),
        "cognition": sum(categories[name]["score"] for name in MME_COGNITION if name in categories),
        "categories": categories,
        "missing_categories": [name for name in MME_PERCEPTION + MME_COGNITION if name not in categories],
    }


def binary_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float | int]:
    """F1, accuracy, precision and recall with "yes" as the positive class.

    A ratio whose denominator is zero (no predicted positives, no true positives) is 0.0, as in VLMEvalKit.

    Args:
        truth (`Sequence[bool]`): true labels (True = yes).
        predicted (`Sequence[bool]`): predicted labels (True = yes), same length.

    Returns:
        `dict`: `{"f1", "accuracy", "precision", "recall", "count"}`.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"got {len(truth)} labels but {len(predicted)} predictions")
    if len(truth) == 0:
        raise ValueError("binary scores need at least one row")
    pairs = list(zip(map(bool, truth), map(bool, predicted), strict=True))
    true_pos = sum(t and p for t, p in pairs)
    false_pos = sum(p and not t for t, p in pairs)
    false_neg = sum(t and not p for t, p in pairs)
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(t == p for t, p in pairs) / len(pairs)
    return {"f1": f1, "accuracy": accuracy, "precision": precision, "recall": recall, "count": len(pairs)}


def pope_scores(
    df: pd.DataFrame, extracted_col: str = "extracted", answer_col: str = "answer", category_col: str = "category"
) -> dict:
    """POPE: F1 (positive = yes), accuracy, precision and recall, overall and per subset.

    A row may belong to several subsets ("adversarial,popular"): VLMEvalKit's POPE TSV stores a question shared by
    subsets once. Such a row counts once in each of its subsets, in the subset's scores and in "overall" alike, as
    VLMEvalKit's `POPE_rating` scores the table after splitting such rows: "overall" is the pooled score of the
    subsets (a row without a subset counts once). As in VLMEvalKit, an Unknown reply is a "no" for F1, precision
    and recall, but wrong for accuracy (the mean of answer == extracted), even when the answer is "No".

    Returns:
        `dict`: `{"overall": binary_scores, "category": {subset: binary_scores}}` (no "category" key when the
        column is absent; "count" counts a row once per subset).
    """
    require_columns(df, [extracted_col, answer_col], "POPE scores")
    truth = _answers_are_yes(df, answer_col)
    predicted = _extracted_is(df, extracted_col, "yes")
    hits = yes_no_hits(df, extracted_col, answer_col)

    def scores(rows: pd.Index) -> dict[str, float | int]:
        return {**binary_scores(truth[rows].tolist(), predicted[rows].tolist()), "accuracy": float(hits[rows].mean())}

    if category_col not in df.columns:
        return {"overall": scores(df.index)}
    subsets = df[category_col].dropna().astype(str).str.split(",").explode().str.strip()
    subsets = subsets[subsets != ""]
    pooled = subsets.index.append(df.index.difference(subsets.index))
    return {
        "overall": scores(pooled),
        "category": {subset: scores(rows.index) for subset, rows in sorted(subsets.groupby(subsets))},
    }


def add_hallusion_ids(df: pd.DataFrame, index_col: str = "index") -> pd.DataFrame:
    """A copy of `df` with `set_id`, `figure_id` and `question_id` read from fields 3-5 of each `_`-split index.

    Raises:
        ValueError: an index has fewer than six `_`-separated fields; the message names it.
    """
    require_columns(df, [index_col], "HallusionBench ids")
    fields = df[index_col].astype(str).str.split("_")
    short = df[index_col][fields.str.len() < 6].tolist()
    if short:
        raise ValueError(f"HallusionBench index {short[0]!r} has fewer than 6 '_' fields")
    out = df.copy()
    for position, name in ((3, "set_id"), (4, "figure_id"), (5, "question_id")):
        out[name] = fields.str[position]
    return out


def _hallusion_triplet(
    hits: pd.Series, keys: pd.DataFrame, figure_keys: Sequence[str], question_keys: Sequence[str]
) -> dict[str, float]:
    def all_right(key_columns: Sequence[str]) -> float:
        return float(hits.groupby([keys[column] for column in key_columns], dropna=False).all().mean())

    return {"aAcc": float(hits.mean()), "fAcc": all_right(figure_keys), "qAcc": all_right(question_keys)}


def hallusion_scores(
    df: pd.DataFrame,
    extracted_col: str = "extracted",
    answer_col: str = "answer",
    figure_keys: Sequence[str] = HALLUSION_FIGURE_KEYS,
    question_keys: Sequence[str] = HALLUSION_QUESTION_KEYS,
    group_columns: Sequence[str] = GROUP_COLUMNS,
) -> dict:
    """HallusionBench: aAcc (per question), fAcc (all questions of a figure right), qAcc (a question right on all
    the figures it is asked about), overall and per group.

    Args:
        df (`pd.DataFrame`): predictions, with the key columns (see `add_hallusion_ids` for VLMEvalKit's TSV).
        extracted_col (`str`): column of extracted Yes/No/Unknown.
        answer_col (`str`): column of Yes/No answers.
        figure_keys (`Sequence[str]`): columns identifying a figure; default `HALLUSION_FIGURE_KEYS`.
        question_keys (`Sequence[str]`): columns identifying a question across figures; default
            `HALLUSION_QUESTION_KEYS`.
        group_columns (`Sequence[str]`): grouping columns to report when present.

    Returns:
        `dict`: `{"overall": {"aAcc", "fAcc", "qAcc"}, <column>: {group: {...}}}`, fractions in [0, 1].
    """
    require_columns(df, [*figure_keys, *question_keys], "HallusionBench scores")
    hits = yes_no_hits(df, extracted_col, answer_col)
    report: dict = {"overall": _hallusion_triplet(hits, df, figure_keys, question_keys)}
    for column in present_group_columns(df, group_columns):
        report[column] = {
            str(group): _hallusion_triplet(hits[rows.index], rows, figure_keys, question_keys)
            for group, rows in sorted(df.groupby(column), key=lambda kv: str(kv[0]))
        }
    return report


def yes_no_accuracy(
    df: pd.DataFrame,
    extracted_col: str = "extracted",
    answer_col: str = "answer",
    group_columns: Sequence[str] = GROUP_COLUMNS,
) -> dict:
    """Plain accuracy of a yes/no benchmark, overall and per group (VLMEvalKit's default yes/no rating)."""
    return mean_by_group(yes_no_hits(df, extracted_col, answer_col), df, group_columns)
