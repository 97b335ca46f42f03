"""Benchmarks scored by an LLM judge: MMVet, MathVista_MINI and LLaVABench (VLMEvalKit's classes of those names).

The prompt is the row's question as is, as in VLMEvalKit. Scoring needs a `Judge`
(`vlmeval_ivcp.evaluation.judge`); a row the judge fails on (no reply, or a reply that cannot be read) is left out
of every mean and listed in `failed_indices`, never scored as wrong.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..evaluation.mcq import extract_choice
from ..evaluation.metrics import require_columns
from .base import ImageDataset, Message, present

JUDGE_SETUP = (
    "give a judge: `python run.py ... --judge gpt-4o` (in Python: `evaluate(predictions, judge=Judge(...))` from "
    "vlmeval_ivcp.evaluation.judge); the judge reads its key from OPENAI_API_KEY and the URL of any other "
    "OpenAI-compatible server from OPENAI_API_BASE"
)


def _text(value: Any) -> str:
    return str(value) if present(value) else ""


def labels_of(value: Any) -> list[str]:
    """The labels in a cell: a Python list literal ("['a', 'b']"), else comma-separated text ("rec,ocr")."""
    if not present(value):
        return []
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(item).strip() for item in ast.literal_eval(text)]
        except (ValueError, SyntaxError, TypeError):  # TypeError: an unhashable key such as {[]: 1}
            pass  # not a literal after all: read it as comma-separated text
    return [label.strip() for label in text.split(",") if label.strip()]


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the judged values (None marks a judge failure); None when nothing was judged."""
    judged = [value for value in values if value is not None]
    return sum(judged) / len(judged) if judged else None


def _failure_summary(outcomes: Sequence[Any], indices: Sequence[Any]) -> dict[str, Any]:
    """Row counts of a judged evaluation; an outcome of None is a row the judge failed on."""
    failed = [index for index, outcome in zip(indices, outcomes, strict=True) if outcome is None]
    return {
        "count": len(outcomes),
        "judged": len(outcomes) - len(failed),
        "judge_failures": len(failed),
        "failed_indices": failed,
    }


def _label_means(values: Sequence[float | None], labels: Sequence[list[str]]) -> dict[str, float]:
    """Mean of the judged `values` per label; a row with several labels counts in each of them."""
    groups: dict[str, list[float]] = {}
    for value, row_labels in zip(values, labels, strict=True):
        if value is not None:
            for label in row_labels:
                groups.setdefault(label, []).append(value)
    return {label: sum(group) / len(group) for label, group in sorted(groups.items())}


# ---- MMVet: the judge grades each answer in [0, 1] against the reference ----


def mmvet_reference(answer: str) -> str:
    """The reference as the judge sees it: VLMEvalKit spaces out MMVet's <AND>/<OR> markers; we also say what they
    mean, since the judge's grading prompt is not MMVet-specific."""
    reference = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    if "<AND>" in answer or "<OR>" in answer:
        reference += " (<AND>: every part is needed for full marks; <OR>: any one part is enough)"
    return reference


def evaluate_mmvet(predictions: pd.DataFrame, judge: Any) -> dict[str, Any]:
    """Mean judge score in [0, 1], overall, per capability (`capability`: each label of the comma-separated
    `category`) and per capability combination (`category`, labels joined by "_", as VLMEvalKit reports)."""
    require_columns(predictions, ["question", "answer", "prediction"], "MMVet scores")
    rows = predictions.to_dict("records")
    results = judge.map(
        lambda row: judge.score_open_answer(
            str(row["question"]), mmvet_reference(str(row["answer"])), _text(row["prediction"])
        ),
        rows,
    )
    scores = [float(result.value) if result.ok else None for result in results]
    capabilities = [labels_of(row.get("category")) for row in rows]
    report = {"overall": _mean(scores), **_failure_summary(scores, [row["index"] for row in rows])}
    report["capability"] = _label_means(scores, capabilities)
    report["category"] = _label_means(scores, [["_".join(labels)] if labels else [] for labels in capabilities])
    return report


# ---- MathVista: the judge extracts the final answer, rules compare it with `answer` ----

