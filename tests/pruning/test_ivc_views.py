"""IVC-Prune's rule for tiled images (InternVL tiles + thumbnail, DeepSeek-VL2 global + local views), no model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.layout import ImageLayout, View
from vlmeval_ivcp.pruning.methods.ivc_prune import IVCPruneConfig, ivc_prune, official_config
from vlmeval_ivcp.pruning.methods.ivc_views import by_score, covered_cells, local_grid, view_ivc


def internvl_like(side: int = 4) -> ImageLayout:
    """2x2 tiles of side x side cells in raster order, then the thumbnail."""
    n = side * side
    tiles = tuple(View(index * n, side, side, kind="local", tile=divmod(index, 2)) for index in range(4))
    return ImageLayout(5 * n, tiles + (View(4 * n, side, side),), tiles=(2, 2))


def deepseek_like(side: int = 4, tiles=(1, 2)) -> ImageLayout:
    global_view = View(0, side, side, row_separator=True)
    local = View(global_view.n_tokens + 1, tiles[0] * side, tiles[1] * side, row_separator=True, kind="local")
    return ImageLayout(global_view.n_tokens + 1 + local.n_tokens, (global_view, local), tiles=tiles)


def _context(layout: ImageLayout, n_keep: int, seed: int = 0):
    """The image after a 3-token prefix, then 4 text tokens; random value vectors."""
    seq = 3 + layout.n_tokens + 4
    values = torch.randn(2, seq, 8, generator=torch.Generator().manual_seed(seed))
    visual = torch.arange(3, 3 + layout.n_tokens)
    text = torch.cat([torch.arange(3), torch.arange(3 + layout.n_tokens, seq)])
    return make_context(
        seq, visual, n_keep, text_index=text.tolist(), query_index=text[3:], values=values, layout=layout
    )


def test_tiles_are_placed_side_by_side():
    grid = local_grid(internvl_like(side=2))
    assert grid.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert local_grid(ImageLayout.grid(2, 2)) is None
    deepseek = local_grid(deepseek_like(side=2))  # global 2x3 tokens, separator, local 2x(4+1)
    assert deepseek.tolist() == [[7, 8, 9, 10], [12, 13, 14, 15]]


def test_a_global_cell_covers_its_block_of_local_cells():
    layout = internvl_like(side=2)
    thumbnail = layout.views[-1]
    # thumbnail cell (0, 1) is token 16 + 1 and covers rows 0-1, columns 2-3 of the 4x4 tile grid
    assert sorted(covered_cells(torch.tensor([17]), thumbnail, local_grid(layout)).tolist()) == [4, 5, 6, 7]
    deepseek = deepseek_like(side=2, tiles=(1, 2))
    # global cell (1, 0) (token 3: after row 0's separator) covers local row 1, columns 0-1
    assert covered_cells(torch.tensor([3]), deepseek.views[0], local_grid(deepseek)).tolist() == [12, 13]


def test_ivc_per_row_of_a_multi_tile_local_view():
    view = deepseek_like(side=4, tiles=(1, 2)).views[1]  # 4 rows of 8 cells
    positions = torch.arange(100)[None]
    chosen = view_ivc(view, positions, make_context(2, [0], 1).rope, "axis_mean", n_ivc=5, row_frac=0.25)
    rows = (chosen - view.offset) // (view.cols + 1)
    per_row = torch.bincount(rows, minlength=4)
    assert ((per_row >= 2) & (per_row <= 4)).all(), "cos ∪ sin, 25% of 8 = 2 each, in every row"
    whole = view_ivc(view, positions, make_context(2, [0], 1).rope, "axis_mean", n_ivc=5, row_frac=None)
    assert 5 <= whole.numel() <= 10


def test_internvl_rule_fills_to_the_budget_and_maps_the_thumbnail():
    layout = internvl_like(side=4)
    ctx = _context(layout, n_keep=40)
    selection = ivc_prune(ctx, IVCPruneConfig(layer=2, n_ivc=2, n_seed=1))
    assert selection.keep.numel() == 40
    parts = selection.parts
    assert set(parts) == {"ivc", "seeds", "separators", "mapped", "foreground"}
    assert parts["separators"].numel() == 0
    assert torch.isin(parts["seeds"], layout.views[-1].cells().flatten()).all(), "seeds come from the thumbnail"
    assert parts["mapped"].numel() > 0 and (parts["mapped"] < 64).all(), "mapped cells lie on the tiles"


def test_ranked_rule_on_deepseek_keeps_the_separators_and_the_structure_only():
    layout = deepseek_like(side=4, tiles=(1, 2))
    ctx = _context(layout, n_keep=layout.n_tokens)
    config = official_config("deepseek_vl2_small", layer=2, n_ivc=2, tiled_rule="ranked", text_offset=2)
    selection = ivc_prune(ctx, config)
    separators = layout.separators()
    assert torch.isin(separators, selection.keep).all()
    global_cells = layout.views[0].cells().flatten()
    kept_global = torch.isin(global_cells, selection.keep).sum()
    assert kept_global == 8, "the global view keeps half of its 16 cells"
    assert torch.isin(selection.parts["foreground"], global_cells).all(), "no fill: only the global view's best by r"
    assert selection.keep.numel() < layout.n_tokens
    # a smaller budget trims in order: separators first
    small = ivc_prune(_context(layout, n_keep=separators.numel() + 3), config)
    assert small.keep.numel() == separators.numel() + 3 and torch.isin(separators, small.keep).all()


def test_a_layout_without_a_global_view_is_refused():
    tiles = tuple(View(index * 4, 2, 2, kind="local", tile=(0, index)) for index in range(2))
    layout = ImageLayout(8, tiles, tiles=(1, 2))
    with pytest.raises(ValueError, match="needs a global view"):
        ivc_prune(_context(layout, n_keep=4), IVCPruneConfig(layer=2))


def test_by_score_breaks_ties_by_lower_index_whatever_the_input_order():
    r = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.9, 0.0])
    # 5 and 2 tie, as do 3 and 1: the lower index ranks first even when the input lists it later.
    assert by_score(torch.tensor([5, 3, 6, 2, 1]), r).tolist() == [6, 2, 5, 1, 3]


def test_tiled_rule_trims_tied_cells_by_lower_index():
    # Equal value vectors: every relevance score ties, so each step of the trimming order takes the lowest indices.
    layout = internvl_like(side=4)
    ctx = _context(layout, n_keep=20)
    ctx = replace(ctx, values=torch.ones_like(ctx.values))
    selection = ivc_prune(ctx, IVCPruneConfig(layer=2, n_ivc=0, n_seed=1))
    assert selection.parts["seeds"].tolist() == [64]  # the thumbnail's first cell
    # Then the thumbnail's kept cells and the tile cells under them, by index: tile cells come first.
    assert selection.keep.tolist() == list(range(19)) + [64]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tiled_rule_runs_with_its_inputs_on_the_gpu():
    ctx = _context(internvl_like(side=4), n_keep=40)
    on_gpu = {name: getattr(ctx, name).cuda() for name in ("visual_index", "query_index", "text_index", "key_mask")}
    ctx = replace(ctx, values=ctx.values.cuda(), position_ids=ctx.position_ids.cuda(), **on_gpu)
    selection = ivc_prune(ctx, IVCPruneConfig(layer=2, n_ivc=2, n_seed=1))
    assert selection.keep.numel() == 40 and selection.keep.is_cuda
