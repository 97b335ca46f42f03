"""InternVL2.5 / InternVL3 through transformers' native `InternVLForConditionalGeneration` (the `-hf` checkpoints,
e.g. OpenGVLab/InternVL3-8B-hf), loaded from a hub id or a local checkpoint.

An image is cut into a grid of square tiles whose arrangement best matches its aspect ratio (at most `max_patches`),
plus a whole-image thumbnail when there is more than one tile. Each tile gives `(side / patch)² / 4` visual tokens
(256 for 448-pixel tiles) after the vision tower's 0.5 pixel shuffle. In the prompt an image reads
`<img>`, the tiles in raster order, the thumbnail, `</img>`.
"""

from __future__ import annotations

from itertools import groupby
from math import isqrt
from typing import Any

import torch
from PIL import Image
from transformers import InternVLForConditionalGeneration, InternVLProcessor
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)

from ..pruning.layout import ImageLayout, View
from .base import PrunedVLM

# InternVL2.5/3's default system message (the `internvl2_5` conversation template, also used by VLMEvalKit).
SYSTEM_PROMPT = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
# The processor expands each occurrence into `<img>` + one context token per visual token + `</img>`.
IMAGE_PLACEHOLDER = "<IMG_CONTEXT>"
# InternVL's usual dynamic tiling: 1 to 12 tiles (a thumbnail is added whenever there is more than one).
MIN_PATCHES = 1
MAX_PATCHES = 12


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """InternVL's processor without its video processor (which needs torchvision, absent on the CPU path)."""

    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs
    ):
        super().__init__(
            image_processor, tokenizer, None, image_seq_length=image_seq_length, chat_template=chat_template, **kwargs
        )


def internvl_chat_prompt(images: int, text: str, system: str = SYSTEM_PROMPT) -> str:
    """InternVL2.5/3's chat format for one user turn: the images first (numbered `Image-i:` when there are several,
    as VLMEvalKit does), then the text, then the assistant cue."""
    if images == 1:
        placeholders = f"{IMAGE_PLACEHOLDER}\n"
    else:
        placeholders = "".join(f"Image-{index}: {IMAGE_PLACEHOLDER}\n" for index in range(1, images + 1))
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
        f"{placeholders}{text}<|im_end|>\n<|im_start|>assistant\n"
    )


def tokens_per_tile(config: Any) -> int:
    """Visual tokens of one tile: the vision tower's patch grid, folded by the pixel shuffle (`downsample_ratio`)."""
    vision = config.vision_config
    side = vision.image_size[0] // vision.patch_size[0]
    return round((side * config.downsample_ratio) ** 2)


def internvl_layout(rows: int, cols: int, tokens_per_tile: int) -> ImageLayout:
    """The token layout of an image cut into `rows x cols` tiles.

    Args:
        rows, cols (`int`): the tile arrangement (1 x 1: the image is a single tile and has no thumbnail).
        tokens_per_tile (`int`): visual tokens of one tile, a square number (256 for InternVL2.5/3).

    Returns:
        `ImageLayout`: for several tiles, one `local` view per tile in raster order with its `tile=(row, col)`, then
        the thumbnail as a `global` view, `tiles=(rows, cols)`; for a single tile, one `global` view.
    """
    side = isqrt(tokens_per_tile)
    if side < 1 or side * side != tokens_per_tile:
        raise ValueError(f"tokens_per_tile must be a positive square number, got {tokens_per_tile}")
    if rows < 1 or cols < 1:
        raise ValueError(f"a tile arrangement needs rows >= 1 and cols >= 1, got {rows} x {cols}")
    if rows * cols == 1:
        return ImageLayout.grid(side, side)
    n_tiles = rows * cols
    tiles = tuple(
        View(index * tokens_per_tile, side, side, kind="local", tile=divmod(index, cols)) for index in range(n_tiles)
    )
    thumbnail = View(n_tiles * tokens_per_tile, side, side, kind="global")
    return ImageLayout((n_tiles + 1) * tokens_per_tile, tiles + (thumbnail,), tiles=(rows, cols))


