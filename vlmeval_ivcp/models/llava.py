"""LLaVA-1.5 (`LlavaForConditionalGeneration`, e.g. llava-hf/llava-1.5-7b-hf), loaded from a hub id or a local
checkpoint."""

from __future__ import annotations

from typing import Any

from transformers import CLIPImageProcessorPil, LlavaForConditionalGeneration, LlavaProcessor

from .base import PrunedVLM

IMAGE_PLACEHOLDER = "<image>\n"
# CLIP's vision tower prepends a CLS token; the processor counts it, then drops it under the "default" strategy.
CLIP_EXTRA_TOKENS = 1


def clip_token_options(config: Any) -> dict[str, Any]:
    """What a LLaVA-family processor needs to count a CLIP tower's image tokens, read from the model config."""
    return dict(
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=CLIP_EXTRA_TOKENS,
    )


def llava_chat_prompt(images: int, text: str) -> str:
    """LLaVA-1.5's conversation format for one user turn: the images first, then the text, then the assistant cue."""
    return f"USER: {IMAGE_PLACEHOLDER * images}{text} ASSISTANT:"


class Llava(PrunedVLM):
    """LLaVA-1.5 with optional pruning (576 visual tokens per 336-pixel image, a 24x24 grid).

    Args: see `PrunedVLM`.
    """

    grounding_frame = "norm1"
    view_fit = "crop"  # CLIP's processor: shortest edge resized, then a centred square crop
    # Every picture becomes one 336 x 336 view: a smaller picture gives as many tokens (no `downsample` baseline).
    tokens_follow_picture_size = False
    fixed_visual_tokens = 576

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            LlavaForConditionalGeneration, model_path, attn_implementation, dtype, device_map
        )
        # Assembled by hand: the auto classes may pick the torchvision-backed image processor.
        processor = LlavaProcessor(
            CLIPImageProcessorPil.from_pretrained(model_path), tokenizer, **clip_token_options(model.config)
        )
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        return llava_chat_prompt(images, text)
