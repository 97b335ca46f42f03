"""`vispruner`: important tokens by ViT [CLS] attention, then duplicates removed for diversity (VisPruner,
https://arxiv.org/abs/2412.01818).

Before the LLM, per view of the image: the `T_imp = int(T * r)` cells with the largest [CLS] attention of the chosen
ViT layer are kept; the rest (in that attention order) lose their most redundant members, at most 8 per round, by
bipartite matching of cosine similarity until `T - T_imp` remain. Rule followed: the release's
`LlavaMetaForCausalLM.encode_images` (`llava/model/llava_arch.py`, Theia-4869/VisPruner); encoders without a [CLS]
score the attention each token received, as LightCompress's Qwen2.5-VL port (docs/methods/vispruner.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method
from .vision_views import (
    SPACES, VisionTowerConfig, merge_features, merge_space, separators, tower_scores, view_budget,
    view_cells,
)

# Tokens of the residual dropped per round, at most (the release's constant).
_ROUND = 8
# Largest residual cosine matrix formed at once (float32 values: 64 MiB).
_GRAM_LIMIT = 1 << 24


@dataclass
class VisPrunerConfig(VisionTowerConfig):
    """Settings of `vispruner`: before the LLM, on ViT signals."""

    important_ratio: float = field(
        default=0.5,
        metadata={
            "help": "r: the share of each view's budget kept by [CLS] attention (README: 0.5 at 128, 0.75 at 64)"
        },
    )
    similarity: str = field(
        default="auto",
        metadata={
            "help": "'projector_input' (the release: the ViT features the projector reads), 'llm_input' (the "
            "projected tokens, as the Qwen2.5-VL port) or 'auto': projector_input where a token is one patch "
            "(LLaVA family), llm_input where the merger fuses patches (Qwen, InternVL, DeepSeek-VL2)"
        },
    )
    parity_bump: bool = field(
        default=False,
        metadata={"help": "the Qwen2.5-VL port's T_imp += 1 when the view's cells minus T_imp are odd"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.important_ratio, bool) or not 0.0 <= float(self.important_ratio) <= 1.0:
            raise ValueError(f"important_ratio must be in [0, 1], got {self.important_ratio!r}")
        check_choice("similarity", self.similarity, SPACES)


def vispruner_keep(
    scores: torch.Tensor, features: torch.Tensor, n_keep: int, important_ratio: float, parity_bump: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view's kept cells: `(important, diverse)` indices into its `N` cells.

    1. `T_imp = int(T r)` (+1 with `parity_bump` when `N - T_imp` is odd), `T_div = T - T_imp`; cells sorted by
       `scores` descending (stable: ties to the lower index); important = the first `T_imp`, residual = the rest.
    2. While `R = |residual| > T_div`: `m = min(8, R - T_div)`; `A` = residual at even positions, `B` at odd;
       `s_a = max_b cos(x_a, x_b)`; drop the `m` members of `A` with the largest `s_a`; residual = surviving `A` by
       `s_a` descending, then `B`. With odd `R`, `A` has `ceil(R/2)` members (the release's indexing fails there).
       With `T_div = 0` the residual empties (top-`T` by score, FasterVLM's rule; the release's `while T_div > 0`
       would keep all of it).

    Args:
        scores (`FloatTensor [N]`), features (`Tensor [N, D]`): per cell.
        n_keep (`int`): `T`, 1 .. N.
    """
    n_cells = scores.numel()
    n_important = min(n_keep, int(n_keep * important_ratio))
    if parity_bump and (n_cells - n_important) % 2 == 1 and n_important < n_keep:
        n_important += 1
    n_diverse = n_keep - n_important
    order = torch.argsort(scores.float(), descending=True, stable=True)
    important, residual = order[:n_important], order[n_important:]
    # float32 at least (float64 inputs stay float64: the loop reference of the tests compares exactly)
    unit = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    # The residual's cosines, formed once: every round reads a block of them (`R^2` values; rounds of fresh
    # `(R/2) x (R/2) x D` products where that would exceed `_GRAM_LIMIT`).
    gram = unit[residual] @ unit[residual].T if residual.numel() ** 2 <= _GRAM_LIMIT else None
    position = torch.empty(n_cells, dtype=torch.long, device=scores.device)
    position[residual] = torch.arange(residual.numel(), device=scores.device)
    while residual.numel() > n_diverse:
        drop = min(_ROUND, residual.numel() - n_diverse)
        a, b = residual[0::2], residual[1::2]
        if b.numel() == 0:  # T_div = 0 and one token left: nothing to match it with
            residual = residual[:n_diverse]
            break
        pairs = gram[position[a]][:, position[b]] if gram is not None else unit[a] @ unit[b].T
        similarity = pairs.max(dim=1).values
        survivors = a[torch.argsort(similarity, descending=True, stable=True)[drop:]]
        residual = torch.cat([survivors, b])
    return important, residual


@register_method(
    "vispruner", VisPrunerConfig, needs=("vision_attention", "vision_cls_attention", "vision_features")
)
def vispruner_select(ctx: SelectionContext, config: VisPrunerConfig) -> Selection:
    """Per view of the image, `round(ratio * cells)` cells by VisPruner's rule; separators kept.

    Reads `ctx.vision_cls_attention` (or `ctx.vision_attention` where the encoder has no [CLS]) and, for the
    similarity, `ctx.vision_features` (`projector_input`) or the input embeddings' visual rows (`llm_input`).
    """
    scores = tower_scores(ctx, "auto", "vispruner").float()
    features = merge_features(ctx, merge_space(ctx, config.similarity), "vispruner")
    views = [cells.to(scores.device) for cells in view_cells(ctx, scores)]
    important, diverse = [], []
    for cells in views:
        budget = view_budget(config.ratio, cells.numel())
        top, rest = vispruner_keep(scores[cells], features[cells], budget, config.important_ratio,
                                   config.parity_bump)
        important.append(cells[top])
        diverse.append(cells[rest])
    kept_separators = separators(ctx.n_visual, views, scores.device)
    important_cells, diverse_cells = torch.cat(important), torch.cat(diverse)
    return Selection(
        keep=sorted_keep(torch.cat([important_cells, diverse_cells, kept_separators])),
        parts={"important": sorted_keep(important_cells), "diverse": sorted_keep(diverse_cells),
               "separators": kept_separators},
    )
