"""The vision-tower tap: what a method reads from one layer of the vision encoder, mapped onto the LLM's visual tokens.

The encoder keeps its own attention implementation (SDPA or FlashAttention-2): the chosen layer's attention module is
tapped like the decoder's (`capture.AttentionTap`: the queries and keys the module hands its attention function, RoPE
included), and only what a method declares in `needs` is recomputed from them, in float32:

- `vision_attention`: attention *received* by each patch = the softmax probability of the key, mean over heads and
  over every query row of the attention call it sits in ([CLS] query included where there is one), accumulated over
  query chunks (never an `[H, N, N]` tensor). A call is one view (CLIP, InternViT, SigLIP) or one chunk of Qwen's
  flattened sequence: a whole image at a full-attention block, one window at Qwen2.5-VL's windowed blocks (there the
  mean runs over the window the patch attends in).
- `vision_cls_attention`: the [CLS] query row's softmax over the view's keys, patch entries, per head
  (`vision_cls_attention_heads`) and head-mean; `None` where the encoder has no [CLS]. A method config with
  `vision_cls_softmax = "concat"` gets instead one softmax over the heads-concatenated `q_cls . k / sqrt(H d)`
  (PruMerge+'s single "head"); `vision_cls_attention_heads` stays per head.
- `vision_keys`: the layer's keys with the heads concatenated (`[H*d]`, head order; the head mean is
  `keys.view(L, H, d).mean(1)`).
- `vision_features`: the rows the projector (Qwen: the merger) receives, i.e. the feature layer's output.

Per-patch values are then mapped onto the LLM's visual tokens by the family's placement (`VISION_ARCHS`, data): each
LLM token reads a group of `g` patches (1 for LLaVA, 4 for the 2x2 mergers), in the order its merger concatenates
them; scores and keys are the mean over the group's patches (the zero padding DeepSeek-VL2's projector adds is left
out), features are the group's rows concatenated (padding as zeros). Separator tokens (newlines, view separators)
read no patch: every field is NaN there.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .arch import arch_for, get_submodule
from .capture import AttentionTap
from .layout import ImageLayout
from .state import clock

# The needs a method may declare that the tap fills (fields of `SelectionContext` of the same names).
VISION_INPUTS = frozenset({"vision_attention", "vision_cls_attention", "vision_keys", "vision_features"})
CLS_SOFTMAX = ("per_head", "concat")
# Query rows scored at once when accumulating received attention: bounds the [views, H, chunk, N] logits (16 MiB
# of float32, small enough to stay in a GPU's L2 cache).
_LOGIT_BUDGET = 1 << 22

# (model, inputs of the multimodal forward and the tower, the prefill's image layouts in batch order)
#   -> per image, `LongTensor [L_i, g]`: the patch rows each LLM visual token reads (-1: none, a separator or padding)
Placement = Callable[[nn.Module, dict[str, Any], list[ImageLayout | None]], list[torch.Tensor]]


@dataclass(frozen=True)
class VisionArch:
    """Where a family's vision encoder is, and how its patches become the LLM's visual tokens.

    Args:
        tower (`str`): dotted path from the top-level model to the vision encoder (its pre-hook sees the call's
            inputs, e.g. Qwen's `grid_thw`).
        layers (`str`): path inside `tower` to the encoder's layer list.
        attention (`str`): attribute of one layer holding its attention module (fused `qkv` or `q_proj`/`k_proj`
            alike: the tap reads the states the module hands its attention function).
        cls (`bool`): each view's sequence starts with a [CLS] token, which no LLM token carries.
        features (`str`): path of the module whose input (`features_from="input"`) or output `last_hidden_state`
            (`"output"`) are the per-patch rows the projector reads.
        features_from (`str`): `"input"` or `"output"`.
        default_layer (`int`): the layer scored when the method config's `vision_layer` is `None` (negative: from
            the end, `-1` = last, `-2` = the one whose output is `hidden_states[-2]`).
        placement (`Placement`): the patch rows of each LLM visual token.
    """

    tower: str
    layers: str
    attention: str
    cls: bool
    features: str
    features_from: str
    default_layer: int
    placement: Placement


@dataclass
class VisionInputs:
    """One image's tap values, one row per LLM visual token of the image (NaN rows at separators)."""

    attention: torch.Tensor | None = None  # [L]
    cls_attention: torch.Tensor | None = None  # [L]
    cls_attention_heads: torch.Tensor | None = None  # [H, L]
    keys: torch.Tensor | None = None  # [L, H*d]
    features: torch.Tensor | None = None  # [L, g*C]
    patches_per_token: int = 1  # g: 1 where a token is one patch (LLaVA family), 4 where the merger fuses 2x2
    heads: int | None = None  # H of the scored layer (None: no attention state read)

    def gather(self, index: torch.Tensor) -> VisionInputs:
        """The rows of the tokens `index` (an image's survivors at a later cut)."""
        pick = {name: getattr(self, name) for name in ("attention", "cls_attention", "keys", "features")}
        heads = self.cls_attention_heads
        return VisionInputs(
            **{name: None if value is None else value[index.to(value.device)] for name, value in pick.items()},
            cls_attention_heads=None if heads is None else heads[:, index.to(heads.device)],
            patches_per_token=self.patches_per_token, heads=self.heads,
        )


