"""`uniform`: keep visual tokens at evenly spaced grid positions (spatial downsampling).

The simplest content-blind baseline: it reads nothing but the token count and, when the engine knows it, the
(rows, cols) layout of the image's tokens, and keeps a spatially even subset, like a strided subsampling of the patch
grid. Independent studies report that it beats many attention-based methods. It reads no attention, so every
attention implementation works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..config import PruneConfig
from ..context import Selection, SelectionContext
from ..registry import register_method


@dataclass
class UniformConfig(PruneConfig):
    """Settings of `uniform`: before the LLM by default (the selection does not depend on the layer)."""

    scope: str = field(default="before_llm", metadata={"help": "'before_llm' or 'llm'"})
    layer: int = field(default=0, metadata={"help": "K: 0 before the LLM; >= 1 drops the tokens from layer K on"})


def evenly_spaced(n: int, m: int) -> torch.Tensor:
    """`m` distinct indices spread evenly over `0 .. n-1`: the centres of `m` equal bins, `floor((i + 1/2) * n / m)`.

    Exact integer arithmetic, ascending, no duplicates (bins are at least one index wide). For example
    `evenly_spaced(10, 5) = [1, 3, 5, 7, 9]` and `evenly_spaced(5, 1) = [2]`.

    Args:
        n (`int`): how many positions there are.
        m (`int`): how many to keep, 0 <= m <= n.

    Returns:
        `LongTensor [m]`.
    """
    if not 0 <= m <= n:
        raise ValueError(f"cannot pick {m} of {n} positions: need 0 <= m <= n")
    return (2 * torch.arange(m) + 1) * n // (2 * m) if m else torch.empty(0, dtype=torch.long)


def grid_uniform(rows: int, cols: int, n_keep: int) -> torch.Tensor:
    """`n_keep` positions of a row-major `rows x cols` grid, spread evenly in both directions.

    Picks a sub-grid with the grid's aspect ratio and at least `n_keep` points (`evenly_spaced` rows x columns), then,
    when it has a few points too many, drops them evenly along its row-major order. When `n_keep` is a product that
    fits the aspect ratio, this is a plain strided subsampling (24 x 24 keeping 144 -> every other row and column).

    Args:
        rows (`int`), cols (`int`): the grid's shape; token `r * cols + c` sits at (r, c).
        n_keep (`int`): 0 <= n_keep <= rows * cols.

    Returns:
        `LongTensor [n_keep]`: ascending row-major positions.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must have positive rows and cols, got ({rows}, {cols})")
    if not 0 <= n_keep <= rows * cols:
        raise ValueError(f"cannot keep {n_keep} tokens of a {rows} x {cols} grid")
    if n_keep == 0:
        return torch.empty(0, dtype=torch.long)
    sub_rows = min(rows, max(1, round(rows * math.sqrt(n_keep / (rows * cols)))))
    sub_cols = min(cols, math.ceil(n_keep / sub_rows))
    sub_rows = math.ceil(n_keep / sub_cols)  # fewest rows that still hold n_keep (more when sub_cols hit cols)
    candidates = (evenly_spaced(rows, sub_rows)[:, None] * cols + evenly_spaced(cols, sub_cols)[None, :]).flatten()
    return candidates[evenly_spaced(candidates.numel(), n_keep)]


@register_method("uniform", UniformConfig)
def uniform_select(ctx: SelectionContext, config: UniformConfig) -> Selection:
    """Keep `ctx.n_keep` visual tokens evenly spread over `ctx.grid` (rows, cols), or over 0 .. L-1 without a grid."""
    if ctx.grid is None:
        keep = evenly_spaced(ctx.n_visual, ctx.n_keep)
    else:
        rows, cols = ctx.grid
        if rows * cols != ctx.n_visual:
            raise ValueError(f"ctx.grid {ctx.grid} holds {rows * cols} tokens but there are {ctx.n_visual}")
        keep = grid_uniform(rows, cols, ctx.n_keep)
    return Selection(keep=keep.to(ctx.visual_index.device))
