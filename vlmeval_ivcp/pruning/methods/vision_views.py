"""Shared by the methods that score inside the vision encoder (VisionZip, PruMerge+, VisPruner, HoloV): which tokens
they score (per view, separators left out), the per-view budget, which score and merge space a family gets by
default, and how per-view answers make one selection of the image.

The releases run one CLIP view at a time; here a view is a view of the image's `ImageLayout` (LLaVA-NeXT's base
view and tiles, InternVL's tiles and thumbnail, DeepSeek-VL2's global view and its tiles side by side) or, without a
layout, the whole image. Separator tokens (newlines, view separators: NaN in the vision tap's values) are always
kept and neither scored nor counted; each view keeps `max(1, round(ratio * cells))` (methods_2026.md, item 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import PruneConfig
from ..context import MergedTokens, Selection, SelectionContext, sorted_keep
from ..registry import method_of_config

SCORES = ("auto", "cls", "received")
SPACES = ("auto", "projector_input", "llm_input")


@dataclass
class VisionTowerConfig(PruneConfig):
    """What the vision-tower methods' settings share: they select before the LLM (`scope` 'before_llm', `layer` 0)
    from one encoder layer, `vision_layer`."""

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' only: the method acts in the vision tower"})
    layer: int = field(default=0, metadata={"help": "0: the LLM never sees the dropped tokens"})
    vision_layer: int | None = field(
        default=None,
        metadata={
            "help": "ViT layer scored (negative: from the end); None = the family's (-2 CLIP/InternViT, -1 else)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # also: a before_llm scope has layer 0
        if self.scope != "before_llm":
            raise ValueError(f"{method_of_config(self).name} acts in the vision tower, before the LLM: scope must be "
                             f"'before_llm', got {self.scope!r}")
        if self.vision_layer is not None and (isinstance(self.vision_layer, bool)
                                              or not isinstance(self.vision_layer, int)):
            raise TypeError(f"vision_layer must be an int or None, got {self.vision_layer!r}")


def view_cells(ctx: SelectionContext, values: torch.Tensor) -> list[torch.Tensor]:
    """Per view, the image-token indices of its cells that carry vision values (`values [L, ...]`: NaN rows at
    separators); the whole image as one view when the layout is unknown."""
    carries = ~values.reshape(values.shape[0], -1).isnan().any(dim=1).cpu()
    if ctx.layout is None:
        return [carries.nonzero().flatten()]
    views = [view.cells().flatten() for view in ctx.layout.views]
    return [cells[carries[cells]] for cells in views if bool(carries[cells].any())]


def separators(n_tokens: int, views: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The image's tokens in no view: kept, never scored."""
    is_cell = torch.zeros(n_tokens, dtype=torch.bool, device=device)
    for cells in views:
        is_cell[cells.to(device)] = True
    return (~is_cell).nonzero().flatten()


def view_budget(ratio: float, n_cells: int) -> int:
    """A view's kept cells: `round(ratio * cells)`, at least 1, at most the view."""
    return min(n_cells, max(1, round(ratio * n_cells)))


def tower_scores(ctx: SelectionContext, score: str, method: str) -> torch.Tensor:
    """`[L]` importance from the vision tap (NaN at separators): `cls` = the [CLS] row of the chosen ViT layer,
    `received` = the attention each token received, `auto` = `cls` where the encoder has a [CLS] (LLaVA-1.5,
    LLaVA-NeXT, InternVL: the releases' signal), else `received` (Qwen, SigLIP, DeepSeek-VL2: the Qwen ports')."""
    if score == "auto":
        score = "cls" if ctx.vision_cls_attention is not None else "received"
    if score == "cls":
        if ctx.vision_cls_attention is None:
            raise ValueError(f"{method} score='cls' needs an encoder with a [CLS] token; this one has none")
        return ctx.vision_cls_attention
    if ctx.vision_attention is None:
        raise ValueError(
            f"{method} needs the vision tap's attention, ctx.vision_attention (declare needs=('vision_attention',)); "
            "got None")
    return ctx.vision_attention


def merge_space(ctx: SelectionContext, space: str) -> str:
    """`auto`: the projector's input where each LLM token is one patch (a LLaVA-style projector, as the releases
    merge CLIP features), the LLM's input elsewhere (the Qwen, InternVL and DeepSeek-VL2 ports merge after the
    projector)."""
    if space != "auto":
        return space
    return "projector_input" if ctx.vision_patches_per_token == 1 else "llm_input"


def merge_features(ctx: SelectionContext, space: str, method: str) -> torch.Tensor:
    """`[L, W]`: what is merged: the tap's projector-input rows, or the visual tokens' input embeddings."""
    features = ctx.vision_features if space == "projector_input" else (
        None if ctx.hidden_states is None else ctx.hidden_states[ctx.visual_index]
    )
    if features is None:
        raise ValueError(f"{method} needs the tap's vision_features and the input embeddings; got None")
    return features


def image_selection(ctx: SelectionContext, views: list[tuple[torch.Tensor, Selection]]) -> Selection:
    """One selection of the image from per-view selections (`cells`: image-token index of each of the view's
    tokens), separators (tokens in no view) kept."""
    device = ctx.visual_index.device
    keeps, parts, tokens, vectors, spaces = [], {}, [], [], set()
    for cells, selection in views:
        cells = cells.to(device)
        keeps.append(cells[selection.keep.to(device)])
        for name, part in selection.parts.items():
            parts.setdefault(name, []).append(cells[part.to(device)])
        if selection.merged is not None:
            tokens.append(cells[selection.keep.to(device)[selection.merged.slots.to(device)]])
            vectors.append(selection.merged.vectors)
            spaces.add(selection.merged.space)
    kept_separators = separators(ctx.n_visual, [cells for cells, _ in views], device)
    keep = sorted_keep(torch.cat([kept_separators, *keeps]))
    named = {name: sorted_keep(torch.cat(found)) for name, found in parts.items() if name != "merged"}
    if kept_separators.numel():
        named["separators"] = kept_separators
    if not tokens:
        return Selection(keep, named)
    merged_tokens = torch.cat(tokens)
    merged = MergedTokens(torch.searchsorted(keep, merged_tokens), torch.cat(vectors), spaces.pop())
    return Selection(keep, named, merged)
