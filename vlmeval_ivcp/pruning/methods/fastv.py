"""`fastv`: keep the visual tokens the last prompt token attends to most (FastV, https://arxiv.org/abs/2403.06764).

FastV ranks the visual tokens by the attention the last prompt token pays them in layer K-1, averaged over heads,
and drops the rest from layer K on. The scores are recomputed from that layer's query and keys (`softmax(q.k)` for
the one query), so the model keeps running SDPA or FlashAttention-2: no eager attention is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import PruneConfig
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method


@dataclass
class FastVConfig(PruneConfig):
    """Settings of `fastv` (the paper's defaults: K = 2, half of the visual tokens kept)."""

    layer: int = field(default=2, metadata={"help": "K: first layer that runs pruned; layer K-1's attention ranks"})
    cache_policy: str = field(
        default="after",
        metadata={"help": "'after' (FastV: layers before K keep every token in their KV cache) or 'all'"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_llm_scope(self.scope, "fastv")


def require_llm_scope(scope: str, method: str) -> None:
    """Attention-scored methods read the LLM's attention, which does not exist before the LLM."""
    if scope != "llm":
        raise ValueError(f"{method} scores with the LLM's attention: scope must be 'llm', got {scope!r}")


def last_query_attention(
    queries: torch.Tensor, keys: torch.Tensor, scaling: float, key_mask: torch.Tensor
) -> torch.Tensor:
    """Attention of one query over every non-padding key, per head.

    The query is the last prompt token's, which attends to every earlier token, so no causal mask is needed.
    Computed in float32.

    Args:
        queries (`Tensor [H, 1, d]`): the RoPE-rotated query of the last prompt token.
        keys (`Tensor [H, S, d]`): the RoPE-rotated keys (grouped-query heads expanded).
        scaling (`float`): the softmax scale of the attention (usually `d ** -0.5`).
        key_mask (`BoolTensor [S]`): True for real tokens, False for padding (which gets zero attention).

    Returns:
        `FloatTensor [H, S]`: each row sums to 1 over the real tokens.
    """
    if queries.dim() != 3 or queries.shape[1] != 1:
        raise ValueError(f"queries must be [H, 1, d], got shape {tuple(queries.shape)}")
    if keys.dim() != 3 or keys.shape[0] != queries.shape[0] or keys.shape[2] != queries.shape[2]:
        raise ValueError(f"keys must be [H, S, d] matching queries {tuple(queries.shape)}, got {tuple(keys.shape)}")
    if key_mask.shape != (keys.shape[1],) or key_mask.dtype != torch.bool:
        raise ValueError(
            f"key_mask must be a bool [S] = [{keys.shape[1]}], got {key_mask.dtype} {tuple(key_mask.shape)}"
        )
    if not bool(key_mask.any()):
        raise ValueError("key_mask masks every key: there is nothing to attend to")
    logits = (queries.float() @ keys.float().transpose(1, 2)).squeeze(1) * scaling  # [H, S]
    logits = logits.masked_fill(~key_mask.to(logits.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def keep_most_attended(ctx: SelectionContext) -> Selection:
    """Keep the `ctx.n_keep` visual tokens with the largest head-mean attention from the last prompt token.

    Reads `ctx.queries`, `ctx.keys`, `ctx.scaling` and `ctx.key_mask` (the engine fills them for methods that
    declare `needs=("attention",)` or `("cut_attention",)`). Equal scores go to the lower index. Shared by `fastv`
    and `pdrop`.
    """
    if ctx.queries is None or ctx.keys is None or ctx.scaling is None:
        raise ValueError("attention-scored selection needs ctx.queries, ctx.keys and ctx.scaling; got None")
    attention = last_query_attention(ctx.queries, ctx.keys, ctx.scaling, ctx.key_mask).mean(dim=0)  # [S]
    visual_scores = attention[ctx.visual_index.to(attention.device)]  # [L]
    ranked = torch.sort(visual_scores, descending=True, stable=True).indices
    return Selection(keep=sorted_keep(ranked[: ctx.n_keep]))


@register_method("fastv", FastVConfig, needs=("attention",))
def fastv_select(ctx: SelectionContext, config: FastVConfig) -> Selection:
    """FastV's single cut at layer K: see `keep_most_attended`."""
    return keep_most_attended(ctx)
