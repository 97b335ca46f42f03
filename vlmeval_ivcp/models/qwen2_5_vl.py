"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`), loaded from a hub id or a local checkpoint; the base of the
other Qwen-VL adapters (Qwen2-VL, Qwen3-VL), which differ only in the classes, pixel unit, prompt and box frame."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .base import PrunedVLM, image_only
from .prompts import QWEN2_VL_PROMPTS
from .qwen_images import fit_to_budget, read_rgb

# VLMEvalKit's pixel budgets for Qwen2.5-VL (OCRBench forces a larger minimum, keeping the maximum).
MIN_PIXELS = 1280 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
DATASET_MIN_PIXELS = {"OCRBench": 10 * 10 * 28 * 28}
SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

ImageOnlyQwenProcessor = image_only(Qwen2_5_VLProcessor)


def qwen_chat_prompt(images: int, text: str, system: str | None = SYSTEM_PROMPT) -> str:
    """Qwen-VL's chat format for one user turn: the images first, then the text, then the assistant cue (no
    system turn when `system` is None)."""
    system_turn = "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
    return (
        f"{system_turn}<|im_start|>user\n"
        f"{IMAGE_PLACEHOLDER * images}{text}<|im_end|>\n<|im_start|>assistant\n"
    )


class Qwen2_5_VL(PrunedVLM):
    """Qwen2.5-VL with optional pruning.

    Args:
        min_pixels, max_pixels (`int`): the image pixel budget (VLMEvalKit's defaults; the release of IVC-Prune
            uses min_pixels = 4·28², max_pixels = 16384·28², and 6384·28² for its 3B entry).
        other args: see `PrunedVLM`; `use_custom_prompt=True` asks with VLMEvalKit's Qwen2-VL class prompts.

    Images are resized as VLMEvalKit's Qwen2-VL class has qwen_vl_utils resize them (`qwen_images.read_rgb`, then `fit_to_budget`).
    """

    grounding_frame = "qwen25vl_abs"
    custom_prompts = QWEN2_VL_PROMPTS
    model_class: type = Qwen2_5_VLForConditionalGeneration
    processor_class: type = ImageOnlyQwenProcessor
    # Per-dataset minimum pixel budgets (VLMEvalKit's, for 28-pixel tokens).
    dataset_min_pixels: dict[str, int] = DATASET_MIN_PIXELS
    # The prompt's system turn when the checkpoint ships no chat template (None: no system turn).
    system_prompt: str | None = SYSTEM_PROMPT

    def __init__(self, model_path: str, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, **kwargs: Any):
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        super().__init__(model_path, **kwargs)

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            self.model_class, model_path, attn_implementation, dtype, device_map
        )
        processor = self.processor_class(Qwen2VLImageProcessorPil.from_pretrained(model_path), tokenizer)
        return model, processor

    def pixel_budget(self, dataset: str | None) -> dict[str, int]:
        shortest = self.dataset_min_pixels.get(dataset or "", self.min_pixels)
        return {"shortest_edge": shortest, "longest_edge": self.max_pixels}

    def chat_prompt(self, images: int, text: str) -> str:
        return qwen_chat_prompt(images, text, self.system_prompt)

    def read_image(self, path: str) -> Image.Image:
        return read_rgb(path)

    @property
    def token_side(self) -> int:
        """The pixels of one visual token a side: patch size times merge size (28; 32 for Qwen3-VL)."""
        return self.processor.image_processor.patch_size * self.processor.image_processor.merge_size

    def fit_image(self, image: Image.Image, dataset: str | None) -> Image.Image:
        budget = self.pixel_budget(dataset)
        return fit_to_budget(image, budget["shortest_edge"], budget["longest_edge"], self.token_side)

    def processor_options(self, dataset: str | None) -> dict[str, Any]:
        return {"size": self.pixel_budget(dataset)}

    def full_visual_tokens(self, prompts: list[str], images: list[list[Image.Image]], dataset: str | None) -> list[int]:
        # A fitted picture's sides are multiples of the token's side, which the processor keeps: its grid is the
        # count, without encoding the full-size pictures again (451 ms for a 1920 x 1080 picture,
        # docs/methods/downsample.md).
        side = self.token_side
        return [sum((image.height // side) * (image.width // side) for image in row) for row in images]