MATHVISTA_EXTRACTION_PROMPT = """\
Below are a math question about a figure and a model's reply to it. Extract the model's final answer in the form \
the question asks for: the option letter for a multiple-choice question, a number for a numeric question, a Python \
list for a list question, a short text otherwise. Reply with the extracted answer only, or with nothing if the reply \
gives no answer.

Question: Which number is missing? (The answer is an integer.)
Model reply: Each number doubles the previous one, so the missing number is 16.
Extracted answer: 16

Question: Which fraction of the square is shaded? Choices: (A) 1/4 (B) 1/2 (C) 3/4
Model reply: Two of the four equal parts are shaded, so the answer is (B) 1/2.
Extracted answer: B

Question: Between which two years is the line highest? (The answer is a Python list.)
Model reply: The curve peaks between 2011 and 2012.
Extracted answer: [2011, 2012]

Question: {question}
Model reply: {prediction}
Extracted answer:"""


def _number(text: str) -> float | None:
    try:
        return float(text.strip().rstrip(".").replace(",", ""))
    except ValueError:
        return None


def _extracted_answer(reply: str) -> str:
    """The judge's reply without surrounding space or a repeated "Extracted answer:" label."""
    reply = reply.strip()
    label = "extracted answer:"
    return reply[len(label) :].strip() if reply.lower().startswith(label) else reply


def mathvista_options(row: Mapping[str, Any]) -> dict[str, str]:
    """Letter -> choice text of a multiple-choice row, from its `choices` list literal (A for the first)."""
    try:
        choices = ast.literal_eval(str(row["choices"]))
    except (ValueError, SyntaxError, TypeError):
        choices = None
    if not isinstance(choices, (list, tuple)):
        raise ValueError(f"MathVista row {row['index']!r}: `choices` must be a list literal, got {row['choices']!r}")
    return {chr(ord("A") + position): str(choice) for position, choice in enumerate(choices)}


def mathvista_correct(row: Mapping[str, Any], answer: str) -> bool:
    """Whether an extracted `answer` matches the row's gold answer.

    Multiple choice (`question_type` "multi_choice"): the option letter read from `answer` (a letter, "(B) 8/11",
    or an option's text) equals `answer_option`, or, without that column, the letter of the choice equal to
    `answer`. Free form, by `answer_type`: "integer" and "float" compare numbers ("float" after rounding both to
    `precision` decimals when the row has one); "list" compares the texts without whitespace; "text" compares the
    texts case-insensitively with whitespace collapsed.

    Raises:
        ValueError: the gold answer of a numeric row is not a number, or the row's choices cannot be read.
    """
    if row["question_type"] == "multi_choice":
        options = mathvista_options(row)
        if present(row.get("answer_option")):
            gold = str(row["answer_option"]).strip()
        else:
            gold = next((letter for letter, text in options.items() if text == str(row["answer"])), None)
        return gold is not None and extract_choice(answer, options) == gold
    answer_type = str(row["answer_type"])
    if answer_type in ("integer", "float"):
        gold_number = _number(str(row["answer"]))
        if gold_number is None:
            raise ValueError(f"MathVista row {row['index']!r}: {answer_type} answer {row['answer']!r} is not a number")
        number = _number(answer)
        if number is None:
            return False
        if answer_type == "float" and present(row.get("precision")):
            digits = int(float(row["precision"]))
            return round(number, digits) == round(gold_number, digits)
        return number == gold_number
    if answer_type == "list":
        return "".join(answer.split()).lower() == "".join(str(row["answer"]).split()).lower()
    return " ".join(answer.lower().split()) == " ".join(str(row["answer"]).lower().split())


def evaluate_mathvista(predictions: pd.DataFrame, judge: Any) -> dict[str, Any]:
    """Accuracy in [0, 1], overall, per `task` and per skill (`skills` list), when the columns exist.

    As in VLMEvalKit, some replies are decided by the rules without asking the judge ("prefetched"): a
    multiple-choice reply in which the rules read an option letter (a hit when it is the gold letter, a miss
    otherwise), and a free-form reply the rules already read as the right answer. Every other reply goes to the
    judge for extraction.
    """
    require_columns(predictions, ["question", "answer", "question_type", "answer_type", "prediction"], "MathVista")
    rows = predictions.to_dict("records")
    hits: list[float | None] = []
    asked = []  # positions in `hits` the judge decides
    for row in rows:
        reply = _text(row["prediction"])
        read_letter = row["question_type"] == "multi_choice" and extract_choice(reply, mathvista_options(row))
        correct = mathvista_correct(row, reply)
        if not (read_letter or correct):
            asked.append(len(hits))
        hits.append(float(correct))
    prefetched = len(rows) - len(asked)
    prompts = [
        MATHVISTA_EXTRACTION_PROMPT.format(question=row["question"], prediction=_text(row["prediction"]))
        for row in (rows[position] for position in asked)
    ]
    for position, result in zip(asked, judge.map(judge.ask, prompts), strict=True):
        row = rows[position]
        hits[position] = float(mathvista_correct(row, _extracted_answer(result.value))) if result.ok else None
    report = {"overall": _mean(hits), **_failure_summary(hits, [row["index"] for row in rows])}
    report["prefetched"] = prefetched
    for column in ("task", "skills"):
        if column in predictions.columns:
            report[column] = _label_means(hits, [labels_of(row[column]) for row in rows])
    return report


