"""Models by name, VLMEvalKit-style: name -> `functools.partial(Class, **kwargs)`, built lazily, each adapter class
imported on first use."""

from __future__ import annotations

import os
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tiny import tiny_checkpoint

if TYPE_CHECKING:
    from .base import PrunedVLM


class LazyClass:
    """An adapter class by its dotted path, imported on first use; calling it builds an instance, as the class would.

    Importing an adapter loads transformers' model code (seconds). Listing the registry and checking a run config read
    only its names, checkpoints and families, so they import none (a config's `kwargs` are checked against the class's
    constructor: that imports the one adapter named).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.__name__ = path.rpartition(".")[2]

    def __repr__(self) -> str:
        return f"LazyClass({self.path!r})"

    def load(self) -> type[PrunedVLM]:
        module, _, name = self.path.rpartition(".")
        return getattr(import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> PrunedVLM:
        return self.load()(*args, **kwargs)


Qwen2_5_VL = LazyClass("vlmeval_ivcp.models.qwen2_5_vl.Qwen2_5_VL")
Qwen2_VL = LazyClass("vlmeval_ivcp.models.qwen2_vl.Qwen2_VL")
Qwen3_VL = LazyClass("vlmeval_ivcp.models.qwen3_vl.Qwen3_VL")
Llava = LazyClass("vlmeval_ivcp.models.llava.Llava")
LlavaNext = LazyClass("vlmeval_ivcp.models.llava_next.LlavaNext")
LlavaOneVision = LazyClass("vlmeval_ivcp.models.llava_onevision.LlavaOneVision")
InternVL = LazyClass("vlmeval_ivcp.models.internvl.InternVL")
DeepseekVL2 = LazyClass("vlmeval_ivcp.models.deepseek_vl2.DeepseekVL2")

# The adapters by class name (a config's `class`); `.load()` imports one.
MODEL_CLASSES: dict[str, LazyClass] = {
    cls.__name__: cls
    for cls in (Qwen2_5_VL, Qwen2_VL, Qwen3_VL, Llava, LlavaNext, LlavaOneVision, InternVL, DeepseekVL2)
}

# Release settings of IVC-Prune for Qwen2.5-VL: min_pixels = 4·28², max_pixels = 16384·28².
_QWEN_RELEASE = dict(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)


def tiny_models_dir() -> Path:
    """Where tiny random checkpoints are built on first use (under the standard XDG cache folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmeval_ivcp" / "tiny-models"


def tiny_model(cls: LazyClass, family: str, **kwargs: Any) -> PrunedVLM:
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