def _image_token_runs(input_ids: torch.Tensor, image_token_id: int) -> list[list[int]]:
    """Per prompt, the lengths of its runs of image tokens (one run per image: `<img>`/`</img>` bracket each)."""
    runs = []
    for row in input_ids.tolist():
        spans = groupby(row, key=lambda token: token == image_token_id)
        runs.append([len(list(run)) for is_image, run in spans if is_image])
    return runs


class InternVL(PrunedVLM):
    """InternVL2.5 / InternVL3 (`-hf` checkpoints) with optional pruning.

    Args:
        min_patches, max_patches (`int`): the range of the number of tiles of the dynamic tiling (InternVL's usual
            1 and 12; a thumbnail is added whenever an image has more than one tile).
        crop_to_patches (`bool`): tile the images (`False`: each image is resized to a single tile).
        other args: see `PrunedVLM`.
    """

    grounding_frame = "norm1000"

    def __init__(
        self,
        model_path: str,
        min_patches: int = MIN_PATCHES,
        max_patches: int = MAX_PATCHES,
        crop_to_patches: bool = True,
        **kwargs: Any,
    ):
        if not 1 <= min_patches <= max_patches:
            raise ValueError(
                f"need 1 <= min_patches <= max_patches, got min_patches={min_patches}, max_patches={max_patches}"
            )
        self.tiling = dict(
            crop_to_patches=bool(crop_to_patches), min_patches=int(min_patches), max_patches=int(max_patches)
        )
        super().__init__(model_path, **kwargs)

    def load(self, model_path: str, attn_implementation: str, dtype: Any, device_map: Any):
        model, tokenizer = self.load_model_and_tokenizer(
            InternVLForConditionalGeneration, model_path, attn_implementation, dtype, device_map
        )
        # Assembled by hand: the auto classes may pick the torchvision-backed image processor.
        image_processor = GotOcr2ImageProcessorPil.from_pretrained(model_path)
        processor = ImageOnlyInternVLProcessor(
            image_processor, tokenizer, image_seq_length=tokens_per_tile(model.config)
        )
        return model, processor

    def chat_prompt(self, images: int, text: str) -> str:
        return internvl_chat_prompt(images, text)

    def tile_arrangement(self, image: Image.Image) -> tuple[int, int]:
        """(rows, cols) of the tiles the image processor cuts `image` into, by its own canvas selection."""
        if not self.tiling["crop_to_patches"] or self.tiling["max_patches"] <= 1:
            return 1, 1
        tile = self.processor.image_processor.size
        cols, rows = get_optimal_tiled_canvas(
            (image.height, image.width),
            (tile.height, tile.width),
            self.tiling["min_patches"],
            self.tiling["max_patches"],
        )
        return rows, cols

    def processor_options(self, dataset: str | None) -> dict[str, Any]:
        return dict(self.tiling)

    def encode(self, prompts: list[str], images: list[Image.Image], dataset: str | None = None) -> dict[str, Any]:
        inputs = super().encode(prompts, images, dataset)
        inputs["image_layouts"] = self.image_layouts(inputs["input_ids"], images)
        return inputs

    def image_layouts(self, input_ids: torch.Tensor, images: list[Image.Image]) -> list[list[ImageLayout]]:
        """Per prompt, the layout of each of its images, checked against the image tokens the processor wrote."""
        runs = _image_token_runs(input_ids, self.processor.image_token_id)
        if sum(map(len, runs)) != len(images):
            raise ValueError(f"the prompts hold {sum(map(len, runs))} images but {len(images)} were given")
        per_tile = self.processor.image_seq_length
        pictures = iter(enumerate(images))
        layouts = []
        for row_runs in runs:
            row_layouts = []
            for n_tokens in row_runs:
                index, image = next(pictures)
                layout = internvl_layout(*self.tile_arrangement(image), per_tile)
                if layout.n_tokens != n_tokens:
                    raise ValueError(
                        f"image {index} ({image.width}x{image.height}): the tile arrangement "
                        f"{layout.tiles or (1, 1)} gives {layout.n_tokens} visual tokens but the processor wrote "
                        f"{n_tokens} ({n_tokens / per_tile:g} tiles of {per_tile}); tiling settings {self.tiling}"
                    )
                row_layouts.append(layout)
            layouts.append(row_layouts)
        return layouts
