"""`resprune`: text-conditioned subspace reconstruction (ResPrune, https://arxiv.org/abs/2603.21105).

ResPrune keeps the visual tokens whose span best reconstructs the whole visual token set, favouring tokens that are
relevant to the prompt. Greedy subspace expansion starts from the empty set and, at each step, keeps the token with
the largest residual energy `E(v) = ||v - P_S v||^2` (the squared norm of the part of `v` orthogonal to the span `S`
of the tokens already kept) times its text relevance raised to `alpha`.

Signal: the visual embeddings entering the LLM (post-projector) and the prompt's text embeddings. No attention
weights are read, so every attention implementation (SDPA, FlashAttention-2, eager) works. There is no public code;
this module follows the paper's description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import PruneConfig, check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method

RELEVANCE_MODES = ("all_prompt",)

# A residual whose energy is below this fraction of its token's own energy lies in the span of the kept tokens up to
# float64 rounding (the accumulated rounding of the updates is ~1e-13 of it): it counts as zero energy.
_IN_SPAN_TOLERANCE = 1e-10


@dataclass
class ResPruneConfig(PruneConfig):
    """Settings of `resprune`.

    By default it selects before the LLM (`scope="before_llm"`, `layer=0`) on the input embeddings. With
    `scope="llm"` and `layer=K` it runs on layer K's input hidden states instead (an ablation, not the paper's setup).
    """

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' (the paper's setup) or 'llm'"})
    layer: int = field(default=0, metadata={"help": "K: 0 before the LLM; >= 1 selects on layer K's input"})
    alpha: float = field(
        default=1.0,
        metadata={"help": "exponent of the relevance weight r**alpha (>= 0); 0 ignores the prompt"},
    )
    relevance: str = field(
        default="all_prompt",
        metadata={
            "help": "prompt tokens that define relevance: 'all_prompt' = every non-visual prompt token "
            "(the paper uses the embedded nouns of the prompt)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise TypeError(f"alpha must be a number >= 0, got {self.alpha!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        self.alpha = float(self.alpha)
        check_choice("relevance", self.relevance, RELEVANCE_MODES)


def prompt_relevance(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Relevance of each visual token to the prompt: its largest cosine similarity to a text token, clipped at 0.

    The maximum (not the mean) lets a token that matches one word of the prompt count as relevant even when the
    rest of the prompt is unrelated to it. Zero vectors have similarity 0 to everything.

    Args:
        visual (`Tensor [L, D]`): visual token embeddings.
        text (`Tensor [T, D]`): the prompt's text token embeddings, in the same space. With `T == 0` (no text)
            every visual token gets relevance 1, so the selection is pure reconstruction.

    Returns:
        `FloatTensor [L]` (float32) in [0, 1].
    """
    if visual.dim() != 2 or text.dim() != 2 or visual.shape[1] != text.shape[1]:
        raise ValueError(
            f"visual must be [L, D] and text [T, D] with the same D, got {tuple(visual.shape)} and {tuple(text.shape)}"
        )
    if text.shape[0] == 0:
        return torch.ones(visual.shape[0], dtype=torch.float32, device=visual.device)
    similarity = F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T  # [L, T]
    return similarity.amax(dim=1).clamp_min(0.0)


