"""Pictures of a selection: on every family's tiny model, every kept cell is tinted over the part of the picture it
encodes and every dropped cell shows the picture untouched."""

from __future__ import annotations

import pytest
from PIL import Image
from support.tiny import FAMILIES, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.visualize import KEPT_COLOR, PAD_COLOR, PART_COLORS, draw_selection

ALPHA = 0.55
QUADRANTS = ((200, 30, 30), (30, 160, 40), (40, 60, 200), (230, 200, 40))  # top-left, top-right, bottom-left, ...
# A square picture per family that gives an even grid in every view (tiles for InternVL and DeepSeek-VL2).
SIZES = {"qwen2_5_vl": 112, "qwen2_vl": 112, "qwen3_vl": 128, "llava": 112, "llava_next": 112, "llava_onevision": 112,
         "internvl": 224, "deepseek_vl2": 112}


def quadrants(width: int, height: int, colors=QUADRANTS) -> Image.Image:
    image = Image.new("RGB", (width, height))
    for index, color in enumerate(colors):
        row, col = divmod(index, 2)
        box = (col * width // 2, row * height // 2, (col + 1) * width // 2, (row + 1) * height // 2)
        image.paste(color, box)
    return image


def tinted(color, tint):
    return tuple(round(c * (1 - ALPHA) + t * ALPHA) for c, t in zip(color, tint))


def close(a, b, tolerance=2):
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def select(wrapper, pictures, method="random", **options):
    """The engine's record of one pruned prefill over `pictures` in one prompt."""
    inputs = wrapper.encode([wrapper.chat_prompt(len(pictures), "Where is the red part?")], pictures)
    layouts = inputs.pop("image_layouts", None)
    with prune(wrapper.model, method, **options) as pruner:
        pruner.set_image_layouts(layouts)
        wrapper.model(**inputs)
        return pruner.last


def source_quadrant(view, layout, row, col):
    """Which quadrant of a square picture cell (row, col) of `view` encodes, from the layout alone; `None` for a cell
    that straddles the middle."""
    rows, cols = view.rows, view.cols
    if view.tile is not None:  # a tile: its place in the arrangement
        tiles_rows, tiles_cols = layout.tiles
        row, col = view.tile[0] * rows + row, view.tile[1] * cols + col
        rows, cols = rows * tiles_rows, cols * tiles_cols
    if (rows % 2 and row == rows // 2) or (cols % 2 and col == cols // 2):
        return None
    return 2 * (2 * row // rows) + 2 * col // cols


def check_cells(drawn, record, layouts, pictures_colors, colors_of=lambda token: KEPT_COLOR):
    """Every cell's centre: its source colour, tinted if kept. Returns the number of (kept, dropped) cells seen."""
    kept = set(record.kept[0].tolist())
    seen = [0, 0]
    offset = 0
    for layout, colors in zip(layouts, pictures_colors):
        for view in layout.views:
            for index, token in enumerate(view.cells().flatten().tolist()):
                quadrant = source_quadrant(view, layout, *divmod(index, view.cols))
                if quadrant is None:
                    continue
                x0, y0, x1, y1 = drawn.info["cells"][offset + token]
                pixel = drawn.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
                source = colors[quadrant]
                if offset + token in kept:
                    assert close(pixel, tinted(source, colors_of(offset + token))), (view, index, pixel)
                    seen[0] += 1
                else:
                    assert pixel == source, (view, index, pixel, source)
                    seen[1] += 1
        offset += layout.n_tokens
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_cells_are_tinted_and_dropped_ones_are_not(family):
    wrapper = tiny_wrapper(family=family)
    picture = quadrants(SIZES[family], SIZES[family])
    record = select(wrapper, [picture], ratio=0.5, layer=1)
    layouts = wrapper.view_layouts([picture]) if family == "llava_next" else None
    drawn = draw_selection([picture], record, layouts=layouts, fit=wrapper.view_fit, alpha=ALPHA)
    assert isinstance(drawn, Image.Image) and drawn.mode == "RGB"
    layouts = layouts or record.layouts[0]
    kept, dropped = check_cells(drawn, record, layouts, [QUADRANTS])
    assert kept > 0 and dropped > 0
    # Every cell of every view is drawn, separators are not.
    assert len(drawn.info["cells"]) == sum(view.rows * view.cols for layout in layouts for view in layout.views)


def test_every_view_has_a_panel():
    """InternVL's tiles share one panel, its thumbnail has its own; DeepSeek-VL2's global and local views too."""
    wrapper = tiny_wrapper(family="internvl")
    picture = quadrants(224, 224)
    record = select(wrapper, [picture], ratio=0.5, layer=1)
    tiles, thumbnail = record.layouts[0][0].views[0], record.layouts[0][0].views[-1]
    drawn = draw_selection([picture], record, alpha=ALPHA)
    cells = drawn.info["cells"]
    # The thumbnail's panel lies right of the tiles' panel; the first tile's cells are left of the second's.
    assert cells[thumbnail.offset][0] > max(box[2] for token, box in cells.items() if token < thumbnail.offset)
    assert cells[tiles.offset][0] < cells[tiles.offset + 16][0]


def test_several_images_each_in_their_own_panels():
    wrapper = tiny_wrapper(family="qwen2_5_vl")
    second_colors = tuple(tuple(255 - c for c in color) for color in QUADRANTS)
    pictures = [quadrants(112, 112), quadrants(168, 112, second_colors)]
    record = select(wrapper, pictures, ratio=0.5, layer=1)
    drawn = draw_selection(pictures, record, alpha=ALPHA)
    kept, dropped = check_cells(drawn, record, record.layouts[0], [QUADRANTS, second_colors])
    assert kept == sum(round(0.5 * layout.n_tokens) for layout in record.layouts[0]) and dropped > 0


def test_named_parts_have_their_own_colours_and_a_legend():
    wrapper = tiny_wrapper(family="qwen2_5_vl")
    picture = quadrants(224, 224)
    record = select(wrapper, [picture], "ivc_prune", ratio=0.5, layer=2)
    parts = record.stages[0][0].parts
    drawn = draw_selection([picture], record, parts=["ivc", "seeds", "foreground"], alpha=ALPHA)
    order = {"ivc": 0, "seeds": 1, "foreground": 2}

    def color_of(token):
        for name in order:  # the first part holding a token colours it
            if token in parts[name].tolist():
                return PART_COLORS[order[name]]
        return KEPT_COLOR

    kept, _ = check_cells(drawn, record, record.layouts[0], [QUADRANTS], color_of)
    assert kept == record.kept[0].numel()
    assert {color_of(token) for token in record.kept[0].tolist()} >= {PART_COLORS[0], PART_COLORS[2]}
    # The legend swatches sit below the panel, one per part (the plain kept colour only when some token has it).
    legend = drawn.crop((0, max(box[3] for box in drawn.info["cells"].values()), drawn.width, drawn.height))
    colours = {color for _, color in legend.getcolors(maxcolors=100000)}
    assert set(PART_COLORS[:3]) <= colours
    assert (KEPT_COLOR in colours) == (KEPT_COLOR in {color_of(token) for token in record.kept[0].tolist()})
    with pytest.raises(ValueError, match="no part named"):
        draw_selection([picture], record, parts=["nothing"])


def test_a_padded_view_shows_the_padding():
    """DeepSeek-VL2 pads a wide picture to its square global view: the top row of that view lies half over the
    padding, drawn grey (tinted when kept)."""
    wrapper = tiny_wrapper(family="deepseek_vl2")
    picture = quadrants(224, 112)
    record = select(wrapper, [picture], ratio=0.5, layer=1)
    drawn = draw_selection([picture], record, fit=wrapper.view_fit, alpha=ALPHA)
    kept = set(record.kept[0].tolist())
    global_view = record.layouts[0][0].views[0]
    for token in global_view.cells()[0].tolist():
        x0, y0, x1, y1 = drawn.info["cells"][token]
        expected = tinted(PAD_COLOR, KEPT_COLOR) if token in kept else PAD_COLOR
        assert close(drawn.getpixel(((x0 + x1) // 2, y0 + 2)), expected)
        assert drawn.getpixel(((x0 + x1) // 2, y1 - 2)) != drawn.getpixel(((x0 + x1) // 2, y0 + 2))  # the picture


def test_a_missing_layout_is_named():
    wrapper = tiny_wrapper(family="llava_next")
    picture = quadrants(112, 112)
    record = select(wrapper, [picture], ratio=0.5, layer=1)
    with pytest.raises(ValueError, match="view_layouts"):
        draw_selection([picture], record)
