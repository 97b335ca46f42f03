"""How one image's visual tokens are laid out: the views the vision tower encoded and the separator tokens.

Data only, shared by the model adapters (which know their tiling) and the methods (which may use the geometry, e.g.
IVC-Prune's InternVL and DeepSeek-VL2 rules). Indices count the image's own visual tokens, 0 .. n_tokens-1.

Examples (the tiling of each family):
- Qwen2.5-VL, LLaVA-1.5: one `global` view, `rows x cols`, no separators.
- InternVL (dynamic tiles + thumbnail, 256 tokens each): one `local` view per tile in raster order, each 16 x 16 with
  its `tile` (row, col) in the `tiles` arrangement, then the `global` thumbnail view (absent for a single tile).
- DeepSeek-VL2: the `global` view 14 x 14 with a separator after each row, one view-separator token, then one
  `local` view of `(th*14) x (tw*14)` cells (all tiles side by side) with a separator after each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VIEW_KINDS = ("global", "local")


@dataclass(frozen=True)
class View:
    """One encoded picture among an image's visual tokens.

    Args:
        offset (`int`): index of the view's first token within the image's tokens.
        rows, cols (`int`): its grid of cells (tokens that carry patch features).
        row_separator (`bool`): one extra structural token follows each row (LLaVA-NeXT's and DeepSeek-VL2's
            newline embedding); the view then spans `rows * (cols + 1)` tokens.
        kind (`str`): `"global"` (the whole image at low resolution: a thumbnail or global view) or `"local"`
            (full-resolution tiles).
        tile (`tuple[int, int]` or `None`): (row, col) of this view in the image's tile arrangement, for a `local`
            view that is a single tile; `None` for a view that covers the whole arrangement.
    """

    offset: int
    rows: int
    cols: int
    row_separator: bool = False
    kind: str = "global"
    tile: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"View.kind must be one of {VIEW_KINDS}, got {self.kind!r}")
        if self.offset < 0 or self.rows < 1 or self.cols < 1:
            raise ValueError(f"a View needs offset >= 0 and a grid of at least 1 x 1, got {self}")

    @property
    def n_tokens(self) -> int:
        return self.rows * (self.cols + int(self.row_separator))

    def cells(self) -> torch.Tensor:
        """`LongTensor [rows, cols]`: the image-token index of each grid cell (separators excluded)."""
        stride = self.cols + int(self.row_separator)
        return self.offset + torch.arange(self.rows).unsqueeze(1) * stride + torch.arange(self.cols)


@dataclass(frozen=True)
class ImageLayout:
    """All views of one image, in token order; tokens in no view's cells are structural separators.

    Args:
        n_tokens (`int`): the image's visual tokens (its span in the prompt).
        views (`tuple[View, ...]`): non-overlapping, inside `[0, n_tokens)`.
        tiles (`tuple[int, int]` or `None`): (rows, cols) arrangement of the local tiles, when there are any.
    """

    n_tokens: int
    views: tuple[View, ...]
    tiles: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        covered = torch.zeros(self.n_tokens, dtype=torch.int)
        for view in self.views:
            if view.offset + view.n_tokens > self.n_tokens:
                raise ValueError(f"{view} ends past the image's {self.n_tokens} tokens")
            covered[view.offset : view.offset + view.n_tokens] += 1
        if bool((covered > 1).any()):
            raise ValueError(f"the views of an ImageLayout overlap: {self.views}")

    @classmethod
    def grid(cls, rows: int, cols: int) -> ImageLayout:
        """A single `rows x cols` view and nothing else (Qwen2.5-VL, LLaVA-1.5)."""
        return cls(n_tokens=rows * cols, views=(View(0, rows, cols),))

    def view_grid(self) -> tuple[int, int] | None:
        """(rows, cols) when the image is exactly one grid without separators, else `None`."""
        if len(self.views) == 1 and not self.views[0].row_separator and self.views[0].n_tokens == self.n_tokens:
            return self.views[0].rows, self.views[0].cols
        return None

    def separators(self) -> torch.Tensor:
        """`LongTensor`: the structural tokens (in no view's cells), ascending."""
        is_cell = torch.zeros(self.n_tokens, dtype=torch.bool)
        for view in self.views:
            is_cell[view.cells().flatten()] = True
        return (~is_cell).nonzero().flatten()
