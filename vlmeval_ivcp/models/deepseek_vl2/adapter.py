"""DeepSeek-VL2 (deepseek-ai/deepseek-vl2-small and -tiny), loaded from an official checkpoint folder or hub id."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ..base import PrunedVLM
from .modeling import DeepseekVL2ForCausalLM
from .processing import DeepseekVL2Processor, deepseek_chat_prompt


class DeepseekVL2(PrunedVLM):
    """DeepSeek-VL2 with optional pruning: a global view and local tiles per image, with newline and view-separator
    tokens (see `processing.image_layout`). `encode` also returns each image's `ImageLayout`.

    deepseek-vl2-small (MLA) and deepseek-vl2-tiny (plain attention) load; deepseek-vl2 (`noaux_tc` routing,
    sigmoid scores) is refused with a `ValueError` naming the setting.

    Args: see `PrunedVLM`.
    """

    grounding_frame = "norm999"
    view_fit = "pad"  # both views pad the picture (aspect kept) to their square or tile canvas

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        processor = DeepseekVL2Processor.from_pretrained(model_path)
        model = DeepseekVL2ForCausalLM.from_pretrained(
            model_path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            image_token_id=processor.image_token_id,
        )
        vocab = model.config.text_config.vocab_size
        if len(processor.tokenizer) > vocab:
            raise ValueError(
                f"the tokenizer of {model_path} has {len(processor.tokenizer)} tokens (with the processor's added "
                f"tokens) but the language model only {vocab}"
            )
        # VLMEvalKit's generation ids for DeepSeek-VL2: stop at EOS, pad with EOS.
        tokenizer = processor.tokenizer
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        return deepseek_chat_prompt(images, text)

    def encode(self, prompts: list[str], images: list[Image.Image], dataset: str | None = None) -> dict[str, Any]:
        inputs = self.processor(prompts, images)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def decode(self, token_ids: torch.Tensor) -> str:
        # VLMEvalKit strips DeepSeek-VL2's trailing full stops.
        return super().decode(token_ids).rstrip(".")