# ---------------------------------------------------------------------------------------------------- placements
def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _patch_side(tower: nn.Module) -> int:
    config = tower.config
    return _side(config.image_size) // _side(config.patch_size)


def _tower(model: nn.Module) -> nn.Module:
    return get_submodule(model, VISION_ARCHS[model.config.model_type].tower)


def _one_view_each(model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]) -> list[torch.Tensor]:
    """LLaVA-1.5: one view per image, patches 1:1 onto its tokens."""
    n = _patch_side(_tower(model)) ** 2
    return [torch.arange(image * n, (image + 1) * n).unsqueeze(1) for image in range(len(layouts))]


def _anyres(model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]) -> list[torch.Tensor]:
    """LLaVA-NeXT / LLaVA-OneVision: the model's own split and `pack_image_features` (base tile, unpadded tile grid,
    newlines) run on the patch-row numbers instead of features, so the map is the model's code."""
    multimodal = model.model
    config = model.config
    module = sys.modules[type(multimodal).__module__]
    sizes = inputs["image_sizes"]
    batch_images = inputs.get("batch_num_images")
    patching = [True] * len(sizes) if batch_images is None else [
        int(n) == 1 for n in batch_images for _ in range(int(n))]
    tiles = [
        module.image_size_to_num_patches(
            image_size=size, grid_pinpoints=config.image_grid_pinpoints, patch_size=config.vision_config.image_size
        ) if patch else 1
        for size, patch in zip(sizes, patching)
    ]
    n = _patch_side(_tower(model)) ** 2
    rows = torch.arange(sum(tiles) * n, dtype=torch.float64).view(sum(tiles), n, 1)
    newline = torch.tensor([-1.0], dtype=torch.float64)
    per_image = list(torch.split(rows, tiles))
    if hasattr(config, "vision_aspect_ratio"):  # LLaVA-OneVision
        packed, lengths = multimodal.pack_image_features(
            per_image, sizes, image_newline=newline, vision_aspect_ratio=config.vision_aspect_ratio)
    else:
        packed, lengths = multimodal.pack_image_features(
            per_image, sizes, config.vision_feature_select_strategy, image_newline=newline)
    if isinstance(packed, torch.Tensor):  # LLaVA-NeXT concatenates the images
        packed = torch.split(packed, [int(length) for length in lengths])
    sources = []
    for image in packed:
        if not bool((image == image.round()).all()):
            raise ValueError(
                f"{type(model).__name__} interpolated an image's tile grid ({config.vision_aspect_ratio}): its "
                "tokens are blends of patches, which the vision tap cannot map; use a smaller image"
            )
        sources.append(image.round().long().view(-1, 1))
    return sources


