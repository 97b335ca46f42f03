"""Qwen2.5-VL's images as VLMEvalKit prepares them: `qwen_vl_utils.fetch_image` (not importable here: it imports
torchvision) before the processor sees them, in two steps: `read_rgb`, then `fit_to_budget` (an input-side method
such as `downsample` changes the picture between them).

The rule: RGBA pictures are laid on white (other modes are converted to RGB); the size is rounded to multiples of
one visual token's side (28 pixels; 32 for Qwen3-VL, which VLMEvalKit reads with `image_patch_size=16`) within
[min_pixels, max_pixels] keeping the aspect ratio (`smart_resize`); then a PIL resize with its default filter
(bicubic). The processor's own resize then keeps the size, so the pixel values are qwen_vl_utils'.
"""

from __future__ import annotations

import math

from PIL import Image

FACTOR = 28
MAX_ASPECT_RATIO = 200


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """(height, width) in multiples of `factor`, near the input's, with `min_pixels <= h * w <= max_pixels` when
    reachable. Each side is first rounded to a multiple of `factor` (at least `factor`: transformers' own rule lacks
    this floor and differs for sides under 14 pixels); too many pixels scale both sides down by the same factor and
    round down, too few scale up and round up.

    Raises:
        ValueError: the aspect ratio exceeds 200 (qwen_vl_utils refuses such images too).
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"image of {width}x{height} pixels: aspect ratio over {MAX_ASPECT_RATIO}")
    new_height = max(factor, round(height / factor) * factor)
    new_width = max(factor, round(width / factor) * factor)
    if new_height * new_width > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        new_height = math.floor(height / scale / factor) * factor
        new_width = math.floor(width / scale / factor) * factor
    elif new_height * new_width < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * scale / factor) * factor
        new_width = math.ceil(width * scale / factor) * factor
    return new_height, new_width


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with an RGBA picture laid on a white background (its alpha as the mask)."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def read_rgb(path: str) -> Image.Image:
    """The picture at `path` in RGB, as qwen_vl_utils' `fetch_image` reads it (`to_rgb`)."""
    with Image.open(path) as opened:
        return to_rgb(opened)


def fit_to_budget(image: Image.Image, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> Image.Image:
    """An RGB picture resized as qwen_vl_utils' `fetch_image` does: to `smart_resize`'s size in multiples of `factor`
    (the pixels of one visual token a side: 28, or 32 for Qwen3-VL's 16-pixel patches), PIL's default filter."""
    height, width = smart_resize(image.height, image.width, min_pixels, max_pixels, factor)
    return image.resize((width, height))
