"""DeepSeek-VL2's configuration, read from the official `config.json` as it is.

The official file holds three plain dicts (`vision_config` in timm's SigLIP terms, `projector_config`,
`language_config` for DeepSeek-V2) and the tiling settings. Keys a file omits take the defaults of the official
config classes (deepseek-ai/DeepSeek-VL2, `deepseek_vl2/models/`), not transformers' defaults, which differ (e.g.
`q_lora_rank`, `n_shared_experts`, `patch_size`). From them this config derives the transformers configs of the
stock parts: `vision_tower_config` (a `SiglipVisionConfig`) and `text_config`, by the official `use_mla` flag:
- MLA (deepseek-vl2-small): a `DeepseekV2Config` (transformers' `DeepseekV2Model`);
- plain multi-head attention (deepseek-vl2-tiny, `use_mla: false`): a `DeepseekOcr2TextConfig`. transformers'
  `DeepseekOcr2TextModel` is the same decoder the official code builds then: Llama attention (q/k/v/o projections,
  half-split RoPE over the whole head) with the DeepSeek-V2 MoE (softmax router, shared experts, dense first layers).
"""

from __future__ import annotations

from typing import Any

from transformers import DeepseekOcr2TextConfig, DeepseekV2Config, PreTrainedConfig, SiglipVisionConfig

# Defaults of the official `VisionEncoderConfig` (modeling_deepseek_vl_v2.py).
OFFICIAL_VISION_DEFAULTS = dict(
    image_size=384, patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4, class_token=False, ignore_head=True
)
# Defaults of the official `MlpProjectorConfig` (modeling_deepseek_vl_v2.py).
OFFICIAL_PROJECTOR_DEFAULTS = dict(
    projector_type="downsample_mlp_gelu", input_dim=1152, n_embed=2048, depth=2, mlp_ratio=1, downsample_ratio=2,
    token_pooling=False,
)
# Defaults of the official `DeepseekV2Config` (configuration_deepseek.py) that shape the network.
OFFICIAL_LANGUAGE_DEFAULTS = dict(
    vocab_size=102400, hidden_size=4096, intermediate_size=11008, moe_intermediate_size=1407, num_hidden_layers=30,
    num_attention_heads=32, num_key_value_heads=32, n_shared_experts=None, n_routed_experts=None,
    routed_scaling_factor=1.0, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128,
    qk_nope_head_dim=128, topk_method="greedy", n_group=None, topk_group=None, num_experts_per_tok=None,
    moe_layer_freq=1, first_k_dense_replace=0, norm_topk_prob=False, scoring_func="softmax", hidden_act="silu",
    max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=100000, eos_token_id=100001,
    tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None, attention_bias=False, use_mla=True,
)
# Settings of Multi-head Latent Attention only (the official config of the MHA variant sets them to 0 / null).
MLA_KEYS = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
# Router top-k rules that transformers' DeepSeek-V2 router implements (softmax scores, no renormalisation).
SUPPORTED_TOPK_METHODS = ("greedy", "group_limited_greedy")
# The separator layout of the official model (`tile_tag == "1D"` is marked abandoned in the official code).
SUPPORTED_TILE_TAGS = ("2D",)
GLOBAL_VIEW_POSITIONS = ("head", "tail")


def _unsupported(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"DeepSeek-VL2 config: {key}={value!r} is not supported: {why}")


def official_language_settings(language_config: dict[str, Any]) -> dict[str, Any]:
    """The official `language_config` completed with the official defaults, checked against what transformers'
    decoders compute.

    Both decoders build shared experts and an MoE in every layer from `first_k_dense_replace` on, and route with
    softmax scores scaled by `routed_scaling_factor`. Checkpoints that need anything else are refused (deepseek-vl2:
    `topk_method=noaux_tc`, sigmoid scores, renormalised top-k weights).

    Raises:
        ValueError: naming the first setting transformers cannot represent.
    """
    settings = {**OFFICIAL_LANGUAGE_DEFAULTS, **language_config}
    if settings["use_mla"] and settings["kv_lora_rank"] is None:
        raise _unsupported("language_config.kv_lora_rank", None, "Multi-head Latent Attention needs a latent rank")
    if settings["topk_method"] not in SUPPORTED_TOPK_METHODS:
        raise _unsupported(
            "language_config.topk_method", settings["topk_method"],
            f"transformers' DeepSeek-V2 router implements {SUPPORTED_TOPK_METHODS} (noaux_tc is DeepSeek-V3's)",
        )
    if settings["scoring_func"] != "softmax":
        raise _unsupported("language_config.scoring_func", settings["scoring_func"], "the router scores by softmax")
    if settings["norm_topk_prob"] and (settings["num_experts_per_tok"] or 1) > 1:
        raise _unsupported("language_config.norm_topk_prob", True, "the router does not renormalise top-k weights")
    if settings["moe_layer_freq"] != 1:
        raise _unsupported("language_config.moe_layer_freq", settings["moe_layer_freq"], "every layer past "
                           "first_k_dense_replace is an MoE layer here")
    for key in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok"):
        if settings[key] is None:
            raise _unsupported(f"language_config.{key}", None, "the MoE layers of transformers' decoders have "
                               "routed and shared experts")
    if settings["use_mla"] and settings["num_key_value_heads"] != settings["num_attention_heads"]:
        raise _unsupported("language_config.num_key_value_heads", settings["num_key_value_heads"],
                           "MLA expands one latent into every attention head")
    return settings


def official_vision_settings(vision_config: dict[str, Any]) -> dict[str, Any]:
    """The official timm-style `vision_config` completed with the official defaults and checked."""
    settings = {**OFFICIAL_VISION_DEFAULTS, **vision_config}
    if settings["class_token"]:
        raise _unsupported("vision_config.class_token", True, "SigLIP towers have no class token")
    if not settings["ignore_head"]:
        raise _unsupported("vision_config.ignore_head", False, "the official model feeds the patch features on")
    return settings


