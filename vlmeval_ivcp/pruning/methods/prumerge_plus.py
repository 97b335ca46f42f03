"""`prumerge_plus`: outliers of [CLS] attention plus spatial samples, every kept token absorbing its nearest patches
(LLaVA-PruMerge+, https://arxiv.org/abs/2403.15388).

PruMerge+ keeps the patches whose [CLS] attention is an outlier (above `Q3 + 1.5 IQR`), adds evenly spaced patches to
cover the picture, then lets every kept patch absorb its 32 most similar patches (cosine of the keys), weighted by
their attention, and appends one extra token: the attention-weighted sum of every pruned patch. Rule followed: the
release's `CLIPVisionTower.token_prune_merge_advanced_plus` (42Shawn/LLaVA-PruMerge,
`llava/model/multimodal_encoder/clip_encoder.py`); the fixed budget of VTC-Bench's EffiVLM-Bench ports
(docs/methods/prumerge_plus.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import check_choice
from ..context import Selection, SelectionContext, merged_at, sorted_keep
from ..registry import register_method
from .vision_views import (
    SCORES, SPACES, VisionTowerConfig, image_selection, merge_features, merge_space, tower_scores,
    view_budget, view_cells,
)
from .visionzip import top_stable

NEIGHBOURS = 32  # the release's `topk(..., k=32)` of each kept token
PRESETS = ("official", "matched")


def outlier_count(attention: torch.Tensor) -> int:
    """Patches whose attention exceeds `Q3 + 1.5 (Q3 - Q1)` (quartiles interpolated linearly, as `np.percentile`)."""
    values = attention.detach().double().flatten()
    q1, q3 = torch.quantile(values, torch.tensor([0.25, 0.75], dtype=torch.float64, device=values.device))
    return int((values > q3 + 1.5 * (q3 - q1)).sum())


def adaptive_order(attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's adaptive choice on one view of `N` patches: `(outliers, samples)`.

    `rho = n_out / N` with `n_out = outlier_count` (at least 1: the release divides by zero without an outlier); the
    top `int(N * rho)` patches by attention (largest first); then the patches `0, s, 2s, ... < N - 1` with
    `s = max(1, int(int(1 / rho) / 3))` (the release's `range(0, 575, ...)`, which fails at `s = 0`) that are not
    outliers, ascending.
    """
    n_patches = attention.numel()
    rho = max(1, outlier_count(attention)) / n_patches
    outliers = top_stable(attention, int(n_patches * rho))
    stride = max(1, int(int(1 / rho) / 3))
    grid = torch.arange(0, n_patches - 1, stride, device=attention.device)
    return outliers, grid[~torch.isin(grid, outliers)]


