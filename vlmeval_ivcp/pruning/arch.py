"""Where the engine finds things in each supported model family: data keyed by `config.model_type`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from .context import RopeSpec
from .inject import VisualInjection
from .layout import ImageLayout


def _qwen_layouts(inputs: dict[str, Any], config: Any) -> list[ImageLayout] | None:
    """One grid per image (LLM visual tokens, after merging), from Qwen's `image_grid_thw`."""
    grid_thw = inputs.get("image_grid_thw")
    if grid_thw is None:
        return None
    merge = config.vision_config.spatial_merge_size
    return [ImageLayout.grid(int(t) * int(h) // merge, int(w) // merge) for t, h, w in grid_thw.tolist()]


def _llava_layouts(inputs: dict[str, Any], config: Any) -> list[ImageLayout] | None:
    """LLaVA's square patch grid (image_size / patch_size per side) for each image of the batch.

    Only the "default" feature strategy drops CLIP's CLS token and leaves a pure grid. The images are counted
    from the image tokens of the batch (every image gives the same number of tokens).
    """
    input_ids = inputs.get("input_ids")
    if input_ids is None or config.vision_feature_select_strategy != "default":
        return None
    side = config.vision_config.image_size // config.vision_config.patch_size
    images = int((input_ids == config.image_token_id).sum()) // (side * side)
    return [ImageLayout.grid(side, side)] * images


@dataclass(frozen=True)
class DecoderArch:
    """How one model family is wired, as dotted attribute paths from the top-level model.

    Args:
        multimodal (`str`): the module whose `forward` receives `input_ids` (and builds position ids).
        text_model (`str`): the decoder stack (receives `inputs_embeds`, `attention_mask`, `position_ids`).
        layers (`str`): the `ModuleList` of decoder layers.
        text_config (`str`): attribute of the top config holding the decoder's config.
        image_token_attr (`str`): config attribute with the image placeholder token id.
        layouts (`Callable` or `None`): `(forward kwargs, config) -> [ImageLayout]`, one per image of the batch in
            order, when the forward inputs say how the images are laid out.
        mrope_layout (`str`): for M-RoPE decoders, how the rotary module assigns frequencies to the t/h/w axes
            (`"block"` or `"interleaved"`, see `rope.frequency_axes`). Fixed by the class, not the config: Qwen3-VL
            configs carry `mrope_interleaved`, which transformers never reads.
        injections (`VisualInjection` or `None`): per-layer additions to the visual tokens that the text model
            receives (Qwen3-VL's DeepStack); the engine carries them to the kept tokens (`inject.py`).
    """

    multimodal: str
    text_model: str
    layers: str
    text_config: str = "text_config"
    image_token_attr: str = "image_token_id"
    layouts: Callable[[dict[str, Any], Any], list[ImageLayout] | None] | None = None
    mrope_layout: str = "block"
    injections: VisualInjection | None = None


_DEEPSTACK = VisualInjection(embeds="deepstack_visual_embeds", mask="visual_pos_masks")
# What `Qwen3VLTextRotaryEmbedding` falls back to when the config gives no section.
_INTERLEAVED_DEFAULT_SECTION = (24, 20, 20)

# Every supported family nests its decoder the same way: `model` (multimodal) -> `model.language_model` (decoder).
_LLAVA_STYLE_PATHS = partial(
    DecoderArch, multimodal="model", text_model="model.language_model", layers="model.language_model.layers"
)

ARCHS: dict[str, DecoderArch] = {
    "qwen2_5_vl": _LLAVA_STYLE_PATHS(layouts=_qwen_layouts),
    "qwen2_vl": _LLAVA_STYLE_PATHS(layouts=_qwen_layouts),
    # Interleaved M-RoPE; DeepStack adds ViT features to the visual tokens after the first decoder layers.
    "qwen3_vl": _LLAVA_STYLE_PATHS(layouts=_qwen_layouts, mrope_layout="interleaved", injections=_DEEPSTACK),
    "qwen3_vl_moe": _LLAVA_STYLE_PATHS(layouts=_qwen_layouts, mrope_layout="interleaved", injections=_DEEPSTACK),
    "llava": _LLAVA_STYLE_PATHS(layouts=_llava_layouts),
    # Anyres tiles with newline tokens: no single grid.
    "llava_next": _LLAVA_STYLE_PATHS(),
    # Base view, then the unpadded tile grid with newlines: the wrapper passes the layout.
    "llava_onevision": _LLAVA_STYLE_PATHS(),
    # Tiles and a thumbnail: the wrapper passes the tiling (`Pruner.set_image_layouts`).
    "internvl": _LLAVA_STYLE_PATHS(),
    # Assembled in vlmeval_ivcp.models.deepseek_vl2 (transformers has no class); its wrapper passes the views.
    "deepseek_vl_v2": _LLAVA_STYLE_PATHS(),
}


def arch_for(model: nn.Module) -> DecoderArch:
    model_type = getattr(model.config, "model_type", None)
    try:
        return ARCHS[model_type]
    except KeyError:
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {sorted(ARCHS)}") from None


def get_submodule(model: nn.Module, path: str) -> Any:
    module: Any = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


def rope_spec(text_config: Any, mrope_layout: str = "block") -> RopeSpec:
    """The decoder's RoPE from its config (transformers 5 keeps theta and M-RoPE sections in `rope_parameters`).

    `mrope_layout` is the family's frequency-to-axis map (`DecoderArch.mrope_layout`); an interleaved decoder without
    a section in its config uses its rotary module's default, (24, 20, 20).
    """
    params = getattr(text_config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(text_config, "rope_theta", None))
    if theta is None:
        raise ValueError(f"cannot find rope_theta in {type(text_config).__name__}")
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    # Multi-head Latent Attention (DeepSeek-V2) rotates only its `qk_rope_head_dim` dims of each head.
    rotary_dim = getattr(text_config, "qk_rope_head_dim", None) or int(
        head_dim * params.get("partial_rotary_factor", 1.0)
    )
    section = params.get("mrope_section") or (_INTERLEAVED_DEFAULT_SECTION if mrope_layout == "interleaved" else None)
    return RopeSpec(
        theta=float(theta),
        rotary_dim=rotary_dim,
        mrope_section=tuple(section) if section else None,
        mrope_layout=mrope_layout,
    )


def model_rope_spec(model: nn.Module) -> RopeSpec:
    """The RoPE description of a supported model: its decoder config read with its family's M-RoPE layout."""
    arch = arch_for(model)
    return rope_spec(getattr(model.config, arch.text_config), arch.mrope_layout)


@dataclass(frozen=True)
class Projector:
    """Where a family's projector (vision features -> LLM input embeddings) sits, for merged tokens that a method
    builds in its input space (`MergedTokens.space == "projector_input"`, docs/engine.md "Merged tokens").

    One merged vector is the projector input of one LLM token in the layout of the vision tap's `vision_features`:
    the token's `g` patch rows of width `C` concatenated patch by patch (`g = 1` for LLaVA). Qwen's merger
    normalises each patch before concatenating, so it takes them as `g` rows; InternVL's projector takes the pixel-
    shuffled token, which is that concatenation; DeepSeek-VL2's MLP takes the 2x2 block interleaved channel by
    channel (`F.unfold`'s order), so the vector is permuted to it first.

    Args:
        path (`str`): dotted path of the module from the top-level model.
        merge_attr (`str` or `None`): attribute of `config.vision_config` whose square is the patches per token,
            given to the module as rows (None: the vector is one row).
        channel_major_block (`int` or `None`): the module reads the token's this many patches channel-major.
    """

    path: str
    merge_attr: str | None = None
    channel_major_block: int | None = None


_QWEN_MERGER = Projector("model.visual.merger", merge_attr="spatial_merge_size")
_LLAVA_PROJECTOR = Projector("model.multi_modal_projector")

PROJECTORS: dict[str, Projector] = {
    "qwen2_5_vl": _QWEN_MERGER,
    "qwen2_vl": _QWEN_MERGER,
    "qwen3_vl": _QWEN_MERGER,
    "qwen3_vl_moe": _QWEN_MERGER,
    "llava": _LLAVA_PROJECTOR,
    "llava_next": _LLAVA_PROJECTOR,
    "llava_onevision": _LLAVA_PROJECTOR,
    # Its input is one pixel-shuffled token: the features of 2x2 patches concatenated.
    "internvl": _LLAVA_PROJECTOR,
    # The MLP after the 2x2 unfold: its input is one unfolded block (channel-major), as `F.unfold` orders it.
    "deepseek_vl_v2": Projector("model.projector.layers", channel_major_block=4),
}


def projector_of(model: nn.Module) -> Callable[[Any], Any] | None:
    """The family's projector as a function `[m, g * C] -> [m, D]` on merged vectors (None: no entry)."""
    spec = PROJECTORS.get(getattr(model.config, "model_type", None))
    if spec is None:
        return None
    module = get_submodule(model, spec.path)
    rows = getattr(model.config.vision_config, spec.merge_attr) ** 2 if spec.merge_attr else 1
    block = spec.channel_major_block

    def project(vectors: Any) -> Any:
        weight = next(module.parameters())
        vectors = vectors.to(weight.device, weight.dtype)
        if block is not None:
            vectors = vectors.view(vectors.shape[0], block, -1).transpose(1, 2).reshape(vectors.shape[0], -1)
        # `forward`, not `__call__`: the hooks on the projector (the vision tap's feature reader) watch the model's
        # own encoding, not this extra call.
        return module.forward(vectors.reshape(vectors.shape[0] * rows, -1))

    return project