def _pixel_shuffle_tiles(
    model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]
) -> list[torch.Tensor]:
    """InternVL: per tile (tiles, then the thumbnail) the model's `pixel_shuffle` of the patch grid: each token reads
    the 2x2 patches its projector input concatenates, in that order."""
    side = _patch_side(_tower(model))
    grid = torch.arange(side * side, dtype=torch.float64).view(1, side, side, 1)
    shuffled = model.model.pixel_shuffle(grid, scale_factor=model.config.downsample_ratio)
    per_tile = shuffled.reshape(-1, shuffled.shape[-1]).round().long()  # [tokens of a tile, g]
    sources, tile = [], 0
    for layout in layouts:
        if layout is None:
            raise ValueError("InternVL's vision tap needs the image layouts (tiles), which the wrapper passes")
        views = len(layout.views)
        sources.append(torch.cat([per_tile + (tile + v) * side * side for v in range(views)]))
        tile += views
    return sources


def _qwen_merge(model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]) -> list[torch.Tensor]:
    """Qwen2-VL / Qwen3-VL: each image's patches come merge unit by merge unit; token u reads patches 4u .. 4u+3."""
    unit = _tower(model).config.spatial_merge_size ** 2
    counts = [int(t * h * w) // unit for t, h, w in inputs["grid_thw"].tolist()]
    units = torch.arange(sum(counts) * unit).view(-1, unit)
    return list(torch.split(units, counts))


def _qwen_windows(model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]) -> list[torch.Tensor]:
    """Qwen2.5-VL: the encoder runs merge units in window order (`window_index`); token u is unit
    `argsort(window_index)[u]` of that order, as the model un-permutes the merger's output."""
    from transformers.vision_utils import get_vision_window_index

    tower = _tower(model)
    config = tower.config
    grid_thw = inputs["grid_thw"]
    window_index, _ = get_vision_window_index(
        grid_thw.cpu(), spatial_merge_size=config.spatial_merge_size, window_size=config.window_size,
        patch_size=config.patch_size,
    )
    unit = config.spatial_merge_size ** 2
    order = torch.argsort(window_index)
    units = order.unsqueeze(1) * unit + torch.arange(unit)
    counts = [int(t * h * w) // unit for t, h, w in grid_thw.tolist()]
    return list(torch.split(units, counts))


def _deepseek_views(
    model: nn.Module, inputs: dict[str, Any], layouts: list[ImageLayout | None]
) -> list[torch.Tensor]:
    """DeepSeek-VL2: per image its global view, then its tiles side by side; each cell reads the 2x2 patches of the
    zero-padded patch grid (`-1` for the padding); newlines and the view separator read nothing."""
    side = _patch_side(_tower(model))
    ratio = model.model.projector.ratio
    cells = -(-side // ratio)
    offsets = torch.arange(ratio)
    # patch (r, c) of a view for cell (i, j), member (a, b): r = ratio i + a, c = ratio j + b; -1 in the padding.
    r = (torch.arange(cells).view(-1, 1, 1, 1) * ratio + offsets.view(1, 1, -1, 1)).expand(cells, cells, ratio, ratio)
    c = (torch.arange(cells).view(1, -1, 1, 1) * ratio + offsets.view(1, 1, 1, -1)).expand(cells, cells, ratio, ratio)
    members = torch.where((r < side) & (c < side), r * side + c, -1).reshape(cells, cells, ratio * ratio)
    tilings = inputs["images_spatial_crop"].tolist()
    sources, view = [], 0
    for layout, (width_tiles, height_tiles) in zip(layouts, tilings, strict=True):
        if layout is None:
            raise ValueError("DeepSeek-VL2's vision tap needs the image layouts (views), which the wrapper passes")
        source = torch.full((layout.n_tokens, ratio * ratio), -1, dtype=torch.long)
        global_view, local = layout.views[0], layout.views[1]
        if global_view.kind != "global" or local.rows != height_tiles * cells or local.cols != width_tiles * cells:
            raise ValueError(f"DeepSeek-VL2 layout {layout} does not match the tiling {(width_tiles, height_tiles)}")
        source[global_view.cells().flatten()] = _shift(members, view * side * side).view(-1, ratio * ratio)
        # (th, tw) tiles of `cells x cells` side by side: tile (ti, tj) is view 1 + ti * tw + tj of the image.
        tiles = torch.stack([
            torch.stack([
                _shift(members, (view + 1 + ti * width_tiles + tj) * side * side) for tj in range(width_tiles)
            ])
            for ti in range(height_tiles)
        ])  # [th, tw, cells, cells, g]
        grid = tiles.permute(0, 2, 1, 3, 4).reshape(height_tiles * cells, width_tiles * cells, ratio * ratio)
        source[local.cells().flatten()] = grid.reshape(-1, ratio * ratio)
        sources.append(source)
        view += 1 + width_tiles * height_tiles
    return sources


def _shift(members: torch.Tensor, offset: int) -> torch.Tensor:
    return torch.where(members >= 0, members + offset, members)


_CLIP = dict(tower="model.vision_tower", layers="encoder.layers", attention="self_attn", cls=True,
             features="model.multi_modal_projector", features_from="input", default_layer=-2)
_QWEN = dict(tower="model.visual", layers="blocks", attention="attn", cls=False, features="model.visual.merger",
             features_from="input", default_layer=-1)

VISION_ARCHS: dict[str, VisionArch] = {
    "llava": VisionArch(**_CLIP, placement=_one_view_each),
    "llava_next": VisionArch(**_CLIP, placement=_anyres),
    # SigLIP: no [CLS]; the "full" strategy keeps every patch.
    "llava_onevision": VisionArch(**dict(_CLIP, cls=False, default_layer=-1), placement=_anyres),
    # InternViT: [CLS] first; the projector reads the pixel-shuffled last layer, so the features are the tower's.
    "internvl": VisionArch(tower="model.vision_tower", layers="encoder.layer", attention="attention", cls=True,
                           features="model.vision_tower", features_from="output", default_layer=-2,
                           placement=_pixel_shuffle_tiles),
    "qwen2_5_vl": VisionArch(**_QWEN, placement=_qwen_windows),
    "qwen2_vl": VisionArch(**_QWEN, placement=_qwen_merge),
    "qwen3_vl": VisionArch(**_QWEN, placement=_qwen_merge),
    "qwen3_vl_moe": VisionArch(**_QWEN, placement=_qwen_merge),
    "deepseek_vl_v2": VisionArch(tower="model.vision_tower", layers="encoder.layers", attention="self_attn",
                                 cls=False, features="model.projector", features_from="input", default_layer=-1,
                                 placement=_deepseek_views),
}


def vision_arch_for(model: nn.Module) -> VisionArch:
    model_type = getattr(model.config, "model_type", None)
    try:
        return VISION_ARCHS[model_type]
    except KeyError:
        raise ValueError(
            f"no vision-tower tap for model_type {model_type!r}; supported: {sorted(VISION_ARCHS)}") from None


def layer_index(vision_layer: int, n_layers: int) -> int:
    """The encoder layer `vision_layer` names (negative: from the end, as `hidden_states[vision_layer]`)."""
    index = vision_layer + n_layers if vision_layer < 0 else vision_layer
    if not 0 <= index < n_layers:
        raise ValueError(f"vision_layer {vision_layer} is outside the encoder's {n_layers} layers")
    return index


# ---------------------------------------------------------------------------------------------------- scoring
def received_attention(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """`[B, n]`: per key, its softmax probability averaged over the heads and the `n` query rows of its call.

    Float32 throughout (spec: scores in float32; also 3x faster than bf16/fp16 products on a CPU without such units).

    Args:
        query, key (`Tensor [B, H, n, d]`): one attention call's states.
    """
    batch, heads, n, _ = query.shape
    total = query.new_zeros(batch, n, dtype=torch.float32)
    chunk = max(1, _LOGIT_BUDGET // max(1, batch * heads * n))
    key_t = key.float().transpose(-1, -2)
    query = query.float() * scaling  # scaled once, not once per chunk of logits
    for start in range(0, n, chunk):
        total += torch.matmul(query[:, :, start:start + chunk], key_t).softmax(dim=-1).sum(dim=(1, 2))
    return total / (heads * n)


def cls_attention(query: torch.Tensor, key: torch.Tensor, scaling: float, softmax: str) -> tuple[torch.Tensor, ...]:
    """The [CLS] (row 0) query's attention over the call's keys: `([B, n] head-mean or single-"head", [B, H, n])`."""
    q_cls, key = query[:, :, :1].float(), key.float()  # one row: float32 costs nothing
    heads = (torch.matmul(q_cls, key.transpose(-1, -2)) * scaling).softmax(dim=-1)[:, :, 0]  # [B, H, n]
    if softmax == "per_head":
        return heads.mean(dim=1), heads
    width = q_cls.shape[1] * q_cls.shape[-1]
    logits = torch.einsum("bhd,bhnd->bn", q_cls[:, :, 0], key) / math.sqrt(width)
    return logits.softmax(dim=-1), heads


def pool_onto_tokens(values: torch.Tensor, source: torch.Tensor, concat: bool = False) -> torch.Tensor:
    """Per-patch `values [P, ...]` onto tokens through `source [L, g]` (-1: no patch): the mean over each token's
    patches (`concat=False`) or their rows concatenated (zeros for -1); NaN for tokens that read no patch."""
    source = source.to(values.device)
    valid = source >= 0
    rows = values[source.clamp(min=0)] * valid.view(*valid.shape, *[1] * (values.dim() - 1)).to(values.dtype)
    if concat:
        pooled = rows.flatten(1)
    else:
        pooled = rows.sum(dim=1) / valid.sum(dim=1).clamp(min=1).view(-1, *[1] * (values.dim() - 1))
    return pooled.masked_fill(~valid.any(dim=1).view(-1, *[1] * (pooled.dim() - 1)), float("nan"))


# ---------------------------------------------------------------------------------------------------- the tap
class VisionTap:
    """Hooks on the vision encoder for one method: records what it `needs` at every encoder call and, once per
    prefill (`take`), hands it out per image mapped onto the LLM's visual tokens.

    Args:
        model (`nn.Module`): a supported model (`VISION_ARCHS`).
        needs (`frozenset[str]`): the method's needs (only those in `VISION_INPUTS` are computed).
        vision_layer (`int` or `None`): the encoder layer to score (`None`: the family's `default_layer`).
        cls_softmax (`str`): `"per_head"` or `"concat"` (see the module doc).
    """

    def __init__(self, model: nn.Module, needs: frozenset[str], vision_layer: int | None = None,
                 cls_softmax: str = "per_head"):
        if cls_softmax not in CLS_SOFTMAX:
            raise ValueError(f"vision_cls_softmax must be one of {CLS_SOFTMAX}, got {cls_softmax!r}")
        self.model, self.needs, self.cls_softmax = model, needs & VISION_INPUTS, cls_softmax
        self.arch = arch = vision_arch_for(model)
        tower = get_submodule(model, arch.tower)
        layers = get_submodule(tower, arch.layers)
        self.layer = layer_index(arch.default_layer if vision_layer is None else vision_layer, len(layers))
        self._handles = [tower.register_forward_pre_hook(self._on_tower, with_kwargs=True)]
        # generate() encodes the images before the prefill's forward (`mm_encoder_outputs`) and drops their inputs
        # from it: the image inputs (`image_sizes`, `images_spatial_crop`, ...) are read where the images are encoded.
        self._multimodal = get_submodule(model, arch_for(model).multimodal)
        encode = self._multimodal.get_image_features
        signature = inspect.signature(encode)

        @functools.wraps(encode)  # generate() reads its signature to pick the encoder's inputs
        def recording(*args: Any, **kwargs: Any) -> Any:
            self._inputs.update(signature.bind_partial(*args, **kwargs).arguments)
            return encode(*args, **kwargs)

        self._multimodal.get_image_features = recording
        self._attention: AttentionTap | None = None
        self._heads: int | None = None
        if self.needs & {"vision_attention", "vision_cls_attention", "vision_keys"}:
            self._attention = AttentionTap(getattr(layers[self.layer], arch.attention), self._on_states)
            self._attention.armed = True
        if "vision_features" in self.needs:
            module = get_submodule(model, arch.features)
            if arch.features_from == "input":
                self._handles.append(module.register_forward_pre_hook(self._on_features_input, with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._on_features_output))
        self.reset()

    def reset(self) -> None:
        """Forget the recorded encoder calls and inputs."""
        self._inputs: dict[str, Any] = {}
        self._patches: dict[str, list[torch.Tensor]] = {}
        self.seconds = 0.0

    def remove(self) -> None:
        self._multimodal.__dict__.pop("get_image_features", None)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._attention is not None:
            self._attention.remove()

    # hooks ---------------------------------------------------------------------------------------------------
    def _on_tower(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid_thw is not None:
            previous = self._inputs.get("grid_thw")
            self._inputs["grid_thw"] = grid_thw if previous is None else torch.cat([previous, grid_thw])

    def _keep(self, name: str, value: torch.Tensor) -> None:
        self._patches.setdefault(name, []).append(value)

    def _on_states(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> None:
        start = clock(query)
        self._heads = key.shape[1]
        with torch.no_grad():
            skip = 1 if self.arch.cls else 0
            if "vision_attention" in self.needs:
                self._keep("attention", received_attention(query, key, scaling)[:, skip:].flatten())
            if "vision_cls_attention" in self.needs and self.arch.cls:
                mean, heads = cls_attention(query, key, scaling, self.cls_softmax)
                self._keep("cls_attention", mean[:, skip:].flatten())
                self._keep("cls_attention_heads", heads[:, :, skip:].transpose(0, 1).flatten(1).t())  # [P, H]
            if "vision_keys" in self.needs:
                keys = key[:, :, skip:].float().permute(0, 2, 1, 3)  # [B, n, H, d]
                self._keep("keys", keys.flatten(2).flatten(0, 1))
        self.seconds += clock(query) - start

    def _on_features_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        features = args[0] if args else next(iter(kwargs.values()))
        if self.arch.cls and features.shape[-2] != _patch_side(get_submodule(self.model, self.arch.tower)) ** 2:
            raise ValueError(
                f"the projector of {type(self.model).__name__} reads {features.shape[-2]} rows per view, the patches "
                "and the [CLS] token (vision_feature_select_strategy='full'): the vision tap maps patches only")
        self._keep("features", features.detach().flatten(0, -2) if features.dim() > 2 else features.detach())

    def _on_features_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        hidden = output.last_hidden_state
        self._keep("features", hidden[:, 1 if self.arch.cls else 0:].detach().flatten(0, 1))

    # per prefill ---------------------------------------------------------------------------------------------
    def take(
        self, layouts: list[list[ImageLayout | None]] | None, images_per_row: list[int]
    ) -> tuple[list[list[VisionInputs]], float]:
        """Per row, per image (prompt order) the recorded values mapped onto its visual tokens, and the seconds spent
        scoring and mapping them since `reset`; then `reset`.

        Raises:
            ValueError: no encoder call was seen, or the patch counts do not fit the family's placement.
        """
        patches = {name: torch.cat(values) for name, values in self._patches.items()}
        inputs, seconds = self._inputs, self.seconds
        self.reset()
        if not patches:
            raise ValueError(
                "the vision tap saw no encoder call in this prefill: pass the images to the model's forward")
        any_value = next(iter(patches.values()))
        start = clock(any_value)
        flat_layouts = [layout for row in layouts for layout in row] if layouts else [None] * sum(images_per_row)
        sources = self.arch.placement(self.model, inputs, flat_layouts)
        if len(sources) != sum(images_per_row):
            raise ValueError(f"the vision tap mapped {len(sources)} images, the prompts hold {sum(images_per_row)}")
        top = max(int(source.max()) for source in sources) + 1
        for name, value in patches.items():
            if value.shape[0] < top:
                raise ValueError(
                    f"the vision tap recorded {value.shape[0]} patch rows of {name}, the visual tokens read {top}")
        images = [self._map(patches, source) for source in sources]
        seconds += clock(any_value) - start
        out, index = [], 0
        for count in images_per_row:
            out.append(images[index:index + count])
            index += count
        return out, seconds

    def _map(self, patches: dict[str, torch.Tensor], source: torch.Tensor) -> VisionInputs:
        mapped = {name: pool_onto_tokens(value, source, concat=name == "features") for name, value in patches.items()}
        heads = mapped.get("cls_attention_heads")
        return VisionInputs(
            attention=mapped.get("attention"),
            cls_attention=mapped.get("cls_attention"),
            cls_attention_heads=None if heads is None else heads.t().contiguous(),
            keys=mapped.get("keys"),
            features=mapped.get("features"),
            patches_per_token=source.shape[1],
            heads=self._heads,
        )

