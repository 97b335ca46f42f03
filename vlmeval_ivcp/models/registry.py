"""Models by name, VLMEvalKit-style: name -> `functools.partial(Class, **kwargs)`, built lazily."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from .base import PrunedVLM
from .deepseek_vl2 import DeepseekVL2
from .internvl import InternVL
from .llava import Llava
from .llava_next import LlavaNext
from .llava_onevision import LlavaOneVision
from .qwen2_5_vl import Qwen2_5_VL
from .qwen2_vl import Qwen2_VL
from .qwen3_vl import Qwen3_VL
from .tiny import tiny_checkpoint

MODEL_CLASSES: dict[str, type[PrunedVLM]] = {
    "Qwen2_5_VL": Qwen2_5_VL,
    "Qwen2_VL": Qwen2_VL,
    "Qwen3_VL": Qwen3_VL,
    "Llava": Llava,
    "LlavaNext": LlavaNext,
    "LlavaOneVision": LlavaOneVision,
    "InternVL": InternVL,
    "DeepseekVL2": DeepseekVL2,
}

# Release settings of IVC-Prune for Qwen2.5-VL: min_pixels = 4·28², max_pixels = 16384·28².
_QWEN_RELEASE = dict(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)


def tiny_models_dir() -> Path:
    """Where tiny random checkpoints are built on first use (under the standard XDG cache folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmeval_ivcp" / "tiny-models"


def tiny_model(cls: type[PrunedVLM], family: str, **kwargs: Any) -> PrunedVLM:
    """The tiny random-weight checkpoint of `family` (4 to 6 layers, width 64; built on first use) behind `cls`: for
    demos and smoke tests, its answers are noise."""
    options = dict(dtype="float32", max_new_tokens=8)
    return cls(str(tiny_checkpoint(family, tiny_models_dir())), **{**options, **kwargs})


supported_models: dict[str, partial] = {
    "TinyQwen2.5-VL": partial(tiny_model, Qwen2_5_VL, "qwen2_5_vl", min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28),
    "Qwen2.5-VL-3B-Instruct": partial(Qwen2_5_VL, model_path="Qwen/Qwen2.5-VL-3B-Instruct", **_QWEN_RELEASE),
    "Qwen2.5-VL-7B-Instruct": partial(Qwen2_5_VL, model_path="Qwen/Qwen2.5-VL-7B-Instruct", **_QWEN_RELEASE),
    "TinyQwen2-VL": partial(tiny_model, Qwen2_VL, "qwen2_vl", min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28),
    "Qwen2-VL-7B-Instruct": partial(Qwen2_VL, model_path="Qwen/Qwen2-VL-7B-Instruct"),
    "TinyQwen3-VL": partial(tiny_model, Qwen3_VL, "qwen3_vl", min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32),
    "Qwen3-VL-2B-Instruct": partial(Qwen3_VL, model_path="Qwen/Qwen3-VL-2B-Instruct"),
    "Qwen3-VL-4B-Instruct": partial(Qwen3_VL, model_path="Qwen/Qwen3-VL-4B-Instruct"),
    "Qwen3-VL-8B-Instruct": partial(Qwen3_VL, model_path="Qwen/Qwen3-VL-8B-Instruct"),
    "TinyLLaVA-1.5": partial(tiny_model, Llava, "llava"),
    "llava-1.5-7b-hf": partial(Llava, model_path="llava-hf/llava-1.5-7b-hf"),
    "TinyLLaVA-NeXT": partial(tiny_model, LlavaNext, "llava_next"),
    "llava-v1.6-vicuna-7b-hf": partial(LlavaNext, model_path="llava-hf/llava-v1.6-vicuna-7b-hf"),
    "llava-v1.6-mistral-7b-hf": partial(LlavaNext, model_path="llava-hf/llava-v1.6-mistral-7b-hf"),
    "TinyLLaVA-OneVision": partial(tiny_model, LlavaOneVision, "llava_onevision"),
    "llava-onevision-qwen2-7b-ov-hf": partial(LlavaOneVision, model_path="llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    "TinyInternVL": partial(tiny_model, InternVL, "internvl"),
    "InternVL3-8B-hf": partial(InternVL, model_path="OpenGVLab/InternVL3-8B-hf"),
    "InternVL3_5-8B-HF": partial(InternVL, model_path="OpenGVLab/InternVL3_5-8B-HF"),
    "TinyDeepSeek-VL2": partial(tiny_model, DeepseekVL2, "deepseek_vl2"),
    "deepseek-vl2-small": partial(DeepseekVL2, model_path="deepseek-ai/deepseek-vl2-small"),
    "deepseek-vl2-tiny": partial(DeepseekVL2, model_path="deepseek-ai/deepseek-vl2-tiny"),
}


def has_random_weights(name: str) -> bool:
    """Whether registry model `name` is a tiny random-weight checkpoint (its answers, so its accuracy, are noise)."""
    factory = supported_models.get(name)
    return factory is not None and factory.func is tiny_model


def build_model(name: str, **overrides: Any) -> PrunedVLM:
    """Instantiate a registered model; `overrides` (method, ratio, layer, dtype, ...) win over the registry's."""
    try:
        factory = supported_models[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(supported_models)}") from None
    return factory(**overrides)
