"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`, e.g. llava-hf/llava-v1.6-vicuna-7b-hf or
llava-hf/llava-v1.6-mistral-7b-hf), loaded from a hub id or a local checkpoint."""

from __future__ import annotations

from typing import Any

from transformers import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from .base import PrunedVLM, shipped_chat_template
from .llava import clip_token_options, llava_chat_prompt


class LlavaNext(PrunedVLM):
    """LLaVA-NeXT (LLaVA-1.6) with optional pruning.

    Each image is tiled at the grid pinpoint that best fits its size ("anyres"), so its number of visual tokens
    depends on its size: the base view's grid, then the tiles' grid with the padding rows or columns cut, with one
    newline token after each of its rows. Every image token (newlines included) is a visual token for the engine.

    Args: see `PrunedVLM`.
    """

    grounding_frame = "norm1"

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            LlavaNextForConditionalGeneration, model_path, attn_implementation, dtype, device_map
        )
        # Assembled by hand: the auto classes may pick the torchvision-backed image processor.
        processor = LlavaNextProcessor(
            LlavaNextImageProcessorPil.from_pretrained(model_path),
            tokenizer,
            **clip_token_options(model.config),
            chat_template=shipped_chat_template(LlavaNextProcessor, model_path, tokenizer),
        )
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        """The checkpoint's chat template for one user turn (images first), or LLaVA's vicuna format without one."""
        return self.template_prompt(images, text) or llava_chat_prompt(images, text)
