"""Qwen3-VL (`Qwen3VLForConditionalGeneration`, e.g. Qwen/Qwen3-VL-8B-Instruct), loaded from a hub id or a local
checkpoint.

Against Qwen2.5-VL: 16-pixel patches merged 2 x 2 (one LLM token per 32 x 32 pixels), interleaved M-RoPE
(`ARCHS["qwen3_vl"].mrope_layout`), DeepStack features added to the visual tokens after the first decoder layers
(`ARCHS["qwen3_vl"].injections`, carried by the engine to the kept tokens), `mm_token_type_ids` from the processor
(the model's position routine needs it), no system turn by default, boxes on a 0-1000 grid. Images only: the
adapter builds no video processor.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .base import image_only, shipped_chat_template
from .qwen2_5_vl import Qwen2_5_VL

# VLMEvalKit's budget: its Qwen3-VL entries give none, so qwen_vl_utils' defaults for 32 x 32-pixel tokens apply
# (the processor is then told not to resize, so the released preprocessor's 65536-pixel minimum never does).
MIN_PIXELS = 4 * 32 * 32
MAX_PIXELS = 16384 * 32 * 32
# VLMEvalKit's Qwen3-VL class raises the minimum for OCRBench.
DATASET_MIN_PIXELS = {"OCRBench": 10 * 10 * 32 * 32}


class Qwen3_VL(Qwen2_5_VL):
    """Qwen3-VL with optional pruning.

    Args:
        min_pixels, max_pixels (`int`): the image pixel budget (default: VLMEvalKit's, qwen_vl_utils' for 16-pixel
            patches: 4·32² to 16384·32²).
        other args: see `PrunedVLM`.
    """

    grounding_frame = "norm1000"
    model_class = Qwen3VLForConditionalGeneration
    processor_class = image_only(Qwen3VLProcessor)
    dataset_min_pixels: dict[str, int] = DATASET_MIN_PIXELS
    system_prompt = None

    def __init__(self, model_path: str, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, **kwargs: Any):
        super().__init__(model_path, min_pixels=min_pixels, max_pixels=max_pixels, **kwargs)

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            self.model_class, model_path, attn_implementation, dtype, device_map
        )
        processor = self.processor_class(
            Qwen2VLImageProcessorPil.from_pretrained(model_path),
            tokenizer,
            chat_template=shipped_chat_template(Qwen3VLProcessor, model_path, tokenizer),
        )
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        """The checkpoint's chat template for one user turn, or the same format written out without one."""
        return self.template_prompt(images, text) or super().chat_prompt(images, text)
