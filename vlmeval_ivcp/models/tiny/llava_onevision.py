"""Tiny random-weight LLaVA-OneVision checkpoint (SigLIP tower, Qwen2 decoder, anyres_max_9 tiling)."""

from __future__ import annotations

from pathlib import Path

from . import TINY_VISION_WIDTHS, byte_level_tokenizer, chat_text_config, random_model

LLAVA_OV_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
TILE = 56  # pixels per side of a view: 4 x 4 patches of 14
# Every tiling of up to 6 x 6 tiles, as the released 384-pixel model's pinpoints (1..6 tiles per side).
TINY_GRID_PINPOINTS = [[TILE * rows, TILE * cols] for rows in range(1, 7) for cols in range(1, 7)]
# One user turn, images first, in the style of the released checkpoints' template (written here, not copied).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] if item['type'] == 'image' %}<image>{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny LLaVA-OneVision checkpoint to `path` (created) and return it.

    Text (Qwen2): hidden 64, 4 heads of 16 (2 KV heads); vision (SigLIP, no pooling head): 2 layers of width 32 on
    56 x 56 views in 14-pixel patches (16 tokens a view), tiled up to 6 x 6. A 56 x 56 picture gives 16 base tokens
    + 4 x 4 tile cells + 4 newlines = 36 visual tokens, a 112 x 112 one 16 + 8 x 8 + 8 = 88.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        Qwen2Tokenizer,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(
        Qwen2Tokenizer, LLAVA_OV_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    token = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        text_config=chat_text_config(tokenizer, num_layers, model_type="qwen2"),
        vision_config=dict(
            model_type="siglip_vision_model", **TINY_VISION_WIDTHS, image_size=TILE, patch_size=14, vision_use_head=False
        ),
        image_token_index=token("<image>"),
        video_token_index=token("<video>"),
        image_grid_pinpoints=TINY_GRID_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = random_model(LlavaOnevisionForConditionalGeneration, config, seed, "vision_tower", token("<|im_end|>"),
                         tokenizer.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=TINY_GRID_PINPOINTS
    ).save_pretrained(path)
    return path