def official_projector_settings(projector_config: dict[str, Any]) -> dict[str, Any]:
    """The official `projector_config` completed with the official defaults and checked."""
    settings = {**OFFICIAL_PROJECTOR_DEFAULTS, **projector_config}
    if settings["projector_type"] != "downsample_mlp_gelu" or settings["token_pooling"]:
        raise _unsupported(
            "projector_config.projector_type", settings["projector_type"],
            "the released checkpoints use 'downsample_mlp_gelu' without token pooling; only that one is built",
        )
    return settings


def text_config_from_official(language_config: dict[str, Any]) -> DeepseekV2Config | DeepseekOcr2TextConfig:
    """transformers' decoder config for the official `language_config`: `DeepseekV2Config` with MLA, else
    `DeepseekOcr2TextConfig` (legacy `rope_theta`/`rope_scaling` are converted to `rope_parameters` by transformers).
    """
    settings = official_language_settings(language_config)
    if settings["use_mla"]:
        return DeepseekV2Config(**settings)
    dense = settings["first_k_dense_replace"]
    layer_types = ["dense"] * dense + ["sparse"] * (settings["num_hidden_layers"] - dense)
    settings = {key: value for key, value in settings.items() if key not in MLA_KEYS}
    return DeepseekOcr2TextConfig(**settings, mlp_layer_types=layer_types)


def vision_tower_config_from_official(vision_config: dict[str, Any]) -> SiglipVisionConfig:
    """transformers' `SiglipVisionConfig` equal to the official timm tower: LayerNorm eps 1e-6, tanh-approximated
    GELU (both fixed in the official siglip_vit.py), MLP width `int(width * mlp_ratio)` as timm rounds it, and no
    pooling head (the official model feeds the final-norm patch features on)."""
    settings = official_vision_settings(vision_config)
    return SiglipVisionConfig(
        hidden_size=settings["width"],
        intermediate_size=int(settings["width"] * settings["mlp_ratio"]),
        num_hidden_layers=settings["layers"],
        num_attention_heads=settings["heads"],
        image_size=settings["image_size"],
        patch_size=settings["patch_size"],
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )


class DeepseekVL2Config(PreTrainedConfig):
    r"""DeepSeek-VL2 (`model_type = "deepseek_vl_v2"`), constructed from the official `config.json`.

    Args:
        vision_config (`dict`): the official timm-style SigLIP settings (`width`, `layers`, `heads`, `mlp_ratio`,
            `image_size`, `patch_size`, ...).
        projector_config (`dict`): the official projector settings (`input_dim`, `n_embed`, `depth`, `mlp_ratio`,
            `downsample_ratio`).
        language_config (`dict`): the official DeepSeek-V2 settings.
        tile_tag (`str`): separator layout; `"2D"` (a newline token after each row, one view separator).
        global_view_pos (`str`): `"head"` (global view first) or `"tail"`.
        candidate_resolutions (`list`): the (width, height) canvases the tiling chooses from.
        image_token_id (`int`, *optional*): the `<image>` token id. The official file does not hold it (the processor
            finds it in the tokenizer); the adapter passes it to `from_pretrained`.

    Derived (not serialized): `text_config` (`DeepseekV2Config` or `DeepseekOcr2TextConfig`, what
    `get_text_config()` returns) and `vision_tower_config` (`SiglipVisionConfig`).
    """

    model_type = "deepseek_vl_v2"
    sub_configs_defaults = {"text_config": DeepseekV2Config, "vision_tower_config": SiglipVisionConfig}

    vision_config: dict | None = None
    projector_config: dict | None = None
    language_config: dict | None = None
    tile_tag: str = "2D"
    global_view_pos: str = "head"
    candidate_resolutions: list | tuple = ((384, 384),)
    image_token_id: int | None = None
    text_config: Any = None
    vision_tower_config: Any = None

    def __post_init__(self, **kwargs):
        self.vision_config = dict(self.vision_config or {})
        self.projector_config = dict(self.projector_config or {})
        self.language_config = dict(self.language_config or {})
        if self.tile_tag not in SUPPORTED_TILE_TAGS:
            raise _unsupported("tile_tag", self.tile_tag, f"supported: {SUPPORTED_TILE_TAGS}")
        if self.global_view_pos not in GLOBAL_VIEW_POSITIONS:
            raise _unsupported("global_view_pos", self.global_view_pos, f"supported: {GLOBAL_VIEW_POSITIONS}")
        # The official dicts are the source of truth: the transformers configs are always derived from them.
        self.text_config = text_config_from_official(self.language_config)
        self.vision_tower_config = vision_tower_config_from_official(self.vision_config)
        projector = official_projector_settings(self.projector_config)
        if projector["input_dim"] != self.vision_tower_config.hidden_size:
            raise _unsupported("projector_config.input_dim", projector["input_dim"],
                               f"the vision tower is {self.vision_tower_config.hidden_size} wide")
        if projector["n_embed"] != self.text_config.hidden_size:
            raise _unsupported("projector_config.n_embed", projector["n_embed"],
                               f"the language model is {self.text_config.hidden_size} wide")
        super().__post_init__(**kwargs)

    @property
    def projector(self) -> dict[str, Any]:
        """The projector settings with the official defaults filled in."""
        return official_projector_settings(self.projector_config)

    def to_dict(self) -> dict[str, Any]:
        """The official layout: the derived transformers configs are rebuilt on load, so they are not written."""
        output = super().to_dict()
        for derived in self.sub_configs_defaults:
            output.pop(derived, None)
        return output
