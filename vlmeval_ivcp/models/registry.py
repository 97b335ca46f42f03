"""Models by name, VLMEvalKit-style: name -> `functools.partial(Class, **kwargs)`, built lazily."""

from __future__ import annotations

from functools import partial
from typing import Any

from .base import PrunedVLM
from .qwen2_5_vl import Qwen2_5_VL

MODEL_CLASSES: dict[str, type[PrunedVLM]] = {"Qwen2_5_VL": Qwen2_5_VL}

# Release settings of IVC-Prune for Qwen2.5-VL: min_pixels = 4·28², max_pixels = 16384·28².
_QWEN_RELEASE = dict(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)

supported_models: dict[str, partial] = {
    "Qwen2.5-VL-3B-Instruct": partial(Qwen2_5_VL, model_path="Qwen/Qwen2.5-VL-3B-Instruct", **_QWEN_RELEASE),
    "Qwen2.5-VL-7B-Instruct": partial(Qwen2_5_VL, model_path="Qwen/Qwen2.5-VL-7B-Instruct", **_QWEN_RELEASE),
}


def build_model(name: str, **overrides: Any) -> PrunedVLM:
    """Instantiate a registered model; `overrides` (method, ratio, layer, dtype, ...) win over the registry's."""
    try:
        factory = supported_models[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(supported_models)}") from None
    return factory(**overrides)
