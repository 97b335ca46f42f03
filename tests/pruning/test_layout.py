"""Image layouts and the per-image split of a prompt's visual tokens (pure bookkeeping, no model)."""

from __future__ import annotations

import pytest
import torch

from vlmeval_ivcp.pruning.images import check_layouts, image_ordinals, layouts_from_positions, split_layouts
from vlmeval_ivcp.pruning.layout import ImageLayout, View


def deepseek_like(th: int = 1, tw: int = 2, side: int = 2) -> ImageLayout:
    """A global view with row separators, one view separator, then the local tiles side by side."""
    global_view = View(0, side, side, row_separator=True)
    local = View(global_view.n_tokens + 1, th * side, tw * side, row_separator=True, kind="local")
    return ImageLayout(global_view.n_tokens + 1 + local.n_tokens, (global_view, local), tiles=(th, tw))


def test_cells_skip_the_row_separators():
    view = View(3, 2, 2, row_separator=True)
    assert view.n_tokens == 6
    assert view.cells().tolist() == [[3, 4], [6, 7]]


def test_separators_are_the_tokens_in_no_view():
    layout = deepseek_like()
    # global: cells 0,1,3,4 (separators 2,5); view separator 6; local 2x4 from 7 with a separator after each row.
    assert layout.separators().tolist() == [2, 5, 6, 11, 16]
    assert layout.n_tokens == 17
    assert layout.view_grid() is None
    assert ImageLayout.grid(3, 4).view_grid() == (3, 4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: View(0, 2, 2, kind="thumbnail"), "kind"),
        (lambda: View(0, 0, 2), "1 x 1"),
        (lambda: ImageLayout(3, (View(0, 2, 2),)), "ends past"),
        (lambda: ImageLayout(8, (View(0, 2, 2), View(2, 2, 2))), "overlap"),
    ],
)
def test_bad_layouts_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_images_are_the_runs_of_image_tokens_without_layouts():
    visual = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    assert image_ordinals(visual, None).tolist() == [-1, 0, 0, -1, -1, 1, 1, 1, -1]


def test_layouts_split_adjacent_images():
    visual = torch.tensor([0, 1, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    ordinal = image_ordinals(visual, [ImageLayout.grid(1, 2), ImageLayout.grid(2, 2)])
    assert ordinal.tolist() == [-1, 0, 0, 1, 1, 1, 1, -1]


def test_a_batch_of_layouts_is_shared_out_by_token_counts():
    a, b, c = ImageLayout.grid(2, 2), ImageLayout.grid(1, 3), ImageLayout.grid(2, 3)
    assert split_layouts([a, b, c], [7, 6]) == [[a, b], [c]]
    with pytest.raises(ValueError, match="prompt 1 of the batch, which has 5 image tokens"):
        split_layouts([a, b, c], [7, 5])
    with pytest.raises(ValueError, match="left over"):
        split_layouts([a, b, c], [4, 3])
    with pytest.raises(ValueError, match="prompt 0 cover 4 tokens, but it has 5"):
        check_layouts([[a]], [5])
    with pytest.raises(ValueError, match="for 1 prompts, but the batch has 2"):
        check_layouts([[a]], [4, 4])


def test_grids_are_read_from_mrope_positions_per_image():
    # text 0..1, image 0 (2x3 at t=2), text, image 1 (2x2 at t=6)
    t = [0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 6, 6, 6]
    h = [0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 6, 7, 7]
    w = [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 6, 7]
    visual = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    layouts = layouts_from_positions(torch.tensor([t, h, w]), image_ordinals(visual, None))
    assert [layout.view_grid() for layout in layouts] == [(2, 3), (2, 2)]
