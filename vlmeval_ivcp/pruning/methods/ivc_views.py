"""IVC-Prune on tiled images (InternVL, DeepSeek-VL2): a global view (thumbnail) plus full-resolution local tiles.

Geometry helpers for the three tiled rules of `ivc_prune` (`tiled_rule`, docs/methods/ivc_prune.md "Tiled images"):
the tiles side by side as one grid (`local_grid`), the block of local cells under a global cell (`covered_cells`),
the IVC tokens of one view, over the whole view or per row of a multi-tile local view (`view_ivc`), and orderings by
refined relevance. `"internvl"` and `"deepseek"` follow the releases' own rules; `"ranked"` is this project's:
1. IVC tokens per view: each tile and the global view get their own cos/sin rankings (`n_ivc` each); a local view
   that spans several tiles (DeepSeek-VL2) takes them per row instead when `row_ivc_frac` is set.
2. Seeds come from the global view only (top by text relevance); the refined relevance `r` scores every token.
3. The global view keeps its IVC tokens, its seeds and its best tokens by `r`, up to half of its cells.
4. Each kept global cell maps geometrically onto the block of local cells it covers (the tiles side by side).
5. Separator tokens are always kept. The union is then trimmed (or, with `fill`, filled by `r`) to the budget in this
   order: separators, seeds, IVC by `r`, the global view's and mapped cells by `r`, then every other token by `r`.
"""

from __future__ import annotations

import math

import torch

from ..layout import ImageLayout, View
from ..rope import ivc_scores, ivc_tokens, top_n


def local_grid(layout: ImageLayout) -> torch.Tensor | None:
    """`LongTensor [R, C]`: the image-token index of every local cell, tiles placed side by side (None: no tiles)."""
    local = [view for view in layout.views if view.kind == "local"]
    if not local:
        return None
    if len(local) == 1 and local[0].tile is None:
        return local[0].cells()
    if any(view.tile is None for view in local) or layout.tiles is None:
        raise ValueError(f"local views must each name their tile and the layout its arrangement: {layout}")
    rows, cols = local[0].rows, local[0].cols
    grid = torch.full((layout.tiles[0] * rows, layout.tiles[1] * cols), -1, dtype=torch.long)
    for view in local:
        tile_row, tile_col = view.tile
        grid[tile_row * rows : (tile_row + 1) * rows, tile_col * cols : (tile_col + 1) * cols] = view.cells()
    if bool((grid < 0).any()):
        raise ValueError(f"the tiles of {layout} do not fill their {layout.tiles} arrangement")
    return grid


def covered_cells(tokens: torch.Tensor, view: View, grid: torch.Tensor) -> torch.Tensor:
    """Local cells covered by cells of the global `view` (given as image-token indices): cell (i, j) of an `h x w`
    view covers rows `[floor(i*R/h), ceil((i+1)*R/h))` and likewise columns of the `R x C` local grid."""
    rows, cols = grid.shape
    stride = view.cols + int(view.row_separator)
    blocks = []
    for token in tokens.tolist():
        i, j = divmod(token - view.offset, stride)
        top, bottom = i * rows // view.rows, math.ceil((i + 1) * rows / view.rows)
        left, right = j * cols // view.cols, math.ceil((j + 1) * cols / view.cols)
        blocks.append(grid[top:bottom, left:right].flatten())
    return torch.cat(blocks) if blocks else grid.new_empty(0)


def view_tokens(view: View) -> torch.Tensor:
    """`LongTensor [rows, cols (+1)]`: every token of the view, each row followed by its separator when it has one."""
    stride = view.cols + int(view.row_separator)
    return view.offset + torch.arange(view.rows * stride).view(view.rows, stride)


def view_ivc(
    view: View,
    positions: torch.Tensor,
    rope,
    mode: str,
    n_ivc: int,
    row_frac: float | None,
    with_separators: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """IVC tokens of one view (image-token indices): over the whole view, or per row for a multi-tile local view.

    Args:
        positions (`LongTensor [A, n_tokens]`): position ids of the image's tokens.
        n_ivc (`int`): tokens per ranking for a whole view; `row_frac` sets the count per row instead.
        with_separators (`bool`): rank the view's row separators too (DeepSeek-VL2's release ranks all 210 tokens
            of the global view and every local row with its separator; a separator chosen so is kept anyway).
        dtype: `ivc_scores`' precision (`None`: float64 angles, float32 scores).
    """
    # Built on the CPU: indexing them with the rankings of positions on a GPU would raise.
    cells = (view_tokens(view) if with_separators else view.cells()).to(positions.device)
    per_row = view.kind == "local" and view.tile is None and row_frac is not None
    groups = list(cells) if per_row else [cells.flatten()]
    chosen = []
    for group in groups:
        c, s = ivc_scores(positions[:, group], rope, mode, dtype=dtype)
        count = round(row_frac * group.numel()) if per_row else min(n_ivc, group.numel())
        chosen.append(group[ivc_tokens(c, s, count)])
    return torch.cat(chosen)


def by_score(tokens: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """`tokens` in descending `r` (ties: lower index first)."""
    # top_n breaks ties by place in its input: sort first so that the place is the index, whatever order came in.
    tokens = tokens.sort().values
    return tokens[top_n(r[tokens], tokens.numel())]


def first_occurrences(order: torch.Tensor) -> torch.Tensor:
    """`order` without repeats, each token at its first place."""
    seen: set[int] = set()
    kept = [token for token in order.tolist() if not (token in seen or seen.add(token))]
    return torch.tensor(kept, dtype=torch.long, device=order.device)
