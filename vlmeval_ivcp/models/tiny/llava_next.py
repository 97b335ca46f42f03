"""Tiny random-weight LLaVA-NeXT checkpoint."""

from __future__ import annotations

from pathlib import Path

from . import random_model
from .llava import TINY_CLIP_VISION, llama_text_config, llava_tokenizer

# (height, width) of the tilings: 1x1, 1x2, 2x1 and 2x2 tiles of 56 pixels.
TINY_GRID_PINPOINTS = [[56, 56], [56, 112], [112, 56], [112, 112]]
# llava-v1.6-vicuna's conversation format: "USER: <image>\n{text} ASSISTANT:", images before the text of a turn.
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% for item in message['content'] if item['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{{ ' ' if message['role'] == 'user' else '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build(path: str | Path, seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny LLaVA-NeXT checkpoint to `path` (created) and return it.

    Text (Llama): hidden 64, 4 heads of 16 (2 KV heads); vision (CLIP): 2 layers of width 32 on 56x56 views in
    14-pixel patches, tiled at up to 2x2 views. A 112x112 picture gives 16 base tokens + an 8x8 tile grid + 8 newline
    tokens = 88 visual tokens; a 56x56 one gives 16 + 4x4 + 4 = 36. The processor ships the vicuna chat template.
    """
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = llava_tokenizer()
    token = tokenizer.convert_tokens_to_ids
    config = LlavaNextConfig(
        text_config=llama_text_config(tokenizer, num_layers),
        vision_config=TINY_CLIP_VISION,
        image_token_id=token("<image>"),
        image_grid_pinpoints=TINY_GRID_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = random_model(LlavaNextForConditionalGeneration, config, seed, "vision_tower", token("</s>"),
                          tokenizer.pad_token_id)
    model.save_pretrained(path)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_grid_pinpoints=TINY_GRID_PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor, tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=VICUNA_CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
