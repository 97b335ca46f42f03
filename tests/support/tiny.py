"""Tiny checkpoints and inputs shared by the tests (built once per test session), for every model family."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from vlmeval_ivcp.models.base import PrunedVLM
from vlmeval_ivcp.models.registry import MODEL_CLASSES
from vlmeval_ivcp.models.tiny import tiny_checkpoint

TINY_ROOT = Path(__file__).resolve().parents[2] / ".make" / "tiny-models"

# family -> (adapter class name in MODEL_CLASSES, constructor options of the tiny checkpoint)
ADAPTERS = {
    "qwen2_5_vl": ("Qwen2_5_VL", dict(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)),
    "qwen2_vl": ("Qwen2_VL", dict(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)),
    "qwen3_vl": ("Qwen3_VL", dict(min_pixels=4 * 32 * 32, max_pixels=64 * 32 * 32)),
    "llava": ("Llava", {}),
    "llava_next": ("LlavaNext", {}),
    "llava_onevision": ("LlavaOneVision", {}),
    "internvl": ("InternVL", {}),
    "deepseek_vl2": ("DeepseekVL2", {}),
}
FAMILIES = tuple(ADAPTERS)


@lru_cache(maxsize=None)
def tiny_path(family: str = "qwen2_5_vl") -> Path:
    return tiny_checkpoint(family, TINY_ROOT)


@lru_cache(maxsize=None)
def tiny_wrapper(attn: str = "sdpa", dtype: str = "float32", family: str = "qwen2_5_vl") -> PrunedVLM:
    """The unpruned tiny wrapper of `family` (tests attach pruners to `.model` themselves and must remove them)."""
    name, options = ADAPTERS[family]
    cls = MODEL_CLASSES[name]
    return cls(str(tiny_path(family)), attn_implementation=attn, dtype=dtype, max_new_tokens=8, **options)


def picture(seed: int, size: tuple[int, int] = (112, 112)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def family_inputs(
    wrapper: PrunedVLM, questions: list[str], seed: int = 0, sizes: list[tuple[int, int]] | None = None
) -> tuple[dict[str, torch.Tensor], list | None]:
    """A (left-padded) batch in the family's chat format: per question, one random picture of each size in `sizes`
    (default one 112x112 picture). Returns the model inputs and the image layouts (or None)."""
    sizes = sizes or [(112, 112)]
    prompts = [wrapper.chat_prompt(len(sizes), question) for question in questions]
    pictures = [
        picture(seed + row * len(sizes) + index, size)
        for row in range(len(questions))
        for index, size in enumerate(sizes)
    ]
    inputs = wrapper.encode(prompts, pictures)
    layouts = inputs.pop("image_layouts", None)
    return inputs, layouts


def ragged_inputs(
    wrapper: PrunedVLM, questions: list[str], sizes: list[list[tuple[int, int]]], seed: int = 0
) -> tuple[dict[str, torch.Tensor], list | None, list[tuple[dict[str, torch.Tensor], list | None]]]:
    """A left-padded batch whose row `r` asks `questions[r]` about one random picture of each size in `sizes[r]`
    (rows with different image sizes and counts), and each row encoded alone. Returns the batch inputs, its image
    layouts, and per row its own `(inputs, layouts)`."""
    prompts = [wrapper.chat_prompt(len(row), question) for row, question in zip(sizes, questions, strict=True)]
    pictures = [[picture(seed + 7 * row + index, size) for index, size in enumerate(row_sizes)]
                for row, row_sizes in enumerate(sizes)]
    inputs = wrapper.encode(prompts, [image for row in pictures for image in row])
    alone = []
    for prompt, row_pictures in zip(prompts, pictures):
        row_inputs = wrapper.encode([prompt], row_pictures)
        alone.append((row_inputs, row_inputs.pop("image_layouts", None)))
    return inputs, inputs.pop("image_layouts", None), alone


def qwen_inputs(wrapper: PrunedVLM, questions: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """Qwen2.5-VL: one random 112x112 picture per question (16 visual tokens each)."""
    return family_inputs(wrapper, questions, seed)[0]


def llava_inputs(wrapper: PrunedVLM, questions: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """LLaVA-1.5: one random 112x112 picture per question (resized to 56x56: 16 visual tokens each)."""
    return family_inputs(wrapper, questions, seed)[0]
