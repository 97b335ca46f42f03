"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`, e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf), loaded
from a hub id or a local checkpoint.

With one image in a prompt, the image's tokens are the base view (the whole picture squashed to one view, `P x P`
cells, no separators), then the anyres tiles stitched into one grid, the padding rows or columns removed, resized down
when above `anyres_max_9`'s budget, with a newline token after each row. With several images in a prompt each is only
its base view plus one newline token. The forward inputs do not carry this, so the wrapper computes each image's
layout from the picture's size with the processor's own rules and passes it to the engine.
"""

from __future__ import annotations

from math import isqrt
from typing import Any

import torch
from PIL import Image
from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor
from transformers.image_processing_utils import select_best_resolution

from ..pruning.layout import ImageLayout, View
from .base import PrunedVLM, image_only, shipped_chat_template
from .llava_next import anyres_layout

IMAGE_PLACEHOLDER = "<image>"


def llava_ov_chat_prompt(images: int, text: str) -> str:
    """LLaVA-OneVision's format for one user turn (images first) when the checkpoint ships no chat template."""
    return f"<|im_start|>user {IMAGE_PLACEHOLDER * images}\n{text}<|im_end|>\n<|im_start|>assistant\n"


def llava_ov_layout(processor: Any, image_size: tuple[int, int] | None) -> ImageLayout:
    """The token layout of one image.

    Args:
        processor: the `LlavaOnevisionProcessor` (its image processor's pinpoints and view size, its
            `num_image_tokens` and `vision_aspect_ratio`).
        image_size (`(height, width)` or `None`): the picture's size when it is the prompt's only image; `None` for
            an image among several (base view and one trailing newline).
    """
    side = isqrt(processor.num_image_tokens)
    if image_size is None:
        return ImageLayout(side * side + 1, (View(0, side, side, kind="global"),))
    view = processor.image_processor.size
    best_height, best_width = select_best_resolution(list(image_size), processor.image_processor.image_grid_pinpoints)
    tiles = (best_height // view.height, best_width // view.width)
    # The processor's own count of the unpadded (and resized) grid: cells, and one newline per row.
    cells, rows = processor._get_unpadded_features(*image_size, side, side, *tiles)
    return anyres_layout(side, rows, cells // rows, tiles)


class LlavaOneVision(PrunedVLM):
    """LLaVA-OneVision with optional pruning (args: see `PrunedVLM`)."""

    grounding_frame = "norm1"

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            LlavaOnevisionForConditionalGeneration, model_path, attn_implementation, dtype, device_map
        )
        config = model.config
        vision = config.vision_config
        # Assembled by hand: the auto classes may pick the torchvision-backed image or video processor.
        processor = image_only(LlavaOnevisionProcessor)(
            LlavaOnevisionImageProcessorPil.from_pretrained(model_path),
            tokenizer,
            chat_template=shipped_chat_template(LlavaOnevisionProcessor, model_path, tokenizer),
            num_image_tokens=(vision.image_size // vision.patch_size) ** 2,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            vision_aspect_ratio=config.vision_aspect_ratio,
        )
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        return self.template_prompt(images, text) or llava_ov_chat_prompt(images, text)

    def processor_images(self, prompts: list[str], images: list[Image.Image]) -> list[Any]:
        """The images grouped per prompt: the processor (and then the model) treat a prompt's images as several only
        when they come as one group."""
        pictures = iter(images)
        return [[next(pictures) for _ in range(prompt.count(IMAGE_PLACEHOLDER))] for prompt in prompts]

    def encode(self, prompts: list[str], images: list[Image.Image], dataset: str | None = None) -> dict[str, Any]:
        inputs = super().encode(prompts, images, dataset)
        inputs["image_layouts"] = self.image_layouts(inputs["input_ids"], self.processor_images(prompts, images))
        return inputs

    def image_layouts(self, input_ids: torch.Tensor, images: list[list[Image.Image]]) -> list[list[ImageLayout]]:
        """Per prompt, the layout of each of its images, checked against the image tokens the processor wrote."""
        layouts = []
        for row, row_images in enumerate(images):
            single = len(row_images) == 1
            row_layouts = [
                llava_ov_layout(self.processor, (image.height, image.width) if single else None) for image in row_images
            ]
            given = sum(layout.n_tokens for layout in row_layouts)
            written = int((input_ids[row] == self.model.config.image_token_id).sum())
            if given != written:
                sizes = [f"{image.width}x{image.height}" for image in row_images]
                raise ValueError(
                    f"prompt {row}: the layouts of its images {sizes} give {given} visual tokens but the processor "
                    f"wrote {written}"
                )
            layouts.append(row_layouts)
        return layouts
