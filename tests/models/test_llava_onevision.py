"""The LLaVA-OneVision adapter on its tiny checkpoint: layouts computed from the picture's size equal the processor's
token counts (single images of many shapes, several images), and reach the engine under generate()."""

from __future__ import annotations

import pytest
import torch
from support.tiny import picture, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.models.llava_onevision import llava_ov_layout
from vlmeval_ivcp.pruning.layout import View

# (width, height) -> (local rows, cols after unpadding and the anyres_max_9 resize), tiles (rows, cols).
SHAPES = {
    "view-sized": ((56, 56), (4, 4), (1, 1)),
    "square": ((112, 112), (8, 8), (2, 2)),
    "wide": ((300, 120), (7, 18), (3, 6)),
    "tall": ((120, 300), (18, 7), (6, 3)),
    "huge square (resized)": ((400, 400), (12, 12), (6, 6)),
    "very wide": ((1000, 200), (4, 24), (2, 6)),
}


@pytest.fixture(scope="module")
def wrapper():
    return tiny_wrapper("sdpa", family="llava_onevision")


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_single_image_is_its_base_view_then_the_unpadded_grid_with_newlines(wrapper, name):
    size, (rows, cols), tiles = SHAPES[name]
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Describe.")], [picture(0, size)])
    (layout,), = inputs["image_layouts"]
    assert layout.views == (View(0, 4, 4, kind="global"), View(16, rows, cols, row_separator=True, kind="local"))
    assert layout.tiles == tiles
    assert layout.n_tokens == int((inputs["input_ids"] == wrapper.model.config.image_token_id).sum())
    assert layout.n_tokens == 16 + rows * (cols + 1)


def test_several_images_are_base_views_with_one_newline_each(wrapper):
    inputs = wrapper.encode([wrapper.chat_prompt(2, "Same?")], [picture(0, (112, 112)), picture(1, (300, 120))])
    assert inputs["image_layouts"] == [[llava_ov_layout(wrapper.processor, None)] * 2]
    assert [layout.n_tokens for layout in inputs["image_layouts"][0]] == [17, 17]
    assert inputs["image_layouts"][0][0].separators().tolist() == [16]


def test_the_layout_reaches_the_engine_under_generate(wrapper):
    inputs = wrapper.encode([wrapper.chat_prompt(1, "Describe.")], [picture(0, (300, 120))])
    layouts = inputs.pop("image_layouts")
    with prune(wrapper.model, "ivc_prune", ratio=0.5, layer=2) as pruner:
        pruner.set_image_layouts(layouts)
        wrapper.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    selection = pruner.last.stages[0][0]
    assert selection.keep.numel() == round(0.5 * layouts[0][0].n_tokens)
    assert torch.isin(layouts[0][0].separators(), selection.keep).all(), "IVC-Prune's tiled rule keeps the newlines"
