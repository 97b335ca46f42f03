"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`, e.g. llava-hf/llava-v1.6-vicuna-7b-hf or
llava-hf/llava-v1.6-mistral-7b-hf), loaded from a hub id or a local checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from ..pruning.layout import ImageLayout, View
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

    def view_layouts(self, images: list[Image.Image]) -> list[ImageLayout]:
        """Each image's token layout (base view, then the unpadded tiles with a newline after each row), for drawing
        a selection (`vlmeval_ivcp.visualize`); the engine itself prunes LLaVA-NeXT's image tokens without one."""
        return [llava_next_layout((image.height, image.width), self.model.config) for image in images]


def llava_next_layout(image_size: tuple[int, int], config: Any) -> ImageLayout:
    """The layout of one image of `(height, width)` pixels, by the model's own anyres and unpadding functions."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    tile_rows, tile_cols = get_anyres_image_grid_shape(
        image_size, config.image_grid_pinpoints, config.vision_config.image_size
    )
    _, rows, cols = unpad_image(torch.empty(0, tile_rows * side, tile_cols * side), torch.tensor(image_size)).shape
    return anyres_layout(side, rows, cols)


def anyres_layout(side: int, rows: int, cols: int, tiles: tuple[int, int] | None = None) -> ImageLayout:
    """An "anyres" image's tokens (LLaVA-NeXT, LLaVA-OneVision): the base view's `side x side` cells, then the tiles
    stitched into one unpadded grid of `rows x cols` cells with a newline token after each row."""
    base = View(0, side, side, kind="global")
    local = View(side * side, rows, cols, row_separator=True, kind="local")
    return ImageLayout(base.n_tokens + local.n_tokens, (base, local), tiles=tiles)
