"""Datasets by name: each benchmark family declares the names it supports."""

from __future__ import annotations

import os

from .base import ImageDataset
from .grounding import GroundingDataset
from .judged import JudgedDataset
from .mcq import MCQDataset
from .vqa import VQADataset
from .yorn import YesNoDataset

DATASET_CLASSES: list[type[ImageDataset]] = [MCQDataset, YesNoDataset, VQADataset, JudgedDataset, GroundingDataset]


def dataset_class(name: str) -> type[ImageDataset]:
    for cls in DATASET_CLASSES:
        if name in cls.SUPPORTED:
            return cls
    known = sorted(n for cls in DATASET_CLASSES for n in cls.SUPPORTED)
    raise KeyError(f"unknown dataset {name!r}; known: {known}")


def build_dataset(name: str, root: str | os.PathLike | None = None) -> ImageDataset:
    return dataset_class(name)(name, root)
