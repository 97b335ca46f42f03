"""The official DeepSeek-VL2 checkpoint names, mapped onto the assembled model with transformers' weight conversion.

Official names (the module names of the official `DeepseekVLV2ForCausalLM`: `vision` is timm's VisionTransformer,
`language` a `DeepseekV2ForCausalLM`) -> assembled model:

    vision.patch_embed.proj.*          -> model.vision_tower.embeddings.patch_embedding.*
    vision.pos_embed        [1, N, D]  -> model.vision_tower.embeddings.position_embedding.weight  [N, D]
    vision.blocks.{i}.norm1/norm2.*    -> model.vision_tower.encoder.layers.{i}.layer_norm1/layer_norm2.*
    vision.blocks.{i}.attn.qkv.*       -> ... .self_attn.q_proj / k_proj / v_proj (split in thirds, q first)
    vision.blocks.{i}.attn.proj.*      -> ... .self_attn.out_proj.*
    vision.blocks.{i}.mlp.fc1/fc2.*    -> ... .mlp.fc1/fc2.*
    vision.norm.*                      -> model.vision_tower.post_layernorm.*
    vision.attn_pool.*                 -> (unused: the official model drops the pooling head; ignored on load)
    projector.layers.*                 -> model.projector.layers.*
    image_newline, view_seperator      -> model.image_newline, model.view_separator
    language.model.*                   -> model.language_model.*
    language.model.layers.{i}.mlp.experts.{e}.gate_proj/up_proj/down_proj.weight
                                       -> ... .mlp.experts.gate_up_proj / down_proj  (stacked over the experts)
    language.lm_head.weight            -> lm_head.weight

The mapping goes into transformers' registry (`transformers.conversion_mapping.register_checkpoint_conversion_mapping`)
under the model's class name: transformers applies conversions to model classes defined outside the library only
once they are registered there. `DeepseekVL2ForCausalLM` registers it when built (as `from_pretrained` does before it
loads the weights); `save_pretrained` then writes the official names back through the reverse transforms.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import (
    Chunk,
    Concatenate,
    ConversionOps,
    MergeModulelist,
    WeightConverter,
    WeightRenaming,
    WeightTransform,
)

# Keys of the official checkpoint that the assembled model has no parameter for.
IGNORED_OFFICIAL_KEYS = (r"^vision\.attn_pool\.",)

_VISION_LAYER = r"model.vision_tower.encoder.layers.\1"
_RENAMES = (
    (r"^vision\.patch_embed\.proj\.", "model.vision_tower.embeddings.patch_embedding."),
    (r"^vision\.pos_embed", "model.vision_tower.embeddings.pos_embed"),
    (r"^vision\.blocks\.(\d+)\.norm1\.", f"{_VISION_LAYER}.layer_norm1."),
    (r"^vision\.blocks\.(\d+)\.norm2\.", f"{_VISION_LAYER}.layer_norm2."),
    (r"^vision\.blocks\.(\d+)\.attn\.qkv\.", f"{_VISION_LAYER}.self_attn.qkv."),
    (r"^vision\.blocks\.(\d+)\.attn\.proj\.", f"{_VISION_LAYER}.self_attn.out_proj."),
    (r"^vision\.blocks\.(\d+)\.mlp\.", f"{_VISION_LAYER}.mlp."),
    (r"^vision\.norm\.", "model.vision_tower.post_layernorm."),
    (r"^projector\.", "model.projector."),
    (r"^image_newline", "model.image_newline"),
    (r"^view_seperator", "model.view_separator"),  # sic: the official parameter name
    (r"^language\.model\.", "model.language_model."),
    (r"^language\.lm_head\.", "lm_head."),
)


class PositionTableLayout(ConversionOps):
    """timm keeps SigLIP's position table as a `[1, N, D]` parameter, transformers as an `[N, D]` embedding.

    Args:
        to_embedding (`bool`): `True` drops the leading axis (loading), `False` adds it back (saving).
    """

    def __init__(self, to_embedding: bool = True):
        self.to_embedding = to_embedding

    @torch.no_grad()
    def convert(
        self, input_dict: dict[str, Any], source_patterns: list[str], target_patterns: list[str], **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        (tensors,) = input_dict.values()
        table = tensors[0] if isinstance(tensors, list) else tensors
        if self.to_embedding:
            if table.dim() != 3 or table.shape[0] != 1:
                raise ValueError(f"vision.pos_embed must have shape [1, N, D], got {tuple(table.shape)}")
            return {target_patterns[0]: table[0].contiguous()}
        return {target_patterns[0]: table.unsqueeze(0).contiguous()}

    @property
    def reverse_op(self) -> ConversionOps:
        return PositionTableLayout(to_embedding=not self.to_embedding)


def _scoped(converter: WeightConverter, module: str) -> WeightConverter:
    """Restrict `converter` to keys under `model.<module>.` (the vision tower and the decoder share `q_proj`...)."""
    converter.scope_prefix, converter.base_model_prefix = module, "model"
    return converter


def official_key_mapping(merge_experts: bool) -> list[WeightTransform]:
    """The transforms from the official DeepSeek-VL2 names to `DeepseekVL2ForCausalLM`'s (see the module doc).

    Renames run first (each official key matches at most one), then at most one converter per key: the fused timm
    `qkv` is cut into three equal row blocks (q, k, v: timm reshapes its output as `[3, heads, head_dim]`), and the
    position table loses its leading axis.

    Args:
        merge_experts (`bool`): also stack the per-expert MLPs. transformers' own conversion for `DeepseekV2Model`
            does it already (model type `deepseek_v2`); it has none for a bare `DeepseekOcr2TextModel`.
    """
    transforms: list[WeightTransform] = [WeightRenaming(source, target) for source, target in _RENAMES]
    transforms += [
        _scoped(WeightConverter("self_attn.qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                operations=[Chunk(dim=0)]), "vision_tower"),
        _scoped(WeightConverter("embeddings.pos_embed", "embeddings.position_embedding.weight",
                                operations=[PositionTableLayout()]), "vision_tower"),
    ]
    if merge_experts:
        gate_and_up = ["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"]
        transforms += [
            _scoped(WeightConverter(gate_and_up, "mlp.experts.gate_up_proj",
                                    operations=[MergeModulelist(dim=0), Concatenate(dim=1)]), "language_model"),
            _scoped(WeightConverter("mlp.experts.*.down_proj.weight", "mlp.experts.down_proj",
                                    operations=[MergeModulelist(dim=0)]), "language_model"),
        ]
    return transforms


def register_official_key_mapping(class_name: str, merge_experts: bool) -> None:
    """Register `official_key_mapping(merge_experts)` for the model class `class_name` (replacing any earlier one)."""
    register_checkpoint_conversion_mapping(class_name, official_key_mapping(merge_experts), overwrite=True)
