"""`downsample`'s resize rule on hand-computed cases, with Qwen's `smart_resize` after it (the release's Qwen2-VL
budget: min_pixels = 3136, max_pixels = 2408448 = 3072 tokens of 28 x 28 pixels), and its registration as an
input-side method."""

from __future__ import annotations

import pytest
from PIL import Image

from support.tiny import picture, tiny_wrapper
from vlmeval_ivcp.models.qwen_images import smart_resize
from vlmeval_ivcp.pruning import get_method, make_config, prune
from vlmeval_ivcp.pruning.methods.downsample import (
    DownsampleConfig,
    downsample_image,
    downsampled_size,
    official_factor,
)

RELEASE_BUDGET = (3136, 2408448)


def qwen_tokens(width: int, height: int, config: DownsampleConfig) -> int:
    """Visual tokens of a picture after the downsampling and Qwen2-VL's smart_resize (one token per 28 x 28)."""
    new_width, new_height = downsampled_size(width, height, config)
    fitted_height, fitted_width = smart_resize(new_height, new_width, *RELEASE_BUDGET)
    return (fitted_height // 28) * (fitted_width // 28)


@pytest.mark.parametrize(
    ("ratio", "factor"), [(1.0, 1), (0.25, 2), (0.1111, 3), (1 / 9, 3), (0.0625, 4), (0.04, 5), (0.01, 10)]
)
def test_official_labels_name_the_release_factors(ratio, factor):
    assert official_factor(ratio) == factor
    assert DownsampleConfig(ratio=ratio).factor == factor


def test_a_ratio_that_is_no_official_label_is_refused_with_the_labels():
    with pytest.raises(ValueError, match=r"ratio 0.5 is not an official downsampling label .*0.1111 for r=3.*"
                                         r"use preset=continuous"):
        DownsampleConfig(ratio=0.5)
    assert DownsampleConfig(ratio=0.5, preset="continuous").factor is None


@pytest.mark.parametrize(
    ("size", "ratio", "preset", "expected"),
    [
        ((1920, 1080), 0.25, "official", (960, 540)),  # w // 2, h // 2
        ((1001, 750), 0.1111, "official", (333, 250)),  # floor division, as the release
        ((7, 5), 0.01, "official", (1, 1)),  # a side under the factor keeps one pixel (the release fails there)
        ((1000, 750), 0.5, "continuous", (707, 530)),  # x sqrt(0.5) = 0.7071: 707.1, 530.3
        ((1000, 750), 0.2222, "continuous", (471, 354)),  # x 0.4714: 471.4, 353.6
    ],
)
def test_downsampled_size(size, ratio, preset, expected):
    assert downsampled_size(*size, DownsampleConfig(ratio=ratio, preset=preset)) == expected


@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        # 1920x1080: 1092x1932 (39 x 69); /2: 960x540 -> 532x952 (19 x 34); /3: 640x360 -> 364x644 (13 x 23);
        # /10: 192x108 -> 112x196 (4 x 7). Rounding to 28 only.
        ((1920, 1080), {1.0: 2691, 0.25: 646, 0.1111: 299, 0.01: 28}),
        # 4032x3024 is over max_pixels at full size: beta = sqrt(4032*3024/2408448) = 2.25, 1344x1792 (48 x 64);
        # /2: 2016x1512, again over: beta = 1.125, the same 48 x 64 (achieved ratio 1 at label 0.25);
        # /3: 1344x1008, within: 36 x 48 = 1728 (0.5625 of full at label 0.1111).
        ((4032, 3024), {1.0: 3072, 0.25: 3072, 0.1111: 1728}),
        # 100x80: 84x112 (3 x 4); /2: 50x40 rounds to 28x56 = 1568 < min_pixels: beta = sqrt(3136/2000) = 1.252,
        # ceil -> 56x84 (2 x 3); /10: 10x8 -> 28x28 (each side at least 28), under min: beta = 6.26, 56x84 again.
        ((100, 80), {1.0: 12, 0.25: 6, 0.01: 6}),
        # 2000x120 /10 = 200x12: the 12-pixel side becomes 28 (qwen_vl_utils, which the release runs first), 28x196
        # is within the budget: 1 x 7 (the spec's formula without that floor would scale 0x196 up to 28x252: 9).
        ((2000, 120), {0.01: 7}),
    ],
)
def test_qwen_visual_tokens_after_the_downsampling(size, tokens):
    for ratio, expected in tokens.items():
        assert qwen_tokens(*size, DownsampleConfig(ratio=ratio)) == expected, ratio


def test_the_image_is_resized_bicubic_then_sent_through_jpeg():
    image = picture(0, (120, 90))
    config = DownsampleConfig(ratio=0.25)
    out = downsample_image(image, config)
    assert out.size == (60, 45) and out.mode == "RGB"
    bicubic = image.resize((60, 45), Image.Resampling.BICUBIC)
    assert downsample_image(image, DownsampleConfig(ratio=0.25, jpeg=False)).tobytes() == bicubic.tobytes()
    assert out.tobytes() != bicubic.tobytes(), "the JPEG round trip changes the pixels"
    # Factor 1 (label 1): the release's reference, the unchanged picture through its JPEG round trip only.
    assert downsample_image(image, DownsampleConfig(ratio=1.0)).size == image.size


def test_it_is_registered_as_an_input_side_method_that_no_pruner_takes():
    spec = get_method("downsample")
    assert spec.changes_inputs and spec.select is None and not get_method("random").changes_inputs
    assert make_config("downsample", ratio=0.0625).cuts() == []
    with pytest.raises(ValueError, match=r"downsample changes the pictures before the processor.*not to prune\(\)"):
        prune(tiny_wrapper().model, "downsample", ratio=0.25)
    with pytest.raises(ValueError, match=r"layer must be 0"):
        DownsampleConfig(layer=2)
    with pytest.raises(ValueError, match=r"scope is 'before_llm'"):
        DownsampleConfig(scope="llm", layer=2)
