"""Qwen2-VL (`Qwen2VLForConditionalGeneration`, e.g. Qwen/Qwen2-VL-7B-Instruct), loaded from a hub id or a local
checkpoint.

Against Qwen2.5-VL: a full-attention ViT (no windows) and boxes on a 0-1000 grid; pixels (28 per token), prompt,
block M-RoPE and position ids are the same, so the Qwen2.5-VL adapter serves with other classes.
"""

from __future__ import annotations

from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from .base import image_only
from .qwen2_5_vl import Qwen2_5_VL


class Qwen2_VL(Qwen2_5_VL):
    """Qwen2-VL with optional pruning (args: see `Qwen2_5_VL`; VLMEvalKit's pixel budgets are the same)."""

    grounding_frame = "norm1000"
    model_class = Qwen2VLForConditionalGeneration
    processor_class = image_only(Qwen2VLProcessor)
