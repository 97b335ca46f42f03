"""Register this project's pruning-aware models and datasets into an importable VLMEvalKit checkout.

After `register()`, VLMEvalKit's own `run.py` finds them: models in `vlmeval.config.supported_VLM` (as
`functools.partial`, like its own entries) and as attributes of `vlmeval.vlm` (for its `--config` JSON); dataset
classes at the front of `vlmeval.dataset.DATASET_CLASSES` and as attributes of `vlmeval.dataset`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pandas as pd

from ..datasets.base import ImageDataset
from ..datasets.registry import DATASET_CLASSES
from ..models.registry import MODEL_CLASSES, supported_models

INSTALL_HINT = (
    "VLMEvalKit is not importable. It is installed from its git checkout, not from the package registry: "
    "git clone https://github.com/open-compass/VLMEvalKit && pip install -e VLMEvalKit"
)


def _vlmevalkit() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        return tuple(importlib.import_module(name) for name in ("vlmeval.config", "vlmeval.vlm", "vlmeval.dataset"))
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error


def vlmevalkit_dataset(family: type[ImageDataset]) -> type:
    """A VLMEvalKit-shaped class around one of our dataset families.

    VLMEvalKit builds datasets as `cls(dataset=name)` for the first class whose `supported_datasets()` has the
    name, asks `build_prompt(line)` for the whole message (images included) and scores with `evaluate(eval_file)`.
    """

    def __init__(self, dataset: str, **kwargs: Any) -> None:
        family.__init__(self, dataset, kwargs.pop("root", None))
        self.dataset_name = dataset

    def build_prompt(self, line: Any) -> list[dict[str, str]]:
        row = self.data.iloc[line] if isinstance(line, int) else line
        position = int((self.data["index"] == row["index"]).to_numpy().nonzero()[0][0])
        images = [{"type": "image", "value": path} for path in self.image_paths(position)]
        return images + family.build_prompt(self, row)

    def evaluate(self, eval_file: str, **judge_kwargs: Any) -> dict[str, Any]:
        reader = pd.read_excel if str(eval_file).endswith(".xlsx") else lambda f: pd.read_csv(f, sep="\t")
        return family.evaluate(self, reader(eval_file), judge=judge_kwargs.get("judge"))

    return type(
        family.__name__,
        (family,),
        {
            "__init__": __init__,
            "__module__": __name__,
            "supported_datasets": classmethod(lambda cls: list(cls.SUPPORTED)),
            "build_prompt": build_prompt,
            "evaluate": evaluate,
        },
    )


def register() -> dict[str, list[str]]:
    """Add every model and dataset of this project to VLMEvalKit's registries; returns what was added."""
    config, vlm, dataset = _vlmevalkit()
    for name, factory in supported_models.items():
        config.supported_VLM[name] = factory
    for cls in MODEL_CLASSES.values():
        setattr(vlm, cls.__name__, cls)
    wrapped = [vlmevalkit_dataset(family) for family in DATASET_CLASSES]
    for cls in reversed(wrapped):
        dataset.DATASET_CLASSES.insert(0, cls)
        setattr(dataset, cls.__name__, cls)
    return {"models": sorted(supported_models), "datasets": [cls.__name__ for cls in wrapped]}

