"""DeepSeek-VL2 assembled from transformers' SigLIP and DeepSeek-V2 parts (no package provides it).

- `configuration`: `DeepseekVL2Config`, read from the official `config.json`;
- `checkpoint`: the official weight names mapped onto the assembled model;
- `modeling`: `DeepseekVL2ForCausalLM` (projector, separators, feature placement around the stock parts);
- `processing`: the official tiling, token counts, chat prompt and image layouts;
- `adapter`: `DeepseekVL2`, the VLMEvalKit-style wrapper.
"""

from .adapter import DeepseekVL2
from .configuration import DeepseekVL2Config
from .modeling import DeepseekVL2ForCausalLM, DeepseekVL2Model
from .processing import DeepseekVL2Processor, deepseek_chat_prompt, image_layout, image_token_count

__all__ = [
    "DeepseekVL2",
    "DeepseekVL2Config",
    "DeepseekVL2ForCausalLM",
    "DeepseekVL2Model",
    "DeepseekVL2Processor",
    "deepseek_chat_prompt",
    "image_layout",
    "image_token_count",
]
