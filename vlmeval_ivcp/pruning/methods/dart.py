"""`dart`: keep the visual tokens least duplicated by a few pivots (DART, https://arxiv.org/abs/2502.11494).

DART argues that duplication matters more than importance. At layer K it picks pivot tokens by the L1 norm of their
keys in layer K-1 (4 visual pivots, 4 pivots among the tokens after the image), then lets each pivot in turn claim
the visual tokens least similar to it (cosine of the hidden states entering layer K, passed through the decoder's
final norm). The kept set is the visual pivots plus every claimed token. No attention map is read, so SDPA and
FlashAttention-2 stay on. Rule followed: LightCompress `llmc/compression/token_reduction/dart.py`,
`get_retained_image_token` (the release's `DART.get_retained_image_token` for LLaVA and Qwen2.5-VL is the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import PruneConfig, check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method
from .fastv import require_llm_scope

PRESETS = ("official", "matched")
PIVOT_ORDERS = ("official", "ascending")


@dataclass
class DARTConfig(PruneConfig):
    """Settings of `dart` (the release's defaults: K = 2, 4 visual and 4 text pivots, layers before K keep every
    token in their cache)."""

    layer: int = field(default=2, metadata={"help": "K: first layer that runs pruned; layer K-1's keys pick pivots"})
    cache_policy: str = field(
        default="after",
        metadata={"help": "'after' (the release: layers before K keep every token in their KV cache) or 'all'"},
    )
    preset: str = field(
        default="official",
        metadata={
            "help": "'official': every pivot claims n_keep // 8 tokens, so 4 + 8 * (n_keep // 8) are kept (the "
            "release's count); 'matched': exactly n_keep (the first (n_keep - 4) % 8 pivots claim one more)"
        },
    )
    pivot_order: str = field(
        default="official",
        metadata={
            "help": "order in which pivots claim tokens: 'official' = the release's iteration of a Python set of "
            "their sequence positions; 'ascending' = by sequence position"
        },
    )
    image_pivots: int = field(default=4, metadata={"help": "visual pivots (kept), by key L1 norm"})
    text_pivots: int = field(default=4, metadata={"help": "pivots among the tokens after the image (not kept)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require_llm_scope(self.scope, "dart")
        check_choice("preset", self.preset, PRESETS)
        check_choice("pivot_order", self.pivot_order, PIVOT_ORDERS)
        for name in ("image_pivots", "text_pivots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.image_pivots + self.text_pivots == 0:
            raise ValueError("dart needs at least one pivot")


def claims_per_pivot(n_keep: int, n_image_pivots: int, n_pivots: int, preset: str) -> list[int]:
    """How many tokens each pivot claims, in claiming order.

    `official`: every pivot claims `n_keep // (image_pivots + text_pivots)` (the release: `TOKEN_TOPK`, with the
    configured pivot counts), whatever the pivots found; `matched`: the `n_keep - n_image_pivots` tokens left after
    the visual pivots are shared out, the first pivots taking one more.
    """
    if n_pivots == 0:
        return []
    if preset == "official":
        return [n_keep // n_pivots] * n_pivots
    left = max(0, n_keep - n_image_pivots)
    return [left // n_pivots + (1 if index < left % n_pivots else 0) for index in range(n_pivots)]


def claiming_order(positions: list[int], pivot_order: str) -> list[int]:
    """The pivots' sequence positions in the order they claim tokens.

    The release iterates `list(set(positions))`: CPython's order for a set of small ints (slot = value modulo the
    table size, with its probing), reproduced here by doing the same thing; `ascending` sorts them.
    """
    return sorted(positions) if pivot_order == "ascending" else list(set(positions))


@register_method("dart", DARTConfig, needs=("attention", "normed_hidden_states"))
def dart_select(ctx: SelectionContext, config: DARTConfig) -> Selection:
    """Visual pivots by key L1 norm, then each pivot claims the candidates least similar to it.

    Reads `ctx.keys [H, S, d]` (layer K-1, RoPE applied; grouped heads expanded, which scales every L1 norm by the
    group size and so ranks the same) and `ctx.normed_hidden_states [S, D]`. Text pivots come from
    `ctx.query_index` (every token after the last image: question and chat-template tail). Ties (equal norms or
    cosines) go to the lower index. Parts: `pivots` (the visual pivots).
    """
    if ctx.keys is None or ctx.normed_hidden_states is None:
        raise ValueError("dart needs ctx.keys and ctx.normed_hidden_states (declare them in needs); got None")
    device = ctx.normed_hidden_states.device
    visual_index, query_index = ctx.visual_index.to(device), ctx.query_index.to(device)
    key_l1 = ctx.keys.float().abs().sum(dim=(0, 2)).to(device)  # [S]
    n_image = min(config.image_pivots, ctx.n_visual)
    if config.preset == "matched":
        n_image = min(n_image, ctx.n_keep)
    image_pivots = _top(key_l1[visual_index], n_image)  # indices into the visual tokens
    text_pivots = query_index[_top(key_l1[query_index], min(config.text_pivots, query_index.numel()))]
    pivot_positions = [int(p) for p in visual_index[image_pivots]] + [int(p) for p in text_pivots]
    # The release divides by the configured pivot count; a matched budget is shared among the pivots found.
    n_pivots = config.image_pivots + config.text_pivots if config.preset == "official" else len(pivot_positions)
    claims = claims_per_pivot(ctx.n_keep, n_image, n_pivots, config.preset)

    unit = F.normalize(ctx.normed_hidden_states.float(), dim=-1)  # [S, D]
    # The release's set order depends on the positions' values: count them from the row's first real token, as in
    # the unpadded prompt it saw, so that a left-padded row of a batch claims as it would alone.
    start = int(ctx.key_mask.to(torch.int8).argmax())
    order = [start + p for p in claiming_order([p - start for p in pivot_positions], config.pivot_order)]
    similarity = unit[torch.tensor(order, device=device)] @ unit[visual_index].T  # [pivots, L]
    candidate = torch.ones(ctx.n_visual, dtype=torch.bool, device=device)
    candidate[image_pivots] = False
    kept = [image_pivots]
    for row, count in zip(similarity, claims[: len(order)], strict=True):
        ranked = torch.sort(row.masked_fill(~candidate, float("inf")), stable=True).indices
        claimed = ranked[: min(count, int(candidate.sum()))]
        candidate[claimed] = False
        kept.append(claimed)
    return Selection(keep=sorted_keep(torch.cat(kept)), parts={"pivots": sorted_keep(image_pivots)})


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest scores, ties to the lower index."""
    return torch.sort(scores, descending=True, stable=True).indices[:count]
