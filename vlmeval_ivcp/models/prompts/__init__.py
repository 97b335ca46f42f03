"""Model-specific prompts: VLMEvalKit's `use_custom_prompt(dataset)` / `build_prompt(line, dataset)` of a model
class, as rules over a row, the dataset's name and its type ("MCQ", "Y/N", "VQA", "GROUNDING").

A family adapter names its rules (`PrunedVLM.custom_prompts`); a model entry turns them on with
`use_custom_prompt: true` (docs/models/). Without them every benchmark is asked with the dataset's own prompt.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from ...datasets.registry import dataset_class
from .qwen2_vl import QWEN2_VL_PROMPTS


class CustomPrompts(Protocol):
    def applies(self, dataset: str, dataset_type: str | None) -> bool:
        """Whether the model class asks `dataset` with its own prompt."""

    def text(self, row: pd.Series, dataset: str, dataset_type: str | None) -> str:
        """The text after the images for one row (only called where `applies`)."""


def dataset_type(name: str | None) -> str | None:
    """The type of a benchmark this project knows ("MCQ", "Y/N", "VQA", "GROUNDING"), else `None`."""
    try:
        return dataset_class(name).TYPE if name else None
    except KeyError:
        return None


__all__ = ["QWEN2_VL_PROMPTS", "CustomPrompts", "dataset_type"]
