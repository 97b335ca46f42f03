"""Tiny random-weight LLaVA-1.5 checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import TINY_TEXT_WIDTHS, TINY_VISION_WIDTHS, byte_level_tokenizer, random_model

LLAVA_SPECIAL_TOKENS = ("<s>", "</s>", "<image>", "<pad>")
# CLIP tower: 56-pixel views in 14-pixel patches, a 4x4 grid per view.
TINY_CLIP_VISION = dict(
    model_type="clip_vision_model", **TINY_VISION_WIDTHS, image_size=56, patch_size=14, projection_dim=32
)
# How the processors count the CLIP tower's image tokens: 14-pixel patches, and CLIP's CLS token, counted and then
# dropped by the "default" strategy.
CLIP_PROCESSOR_OPTIONS = dict(patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)


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


def llava_config_options(tokenizer: Any, num_layers: int) -> dict[str, Any]:
    """The config of the tiny LLaVA-1.5 and LLaVA-NeXT: the Llama decoder, the CLIP tower and its features (the
    penultimate layer's, CLS dropped)."""
    return dict(
        text_config=llama_text_config(tokenizer, num_layers),
        vision_config=TINY_CLIP_VISION,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def save_llava(path: Path, model_cls: type, config: Any, tokenizer: Any, processor: Any, seed: int) -> Path:
    """Random weights for `config` and the checkpoint folder (weights, config, processor with its tokenizer)."""
    model = random_model(model_cls, config, seed, "vision_tower", tokenizer.convert_tokens_to_ids("</s>"),
                         tokenizer.pad_token_id)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


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
    config = LlavaConfig(**llava_config_options(tokenizer, num_layers))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaProcessor(image_processor, tokenizer, **CLIP_PROCESSOR_OPTIONS)
    return save_llava(path, LlavaForConditionalGeneration, config, tokenizer, processor, seed)
