"""Tiny random-weight DeepSeek-VL2 checkpoint in the official layout (official config.json, official weight names,
official processor_config.json), so that loading it goes through the official-name key mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import TINY_TEXT_WIDTHS, byte_level_tokenizer, random_model

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
# 42-pixel views in 14-pixel patches: a 3 x 3 patch grid, zero-padded to 4 x 4 by the 2x2 merge (as the real 27 x 27
# grid of 384-pixel views is padded to 28 x 28), so every view has 2 x 2 cells.
BASE_SIZE = 42
CANDIDATE_RESOLUTIONS = [[42, 42], [42, 84], [84, 42], [42, 126], [126, 42], [84, 84]]


# The language settings of each official attention variant (deepseek-vl2-small: MLA; deepseek-vl2-tiny: plain
# multi-head attention, whose official config zeroes the MLA settings).
MLA = dict(num_key_value_heads=TINY_TEXT_WIDTHS["num_attention_heads"], kv_lora_rank=16, q_lora_rank=None,
           qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16)
MHA = dict(use_mla=False, kv_lora_rank=None, q_lora_rank=None, qk_nope_head_dim=0, qk_rope_head_dim=0, v_head_dim=0)


def official_config(
    vocab_size: int, num_layers: int, bos_id: int, eos_id: int, use_mla: bool = True
) -> dict[str, Any]:
    """The official config.json of the tiny model: hidden 64, 4 heads (with MLA: latent 16, rope 8 + nope 8, value
    16, one key/value per head; without: heads of 16, 2 key/value heads), the first layer dense and 4 routed experts
    (2 per token) plus a shared one after it; a 2-layer SigLIP of width 32."""
    text = {**TINY_TEXT_WIDTHS, **(MLA if use_mla else MHA)}
    return {
        "architectures": ["DeepseekVLV2ForCausalLM"],
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": CANDIDATE_RESOLUTIONS,
        "global_view_pos": "head",
        "tile_tag": "2D",
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "vision", "model_name": "siglip_so400m_patch14_384", "image_size": BASE_SIZE,
            "patch_size": 14, "width": 32, "layers": 2, "heads": 2, "mlp_ratio": 2.0, "global_pool": "map",
            "ignore_head": True, "class_token": False, "weight_init": "skip",
        },
        "projector_config": {
            "model_type": "mlp_projector", "projector_type": "downsample_mlp_gelu", "input_dim": 32, "n_embed": 64,
            "depth": 2, "mlp_ratio": 1, "downsample_ratio": 2,
        },
        "language_config": {
            "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], **text,
            "vocab_size": vocab_size, "num_hidden_layers": num_layers, "bos_token_id": bos_id, "eos_token_id": eos_id,
            "first_k_dense_replace": 1, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
            "moe_intermediate_size": 32, "topk_method": "greedy", "n_group": 1, "topk_group": 1, "lm_head": True,
            "rm_head": False, "torch_dtype": "float32",
        },
    }


def official_processor_config() -> dict[str, Any]:
    return {
        "processor_class": "DeepseekVLV2Processor", "candidate_resolutions": CANDIDATE_RESOLUTIONS, "patch_size": 14,
        "downsample_ratio": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "normalize": True,
        "image_token": "<image>", "pad_token": PAD, "add_special_token": False, "sft_format": "deepseek",
        "mask_prompt": False, "ignore_id": -100,
    }


def build(path: str | Path, seed: int = 0, num_layers: int = 4, use_mla: bool = True) -> Path:
    """Write a tiny DeepSeek-VL2 checkpoint in the official layout to `path` (created) and return it.

    `use_mla=False` gives the deepseek-vl2-tiny language model (plain multi-head attention). The tokenizer holds BOS,
    EOS and pad only: like the official processor, ours adds `<image>`, the grounding and the chat tokens on load,
    and the language model's vocabulary leaves room for them.
    """
    from safetensors.torch import save_file
    from transformers import Qwen2Tokenizer
    from transformers.core_model_loading import revert_weight_conversion

    from ..deepseek_vl2.configuration import DeepseekVL2Config
    from ..deepseek_vl2.modeling import DeepseekVL2ForCausalLM
    from ..deepseek_vl2.processing import add_official_tokens

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(Qwen2Tokenizer, (BOS, EOS, PAD), bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tokenizer.save_pretrained(path)
    token = tokenizer.convert_tokens_to_ids
    add_official_tokens(tokenizer)
    config_dict = official_config(len(tokenizer), num_layers, token(BOS), token(EOS), use_mla)
    model = random_model(DeepseekVL2ForCausalLM, DeepseekVL2Config(**config_dict), seed, "vision_tower", token(EOS),
                         token(PAD))
    with torch.no_grad():  # the routed experts are 3-D: spread them like the 2-D weights
        for param in model.parameters():
            if param.dim() == 3:
                param.normal_(0.0, 0.1)
    # The official names, written by the reverse of the loading map (the tests check them against the official ones).
    official_weights = revert_weight_conversion(model, model.state_dict())
    save_file(official_weights, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config_dict, indent=2))
    (path / "processor_config.json").write_text(json.dumps(official_processor_config(), indent=2))
    return path
