"""Tiny random-weight Qwen3-VL checkpoint: DeepStack injections, interleaved M-RoPE and its vision tower layout."""

from __future__ import annotations

from pathlib import Path

from . import chat_text_config
from .qwen2_5_vl import qwen_token_config, qwen_tokenizer, save_qwen

# One user turn, images first, no system turn unless the conversation has one: the format the released
# checkpoints' template renders for this project's messages (written here, not copied).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# 16-pixel patches merged 2 x 2: one LLM token per 32 x 32 pixels.
TOKEN_PIXELS = 32 * 32


def build(path: str | Path, seed: int = 0, num_layers: int = 6) -> Path:
    """Write a tiny Qwen3-VL checkpoint to `path` (created) and return it.

    Text: hidden 64, 4 heads of 16 (2 KV heads), 6 layers, interleaved M-RoPE sections (4, 2, 2) (axes
    T H W T H W T T); vision: 4 blocks of width 32, patch 16, merge 2, an 8 x 8 learned position grid, DeepStack
    from blocks 1, 2, 3 into the outputs of decoder layers 0, 1, 2 (cuts at K = 1, 2 fall inside, 3..5 after).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    rope = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    config = Qwen3VLConfig(
        text_config=chat_text_config(tokenizer, num_layers, rope_parameters=rope, head_dim=16),
        vision_config=dict(
            depth=4,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[1, 2, 3],
        ),
        **qwen_token_config(tokenizer),
        tie_word_embeddings=False,
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 4 * TOKEN_PIXELS, "longest_edge": 64 * TOKEN_PIXELS},
    )
    return save_qwen(path, Qwen3VLForConditionalGeneration, config, tokenizer, image_processor, seed)
