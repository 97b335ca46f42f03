"""Tiny random-weight LLaVA-1.5 checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import TINY_TEXT_WIDTHS, byte_level_tokenizer, random_model

LLAVA_SPECIAL_TOKENS = ("<s>", "</s>", "<image>", "<pad>")
# CLIP tower: 56-pixel views in 14-pixel patches, a 4x4 grid per view.
TINY_CLIP_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
    projection_dim=32,
)


def llava_tokenizer() -> Any:
    """The byte-level tokenizer of the tiny LLaVA family, with `<s>`, `</s>`, `<image>` and `<pad>`."""
    from transformers import Qwen2Tokenizer

    return byte_level_tokenizer(
        Qwen2Tokenizer, LLAVA_SPECIAL_TOKENS, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def llama_text_config(tokenizer: Any, num_layers: int) -> dict[str, Any]:
    """The tiny Llama decoder of the LLaVA family."""
    token = tokenizer.convert_tokens_to_ids
    return dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        **TINY_TEXT_WIDTHS,
        num_hidden_layers=num_layers,
        eos_token_id=token("</s>"),
        bos_token_id=token("<s>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny LLaVA-1.5 checkpoint to `path` (created) and return it.

    Text (Llama): hidden 64, 4 heads of 16 (2 KV heads); vision (CLIP): 2 layers of width 32 on 56x56 pictures in
    14-pixel patches, so one image gives a 4x4 grid of 16 visual tokens (CLS dropped, as in llava-1.5).
    """
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = llava_tokenizer()
    token = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        text_config=llama_text_config(tokenizer, num_layers),
        vision_config=TINY_CLIP_VISION,
        image_token_id=token("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = random_model(LlavaForConditionalGeneration, config, seed, "vision_tower", token("</s>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaProcessor(
        image_processor, tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    processor.save_pretrained(path)
    return path