# ---- LLaVABench: the judge rates the reference and the prediction, the score is their ratio ----

LLAVABENCH_SYSTEM = "You are a careful and impartial grader of answers to questions about images."
LLAVABENCH_PROMPT = """\
[Image description]
{caption}

[Question]
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{prediction}
[End of Assistant 2]

[Task]
A user asked the question above about an image, which you know only through its description. Rate how helpful, \
relevant, accurate and detailed each assistant's answer is, on a scale of 1 to 10 (higher is better). On the first \
line write only the two scores, Assistant 1's and then Assistant 2's, separated by a space. Explain your ratings on \
the lines that follow; the order in which the answers are shown must not affect them."""


def parse_score_pair(reply: str) -> tuple[float, float] | None:
    """The (reference, prediction) scores on the first line of a LLaVABench review, both in [1, 10], else None."""
    first_line = reply.strip().split("\n", 1)[0].replace(",", " ")
    numbers = [_number(word) for word in first_line.split()]
    if len(numbers) != 2 or any(number is None or not 1 <= number <= 10 for number in numbers):
        return None
    return numbers[0], numbers[1]


def _relative(pairs: Sequence[tuple[float, float]]) -> float:
    return sum(prediction for _, prediction in pairs) / sum(reference for reference, _ in pairs)


def evaluate_llavabench(predictions: pd.DataFrame, judge: Any) -> dict[str, Any]:
    """Relative score: the mean judge score of the predictions over that of the references (`gpt4_ans`), overall
    and per `category`; `prediction_score` / `reference_score` are the mean ratings on the 1-10 scale."""
    require_columns(predictions, ["question", "caption", "gpt4_ans", "prediction"], "LLaVABench scores")
    rows = predictions.to_dict("records")
    def ask(row: dict[str, Any]) -> Any:
        prompt = LLAVABENCH_PROMPT.format(
            caption=_text(row["caption"]), question=row["question"], reference=row["gpt4_ans"],
            prediction=_text(row["prediction"]),
        )  # fmt: skip
        return judge.ask([{"role": "system", "content": LLAVABENCH_SYSTEM}, {"role": "user", "content": prompt}])

    pairs = [parse_score_pair(str(result.value)) if result.ok else None for result in judge.map(ask, rows)]
    judged = [pair for pair in pairs if pair is not None]
    report = {
        "overall": _relative(judged) if judged else None,
        **_failure_summary(pairs, [row["index"] for row in rows]),
        "prediction_score": _mean([prediction for _, prediction in judged]),
        "reference_score": _mean([reference for reference, _ in judged]),
    }
    by_category: dict[str, list[tuple[float, float]]] = {}
    for row, pair in zip(rows, pairs, strict=True):
        if pair is not None:
            for label in labels_of(row.get("category")):
                by_category.setdefault(label, []).append(pair)
    report["category"] = {label: _relative(group) for label, group in sorted(by_category.items())}
    return report


EVALUATORS: dict[str, Callable[[pd.DataFrame, Any], dict[str, Any]]] = {
    "MMVet": evaluate_mmvet,
    "MathVista_MINI": evaluate_mathvista,
    "LLaVABench": evaluate_llavabench,
}


class JudgedDataset(ImageDataset):
    """MMVet (mean judge grade, 0-1), MathVista_MINI (accuracy after judge extraction, 0-1) and LLaVABench (judge
    rating of the predictions relative to the references' rating).

    `evaluate` returns `{"overall", "count", "judged", "judge_failures", "failed_indices", ...}`; `overall` is None
    when the judge failed on every row.
    """

    TYPE = "VQA"
    SUPPORTED = tuple(EVALUATORS)

    def build_prompt(self, row: pd.Series) -> Message:
        return [{"type": "text", "value": str(row["question"])}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Judge-based scores of a predictions table.

        Raises:
            ValueError: `judge` is None; the message says how to configure one.
        """
        if judge is None:
            raise ValueError(f"{self.name} is scored by an LLM judge and no judge was given; {JUDGE_SETUP}")
        return EVALUATORS[self.name](predictions, judge)
