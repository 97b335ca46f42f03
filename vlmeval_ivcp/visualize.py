"""Pictures of a selection: one sample's kept visual tokens drawn over its images, from the engine's record.

`draw_selection(images, pruner.last)` tints every kept cell of every view of every image (Qwen2.5-VL's merged grid,
LLaVA-1.5's grid, LLaVA-NeXT's base view and tiles, InternVL's tiles and thumbnail, DeepSeek-VL2's global and local
views), one panel per view (the tiles of an image share one), each kept cell with a solid outline, dropped cells
untinted. A method's named parts
(`Selection.parts`, e.g. IVC-Prune's `ivc`, `seeds`, `foreground`) get their own colours and a legend; kept slots
that carry a merged token (`Selection.merged`, the part `merged`) keep their part's tint and get a thick outline of
their own colour (`MERGED_COLOR`) and legend line. Separator
tokens (newlines) have no cell and are not drawn. Pure PIL: no torchvision, no matplotlib.

Where a view's grid lies on the picture depends on the processor (`fit`): `"stretch"` (the view is the whole picture
resized, Qwen2.5-VL, LLaVA-NeXT, InternVL), `"crop"` (a centred crop of the grid's aspect, LLaVA-1.5's CLIP
processor) or `"pad"` (the picture padded to the grid's aspect, DeepSeek-VL2); each adapter names its own as
`view_fit`. The returned image's `info["cells"]` maps every drawn token (its index among the sample's visual tokens)
to its box `(x0, y0, x1, y1)` in the returned image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont

from .pruning.context import MERGED_PART
from .pruning.layout import ImageLayout, View
from .pruning.state import PrefillRecord

FITS = ("stretch", "crop", "pad")
KEPT_COLOR = (30, 120, 255)  # kept tokens outside every named part
# Named parts in order of appearance; distinct from the kept colour and from each other.
PART_COLORS = ((255, 140, 0), (220, 20, 160), (40, 200, 70), (0, 200, 210), (150, 90, 255), (240, 220, 0))
MERGED_COLOR = (230, 0, 0)  # outline of kept slots that carry a merged token
BACKGROUND = (255, 255, 255)
PAD_COLOR = (128, 128, 128)  # where a padded view extends past the picture
TEXT_COLOR = (0, 0, 0)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Panel:
    """One drawing: an image, some of its views (all tiles, or one global view), and the title above it."""

    image: int
    views: tuple[View, ...]
    title: str


def named_parts(record: PrefillRecord, sample: int = 0) -> dict[str, torch.Tensor]:
    """The method's named parts of `sample`, over every cut, as indices into the sample's visual tokens (a later
    cut's indices count only the tokens that reached it, so they are mapped back)."""
    alive = torch.arange(record.n_visual[sample])
    parts: dict[str, list[torch.Tensor]] = {}
    for stage in record.stages:
        selection = stage[sample]
        for name, part in selection.parts.items():
            parts.setdefault(name, []).append(alive[part.cpu()])
        alive = alive[selection.keep.cpu()]
    return {name: torch.unique(torch.cat(found)) for name, found in parts.items()}


def draw_selection(
    images: Sequence[Image.Image],
    record: PrefillRecord,
    sample: int = 0,
    layouts: Sequence[ImageLayout] | None = None,
    fit: str = "stretch",
    parts: Sequence[str] | None = None,
    panel_size: int = 320,
    alpha: float = 0.55,
    title: str | None = None,
) -> Image.Image:
    """Draw the kept visual tokens of one sample over its images.

    Args:
        images (`Sequence[PIL.Image]`): the sample's pictures, in prompt order.
        record (`PrefillRecord`): the engine's record of the prefill (`pruner.last`).
        sample (`int`): which row of the batch.
        layouts (`Sequence[ImageLayout]`, *optional*): one per image; default: those the engine used
            (`record.layouts`). LLaVA-NeXT's engine has none: pass `LlavaNext.view_layouts(images)`.
        fit (`str`): how each view's grid lies on its picture: `"stretch"`, `"crop"` or `"pad"` (the adapter's
            `view_fit`).
        parts (`Sequence[str]`, *optional*): the named parts to colour, in priority order (a token takes the colour
            of the first part holding it); default: every part the method published, less any that an earlier one
            contains (IVC-Prune's `ivc_cos` and `ivc_sin` within `ivc`).
        panel_size (`int`): the longer side of each panel, in pixels.
        alpha (`float`): opacity of the tint.
        title (`str`, *optional*): a line above the panels (e.g. the method and the sample).

    Returns:
        `PIL.Image.Image` (RGB): the panels side by side with their titles, and a legend below.

    Raises:
        ValueError: an unknown `fit`, no layout for an image, or layouts that do not cover the sample's tokens.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    layouts = list(layouts) if layouts is not None else list((record.layouts or [[]] * (sample + 1))[sample])
    if len(layouts) != len(images) or any(layout is None for layout in layouts):
        unknown = sum(layout is None for layout in layouts)
        raise ValueError(
            f"need one known layout per image: {len(images)} images, {len(layouts)} layouts ({unknown} unknown); "
            "where the engine keeps none (LLaVA-NeXT) pass layouts=vlm.view_layouts(images)"
        )
    n_visual = record.n_visual[sample]
    covered = sum(layout.n_tokens for layout in layouts)
    if covered != n_visual:
        raise ValueError(f"the layouts cover {covered} visual tokens, but sample {sample} has {n_visual}")
    colors, entries, merged = _token_colors(record, sample, parts)
    offsets = [sum(layout.n_tokens for layout in layouts[:index]) for index in range(len(layouts))]
    panels = [panel for index, layout in enumerate(layouts) for panel in _panels(index, layout, len(layouts))]

    font = ImageFont.load_default()
    drawn, cells = [], {}
    for panel in panels:
        picture, boxes = _draw_panel(
            images[panel.image], layouts[panel.image], panel, colors, merged, offsets[panel.image], fit, panel_size,
            alpha,
        )
        drawn.append((panel, picture, boxes))
    margin, title_height = 8, 16
    header = title_height if title else 0
    width = sum(picture.width for _, picture, _ in drawn) + margin * (len(drawn) + 1)
    height = max(picture.height for _, picture, _ in drawn) + header + title_height + 2 * margin
    legend = _legend_lines(len(colors), n_visual, entries)
    if merged:
        legend.append((MERGED_COLOR, f"merged token in the slot (outline): {len(merged)}"))
    canvas = Image.new("RGB", (max(width, 360), height + 16 * len(legend) + margin), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, margin), title, fill=TEXT_COLOR, font=font)
    x = margin
    for panel, picture, boxes in drawn:
        draw.text((x, margin + header), panel.title, fill=TEXT_COLOR, font=font)
        top = margin + header + title_height
        canvas.paste(picture, (x, top))
        cells.update({token: (x0 + x, y0 + top, x1 + x, y1 + top) for token, (x0, y0, x1, y1) in boxes.items()})
        x += picture.width + margin
    y = height
    for color, text in legend:
        if color is not None:
            draw.rectangle((margin, y + 2, margin + 10, y + 12), fill=color, outline=TEXT_COLOR)
        draw.text((margin + 16, y + 1), text, fill=TEXT_COLOR, font=font)
        y += 16
    canvas.info["cells"] = cells
    return canvas


def _token_colors(
    record: PrefillRecord, sample: int, parts: Sequence[str] | None
) -> tuple[dict[int, tuple[int, int, int]], list[tuple[str, tuple[int, int, int], int]], set[int]]:
    """Colour of every kept token, the legend's (name, colour, count) entries, and the kept tokens whose slot
    carries a merged token (drawn as an outline, not a tint)."""
    kept = set(record.kept[sample].tolist())
    found = named_parts(record, sample)
    merged_part = found.pop(MERGED_PART, None)
    merged = kept & set(merged_part.tolist()) if merged_part is not None else set()
    if parts is None:
        chosen: list[str] = []
        for name, indices in found.items():
            if not any(bool(torch.isin(indices, found[earlier]).all()) for earlier in chosen):
                chosen.append(name)
    else:
        unknown = [name for name in parts if name not in found]
        if unknown:
            raise ValueError(f"no part named {unknown} in this selection; it has {sorted(found)}")
        chosen = list(parts)
    colors = {token: KEPT_COLOR for token in kept}
    entries = []
    for position, name in enumerate(chosen):
        color = PART_COLORS[position % len(PART_COLORS)]
        mine = [token for token in found[name].tolist() if token in kept and colors[token] == KEPT_COLOR]
        colors.update(dict.fromkeys(mine, color))
        entries.append((name, color, len(mine)))
    plain = sum(color == KEPT_COLOR for color in colors.values())
    if plain or not chosen:
        entries.insert(0, ("kept, in no part" if chosen else "kept", KEPT_COLOR, plain))
    return colors, entries, merged


def _legend_lines(kept: int, n_visual: int, entries: list) -> list[tuple[tuple[int, int, int] | None, str]]:
    lines = [(None, f"kept {kept} of {n_visual} visual tokens ({kept / n_visual:.1%}); dropped cells are not tinted")]
    return lines + [(color, f"{name}: {count}") for name, color, count in entries]


def _panels(image: int, layout: ImageLayout, n_images: int) -> list[_Panel]:
    """The image's tiles in one panel, each other view in its own, in token order."""
    prefix = f"image {image + 1} " if n_images > 1 else ""
    tiles = tuple(view for view in layout.views if view.kind == "local" and view.tile is not None)
    panels, tiles_done = [], False
    for view in layout.views:
        if view in tiles:
            if not tiles_done:
                shape = layout.tiles or (1, len(tiles))
                panels.append(_Panel(image, tiles, f"{prefix}tiles {shape[0]}x{shape[1]} of {view.rows}x{view.cols}"))
                tiles_done = True
            continue
        name = "global" if view.kind == "global" else "local"
        label = name if len(layout.views) > 1 else "grid"
        panels.append(_Panel(image, (view,), f"{prefix}{label} {view.rows}x{view.cols}"))
    return panels


def _fitted(width: float, height: float, aspect: float, fit: str) -> Box:
    """The box (in picture pixels) a grid of width/height `aspect` covers on a `width x height` picture."""
    if fit == "stretch":
        return (0.0, 0.0, width, height)
    wider = width / height > aspect
    # crop: the largest centred box of that aspect inside the picture; pad: the smallest one around it.
    if wider == (fit == "crop"):
        w, h = height * aspect, height
    else:
        w, h = width, width / aspect
    return ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)