def residual_greedy(features: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy weighted subspace expansion, as a pivoted Cholesky factorisation of the Gram matrix.

    Step `j` keeps the token maximising `E(v) * weight(v)`, where `E(v)` is the energy of `v`'s residual outside the
    span of the tokens kept so far. With `G = X X^T` formed once, the coefficient of every token on the kept token's
    residual direction is `c = (G[p] - C[:j, p] C[:j]) / sqrt(E(p))` (the pivoted Cholesky column), and every
    token's energy drops by `c^2`: one step costs O(L * j) and reads no feature vector, so the whole selection is
    one O(L^2 * D) matrix product plus O(L * k^2). The loop never reads a value back to the host (the pivot stays a
    tensor), so on a GPU it queues its few kernels per step without waiting. Ties go to the lowest index.

    Computed in float64 so that tokens lying in the span (duplicates, linear combinations) are told apart from
    genuinely new directions: a residual below `1e-10` of its token's own energy counts as zero, and a zero token has
    zero energy throughout. When no remaining token has a positive weighted score (every relevant token is already
    in the span), the greedy continues on the unweighted residual energy (reconstruction alone); when every
    remaining token lies in the span, the rest are taken by weight (descending), then index (ascending). Exactly
    `k` distinct indices are always returned. Memory: the `[L, L]` Gram matrix and `[min(k, D), L]` coefficients.

    Args:
        features (`Tensor [L, D]`): token vectors.
        weight (`Tensor [L]`): non-negative per-token weight (ResPrune: relevance ** alpha).
        k (`int`): how many tokens to pick, 0 <= k <= L.

    Returns:
        `LongTensor [k]`: the picked token indices, in the order they were picked.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [L, D], got shape {tuple(features.shape)}")
    n_tokens, dim = features.shape
    if weight.shape != (n_tokens,):
        raise ValueError(f"weight must be [L] = [{n_tokens}], got shape {tuple(weight.shape)}")
    if not 0 <= k <= n_tokens:
        raise ValueError(f"k must be in [0, {n_tokens}], got {k}")
    tokens = features.to(torch.float64)  # [L, D]
    weight = weight.to(device=tokens.device, dtype=torch.float64)
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError("weight must be finite and non-negative")

    gram = tokens @ tokens.T  # [L, L]
    energy = tokens.square().sum(dim=1)  # [L]: squared norm of each token's residual
    # A NaN or infinite entry makes its token's energy non-finite: one check on [L] instead of one on [L, D]. (A
    # float64 entry beyond 1e154 would also overflow its square; no model activation comes near.)
    if not bool(torch.isfinite(energy).all()):
        raise ValueError("features contain NaN or infinite values")
    in_span_floor = energy * _IN_SPAN_TOLERANCE
    coeffs = torch.zeros(min(k, dim), n_tokens, dtype=torch.float64, device=tokens.device)  # Cholesky rows
    picked = torch.zeros(n_tokens, dtype=torch.bool, device=tokens.device)
    order = torch.empty(k, dtype=torch.long, device=tokens.device)
    for step in range(k):
        if step >= dim:  # D directions span the whole space: no residual is left, whatever the rounding says
            energy = torch.zeros_like(energy)
        energy = torch.where(energy > in_span_floor, energy, 0.0)
        pivot = _next_pick(energy, weight, picked)  # [1]: indexing with a 0-d tensor would read it to the host
        order[step : step + 1] = pivot
        picked.index_fill_(0, pivot, True)
        if step < dim:
            # A pick with no energy left (the by-weight fallback) adds no direction: its row stays zero.
            pivot_energy = energy.index_select(0, pivot)
            scale = torch.where(pivot_energy > 0, pivot_energy.rsqrt(), 0.0)
            row = (gram.index_select(0, pivot)[0] - coeffs[:step].index_select(1, pivot)[:, 0] @ coeffs[:step]) * scale
            coeffs[step] = row
            energy = (energy - row.square()).clamp_min(0.0)
    return order


def _next_pick(energy: torch.Tensor, weight: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """The next greedy pick as a `[1]` tensor, without a host read: the largest weighted energy; when none is
    positive, the largest energy; when no energy is left, the largest weight. `argmax` returns the first maximum,
    so ties go to the lowest index. Shapes: [L], [L], [L] -> [1].
    """
    scores = torch.stack((energy * weight, energy, weight)).masked_fill_(picked, -1.0)  # [3, L]
    # `argmax` then a gather, not `max(dim=1)`: the same first maximum, but torch's CPU `max(dim)` with indices takes
    # ~50 ms on this [3, L] tensor (2.13), which made the greedy loop 10x slower than its arithmetic.
    index = scores.argmax(dim=1)  # the first maximum of each row
    best = scores.gather(1, index[:, None])[:, 0]
    return torch.where(best[0] > 0, index[0], torch.where(best[1] > 0, index[1], index[2])).view(1)


@register_method("resprune", ResPruneConfig, needs=("hidden_states",))
def resprune_select(ctx: SelectionContext, config: ResPruneConfig) -> Selection:
    """Keep `ctx.n_keep` visual tokens by relevance-weighted residual energy.

    Reads `ctx.hidden_states [S, D]` (before the LLM: the input embeddings), its rows at `ctx.visual_index` (the
    visual tokens) and at `ctx.text_index` (the prompt's text tokens, which define relevance).
    """
    if ctx.hidden_states is None:
        raise ValueError("resprune needs ctx.hidden_states (declare needs=('hidden_states',)); got None")
    visual = ctx.hidden_states[ctx.visual_index]
    relevance = prompt_relevance(visual, ctx.hidden_states[ctx.text_index])
    order = residual_greedy(visual, relevance.pow(config.alpha), ctx.n_keep)
    return Selection(keep=sorted_keep(order))
