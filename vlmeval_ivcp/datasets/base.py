"""A benchmark: its TSV under `$LMUData`, how a row becomes a message, and how predictions are scored."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pandas as pd

from .tsv import dump_images, load_tsv

Message = list[dict[str, str]]


class ImageDataset(ABC):
    """Base of the benchmark families. Subclasses declare `SUPPORTED` names and implement `build_prompt`/`evaluate`.

    Args:
        name (`str`): a name from `SUPPORTED`.
        root (`str`, *optional*): the data folder (default `$LMUData`, else `~/LMUData`).
    """

    TYPE: ClassVar[str] = ""
    SUPPORTED: ClassVar[tuple[str, ...]] = ()
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]] = ("index", "question")

    def __init__(self, name: str, root: str | os.PathLike | None = None):
        if name not in self.SUPPORTED:
            raise KeyError(f"{type(self).__name__} does not know dataset {name!r}; supported: {list(self.SUPPORTED)}")
        self.name, self.root = name, root
        self.data = load_tsv(name, root, required_columns=self.REQUIRED_COLUMNS)
        self._image_paths: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.data)

    def image_paths(self, position: int) -> list[str]:
        """Local image files of the row at `position` (all images are decoded once, on first use)."""
        if self._image_paths is None:
            self._image_paths = dump_images(self.data, self.name, self.root)
        return self._image_paths[position]

    def message(self, position: int, model: Any = None) -> Message:
        """The row's images, then its text: `model`'s own prompt when it has one for this benchmark (VLMEvalKit's
        `model.use_custom_prompt(dataset)`), else `build_prompt`."""
        row = self.data.iloc[position]
        images = [{"type": "image", "value": path} for path in self.image_paths(position)]
        if model is not None and model.use_custom_prompt(self.name):
            return images + model.prompt_text(row, self.name)
        return images + self.build_prompt(row)

    def question_text(self, position: int) -> str:
        """The row's question alone, without the benchmark's answer-format instruction or the chat template: what
        the pruning releases that read the question give their text encoder (CDPruner passes LLaVA's `line["text"]`
        without its answer-format suffix)."""
        return str(self.data.iloc[position]["question"])

    @abstractmethod
    def build_prompt(self, row: pd.Series) -> Message:
        """The text part of the message for one row (images come first, added by `message`)."""

    @abstractmethod
    def evaluate(self, predictions: pd.DataFrame, judge: Any = None) -> dict[str, Any]:
        """Headline scores from a predictions table (every TSV column but `image`, plus `prediction`)."""


def present(value: Any) -> bool:
    """A TSV cell that holds something (not NaN, None or blank)."""
    return not (value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "")
