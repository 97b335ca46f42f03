"""RefCOCO grounding: box coordinate frames, answer parsing, IoU and Acc@0.5.

Every model family answers in its own coordinate frame (absolute pixels of its resized input, a 0-1000 grid, ...).
The frames are data (`FRAMES`); a model adapter names its frame explicitly, nothing here guesses a frame from the
magnitude of the numbers. A prediction and its ground truth are compared in one frame: directly when both are in the
same frame, otherwise after mapping both to absolute pixels of the original picture.

Boxes are `(x1, y1, x2, y2)` tuples of floats with `x1 <= x2` and `y1 <= y2`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]

HIT_IOU = 0.5
"""A prediction is a hit when its IoU with the ground truth is at least this."""


@dataclass(frozen=True)
class BoxFrame:
    """A coordinate convention for boxes, and how it maps to pixels of the original picture.

    A box maps to original pixels by scaling x by `width / span_x` and y by `height / span_y`, where the span (the
    coordinate value of the picture's far edge in this frame) is:
    - `grid` when the frame is normalised (1000 for a 0-1000 grid, 1 for 0-1 boxes);
    - the size of the model's resized input when `on_resized_input` is set (the caller passes it);
    - the original picture's own size otherwise (absolute original pixels, scale 1).

    IoU is invariant under scaling x and y separately, so comparing two boxes in any one frame gives the same IoU
    as comparing them in original pixels (up to the rounding of stored integer coordinates).

    Args:
        name (`str`): registry key, e.g. `"norm1000"`.
        grid (`float`, *optional*): span of a normalised frame; `None` for a pixel frame.
        on_resized_input (`bool`): pixels of the model's resized input rather than of the original picture.
        description (`str`): who answers in this frame, for docs and error messages.
    """

    name: str
    grid: float | None = None
    on_resized_input: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.grid is not None and not self.grid > 0:
            raise ValueError(f"frame {self.name!r}: grid must be > 0, got {self.grid!r}")
        if self.grid is not None and self.on_resized_input:
            raise ValueError(f"frame {self.name!r}: a normalised frame (grid) cannot also be in resized-input pixels")

    def to_pixels(
        self,
        box: Sequence[float],
        width: float,
        height: float,
        input_size: tuple[float, float] | None = None,
    ) -> Box:
        """Map `box` from this frame to absolute pixels of the original picture.

        Args:
            box (`Sequence[float]`): `(x1, y1, x2, y2)` in this frame.
            width (`float`), height (`float`): size of the original picture in pixels.
            input_size (`tuple[float, float]`, *optional*): `(width, height)` of the model's resized input; required
                by frames `on_resized_input`, ignored by the others.

        Returns:
            `Box`: `(x1, y1, x2, y2)` in original pixels.
        """
        if not (width > 0 and height > 0):
            raise ValueError(f"frame {self.name!r}: picture size must be positive, got {width}x{height}")
        if self.grid is not None:
            span_x = span_y = self.grid
        elif self.on_resized_input:
            if input_size is None:
                raise ValueError(f"frame {self.name!r} is in pixels of the resized input: pass input_size=(w, h)")
            span_x, span_y = input_size
            if not (span_x > 0 and span_y > 0):
                raise ValueError(f"frame {self.name!r}: input_size must be positive, got {input_size!r}")
        else:
            span_x, span_y = width, height
        # The scale is computed first so that the identity frame multiplies by exactly 1.0.
        scale_x, scale_y = width / span_x, height / span_y
        x1, y1, x2, y2 = box
        return (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y)


FRAMES: dict[str, BoxFrame] = {
    frame.name: frame
    for frame in (
        BoxFrame("abs", description="absolute pixels of the original picture (the plain RefCOCO TSVs)"),
        BoxFrame(
            "qwen25vl_abs",
            on_resized_input=True,
            description="Qwen2.5-VL: absolute pixels of its resized input (sides snapped to multiples of 28); "
            "also the frame of the `_for_qwen25vl` TSVs",
        ),
        BoxFrame("norm1000", grid=1000, description="InternVL: 0-1000 grid"),
        BoxFrame("norm999", grid=999, description="DeepSeek-VL2: 0-999 grid"),
        BoxFrame("norm1", grid=1, description="LLaVA-1.5: 0-1, relative to the original picture"),
    )
}


def get_frame(frame: BoxFrame | str) -> BoxFrame:
    """Return the frame registered under `frame` (or `frame` itself when it already is a `BoxFrame`)."""
    if isinstance(frame, BoxFrame):
        return frame
    if frame not in FRAMES:
        raise KeyError(f"unknown box frame {frame!r}; known frames: {sorted(FRAMES)}")
    return FRAMES[frame]


# A number that is not part of a word ("x1", "Qwen2.5") and not a fragment of a longer number.
_NUMBER = r"(?<![\w.])(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)(?!\w|\.[0-9])"
# Four numbers separated only by spaces, commas, semicolons and brackets: "1, 2, 3, 4", "(1,2),(3,4)", "1 2 3 4".
# The runs of separators and opening brackets are bounded so that a long run of brackets cannot make the
# matching quadratic; 32 characters cover pretty-printed JSON.
_SEPARATOR = r"[\s,;()\[\]{}]{1,32}"
_FOUR_NUMBERS = _NUMBER + (_SEPARATOR + _NUMBER) * 3
_OPENING = r"[\s\[(]{0,32}"
_POINT = r"\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER + r"\s*\)"

# Box patterns from most to least explicit; the first pattern with a valid match wins, and within a pattern the
# earliest match in the text wins. Explicit markers come first so that numbers in a label ("man 2") or in prose
# before the box are not mistaken for coordinates.
_BOX_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        # Qwen2.5-VL JSON: {"bbox_2d": [x1, y1, x2, y2], "label": ...}, also "bbox": [...].
        r"bbox(?:_2d)?[\"']?\s*[:=]\s*" + _OPENING + _FOUR_NUMBERS,
        # DeepSeek-VL2 <|det|>[[...]]<|/det|> and InternVL <box>[[...]]</box>.
        r"(?:<\|det\|>|<box>)" + _OPENING + _FOUR_NUMBERS,
        # Any bracketed group: [x1, y1, x2, y2], [[...]], (x1, y1, x2, y2), (x1,y1),(x2,y2).
        r"[\[(]" + _OPENING + _FOUR_NUMBERS,
        # Two corner points with a few words between them: "from (x1, y1) to (x2, y2)".
        _POINT + r"[^0-9()]{1,20}?" + _POINT,
        # Four bare numbers.
        _FOUR_NUMBERS,
    )
)


def _ordered_box(x1: float, y1: float, x2: float, y2: float) -> Box | None:
    """Four coordinates -> a box with ordered corners, or None when a value, or the box's area, is not finite (corners
    at +/-1e308 overflow the area and would make IoU NaN)."""
    if not all(math.isfinite(value) for value in (x1, y1, x2, y2)) or not math.isfinite((x2 - x1) * (y2 - y1)):
        return None
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_box(text: str) -> Box | None:
    """Extract the first box from a model's answer.

    Understands `"bbox_2d": [x1, y1, x2, y2]` JSON (inside ```json fences or not), `[[x1, y1, x2, y2]]`,
    `(x1, y1), (x2, y2)`, `<|det|>[[...]]<|/det|>`, `<box>[[...]]</box>` and four bare numbers; numbers may be
    negative or fractional. Reversed corners are swapped. The coordinates are returned as written, in the frame
    of the model that wrote them. Never raises on a string.

    Args:
        text (`str`): the model's answer.

    Returns:
        `Box | None`: `(x1, y1, x2, y2)` with `x1 <= x2` and `y1 <= y2`, or `None` when the text holds no box.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_box expects a str, got {type(text).__name__}")
    for pattern in _BOX_PATTERNS:
        for match in pattern.finditer(text):
            box = _ordered_box(*(float(number) for number in match.groups()))
            if box is not None:
                return box
    return None


def parse_answer_boxes(answer: str) -> list[Box]:
    """Parse a ground-truth `answer` cell: one or more groups of four numbers `x1 y1 x2 y2`, space separated.

    Raises:
        ValueError: when the cell is not a non-empty multiple of four finite numbers.
    """
    try:
        numbers = [float(token) for token in str(answer).split()]
    except ValueError:
        raise ValueError(f"answer {answer!r} is not a list of numbers 'x1 y1 x2 y2 ...'") from None
    if not numbers or len(numbers) % 4 or not all(math.isfinite(number) for number in numbers):
        raise ValueError(f"answer {answer!r} must hold 4 finite numbers per box (x1 y1 x2 y2), got {len(numbers)}")
    boxes = [_ordered_box(*numbers[start : start + 4]) for start in range(0, len(numbers), 4)]
    if None in boxes:
        raise ValueError(f"answer {answer!r}: a box's area overflows (coordinates too large)")
    return boxes


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes with ordered corners.

    Returns 0.0 for disjoint or touching boxes, and whenever either box has no area (a box with reversed corners
    counts as having none), so there is never a division by zero.
    """
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0.0 or inter_h <= 0.0:
        return 0.0
    intersection = inter_w * inter_h
    return intersection / (area_a + area_b - intersection)


def _prediction_text(row: Mapping[str, Any]) -> str:
    """The prediction of a row as text; an empty cell (None or NaN, as pandas reads it) is an empty answer."""
    prediction = row["prediction"]
    if isinstance(prediction, str):
        return prediction
    if prediction is None or (isinstance(prediction, float) and math.isnan(prediction)):
        return ""
    raise TypeError(f"row index={row.get('index')!r}: prediction must be a str, got {type(prediction).__name__}")


def _row_to_pixels(box: Box, frame: BoxFrame, row: Mapping[str, Any]) -> Box:
    """Map a box of `row` from `frame` to original pixels, reading the sizes the frame needs from the row."""
    needed = ("width", "height", "input_width", "input_height") if frame.on_resized_input else ("width", "height")
    missing = [key for key in needed if key not in row]
    if missing:
        raise KeyError(
            f"row index={row.get('index')!r}: comparing frame {frame.name!r} with another frame needs {missing}"
        )
    try:
        sizes = {key: float(row[key]) for key in needed}
        input_size = (sizes["input_width"], sizes["input_height"]) if frame.on_resized_input else None
        return frame.to_pixels(box, sizes["width"], sizes["height"], input_size)
    except (TypeError, ValueError) as err:
        sizes_given = {key: row[key] for key in needed}
        raise ValueError(f"row index={row.get('index')!r}: unusable picture sizes {sizes_given}: {err}") from None


def score_grounding(
    rows: Iterable[Mapping[str, Any]],
    pred_frame: BoxFrame | str,
    answer_frame: BoxFrame | str = "abs",
) -> list[dict[str, Any]]:
    """Score grounding predictions one by one.

    Each row needs `index`, `prediction` (the model's answer text) and `answer` (the ground-truth cell,
    `x1 y1 x2 y2` per box). When the two frames differ, both boxes are mapped to original pixels, which needs
    `width` and `height` (the original picture) and, for a frame `on_resized_input`, `input_width` and
    `input_height`. With several ground-truth boxes the best IoU counts. An answer without a box scores IoU 0,
    a miss, with `parsed=False`.

    Args:
        rows (`Iterable[Mapping[str, Any]]`): prediction rows, e.g. records of the prediction file.
        pred_frame (`BoxFrame | str`): frame of the model's answers, as declared by its adapter.
        answer_frame (`BoxFrame | str`): frame of the `answer` column (`"qwen25vl_abs"` for `_for_qwen25vl` TSVs).

    Returns:
        `list[dict]`: per row, `{"index", "iou", "hit", "parsed"}`.
    """
    pred_frame, answer_frame = get_frame(pred_frame), get_frame(answer_frame)
    same_frame = pred_frame == answer_frame
    scores = []
    for row in rows:
        try:
            answers = parse_answer_boxes(row["answer"])
        except ValueError as err:
            raise ValueError(f"row index={row.get('index')!r}: {err}") from None
        predicted = parse_box(_prediction_text(row))
        best_iou = 0.0
        if predicted is not None:
            if not same_frame:
                predicted = _row_to_pixels(predicted, pred_frame, row)
                answers = [_row_to_pixels(answer, answer_frame, row) for answer in answers]
            best_iou = max(iou(predicted, answer) for answer in answers)
        scores.append(
            {"index": row["index"], "iou": best_iou, "hit": best_iou >= HIT_IOU, "parsed": predicted is not None}
        )
    return scores


def _summarise(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    count = len(scores)
    return {
        "acc@0.5": sum(bool(score["hit"]) for score in scores) / count,
        "mean_iou": sum(float(score["iou"]) for score in scores) / count,
        "num_samples": count,
        "num_unparsed": sum(not score["parsed"] for score in scores),
    }


def aggregate_grounding(per_split: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Headline numbers of a grounding evaluation over one or more splits.

    Args:
        per_split (`Mapping[str, Sequence[Mapping]]`): split name (e.g. `"RefCOCO_val"`) -> the per-sample scores
            of `score_grounding`.

    Returns:
        `dict`: `"per_split"` maps each split to `{"acc@0.5", "mean_iou", "num_samples", "num_unparsed"}`
        (fractions in [0, 1]); the top level holds `"acc@0.5"` and `"mean_iou"` averaged over splits (each split
        weighs the same, as in the papers' "average" column) and the total `"num_samples"` and `"num_unparsed"`.
    """
    if not per_split:
        raise ValueError("aggregate_grounding needs at least one split")
    empty = [name for name, scores in per_split.items() if not scores]
    if empty:
        raise ValueError(f"splits without scored samples: {empty}")
    summaries = {name: _summarise(scores) for name, scores in per_split.items()}
    return {
        "per_split": summaries,
        "acc@0.5": sum(summary["acc@0.5"] for summary in summaries.values()) / len(summaries),
        "mean_iou": sum(summary["mean_iou"] for summary in summaries.values()) / len(summaries),
        "num_samples": sum(summary["num_samples"] for summary in summaries.values()),
        "num_unparsed": sum(summary["num_unparsed"] for summary in summaries.values()),
    }
