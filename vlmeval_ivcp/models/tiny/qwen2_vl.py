"""Tiny random-weight Qwen2-VL checkpoint (full-attention ViT with LayerNorm/QuickGELU blocks, block M-RoPE)."""

from __future__ import annotations

from pathlib import Path

from .qwen2_5_vl import qwen2_image_processor, qwen2_text_config, qwen_token_config, qwen_tokenizer, save_qwen


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny Qwen2-VL checkpoint to `path` (created) and return it.

    Text: hidden 64, 4 heads of 16 (2 KV heads), block M-RoPE sections (2, 3, 3); vision: 2 blocks of width 32
    (`embed_dim`), patch 14, merge 2, merged to the LLM width 64 (`hidden_size`).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    config = Qwen2VLConfig(
        text_config=qwen2_text_config(tokenizer, num_layers),
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        **qwen_token_config(tokenizer),
    )
    return save_qwen(path, Qwen2VLForConditionalGeneration, config, tokenizer, qwen2_image_processor(), seed)
