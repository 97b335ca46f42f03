"""A tiny multiple-choice benchmark, "DemoMCQ", generated on the fly so that a run can be tried without downloads.

Each picture is one coloured shape on a plain background, 560 to 672 pixels square (multiples of 28: Qwen2.5-VL
reads them at their size as 400 to 576 visual tokens, enough for pruning to matter); each question asks for the
shape's color or its kind, with four options in VLMEvalKit's MCQ columns (index, image, question, A-D, answer,
category). The last row reuses the first row's picture through VLMEvalKit's short image-reference cell.
Generation is deterministic: writing the file twice gives the same bytes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from .tsv import atomic_write_bytes, encode_image_to_base64, tsv_path

DEMO_MCQ_NAME = "DemoMCQ"
OPTION_LETTERS = ("A", "B", "C", "D")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = {"white": (255, 255, 255), "grey": (200, 200, 200), "black": (20, 20, 20)}
QUESTIONS = {"color": "What color is the shape in the image?", "shape": "Which shape is shown in the image?"}


@dataclass(frozen=True)
class Picture:
    """One generated image: a `color` `shape` centred on a `background`, `size` pixels square."""

    shape: str
    color: str
    background: str
    size: int

    def draw(self) -> Image.Image:
        image = Image.new("RGB", (self.size, self.size), BACKGROUNDS[self.background])
        margin = self.size // 5
        low, high, middle = margin, self.size - 1 - margin, (self.size - 1) // 2
        fill = COLORS[self.color]
        canvas = ImageDraw.Draw(image)
        if self.shape == "circle":
            canvas.ellipse((low, low, high, high), fill=fill)
        elif self.shape == "square":
            canvas.rectangle((low, low, high, high), fill=fill)
        elif self.shape == "triangle":
            canvas.polygon([(middle, low), (high, high), (low, high)], fill=fill)
        elif self.shape == "diamond":
            canvas.polygon([(middle, low), (high, middle), (middle, high), (low, middle)], fill=fill)
        else:
            raise ValueError(f"unknown shape {self.shape!r}; known: {SHAPES}")
        return image


@dataclass(frozen=True)
class DemoRow:
    """One question: which `picture` it shows and whether it `asks` for the "color" or the "shape"."""

    picture: Picture
    asks: str

    @property
    def truth(self) -> str:
        """The correct option text."""
        return self.picture.color if self.asks == "color" else self.picture.shape


_FIRST = Picture("circle", "red", "white", 616)
DEMO_MCQ_ROWS: tuple[DemoRow, ...] = (
    DemoRow(_FIRST, "color"),
    DemoRow(Picture("diamond", "blue", "white", 644), "shape"),
    DemoRow(Picture("triangle", "green", "grey", 588), "color"),
    DemoRow(Picture("triangle", "yellow", "black", 672), "shape"),
    DemoRow(Picture("square", "green", "black", 560), "color"),
    DemoRow(Picture("square", "yellow", "white", 588), "shape"),
    DemoRow(Picture("diamond", "red", "grey", 644), "color"),
    DemoRow(_FIRST, "shape"),
)


def demo_mcq_frame() -> pd.DataFrame:
    """The DemoMCQ rows as a VLMEvalKit MCQ table (index 0..7); a repeated picture is stored as a reference."""
    first_row_of: dict[Picture, int] = {}
    records = []
    for index, row in enumerate(DEMO_MCQ_ROWS):
        if row.picture in first_row_of:
            image = str(first_row_of[row.picture])  # a short cell: "reuse the image of that index"
        else:
            first_row_of[row.picture] = index
            image = encode_image_to_base64(row.picture.draw())
        choices = list(COLORS) if row.asks == "color" else list(SHAPES)
        # Rotating the choices by the row number moves the right answer across the letters.
        choices = choices[index % len(choices) :] + choices[: index % len(choices)]
        records.append(
            {
                "index": index,
                "image": image,
                "question": QUESTIONS[row.asks],
                **dict(zip(OPTION_LETTERS, choices, strict=True)),
                "answer": OPTION_LETTERS[choices.index(row.truth)],
                "category": row.asks,
            }
        )
    return pd.DataFrame.from_records(records)


def write_demo_mcq(root: str | os.PathLike | None = None) -> Path:
    """Writes `<root>/DemoMCQ.tsv` (atomically; same bytes every time) unless it already holds them, and returns
    its path (a read-only data folder that has the file works).

    Args:
        root (`str` or `os.PathLike`, *optional*): data folder; defaults to `lmu_root()` (`$LMUData`).
    """
    path = tsv_path(DEMO_MCQ_NAME, root)
    buffer = io.StringIO()
    demo_mcq_frame().to_csv(buffer, sep="\t", index=False, lineterminator="\n")
    data = buffer.getvalue().encode("utf-8")
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)
    return path
