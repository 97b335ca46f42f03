"""Tiny random-weight Qwen2-VL checkpoint (full-attention ViT with LayerNorm/QuickGELU blocks, block M-RoPE)."""

from __future__ import annotations

from pathlib import Path

from . import chat_text_config
from .qwen2_5_vl import qwen_token_config, qwen_tokenizer, save_qwen


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny Qwen2-VL checkpoint to `path` (created) and return it.

    Text: hidden 64, 4 heads of 16 (2 KV heads), block M-RoPE sections (2, 3, 3); vision: 2 blocks of width 32
    (`embed_dim`), patch 14, merge 2, merged to the LLM width 64 (`hidden_size`).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    config = Qwen2VLConfig(
        text_config=chat_text_config(
            tokenizer,
            num_layers,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        **qwen_token_config(tokenizer),
    )
    image_processor = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    return save_qwen(path, Qwen2VLForConditionalGeneration, config, tokenizer, image_processor, seed)
