"""What a run can learn about a model's checkpoint before loading it: where its `config.json` is (a local folder or
the Hugging Face hub cache, never a download) and how many decoder layers it has.

When `config.json` is not on this machine, the depth comes from `KNOWN_DEPTHS`, the decoder depths of the
registry's real checkpoints (from their published configs), so a wrong layer is still refused before any download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.registry import supported_models, tiny_models_dir
from ..models.tiny import tiny_depth
from .config import ModelSpec

# Decoder layers of the registry's real checkpoints (text_config / language_config `num_hidden_layers`).
KNOWN_DEPTHS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": 36,
    "Qwen/Qwen2.5-VL-7B-Instruct": 28,
    "llava-hf/llava-1.5-7b-hf": 32,
    "llava-hf/llava-v1.6-vicuna-7b-hf": 32,
    "llava-hf/llava-v1.6-mistral-7b-hf": 32,
    "OpenGVLab/InternVL3-8B-hf": 28,
    "deepseek-ai/deepseek-vl2-small": 27,
    "deepseek-ai/deepseek-vl2-tiny": 12,
    "Qwen/Qwen2-VL-7B-Instruct": 28,
    "Qwen/Qwen3-VL-2B-Instruct": 28,
    "Qwen/Qwen3-VL-4B-Instruct": 36,
    "Qwen/Qwen3-VL-8B-Instruct": 36,
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": 28,
    "OpenGVLab/InternVL3_5-8B-HF": 36,
}
# huggingface_hub's reading of a boolean environment variable.
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be contacted (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE` set)."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def model_path(model: ModelSpec) -> str:
    """The checkpoint a model entry loads: its `kwargs.model_path`, the registry's, or the tiny checkpoint's folder."""
    if "model_path" in model.kwargs:
        return str(model.kwargs["model_path"])
    factory = supported_models[model.name]
    if "model_path" in factory.keywords:
        return str(factory.keywords["model_path"])
    family = factory.args[1]  # partial(tiny_model, cls, family, ...)
    return str(tiny_models_dir() / f"tiny-{family}")


def looks_local(path: str) -> bool:
    """A path rather than a hub id `org/name`: it exists, or is absolute, relative to `.`, or under `~`."""
    return Path(path).expanduser().exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1


@dataclass(frozen=True)
class Checkpoint:
    """What is known before loading: `config` (the parsed `config.json`, None when not on this machine), where it
    was read, and `problem` (a sentence, when the checkpoint cannot be loaded as configured)."""

    path: str
    config: dict[str, Any] | None = None
    source: str | None = None
    problem: str | None = None


def inspect_checkpoint(path: str, cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """Finds `config.json` of `path` (a local folder, or a hub id in the hub cache `cache_dir`) without a download."""
    if looks_local(path):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            if Path(path).name.startswith("tiny-") and folder.parent == tiny_models_dir():
                return Checkpoint(path)  # built on first use
            return Checkpoint(path, problem=f"model path {path} does not exist (give a checkpoint folder or hub id)")
        return _read_config(path, folder / "config.json")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir)
    except ValueError as error:  # not a valid repo id
        return Checkpoint(path, problem=f"model path {path!r} is neither a folder nor a hub id: {error}")
    if isinstance(cached, str):
        return _read_config(path, Path(cached))
    if hub_offline():
        return Checkpoint(
            path,
            problem=f"{path} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it first "
            f"(hf download {path}), or give a local checkpoint folder as model_path",
        )
    return Checkpoint(path)


def _read_config(path: str, config_file: Path) -> Checkpoint:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Checkpoint(path, problem=f"{config_file} does not exist: {path} is not a transformers checkpoint")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return Checkpoint(path, problem=f"{config_file}: not readable JSON: {error}")
    if not isinstance(config, dict):
        return Checkpoint(path, problem=f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return Checkpoint(path, config, str(config_file))


def config_depth(config: dict[str, Any]) -> int | None:
    """Decoder layers in a `config.json`: the language model's `num_hidden_layers` (`text_config`, DeepSeek-VL2's
    `language_config`, InternVL's `llm_config`), or the top level's (older Qwen2.5-VL configs)."""
    for key in ("text_config", "language_config", "llm_config"):
        if isinstance(config.get(key), dict) and isinstance(config[key].get("num_hidden_layers"), int):
            return config[key]["num_hidden_layers"]
    value = config.get("num_hidden_layers")
    return value if isinstance(value, int) else None


def depth(checkpoint: Checkpoint) -> tuple[int | None, str]:
    """The decoder depth and where it was read: the local `config.json`, else the built-in table."""
    if checkpoint.config is not None:
        layers = config_depth(checkpoint.config)
        if layers is not None:
            return layers, f"from {checkpoint.source}"
    note = f"from the built-in table of known checkpoints ({checkpoint.path}'s config.json is not on this machine)"
    if checkpoint.path in KNOWN_DEPTHS:
        return KNOWN_DEPTHS[checkpoint.path], note
    if Path(checkpoint.path).parent == tiny_models_dir():  # before the first build: the builder's default depth
        return tiny_depth(Path(checkpoint.path).name.removeprefix("tiny-")), note
    return None, "unknown"
