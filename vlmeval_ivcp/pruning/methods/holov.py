"""`holov`: the budget spread over contiguous chunks of the image by attention and diversity (HoloV,
https://arxiv.org/abs/2510.02912).

Before the LLM, over the image's cells in sequence order: `P` contiguous chunks, each scored by its mean of
`1000 a + 0.09 lambda v` (`a` the ViT [CLS] attention, `v` the variance of the chunk's cosine similarities of the
projected tokens), the budget shared by score, and each chunk keeping its top tokens by attention. Rule followed: the
release's `HoloV` (`llava/model/utils.py`, obananas/HoloV) with the Qwen release's chunk count; encoders without a
[CLS] score the attention each token received, as the Qwen release (docs/methods/holov.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method
from .vision_views import VisionTowerConfig, separators, tower_scores, view_budget

PRESETS = ("official", "matched")
_ALPHA = 0.09  # the release's weight of the similarity variance
_ATTENTION_SCALE = 1e3  # the release scales attention by 1000 before mixing
_EPS = 1e-6


@dataclass
class HoloVConfig(VisionTowerConfig):
    """Settings of `holov`: before the LLM, on ViT attention and the projected tokens."""

    preset: str = field(
        default="official",
        metadata={
            "help": "'official': a chunk given more than it holds keeps all of it and the excess is lost (the "
            "release's count, <= n_keep); 'matched': the excess goes to the other chunks by weight (exactly n_keep)"
        },
    )
    chunks: int | None = field(
        default=None,
        metadata={"help": "P; None = the Qwen release's max(1, int(1024/576 * L / T)) (16 at 64 of 576)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("preset", self.preset, PRESETS)
        if self.chunks is not None and (isinstance(self.chunks, bool) or not isinstance(self.chunks, int)
                                        or self.chunks < 1):
            raise ValueError(f"chunks must be an int >= 1 or None, got {self.chunks!r}")


def chunk_count(n_cells: int, n_keep: int) -> int:
    """The Qwen release's `P = max(1, int(1024/576 * L / T))`, in integers (16 at 64/576, 8 at 128, 5 at 192)."""
    return max(1, (1024 * n_cells) // (576 * n_keep))


def chunk_sizes(n_cells: int, n_chunks: int) -> list[int]:
    """`n_chunks` contiguous chunks of `floor(N/P)`, the first `N mod P` one longer; empty chunks dropped."""
    base, extra = divmod(n_cells, n_chunks)
    return [size for size in (base + (1 if chunk < extra else 0) for chunk in range(n_chunks)) if size > 0]


def chunk_score(attention: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """One chunk's score: mean of `1000 a_i + 0.09 lambda v_i`, `lambda = mean|1000 a| / (mean|v| + 1e-6)`.

    `S = cos` (`x / (|x| + 1e-6)`) with the diagonal zeroed, `mu_i = sum_j S_ij / (n-1)`, `v_i = sum_j (S_ij - mu_i)^2
    / (n-1)` over every `j`, the zeroed diagonal included (so `v_i` holds the extra `mu_i^2 / (n-1)`, as the release).
    A one-token chunk scores its raw `a`.
    """
    n = attention.numel()
    attention, features = _at_least_float32(attention), _at_least_float32(features)
    if n <= 1:
        return attention.mean()
    unit = features / (features.norm(dim=1, keepdim=True) + _EPS)
    similarity = (unit @ unit.T) * (1 - torch.eye(n, device=unit.device))
    mean = similarity.sum(dim=1) / (n - 1)
    variance = ((similarity - mean[:, None]) ** 2).sum(dim=1) / (n - 1)
    scaled = attention * _ATTENTION_SCALE
    weight = scaled.abs().mean() / (variance.abs().mean() + _EPS)
    return (scaled + _ALPHA * weight * variance).mean()


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Float32 (the release's precision) or wider: the tests' float64 loop reference compares exactly."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def allocate(scores: torch.Tensor, sizes: list[int], n_keep: int, preset: str) -> list[int]:
    """Tokens per chunk: `floor(w_c T)` with `w = score / (sum + 1e-6)`, the leftover +1 to the chunks of largest `w`
    (stable); `official` caps each chunk at its size (the excess is lost), `matched` hands the excess on to the chunks
    with room, by the same rule over their weights, until `T` are placed."""
    weights = scores.double() / (scores.double().sum() + _EPS)
    allocated = _share(weights, n_keep)
    capacity = torch.tensor(sizes, dtype=torch.long)
    if preset == "official":
        return torch.minimum(allocated, capacity).tolist()
    placed = torch.minimum(allocated, capacity)
    excess = int((allocated - placed).sum())
    while excess > 0:
        room = placed < capacity
        if not bool(room.any()):
            break
        extra = torch.zeros_like(placed)
        extra[room] = _share(weights[room], excess)
        grown = torch.minimum(placed + extra, capacity)
        gained = int((grown - placed).sum())
        if gained == 0:  # every open chunk got nothing (all weights zero): fill them in order
            order = room.nonzero().flatten()
            for chunk in order.tolist():
                take = min(excess, int(capacity[chunk] - placed[chunk]))
                placed[chunk] += take
                excess -= take
            break
        placed, excess = grown, excess - gained
    return placed.tolist()


def _share(weights: torch.Tensor, total: int) -> torch.Tensor:
    """`floor(w * total)`, the leftover +1 to the largest weights (once each, ties to the lower index)."""
    shares = (weights * total).floor().long()
    leftover = total - int(shares.sum())
    if leftover > 0:
        top = torch.argsort(weights, descending=True, stable=True)[: min(leftover, weights.numel())]
        shares[top] += 1
    return shares


def holov_keep(
    attention: torch.Tensor, features: torch.Tensor, n_keep: int, n_chunks: int, preset: str = "official"
) -> torch.Tensor:
    """Kept indices into the `N` cells (ascending): chunk, score, allocate, keep each chunk's top by attention."""
    sizes = chunk_sizes(attention.numel(), n_chunks)
    starts = [sum(sizes[:chunk]) for chunk in range(len(sizes))]
    scores = torch.stack([
        chunk_score(attention[start:start + size], features[start:start + size]) for start, size in zip(starts, sizes)
    ])
    kept = []
    for start, size, count in zip(starts, sizes, allocate(scores, sizes, n_keep, preset)):
        if count > 0:
            top = torch.argsort(attention[start:start + size].float(), descending=True, stable=True)[:count]
            kept.append(top + start)
    return sorted_keep(torch.cat(kept)) if kept else attention.new_zeros(0, dtype=torch.long)


@register_method("holov", HoloVConfig, needs=("vision_attention", "vision_cls_attention"))
def holov_select(ctx: SelectionContext, config: HoloVConfig) -> Selection:
    """`round(ratio * cells)` of the image's cells by HoloV (one run over all its cells in sequence order, as the
    release on LLaVA-NeXT); separators kept. Reads the ViT attention (`tower_scores`, "auto") and the input
    embeddings."""
    scores = tower_scores(ctx, "auto", "holov").float()
    if ctx.hidden_states is None:
        raise ValueError("holov needs the input embeddings (ctx.hidden_states), given at a before-LLM cut")
    cells = torch.isfinite(scores).nonzero().flatten()
    features = ctx.hidden_states[ctx.visual_index][cells]
    budget = view_budget(config.ratio, cells.numel())
    n_chunks = config.chunks if config.chunks is not None else chunk_count(cells.numel(), budget)
    kept = cells[holov_keep(scores[cells], features, budget, n_chunks, config.preset)]
    kept_separators = separators(ctx.n_visual, [cells], scores.device)
    return Selection(keep=sorted_keep(torch.cat([kept, kept_separators])),
                     parts={"cells": kept, "separators": kept_separators})
