"""What the vision-encoder methods (VisPruner, HoloV) share: the image's cells (tokens that carry patches) view by
view, its separators, the per-view budget, and the ViT attention score each release reads.

Separators (LLaVA-NeXT / OneVision newlines, DeepSeek-VL2's newlines and view separator) are kept by these methods
and neither scored nor counted (docs/methods/vispruner.md); each view's budget is `max(1, round(ratio * cells))`.
"""

from __future__ import annotations

import torch

from ..context import SelectionContext


def vit_scores(ctx: SelectionContext, method: str) -> torch.Tensor:
    """`FloatTensor [L]`: the [CLS] row of the chosen ViT layer where the encoder has a [CLS] (LLaVA-1.5, LLaVA-NeXT,
    InternVL: the releases' and ports' signal), else the attention each token received (Qwen, SigLIP, DeepSeek-VL2:
    the Qwen ports' signal); NaN at separators.

    Raises:
        ValueError: the method did not get the vision tap's attention (its `needs` lack it).
    """
    scores = ctx.vision_cls_attention if ctx.vision_cls_attention is not None else ctx.vision_attention
    if scores is None:
        raise ValueError(
            f"{method} needs the vision tap's attention (needs 'vision_cls_attention', 'vision_attention')")
    return scores.float()


def cell_views(ctx: SelectionContext, scores: torch.Tensor) -> list[torch.Tensor]:
    """Per view of the image (token order), the indices of its cells; without a layout, every token that carries a
    patch (a finite score) as one view."""
    if ctx.layout is None:
        return [torch.isfinite(scores).nonzero().flatten()]
    return [view.cells().flatten().to(scores.device) for view in ctx.layout.views]


def separators(n_tokens: int, views: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The image's tokens in no view: kept, never scored."""
    is_cell = torch.zeros(n_tokens, dtype=torch.bool, device=device)
    for cells in views:
        is_cell[cells] = True
    return (~is_cell).nonzero().flatten()


def view_budget(ratio: float, n_cells: int) -> int:
    """A view's kept cells: `round(ratio * cells)`, at least 1, at most the view."""
    return min(n_cells, max(1, round(ratio * n_cells)))
