"""Tiny random-weight Qwen2.5-VL checkpoint, and the tokenizer and token ids every tiny Qwen-VL shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import byte_level_tokenizer, chat_text_config, random_model

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_tokenizer():
    """The byte-level tokenizer with Qwen's special tokens (`<|im_end|>` ends a turn, `<|endoftext|>` pads)."""
    from transformers import Qwen2Tokenizer

    return byte_level_tokenizer(Qwen2Tokenizer, QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def qwen_token_config(tokenizer) -> dict[str, Any]:
    """The placeholder token ids of a Qwen-VL config."""
    token = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )


def qwen2_text_config(tokenizer, num_layers: int) -> dict[str, Any]:
    """The tiny decoder of Qwen2-VL and Qwen2.5-VL: block M-RoPE, sections (2, 3, 3) of the 8 frequency pairs."""
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}
    return chat_text_config(tokenizer, num_layers, rope_parameters=rope)


def qwen2_image_processor() -> Any:
    """The image processor of the tiny Qwen2-VL and Qwen2.5-VL: 14-pixel patches merged 2x2, 4 to 64 tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)


def save_qwen(path: Path, model_cls: type, config: Any, tokenizer, image_processor, seed: int) -> Path:
    """Random weights for `config` and the checkpoint folder (weights, config, tokenizer, image processor)."""
    model = random_model(model_cls, config, seed, "visual", tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    return path


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint to `path` (created) and return it.

    Text: hidden 64, 4 heads of 16 (2 KV heads), M-RoPE sections (2, 3, 3); vision: 2 blocks of width 32.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    config = Qwen2_5_VLConfig(
        text_config=qwen2_text_config(tokenizer, num_layers),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[1]
        ),
        **qwen_token_config(tokenizer),
    )
    return save_qwen(path, Qwen2_5_VLForConditionalGeneration, config, tokenizer, qwen2_image_processor(), seed)
