"""Qwen2.5-VL's and Qwen3-VL's pixels equal those of VLMEvalKit's path: qwen_vl_utils' `fetch_image` (RGBA laid on
white, its `smart_resize` to multiples of 28, or of 32 for Qwen3-VL's `image_patch_size=16`, a PIL resize), then
the processor (for Qwen3-VL told not to resize).

qwen_vl_utils imports torchvision, so the expected sizes below are worked out by hand from its `smart_resize`
(round each side to a multiple of 28, at least 28; over max_pixels: scale by sqrt(h*w/max) and floor; under
min_pixels: scale by sqrt(min/(h*w)) and ceil).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from support.tiny import tiny_wrapper
from vlmeval_ivcp.models.qwen_images import smart_resize

TINY = (4 * 28 * 28, 64 * 28 * 28)  # the tiny checkpoint's pixel budget


@pytest.mark.parametrize(
    ("height", "width", "limits", "expected"),
    [
        (300, 417, TINY, (168, 252)),  # 308x420 too many: beta 1.579, floor
        (20, 30, TINY, (56, 84)),  # 28x28 too few: beta 2.286, ceil
        (12, 400, TINY, (28, 392)),  # a side under 14 pixels rounds to 28 (transformers' rule: 28x336)
        (12, 2111, (4 * 28 * 28, 16384 * 28 * 28), (28, 2100)),
        (480, 640, (4 * 28 * 28, 16384 * 28 * 28), (476, 644)),  # the release's 7B budget: rounding only
        (480, 640, (1280 * 28 * 28, 16384 * 28 * 28), (868, 1176)),  # VLMEvalKit's default minimum
        (2000, 3000, (4 * 28 * 28, 6384 * 28 * 28), (1820, 2716)),  # the release's 3B budget
    ],
)
def test_smart_resize_is_qwen_vl_utils_rule(height, width, limits, expected):
    assert smart_resize(height, width, *limits) == expected


TINY_QWEN3 = (4 * 32 * 32, 64 * 32 * 32)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (300, 417, (192, 288)),  # 288x416 too many: beta 1.382, floor
        (20, 30, (64, 96)),  # 32x32 too few: beta 2.613, ceil
        (12, 400, (32, 384)),  # a side under 16 pixels rounds to 32; 12.5 rounds to 12
    ],
)
def test_smart_resize_with_qwen3_vl_32_pixel_tokens(height, width, expected):
    assert smart_resize(height, width, *TINY_QWEN3, factor=32) == expected


def test_aspect_ratio_over_200_is_refused():
    with pytest.raises(ValueError, match="image of 2010x10 pixels: aspect ratio over 200"):
        smart_resize(10, 2010, *TINY)


def _rgba_picture(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(height * 1000 + width)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[: height // 2, :, 3] = 0  # a transparent half over coloured pixels: white in qwen_vl_utils
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize(("height", "width", "size"), [(300, 417, (168, 252)), (12, 400, (28, 392))])
@pytest.mark.parametrize("mode", ["RGBA", "RGB"])
def test_pixel_values_equal_the_fetch_image_path(tmp_path, height, width, size, mode):
    picture = _rgba_picture(height, width)
    if mode == "RGB":
        picture = picture.convert("RGB")
    path = tmp_path / "picture.png"
    picture.save(path)
    expected_image = Image.new("RGB", picture.size, (255, 255, 255))
    expected_image.paste(picture.convert("RGBA"), mask=picture.convert("RGBA").getchannel("A"))
    if mode == "RGB":
        expected_image = picture
    expected_image = expected_image.resize((size[1], size[0]))  # PIL's default filter, as qwen_vl_utils

    wrapper = tiny_wrapper()
    inputs = wrapper.build_inputs([{"type": "image", "value": str(path)}, {"type": "text", "value": "hi"}], "POPE")
    processed = wrapper.processor.image_processor(
        images=[expected_image], return_tensors="pt", **wrapper.processor_options("POPE")
    )
    assert inputs["image_grid_thw"].tolist() == [[1, size[0] // 14, size[1] // 14]]
    assert torch.equal(inputs["pixel_values"], processed["pixel_values"].to(inputs["pixel_values"].dtype))


@pytest.mark.parametrize(("height", "width", "size"), [(300, 417, (192, 288)), (12, 400, (32, 384))])
def test_qwen3_vl_pixel_values_equal_the_fetch_image_path_with_32_pixel_tokens(tmp_path, height, width, size):
    picture = _rgba_picture(height, width).convert("RGB")
    path = tmp_path / "picture.png"
    picture.save(path)
    wrapper = tiny_wrapper(family="qwen3_vl")
    inputs = wrapper.build_inputs([{"type": "image", "value": str(path)}, {"type": "text", "value": "hi"}], None)
    # VLMEvalKit's Qwen3-VL class: fetch_image(image_patch_size=16), then the processor with do_resize=False
    expected = wrapper.processor.image_processor(
        images=[picture.resize((size[1], size[0]))], do_resize=False, return_tensors="pt"
    )
    assert inputs["image_grid_thw"].tolist() == [[1, size[0] // 16, size[1] // 16]]
    assert torch.equal(inputs["pixel_values"], expected["pixel_values"].to(inputs["pixel_values"].dtype))
