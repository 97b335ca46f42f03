"""Tiny random-weight Qwen2.5-VL checkpoint."""

from __future__ import annotations

from pathlib import Path

from . import TINY_TEXT_WIDTHS, byte_level_tokenizer, random_model

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint to `path` (created) and return it.

    Text: hidden 64, 4 heads of 16 (2 KV heads), M-RoPE sections (2, 3, 3); vision: 2 blocks of width 32.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(
        Qwen2Tokenizer, QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            **TINY_TEXT_WIDTHS,
            num_hidden_layers=num_layers,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            eos_token_id=token("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[1]
        ),
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )
    model = random_model(Qwen2_5_VLForConditionalGeneration, config, seed, "visual", token("<|im_end|>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28).save_pretrained(path)
    return path
