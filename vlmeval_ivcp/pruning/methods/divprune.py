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

# Size of the [rows, L] distance block formed at once while looking for the first pick (64 MiB of float32).
_DISTANCE_BLOCK_ELEMENTS = 1 << 24


@dataclass
class DivPruneConfig(PruneConfig):
    """Settings of `divprune`: before the LLM by default; `scope="llm"` runs it on layer K's input (an ablation)."""

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' (the paper's setup) or 'llm'"})
    layer: int = field(default=0, metadata={"help": "K: 0 before the LLM; >= 1 selects on layer K's input"})


def farthest_point_order(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min diversity on cosine distance `1 - cos(u, v)`.

    The first pick is the most isolated token (the one whose nearest other token is farthest), as in the paper's
    code; every later pick maximises the distance to its nearest kept token. Ties go to the lowest index. Runs in
    float32 in O(L^2 * D) for the first pick (in blocks, never the whole [L, L] matrix) and O(L * k * D) after it.
    A zero vector has cosine similarity 0 to everything, i.e. distance 1 (it is treated as orthogonal to every
    token), so it never produces NaN.

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
    picked = torch.zeros(n_tokens, dtype=torch.bool, device=features.device)
    distance_to_kept = _nearest_neighbour_distance(unit)  # before any pick: distance to the nearest other token
    for step in range(k):
        # Kept tokens are excluded explicitly: a duplicate of a kept token also has distance 0 and may tie with them.
        pivot = int(torch.where(picked, -1.0, distance_to_kept).argmax())
        order[step] = pivot
        picked[pivot] = True
        distance_to_pivot = (1.0 - unit @ unit[pivot]).clamp_min(0.0)  # [L]
        distance_to_kept = distance_to_pivot if step == 0 else torch.minimum(distance_to_kept, distance_to_pivot)
    return order


def _nearest_neighbour_distance(unit: torch.Tensor) -> torch.Tensor:
    """Cosine distance of each token to its nearest other token (inf for a single token). [L, D] -> [L]."""
    n_tokens = unit.shape[0]
    block_rows = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n_tokens, 1))
    nearest = torch.empty(n_tokens, dtype=unit.dtype, device=unit.device)
    for start in range(0, n_tokens, block_rows):
        rows = torch.arange(start, min(start + block_rows, n_tokens), device=unit.device)
        distance = (1.0 - unit[rows] @ unit.T).clamp_min(0.0)  # [rows, L]
        distance[torch.arange(rows.numel(), device=unit.device), rows] = float("inf")  # not one's own neighbour
        nearest[rows] = distance.amin(dim=1)
    return nearest


@register_method("divprune", DivPruneConfig, needs=("hidden_states",))
def divprune_select(ctx: SelectionContext, config: DivPruneConfig) -> Selection:
    """Keep `ctx.n_keep` visual tokens (rows `ctx.visual_index` of `ctx.hidden_states [S, D]`) by max-min diversity."""
    if ctx.hidden_states is None:
        raise ValueError("divprune needs ctx.hidden_states (declare needs=('hidden_states',)); got None")
    order = farthest_point_order(ctx.hidden_states[ctx.visual_index], ctx.n_keep)
    return Selection(keep=sorted_keep(order))