def budget_order(attention: torch.Tensor, budget: int, n_iqr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed-budget choice (VTC-Bench's ports) of `budget` patches: `(outliers, samples)`.

    When `budget > n_iqr`: the top `n_iqr` by attention, then `range(0, N, max(1, int(N / budget)))` minus those,
    truncated to the budget; a shortfall is filled by attention order (the ports fill at random). Otherwise the top
    `budget`.
    """
    n_patches = attention.numel()
    budget = min(budget, n_patches)
    if budget <= n_iqr:
        return top_stable(attention, budget), attention.new_zeros(0, dtype=torch.long)
    outliers = top_stable(attention, n_iqr)
    grid = torch.arange(0, n_patches, max(1, int(n_patches / budget)), device=attention.device)
    samples = grid[~torch.isin(grid, outliers)][: budget - n_iqr]
    short = budget - n_iqr - samples.numel()
    if short:
        order = top_stable(attention, n_patches)
        unused = order[~torch.isin(order, torch.cat([outliers, samples]))]
        samples = torch.cat([samples, unused[:short]])
    return outliers, samples


def merge_kept(
    kept: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, features: torch.Tensor,
    neighbours: int = NEIGHBOURS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each kept patch absorbs its nearest patches; the pruned ones make one extra token.

    For kept patch `i`: its `neighbours` most similar patches by cosine of `keys` among all the others, kept or not
    (fewer when the view has fewer), `x'_i = x_i + sum_j a_j x_j` (unnormalised, as the release). Extra token:
    `sum over pruned j of a_j x_j`.

    Args:
        kept (`LongTensor [k]`): kept patch indices, in any order.
        attention (`Tensor [N]`): `a`, the weights. keys (`Tensor [N, d]`). features (`Tensor [N, W]`): `x`.

    Returns:
        `(merged [k, W], extra [W])`, float32, `merged` in the order of `kept`.
    """
    unit = F.normalize(keys.float(), dim=-1)
    similarity = unit[kept] @ unit.T  # [k, N]
    similarity[torch.arange(kept.numel(), device=kept.device), kept] = float("-inf")
    count = min(neighbours, attention.numel() - 1)
    nearest = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :count]  # [k, count]
    weights, values = attention.float(), features.float()
    merged = values[kept] + (weights[nearest, None] * values[nearest]).sum(dim=1)
    pruned = torch.ones(attention.numel(), dtype=torch.bool, device=kept.device)
    pruned[kept] = False
    extra = (weights[pruned, None] * values[pruned]).sum(dim=0)
    return merged, extra


def prumerge_selection(
    attention: torch.Tensor, keys: torch.Tensor, features: torch.Tensor, outliers: torch.Tensor,
    samples: torch.Tensor, space: str, neighbours: int = NEIGHBOURS,
) -> Selection:
    """The kept patches (parts `outliers`, `samples`) each carrying its merged vector, and the extra token in the
    slot of the pruned patch with the largest attention (part `extra`; none when nothing was pruned)."""
    kept = torch.cat([outliers, samples])
    merged, extra = merge_kept(kept, attention, keys, features, neighbours)
    pruned = torch.ones(attention.numel(), dtype=torch.bool, device=attention.device)
    pruned[kept] = False
    parts = {"outliers": sorted_keep(outliers), "samples": sorted_keep(samples)}
    tokens, vectors = kept, merged
    if bool(pruned.any()):
        candidates = pruned.nonzero().flatten()
        host = candidates[top_stable(attention[candidates], 1)]
        parts["extra"] = host
        tokens, vectors = torch.cat([kept, host]), torch.cat([merged, extra[None]])
    keep = sorted_keep(tokens)
    order = torch.argsort(tokens)
    return Selection(keep, parts=parts, merged=merged_at(keep, tokens[order], vectors[order], space))


@dataclass
class PruMergePlusConfig(VisionTowerConfig):
    """Settings of `prumerge_plus`: before the LLM, from one vision-encoder layer (docs/methods/prumerge_plus.md)."""

    preset: str = field(
        default="official",
        metadata={"help": "'official': the release's adaptive count (IQR outliers + spatial samples + 1 extra per "
                          "view; ratio unused); 'matched': exactly round(ratio * cells) per view, extra included "
                          "(VTC-Bench's fixed budget)"},
    )
    vision_layer: int | None = field(
        default=-1,
        metadata={"help": "encoder layer whose q/k are read (negative from the end): -1 = CLIP layer 23, the "
                          "release; the InternVL and Qwen2-VL ports read -2"},
    )
    vision_cls_softmax: str = field(
        default="concat",
        metadata={"help": "'concat': one softmax of q_cls . k / sqrt(H d) over the heads-concatenated vectors (the "
                          "release); 'per_head': the head-mean of the model's own heads"},
    )
    score: str = field(
        default="auto",
        metadata={"help": "'cls', 'received' (the Qwen2-VL port) or 'auto' (cls where the encoder has [CLS])"},
    )
    space: str = field(
        default="auto",
        metadata={"help": "where tokens are merged: 'projector_input' (the release), 'llm_input' (the ports) or "
                          "'auto' (projector input where one patch makes one LLM token)"},
    )
    neighbours: int = field(default=NEIGHBOURS, metadata={"help": "patches each kept token absorbs (release: 32)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("preset", self.preset, PRESETS)
        check_choice("vision_cls_softmax", self.vision_cls_softmax, ("per_head", "concat"))
        check_choice("score", self.score, SCORES)
        check_choice("space", self.space, SPACES)
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ValueError(f"neighbours must be an int >= 1, got {self.neighbours!r}")


@register_method(
    "prumerge_plus", PruMergePlusConfig,
    needs=("vision_cls_attention", "vision_attention", "vision_keys", "vision_features", "hidden_states"),
)
def prumerge_plus_select(ctx: SelectionContext, config: PruMergePlusConfig) -> Selection:
    """Per view: outliers of the tower's attention plus spatial samples (adaptive, or the fixed budget), each kept
    token carrying its merged vector, and one extra token; separators kept."""
    attention = tower_scores(ctx, config.score, "prumerge_plus").float()
    if ctx.vision_keys is None:
        raise ValueError("prumerge_plus needs ctx.vision_keys from the vision tap; got None")
    space = merge_space(ctx, config.space)
    features = merge_features(ctx, space, "prumerge_plus")
    cells_of = view_cells(ctx, ctx.vision_keys)
    if config.preset == "official":
        orders = [adaptive_order(attention[cells.to(attention.device)]) for cells in cells_of]
    else:
        # VTC-Bench: rho averaged over the image's views sets the outlier count of each.
        rho = sum(outlier_count(attention[cells.to(attention.device)]) / cells.numel() for cells in cells_of)
        rho /= len(cells_of)
        orders = [
            budget_order(attention[cells.to(attention.device)], max(1, view_budget(config.ratio, cells.numel()) - 1),
                         max(int(cells.numel() * rho), 1))
            for cells in cells_of
        ]
    views = []
    for cells, (outliers, samples) in zip(cells_of, orders, strict=True):
        on = cells.to(attention.device)
        views.append((cells, prumerge_selection(attention[on], ctx.vision_keys[on], features[on.to(features.device)],
                                                outliers, samples, space, config.neighbours)))
    return image_selection(ctx, views)
