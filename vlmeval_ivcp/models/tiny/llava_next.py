"""Tiny random-weight LLaVA-NeXT checkpoint."""

from __future__ import annotations

from pathlib import Path

from .llava import CLIP_PROCESSOR_OPTIONS, llava_config_options, llava_tokenizer, save_llava

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
    config = LlavaNextConfig(**llava_config_options(tokenizer, num_layers), image_grid_pinpoints=TINY_GRID_PINPOINTS)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_grid_pinpoints=TINY_GRID_PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor, tokenizer, **CLIP_PROCESSOR_OPTIONS, chat_template=VICUNA_CHAT_TEMPLATE
    )
    return save_llava(path, LlavaNextForConditionalGeneration, config, tokenizer, processor, seed)