def _view_boxes(view: View, layout: ImageLayout, size: tuple[int, int], fit: str) -> Box:
    """Where the view's grid lies on the picture: a tile takes its share of the tile arrangement's box."""
    if view.kind == "local" and view.tile is not None and layout.tiles is not None:
        rows, cols = layout.tiles
        x0, y0, x1, y1 = _fitted(*size, (cols * view.cols) / (rows * view.rows), fit)
        row, col = view.tile
        w, h = (x1 - x0) / cols, (y1 - y0) / rows
        return (x0 + col * w, y0 + row * h, x0 + (col + 1) * w, y0 + (row + 1) * h)
    return _fitted(*size, view.cols / view.rows, fit)


def _draw_panel(
    image: Image.Image, layout: ImageLayout, panel: _Panel, colors: dict[int, tuple[int, int, int]],
    merged: set[int], offset: int, fit: str, panel_size: int, alpha: float,
) -> tuple[Image.Image, dict[int, Box]]:
    """The picture (with the views' boxes where they extend past it) with the kept cells tinted; cell boxes."""
    boxes = [_view_boxes(view, layout, image.size, fit) for view in panel.views]
    left = min([0.0] + [box[0] for box in boxes])
    top = min([0.0] + [box[1] for box in boxes])
    right = max([float(image.width)] + [box[2] for box in boxes])
    bottom = max([float(image.height)] + [box[3] for box in boxes])
    scale = panel_size / max(right - left, bottom - top)

    def at(x: float, y: float) -> tuple[int, int]:
        return round((x - left) * scale), round((y - top) * scale)

    picture = Image.new("RGB", at(right, bottom), PAD_COLOR)
    origin, corner = at(0, 0), at(image.width, image.height)
    picture.paste(image.convert("RGB").resize((corner[0] - origin[0], corner[1] - origin[1]), Image.BILINEAR), origin)
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    paint = ImageDraw.Draw(overlay)
    cells: dict[int, Box] = {}
    for view, (x0, y0, x1, y1) in zip(panel.views, boxes):
        w, h = (x1 - x0) / view.cols, (y1 - y0) / view.rows
        for (row, col), token in zip(_grid_positions(view), view.cells().flatten().tolist()):
            a, b = at(x0 + col * w, y0 + row * h)
            c, d = at(x0 + (col + 1) * w, y0 + (row + 1) * h)
            cells[offset + token] = (a, b, c, d)
            color = colors.get(offset + token)
            if color is not None:
                # Cells share edges: the right and bottom edges belong to the next cell. The solid outline keeps a
                # kept cell visible over a picture of its own colour.
                outline, width = (MERGED_COLOR, 2) if offset + token in merged else (color, 1)
                paint.rectangle((a, b, c - 1, d - 1), fill=(*color, round(255 * alpha)), outline=(*outline, 255),
                                width=width)
        if len(panel.views) > 1:  # tile borders
            paint.rectangle((*at(x0, y0), at(x1, y1)[0] - 1, at(x1, y1)[1] - 1), outline=(255, 255, 255, 255))
    return Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB"), cells


def _grid_positions(view: View) -> list[tuple[int, int]]:
    return [(row, col) for row in range(view.rows) for col in range(view.cols)]
