"""`sparsevlm`: text raters choose the visual tokens at several layers (SparseVLM v1, https://arxiv.org/abs/2410.04417),
drop only.

SparseVLM lets the question decide which visual tokens matter. Once per prompt it picks *raters*: the tokens after
the image whose input embeddings the visual embeddings prefer (a softmax over the text of raw dot products, averaged
over the visual tokens, above its mean). At each stage the head-mean attention of layer K-1 from the raters to the
visual tokens still alive ranks those tokens; the release keeps `rank(R) * scale + bias` of them, `R` being that
raters x visual attention matrix (a count that adapts to how much the raters' attention says). Rule followed:
Gumpest/SparseVLMs v1 (commit b72c5d6), `LlamaDynamicvitModel.forward` in
`llava/model/language_model/modelling_sparse_llama.py` and `score.py::attn_postprocess_rank`. The release then
recycles part of the dropped tokens as merged cluster tokens; that step is not implemented (`recycling` stays False).
The attention is recomputed from the layer's queries and keys, so SDPA and FlashAttention-2 stay on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..config import check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method
from .pdrop import PDropConfig

PRESETS = ("official", "matched")
# The release prunes the *output* of layers [2, 6, 15, 19] (`pruning_loc`): layers 3, 7, 16 and 20 run pruned.
RELEASE_LAYERS = (3, 7, 16, 20)


@dataclass
class SparseVLMConfig(PDropConfig):
    """Settings of `sparsevlm` (the release's v1 defaults: stages from layers 3, 7, 16, 20, `scale` 13.5, `bias` 0,
    each layer caching the tokens that reach it).

    `official` keeps the release's count at every stage and reads `scale` and `bias`; `matched` keeps exactly the
    engine's count at every stage (`stage_ratios`, or `ratio` split evenly, as `pdrop`).
    """

    method_name: ClassVar[str] = "sparsevlm"
    layers: tuple[int, ...] = field(
        default=RELEASE_LAYERS,
        metadata={"help": "first layer of each pruned stage (the release's pruning_loc + 1), strictly increasing"},
    )
    preset: str = field(
        default="official",
        metadata={
            "help": "'official': each stage keeps min(int(rank * scale + bias), V - 1) of its V visual tokens, all "
            "when rank = V (the release's count); 'matched': exactly round(stage ratio * V)"
        },
    )
    scale: float = field(
        default=13.5,
        metadata={"help": "official: tokens kept per rank of the rater attention (release: 13.5/9/0.8 at 192/128/64)"},
    )
    bias: float = field(
        default=0.0, metadata={"help": "official: tokens added to rank * scale (release: 0 / 6 / 0 at 192/128/64)"}
    )
    recycling: bool = field(
        default=False,
        metadata={"help": "merge part of the dropped tokens back (the release's recycling): not implemented, false"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("preset", self.preset, PRESETS)
        for name in ("scale", "bias"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.recycling is not False:
            raise ValueError(
                f"recycling={self.recycling!r}: sparsevlm implements the drop-only rule; token recycling (merging "
                "dropped tokens) is not implemented"
            )


def text_raters(image_embeds: torch.Tensor, query_embeds: torch.Tensor) -> torch.Tensor:
    """Which tokens after the image rate it (the release's "text raters"), from the LLM's input embeddings.

    `M = softmax over the text of (V Txᵀ)` (raw dot products), `score_t = mean over the visual tokens of M`;
    raters are the tokens whose score exceeds the mean score. Computed in float32. When none does (every score equal, e.g.
    one text token), every token rates.

    Args:
        image_embeds (`Tensor [L, D]`): the image's visual tokens. query_embeds (`Tensor [Q, D]`): the text after it.

    Returns:
        `BoolTensor [Q]`.
    """
    relevance = (image_embeds.float() @ query_embeds.float().T).softmax(dim=1).mean(dim=0)  # [Q]
    raters = relevance > relevance.mean()
    return raters if bool(raters.any()) else torch.ones_like(raters)


def official_count(relation: torch.Tensor, scale: float, bias: float) -> int:
    """The release's count for one stage (`attn_postprocess_rank`): with `rank` the numerical rank of the raters x
    visual attention `relation [R, V]` (float32 SVD, tolerance `sigma_max * max(R, V) * eps`), keep every token
    when `rank == V`, else `min(int(rank * scale + bias), V - 1)`, at least 1 (the release could ask for 0)."""
    n_visual = relation.shape[1]
    rank = int(torch.linalg.matrix_rank(relation.float()))
    if rank == n_visual:
        return n_visual
    return max(1, min(int(rank * scale + bias), n_visual - 1))


@register_method("sparsevlm", SparseVLMConfig, needs=("rater_attention",))
def sparsevlm_select(ctx: SelectionContext, config: SparseVLMConfig) -> Selection:
    """One stage: the raters' head-mean attention to the visual tokens alive, averaged over the raters, ranks them;
    the top `official_count` (or `ctx.n_keep` under `matched`) stay. Equal scores go to the lower index.

    Reads `ctx.query_attention [Q, S]`, `ctx.image_embeds [L0, D]` and `ctx.query_embeds [Q, D]` (need
    "rater_attention"). Raters come from the image's full input embeddings, so they are the same at every stage.
    """
    if ctx.query_attention is None or ctx.image_embeds is None or ctx.query_embeds is None:
        raise ValueError("sparsevlm needs ctx.query_attention, image_embeds and query_embeds (need 'rater_attention')")
    if ctx.query_index.numel() == 0:
        raise ValueError("sparsevlm needs text after the image to rate it; this prompt ends with its image")
    device = ctx.query_attention.device
    raters = text_raters(ctx.image_embeds, ctx.query_embeds).to(device)
    relation = ctx.query_attention[raters][:, ctx.visual_index.to(device)]  # [R, V]
    count = official_count(relation, config.scale, config.bias) if config.preset == "official" else ctx.n_keep
    ranked = torch.sort(relation.mean(dim=0), descending=True, stable=True).indices
    return Selection(keep=sorted_keep(ranked[:count]))
