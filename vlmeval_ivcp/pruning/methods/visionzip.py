"""`visionzip`: dominant tokens by vision-tower attention, the rest merged into a few contextual tokens (VisionZip,
https://arxiv.org/abs/2412.04467).

VisionZip keeps the `D` patches that receive the most attention in a late vision-encoder layer (the [CLS] row where the
encoder has a [CLS] token, the attention received from every patch elsewhere), and merges every other patch into `C`
contextual tokens: `C` evenly spaced targets among the remaining patches, each remaining patch assigned to the target
whose key it is most similar to (cosine of the head-mean keys), and each contextual token = its target + the mean of
the patches assigned to it. Rule followed: the release's `CLIPVisionTower_VisionZip.forward`
(dvlab-research/VisionZip, `visionzip/clip_encoder.py`) and, on encoders without [CLS], the LightCompress and
EffiVLM-Bench ports (docs/methods/visionzip.md).
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

# The release's dominant : contextual split (LLaVA-1.5 192 = 162 + 30, 128 = 108 + 20, 64 = 54 + 10).
DOMINANT_SHARE = 5.4
CONTEXTUAL_SHARE = 1.0
PRESETS = ("official", "matched")


def visionzip_counts(n_keep: int, preset: str) -> tuple[int, int]:
    """(dominant, contextual) tokens for a budget of `n_keep`.

    `official`: EffiVLM-Bench's `D = max(1, int(n * 5.4 / 6.4))`, `C = max(1, int(n / 6.4))` (the paper's counts at
    its budgets; elsewhere `D + C` may be one less than `n`). `matched`: `C` as official but below `n`, `D = n - C`
    (exactly `n`; a budget of 1 keeps one dominant token and no contextual one).
    """
    check_choice("preset", preset, PRESETS)
    total = DOMINANT_SHARE + CONTEXTUAL_SHARE
    contextual = max(1, int(n_keep * CONTEXTUAL_SHARE / total))
    if preset == "official":
        return max(1, int(n_keep * DOMINANT_SHARE / total)), contextual
    contextual = min(contextual, n_keep - 1)
    return n_keep - contextual, contextual


def contextual_targets(n_remaining: int, n_contextual: int) -> torch.Tensor:
    """Positions of the targets among the `M` remaining patches: `0, step, 2 step, ...` with `step = max(1, M // C)`,
    the first `C` (all `M` when `M < C`, where the release's shapes fail)."""
    if n_contextual <= 0 or n_remaining <= 0:
        return torch.zeros(0, dtype=torch.long)
    step = max(1, n_remaining // n_contextual)
    return torch.arange(0, n_remaining, step)[:n_contextual]


def top_stable(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` largest scores (float32), largest first, ties to the lower index."""
    return torch.sort(scores.float(), descending=True, stable=True).indices[:count]


def visionzip_rule(
    scores: torch.Tensor, keys: torch.Tensor, features: torch.Tensor, n_dominant: int, n_contextual: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VisionZip on one view of `N` patches.

    1. Dominant: the `n_dominant` patches with the largest `scores` (ties to the lower index).
    2. The `M` others in ascending order; targets at `contextual_targets(M, n_contextual)`.
    3. Every other remaining patch joins the target of largest cosine between `keys` (first maximum).
    4. Contextual token = target's features + mean of its members' features (the target is added, not averaged in;
       a target without members stays itself).

    Args:
        scores (`Tensor [N]`): attention each patch receives (higher = more important).
        keys (`Tensor [N, d]`): the patches' keys (head-mean), for the similarity.
        features (`Tensor [N, W]`): what is merged (projector inputs or LLM inputs).
        n_dominant (`int`), n_contextual (`int`): the counts (`visionzip_counts`).

    Returns:
        `(dominant [D], targets [C'], contextual [C', W])`: dominant and target patch indices, ascending, and the
        contextual tokens in target order (float32).
    """
    n_patches = scores.numel()
    dominant = sorted_keep(top_stable(scores, min(n_dominant, n_patches)))
    is_remaining = torch.ones(n_patches, dtype=torch.bool, device=scores.device)
    is_remaining[dominant] = False
    remaining = is_remaining.nonzero().flatten()
    target_at = contextual_targets(remaining.numel(), n_contextual).to(scores.device)
    targets = remaining[target_at]
    is_member = torch.ones(remaining.numel(), dtype=torch.bool, device=scores.device)
    is_member[target_at] = False
    members = remaining[is_member]
    unit = F.normalize(keys.float(), dim=-1)
    assign = (unit[members] @ unit[targets].T).argmax(dim=1)  # [members]: first maximum
    values = features.float()
    sums = torch.zeros(targets.numel(), values.shape[1], device=values.device).index_add_(0, assign, values[members])
    counts = torch.bincount(assign, minlength=targets.numel()).clamp(min=1)
    return dominant, targets, values[targets] + sums / counts[:, None].to(values.dtype)


def visionzip_selection(
    scores: torch.Tensor, keys: torch.Tensor, features: torch.Tensor, n_dominant: int, n_contextual: int, space: str
) -> Selection:
    """`visionzip_rule` as a selection of the `N` patches: the dominant and target patches kept (parts `dominant`
    and `contextual`), each contextual token in its target's slot (`space`: where `features` live)."""
    dominant, targets, contextual = visionzip_rule(scores, keys, features, n_dominant, n_contextual)
    keep = sorted_keep(torch.cat([dominant, targets]))
    return Selection(
        keep, parts={"dominant": dominant, "contextual": targets}, merged=merged_at(keep, targets, contextual, space)
    )


@dataclass
class VisionZipConfig(VisionTowerConfig):
    """Settings of `visionzip`: before the LLM, from one vision-encoder layer (docs/methods/visionzip.md)."""

    preset: str = field(
        default="official",
        metadata={"help": "'official': D = int(n * 5.4 / 6.4), C = int(n / 6.4) per view (the release's split, one "
                          "less than n at some budgets); 'matched': D + C = n exactly"},
    )
    vision_layer: int | None = field(
        default=None,
        metadata={"help": "encoder layer scored (negative from the end); None: the family's default (CLIP and "
                          "InternViT -2 as the release and EffiVLM; Qwen -1 as LightCompress; SigLIP -1)"},
    )
    score: str = field(
        default="auto",
        metadata={"help": "'cls' ([CLS] row, the release), 'received' (attention received, the Qwen/InternVL "
                          "ports) or 'auto' (cls on LLaVA-style towers with [CLS], received elsewhere)"},
    )
    space: str = field(
        default="auto",
        metadata={"help": "where contextual tokens are merged: 'projector_input' (the release), 'llm_input' (the "
                          "ports) or 'auto' (projector input where one patch makes one LLM token)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("preset", self.preset, PRESETS)
        check_choice("score", self.score, SCORES)
        check_choice("space", self.space, SPACES)


@register_method(
    "visionzip", VisionZipConfig,
    needs=("vision_cls_attention", "vision_attention", "vision_keys", "vision_features", "hidden_states"),
)
def visionzip_select(ctx: SelectionContext, config: VisionZipConfig) -> Selection:
    """Per view: `D` dominant tokens by the tower's attention, the rest merged into `C` contextual tokens in their
    targets' slots (`visionzip_counts(round(ratio * cells), preset)`); separators kept."""
    score = config.score
    if score == "auto":
        score = "cls" if ctx.vision_cls_attention is not None and ctx.vision_patches_per_token == 1 else "received"
    scores = tower_scores(ctx, score, "visionzip")
    if ctx.vision_keys is None or ctx.vision_heads is None:
        raise ValueError("visionzip needs ctx.vision_keys and ctx.vision_heads from the vision tap; got None")
    keys = ctx.vision_keys.reshape(ctx.n_visual, ctx.vision_heads, -1).mean(dim=1)  # the release's head-mean keys
    space = merge_space(ctx, config.space)
    features = merge_features(ctx, space, "visionzip")
    views = []
    for cells in view_cells(ctx, keys):
        n_dominant, n_contextual = visionzip_counts(view_budget(config.ratio, cells.numel()), config.preset)
        on = cells.to(scores.device)
        views.append((cells, visionzip_selection(
            scores[on], keys[on], features[on.to(features.device)], n_dominant, n_contextual, space)))
    return image_selection(ctx, views)
