"""`divprune`: keep a maximally diverse subset of the visual tokens (DivPrune, https://arxiv.org/abs/2503.02175).

DivPrune casts pruning as a max-min diversity problem: choose the subset whose smallest pairwise cosine distance is
largest. It solves it greedily, farthest point first: each step keeps the token whose cosine distance to its nearest
already-kept token is largest. It runs on the visual embeddings entering the LLM and reads no attention, so every
attention implementation (FlashAttention included) works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import PruneConfig
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method

@dataclass
class DivPruneConfig(PruneConfig):
    """Settings of `divprune`: before the LLM by default; `scope="llm"` runs it on layer K's input (an ablation)."""

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' (the paper's setup) or 'llm'"})
    layer: int = field(default=0, metadata={"help": "K: 0 before the LLM; >= 1 selects on layer K's input"})


def farthest_point_order(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min diversity on cosine distance `1 - cos(u, v)`.

    The first pick is the most isolated token (the one whose nearest other token is farthest), as in the paper's
    code; every later pick maximises the distance to its nearest kept token. Ties go to the lowest index. As in the
    release, the whole `[L, L]` distance matrix is formed once (float32, one matrix product, O(L^2 * D); 1 GiB at
    L = 16,384); each step then costs O(L) and never reads a value back to the host (the pick stays a tensor), so on
    a GPU the steps queue without waiting. A zero vector has cosine similarity 0 to everything, i.e. distance 1 (it
    is treated as orthogonal to every token), so it never produces NaN.

    Args:
        features (`Tensor [L, D]`): token vectors.
        k (`int`): how many tokens to pick, 0 <= k <= L.

    Returns:
        `LongTensor [k]`: the picked token indices, in the order they were picked.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [L, D], got shape {tuple(features.shape)}")
    n_tokens = features.shape[0]
    if not 0 <= k <= n_tokens:
        raise ValueError(f"k must be in [0, {n_tokens}], got {k}")
    order = torch.empty(k, dtype=torch.long, device=features.device)
    if k == 0:
        return order
    unit = F.normalize(features.float(), dim=-1)  # [L, D]; zero rows stay zero
    distance = (1.0 - unit @ unit.T).clamp_min_(0.0)  # [L, L]
    # Not one's own neighbour; a kept token's own entry is never read again (kept tokens are masked below).
    distance.diagonal().fill_(float("inf"))
    picked = torch.zeros(n_tokens, dtype=torch.bool, device=features.device)
    distance_to_kept = distance.amin(dim=1)  # before any pick: distance to the nearest other token
    for step in range(k):
        # Kept tokens are excluded explicitly: a duplicate of a kept token also has distance 0 and may tie with them.
        # The pick stays a [1] tensor: indexing with a 0-d tensor would read it back to the host.
        pivot = torch.where(picked, -1.0, distance_to_kept).argmax().view(1)
        order[step : step + 1] = pivot
        picked.index_fill_(0, pivot, True)
        to_pivot = distance.index_select(0, pivot)[0]
        distance_to_kept = to_pivot if step == 0 else torch.minimum(distance_to_kept, to_pivot)
    return order


@register_method("divprune", DivPruneConfig, needs=("hidden_states",))
def divprune_select(ctx: SelectionContext, config: DivPruneConfig) -> Selection:
    """Keep `ctx.n_keep` visual tokens (rows `ctx.visual_index` of `ctx.hidden_states [S, D]`) by max-min diversity."""
    if ctx.hidden_states is None:
        raise ValueError("divprune needs ctx.hidden_states (declare needs=('hidden_states',)); got None")
    order = farthest_point_order(ctx.hidden_states[ctx.visual_index], ctx.n_keep)
    return Selection(keep=sorted_keep(order))
