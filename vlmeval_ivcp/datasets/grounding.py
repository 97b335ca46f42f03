"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding: one box per expression, scored by Acc@0.5.

The TSVs come from `tools/convert_to_tsv.py`. A plain split (`RefCOCO_val`) holds its ground truth in original
pixels; a `_for_qwen25vl` split holds it in pixels of Qwen2.5-VL's resized input (frame `qwen25vl_abs`).

A dataset object serves one model family, chosen by `frame`: the coordinate frame the model answers in (its
adapter's `grounding_frame`, e.g. `"qwen25vl_abs"`). The frame picks the family's prompt and tells `evaluate` how to
read the answers; nothing is guessed from the numbers.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from ..evaluation.grounding import BoxFrame, aggregate_grounding, get_frame, score_grounding
from ..evaluation.metrics import require_columns
from .base import ImageDataset, Message, present

QWEN25VL_SUFFIX = "_for_qwen25vl"
SPLITS = (
    "RefCOCO_val",
    "RefCOCO_testA",
    "RefCOCO_testB",
    "RefCOCO+_val",
    "RefCOCO+_testA",
    "RefCOCO+_testB",
    "RefCOCOg_val",
    "RefCOCOg_test",
)

# Frame a model answers in -> the prompt of the family that answers in it; `{expression}` is the referring expression.
GROUNDING_PROMPTS: dict[str, str] = {
    # Qwen2.5-VL answers `{"bbox_2d": [x1, y1, x2, y2], ...}` in pixels of its resized input.
    "qwen25vl_abs": "Locate {expression} and output the bbox coordinates in JSON format.",
    # InternVL answers `<ref>...</ref><box>[[x1, y1, x2, y2]]</box>` on a 0-1000 grid.
    "norm1000": (
        "Please provide the bounding box coordinate of the region this sentence describes: <ref>{expression}</ref>"
    ),
    # DeepSeek-VL2 answers `<|ref|>...<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>` on a 0-999 grid.
    "norm999": "Locate <|ref|>{expression}<|/ref|> in the given image.",
    # LLaVA-1.5 has no grounding tag: the prompt asks for 0-1 coordinates in words.
    "norm1": (
        "Please provide the bounding box coordinate of the region this sentence describes: {expression}. "
        "Answer with [x1, y1, x2, y2], the top-left and bottom-right corners as fractions of the image width "
        "and height between 0 and 1."
    ),
}
DEFAULT_FRAME = "qwen25vl_abs"
# Qwen2.5-VL's resized input has sides that are multiples of this (14-pixel patches merged 2x2).
QWEN25VL_PATCH = 28


def answer_frame_of(name: str) -> BoxFrame:
    """Frame of a split's `answer` column: `qwen25vl_abs` for `_for_qwen25vl` splits, original pixels otherwise."""
    return get_frame("qwen25vl_abs" if name.endswith(QWEN25VL_SUFFIX) else "abs")


def qwen25vl_input_size(width: float, height: float, patch: int = QWEN25VL_PATCH) -> tuple[int, int]:
    """Qwen2.5-VL's input size for a `width` x `height` picture: each side rounded to a multiple of `patch`.

    The same rule as `tools/convert_to_tsv.py --qwen25` (Python's `round`, half to even; at least one patch), so
    plain and `_for_qwen25vl` splits agree. It equals the model's own resize while the pixel count stays within the
    processor's `min_pixels`/`max_pixels` (true for COCO pictures with the release budget 4·28² to 16384·28²).
    """
    return max(patch, round(width / patch) * patch), max(patch, round(height / patch) * patch)


def _picture_size(row: dict[str, Any]) -> tuple[float, float]:
    """The row's original `(width, height)`; ValueError naming the row when either is not a positive number."""
    try:
        width, height = float(row["width"]), float(row["height"])
    except (TypeError, ValueError):
        width = height = math.nan
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(
            f"row index={row.get('index')!r}: width and height must be positive numbers, "
            f"got {row['width']!r} x {row['height']!r}"
        )
    return width, height


class GroundingDataset(ImageDataset):
    """RefCOCO, RefCOCO+ and RefCOCOg splits, plain and `_for_qwen25vl`.

    Args:
        name (`str`): a name from `SUPPORTED`, e.g. `"RefCOCO_val"` or `"RefCOCOg_test_for_qwen25vl"`.
        root (`str`, *optional*): the data folder (default `$LMUData`, else `~/LMUData`).
        frame (`str`): the frame the model answers in, its adapter's `grounding_frame`; selects the prompt
            (`GROUNDING_PROMPTS`) and how `evaluate` reads the answers. Defaults to Qwen2.5-VL's.
    """

    TYPE = "GROUNDING"
    SUPPORTED = SPLITS + tuple(split + QWEN25VL_SUFFIX for split in SPLITS)
    REQUIRED_COLUMNS = ("index", "question", "answer", "height", "width")

    def __init__(self, name: str, root: str | os.PathLike | None = None, frame: str = DEFAULT_FRAME):
        if frame not in GROUNDING_PROMPTS:
            known = sorted(GROUNDING_PROMPTS)
            raise KeyError(f"no grounding prompt for frame {frame!r}; frames with a prompt: {known}")
        super().__init__(name, root)
        self.frame = get_frame(frame)
        self.answer_frame = answer_frame_of(name)

    def build_prompt(self, row: pd.Series) -> Message:
        text = GROUNDING_PROMPTS[self.frame.name].format(expression=row["question"])
        return [{"type": "text", "value": text}]

    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Acc@0.5 (`overall`), mean IoU and the count of answers without a box, for this split.

        Predictions in the split's own answer frame (Qwen2.5-VL on a `_for_qwen25vl` split) are compared as they
        are; otherwise both boxes are mapped to original pixels, and a `qwen25vl_abs` box needs the model's input
        size: the row's `input_width`/`input_height` when the predictions carry them, else `qwen25vl_input_size` of
        its `width`/`height`. `judge` is not used: boxes are parsed by rule.
        """
        require_columns(predictions, ["index", "prediction", "answer"], f"{self.name} scores")
        rows = predictions.to_dict("records")
        if self.frame != self.answer_frame and (self.frame.on_resized_input or self.answer_frame.on_resized_input):
            require_columns(predictions, ["width", "height"], f"{self.name} scores")
            for row in rows:
                # A size the model reported for the row wins over the one derived from the picture's size.
                if not present(row.get("input_width")) or not present(row.get("input_height")):
                    row["input_width"], row["input_height"] = qwen25vl_input_size(*_picture_size(row))
        report = aggregate_grounding({self.name: score_grounding(rows, self.frame, self.answer_frame)})
        split = report["per_split"][self.name]
        return {"overall": split["acc@0.5"], **split}
