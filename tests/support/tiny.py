"""Tiny checkpoints and inputs shared by the tests (built once per test session)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from vlmeval_ivcp.models.base import PrunedVLM
from vlmeval_ivcp.models.llava import Llava, llava_chat_prompt
from vlmeval_ivcp.models.qwen2_5_vl import Qwen2_5_VL, qwen_chat_prompt
from vlmeval_ivcp.models.tiny import tiny_checkpoint

TINY_ROOT = Path(__file__).resolve().parents[2] / ".make" / "tiny-models"


@lru_cache(maxsize=None)
def tiny_path(family: str = "qwen2_5_vl") -> Path:
    return tiny_checkpoint(family, TINY_ROOT)


@lru_cache(maxsize=None)
def tiny_wrapper(attn: str = "sdpa", dtype: str = "float32", family: str = "qwen2_5_vl") -> PrunedVLM:
    """The unpruned tiny wrapper of `family` (tests attach pruners to `.model` themselves and must remove them)."""
    if family == "llava":
        return Llava(str(tiny_path(family)), attn_implementation=attn, dtype=dtype, max_new_tokens=8)
    return Qwen2_5_VL(str(tiny_path(family)), attn_implementation=attn, dtype=dtype, min_pixels=4 * 28 * 28,
                      max_pixels=64 * 28 * 28, max_new_tokens=8)


def picture(seed: int, size: tuple[int, int] = (112, 112)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def qwen_inputs(wrapper: Qwen2_5_VL, questions: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """A (left-padded) batch: one random 112x112 picture per question (16 visual tokens each)."""
    prompts = [qwen_chat_prompt(1, question) for question in questions]
    images = [picture(seed + index) for index in range(len(questions))]
    inputs = wrapper.processor(text=prompts, images=images, size=wrapper.pixel_budget(None), padding=True,
                               return_tensors="pt").data
    inputs["pixel_values"] = inputs["pixel_values"].to(wrapper.model.dtype)
    return inputs


def llava_inputs(wrapper: Llava, questions: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """A (left-padded) batch: one random 112x112 picture per question (resized to 56x56: 16 visual tokens each)."""
    prompts = [llava_chat_prompt(1, question) for question in questions]
    images = [picture(seed + index) for index in range(len(questions))]
    inputs = wrapper.processor(text=prompts, images=images, padding=True, return_tensors="pt").data
    inputs["pixel_values"] = inputs["pixel_values"].to(wrapper.model.dtype)
    return inputs
