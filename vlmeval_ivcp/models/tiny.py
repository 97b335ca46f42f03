"""Tiny random-weight checkpoints built from the real configs, for tests and the demo (no download).

Each builder writes a complete checkpoint folder (weights, config, tokenizer, image processor) with
`save_pretrained`, so it loads back through the same `from_pretrained` path as a user's real checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


# The decoder of every tiny family: hidden 64, 4 heads of 16 (2 KV heads), MLP 128.
TINY_TEXT_WIDTHS = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096
)

def byte_level_tokenizer(tokenizer_cls: type, special_tokens: tuple[str, ...], **kwargs):
    """A BPE tokenizer over the 256 byte symbols with no merges, plus the model's special tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    tokenizer = tokenizer_cls(vocab=vocab, merges=[], unk_token=None, **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def _random_model(model_cls: type, config: Any, seed: int, vision_prefix: str, eos_id: int, pad_id: int):
    """`model_cls(config)` with seeded random weights and greedy-decoding token ids set."""
    torch.manual_seed(seed)
    model = model_cls(config)
    # Random init gives near-uniform logits; larger weights make greedy decoding sensitive to every token kept.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and vision_prefix not in name:
                param.normal_(0.0, 0.1)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    return model


def build_tiny_qwen2_5_vl(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
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
    model = _random_model(Qwen2_5_VLForConditionalGeneration, config, seed, "visual", token("<|im_end|>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28).save_pretrained(path)
    return path


LLAVA_SPECIAL_TOKENS = ("<s>", "</s>", "<image>", "<pad>")


def build_tiny_llava(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny LLaVA-1.5 checkpoint to `path` (created) and return it.

    Text (Llama): hidden 64, 4 heads of 16 (2 KV heads); vision (CLIP): 2 layers of width 32 on 56x56 pictures in
    14-pixel patches, so one image gives a 4x4 grid of 16 visual tokens (CLS dropped, as in llava-1.5).
    """
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Tokenizer,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(
        Qwen2Tokenizer, LLAVA_SPECIAL_TOKENS, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    token = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            **TINY_TEXT_WIDTHS,
            num_hidden_layers=num_layers,
            eos_token_id=token("</s>"),
            bos_token_id=token("<s>"),
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
            projection_dim=32,
        ),
        image_token_id=token("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _random_model(LlavaForConditionalGeneration, config, seed, "vision_tower", token("</s>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaProcessor(
        image_processor, tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    processor.save_pretrained(path)
    return path


TINY_BUILDERS = {"qwen2_5_vl": build_tiny_qwen2_5_vl, "llava": build_tiny_llava}


def tiny_checkpoint(family: str, cache_dir: str | Path) -> Path:
    """The tiny checkpoint of `family` under `cache_dir`, built on first use."""
    try:
        builder = TINY_BUILDERS[family]
    except KeyError:
        raise KeyError(f"no tiny checkpoint for family {family!r}; known: {sorted(TINY_BUILDERS)}") from None
    path = Path(cache_dir) / f"tiny-{family}"
    if not (path / "config.json").exists():
        builder(path)
    return path
