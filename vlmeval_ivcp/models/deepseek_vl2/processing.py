"""DeepSeek-VL2's inputs: the official tiling, image-token counts, chat prompt and tokenization, in our own code.

Facts from the official processor (deepseek-ai/DeepSeek-VL2, `processing_deepseek_vl_v2.py`, `conversation.py`):
- the base size is `candidate_resolutions[0][0]`; the canvas is the candidate (width, height) that keeps the most
  image pixels, then wastes the fewest (LLaVA-NeXT's rule); with more than two images in a prompt there is no
  tiling (one base-size tile);
- the global view is the image padded (aspect kept, centred, bicubic) to the base square with the mean colour; the
  local view is the image padded the same way to the canvas, cut into base-size tiles in raster order;
- pixels are `(x / 255 - mean) / std`;
- a view side has `h = w = ceil((base // patch_size) / downsample_ratio)` cells; one image takes
  `h * (w + 1) + 1 + (th * h) * (tw * w + 1)` `<image>` tokens;
- the "deepseek" template, no system prompt: `<|User|>: {content}\n\n<|Assistant|>:` after BOS, `content` stripped;
  each text piece between `<image>` tags is tokenized on its own without special tokens;
- the processor adds the pad, `<image>`, grounding and chat tokens to the tokenizer when it lacks them, in that order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from transformers import AutoTokenizer
from transformers.image_processing_utils import select_best_resolution
from transformers.utils import cached_file

from ...pruning.layout import ImageLayout, View
from .configuration import DeepseekVL2Config

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<｜▁pad▁｜>"
GROUNDING_TOKENS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>")
CHAT_ROLES = ("<|User|>", "<|Assistant|>")
PROCESSOR_FILE = "processor_config.json"
# Official processors crop only prompts with at most this many images.
MAX_IMAGES_WITH_TILES = 2


def deepseek_chat_prompt(images: int, text: str) -> str:
    """The official "deepseek" conversation for one user turn, images first (each `<image>\\n`, as VLMEvalKit
    writes them), then the text, then the assistant cue. The processor adds BOS."""
    content = (f"{IMAGE_TOKEN}\n" * images + text).strip()
    return f"{CHAT_ROLES[0]}: {content}\n\n{CHAT_ROLES[1]}:"


def cells_per_side(base_size: int, patch_size: int, downsample_ratio: int) -> int:
    """Cells per side of one view after the projector's merge (14 for 384-pixel views in 14-pixel patches)."""
    return math.ceil((base_size // patch_size) / downsample_ratio)


def select_tiling(image_size: tuple[int, int], candidates: list, base_size: int) -> tuple[int, int]:
    """(width tiles, height tiles) of the canvas the official processor picks for an image of (width, height).

    Candidates are (width, height) pairs; transformers' `select_best_resolution` runs the same rule in (height,
    width) order, so both sides are swapped on the way in and out.
    """
    width, height = image_size
    best_height, best_width = select_best_resolution((height, width), [(h, w) for w, h in candidates])
    return best_width // base_size, best_height // base_size


def image_token_count(width_tiles: int, height_tiles: int, cells: int) -> int:
    """`<image>` tokens of one image: the global view with row newlines, a separator, the local grid with newlines."""
    return cells * (cells + 1) + 1 + (height_tiles * cells) * (width_tiles * cells + 1)


def image_layout(width_tiles: int, height_tiles: int, cells: int, global_view_pos: str = "head") -> ImageLayout:
    """The layout of one image's tokens: a `global` view of `cells x cells` and one `local` view of all tiles side by
    side (`(th*cells) x (tw*cells)`), both with a newline token after each row, and the view separator between."""
    rows, cols = height_tiles * cells, width_tiles * cells
    global_tokens, local_tokens = cells * (cells + 1), rows * (cols + 1)
    global_first = global_view_pos == "head"
    global_offset, local_offset = (0, global_tokens + 1) if global_first else (local_tokens + 1, 0)
    views = [
        View(global_offset, cells, cells, row_separator=True, kind="global"),
        View(local_offset, rows, cols, row_separator=True, kind="local"),
    ]
    return ImageLayout(
        n_tokens=global_tokens + 1 + local_tokens,
        views=tuple(sorted(views, key=lambda view: view.offset)),
        tiles=(height_tiles, width_tiles),
    )


def add_official_tokens(tokenizer: Any) -> None:
    """Add what the official processor adds when missing: the pad token, `<image>`, the grounding and chat tokens."""
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    missing = [token for token in (IMAGE_TOKEN, *GROUNDING_TOKENS, *CHAT_ROLES) if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)


@dataclass
class DeepseekVL2Processor:
    """Tiling, normalisation and tokenization of DeepSeek-VL2 prompts (left-padded batches).

    Args:
        tokenizer: the checkpoint's tokenizer (official tokens added when missing, see `add_official_tokens`).
        candidate_resolutions (`list`): (width, height) canvases; the first one's width is the base size.
        patch_size (`int`), downsample_ratio (`int`): the vision tower's patch and the projector's merge.
        image_mean, image_std (`tuple`): per-channel normalisation (and the padding colour, from the mean).
        normalize (`bool`): apply the normalisation.
        global_view_pos (`str`): "head" or "tail", from the model config (only the image layouts depend on it).
    """

    tokenizer: Any
    candidate_resolutions: list
    patch_size: int
    downsample_ratio: int
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    normalize: bool = True
    global_view_pos: str = "head"

    def __post_init__(self) -> None:
        add_official_tokens(self.tokenizer)
        self.tokenizer.padding_side = "left"
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DeepseekVL2Processor:
        """Read the official `processor_config.json`, `config.json` (for `global_view_pos`) and the tokenizer of a
        checkpoint (local folder or hub id)."""
        config = DeepseekVL2Config.from_pretrained(str(path))
        try:
            config_file = Path(cached_file(str(path), PROCESSOR_FILE))
        except OSError as error:
            raise FileNotFoundError(f"no {PROCESSOR_FILE} in {path} (a DeepSeek-VL2 checkpoint has one)") from error
        settings = json.loads(config_file.read_text())
        missing = {"candidate_resolutions", "patch_size", "downsample_ratio"} - set(settings)
        if missing:
            raise KeyError(f"{config_file} lacks {sorted(missing)}")
        return cls(
            # Given our config, AutoTokenizer does not look for a transformers class of model_type deepseek_vl_v2.
            tokenizer=AutoTokenizer.from_pretrained(str(path), config=config),
            candidate_resolutions=[tuple(size) for size in settings["candidate_resolutions"]],
            patch_size=int(settings["patch_size"]),
            downsample_ratio=int(settings["downsample_ratio"]),
            image_mean=tuple(settings.get("image_mean", cls.image_mean)),
            image_std=tuple(settings.get("image_std", cls.image_std)),
            normalize=bool(settings.get("normalize", True)),
            global_view_pos=config.global_view_pos,
        )

    @property
    def base_size(self) -> int:
        return int(self.candidate_resolutions[0][0])

    @property
    def cells(self) -> int:
        return cells_per_side(self.base_size, self.patch_size, self.downsample_ratio)

    def _to_tensor(self, view: Image.Image) -> torch.Tensor:
        pixels = torch.frombuffer(bytearray(view.tobytes()), dtype=torch.uint8).view(view.height, view.width, 3)
        pixels = pixels.permute(2, 0, 1).float() / 255.0
        if self.normalize:
            mean = torch.tensor(self.image_mean).view(3, 1, 1)
            pixels = (pixels - mean) / torch.tensor(self.image_std).view(3, 1, 1)
        return pixels

    def tile_image(self, image: Image.Image, cropping: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
        """`([1 + th*tw, 3, S, S], (tw, th))`: the global view then the local tiles in raster order."""
        image = image.convert("RGB")
        base = self.base_size
        width_tiles, height_tiles = (
            select_tiling(image.size, self.candidate_resolutions, base) if cropping else (1, 1)
        )
        fill = tuple(int(value * 255) for value in self.image_mean)
        views = [ImageOps.pad(image, (base, base), color=fill)]
        canvas = ImageOps.pad(image, (width_tiles * base, height_tiles * base), color=fill)
        for top in range(0, height_tiles * base, base):
            for left in range(0, width_tiles * base, base):
                views.append(canvas.crop((left, top, left + base, top + base)))
        return torch.stack([self._to_tensor(view) for view in views]), (width_tiles, height_tiles)

    def _tokenize(self, prompt: str, tilings: list[tuple[int, int]]) -> list[int]:
        pieces = prompt.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(tilings):
            raise ValueError(
                f"the prompt has {len(pieces) - 1} {IMAGE_TOKEN} tags for {len(tilings)} images: {prompt!r}"
            )
        ids = [self.tokenizer.bos_token_id]
        for piece, (width_tiles, height_tiles) in zip(pieces, tilings, strict=False):  # the last piece follows
            ids += self.tokenizer.encode(piece, add_special_tokens=False)
            ids += [self.image_token_id] * image_token_count(width_tiles, height_tiles, self.cells)
        return ids + self.tokenizer.encode(pieces[-1], add_special_tokens=False)

    def __call__(self, prompts: list[str], images: list[Image.Image]) -> dict[str, Any]:
        """Model inputs for a batch: `input_ids`, `attention_mask` (left-padded), `pixel_values` `[V, 3, S, S]` and
        `images_spatial_crop` `[I, 2]` of all images in prompt order (when there are images), and `image_layouts`
        (per prompt, one `ImageLayout` per image)."""
        counts = [prompt.count(IMAGE_TOKEN) for prompt in prompts]
        if sum(counts) != len(images):
            raise ValueError(f"the prompts hold {sum(counts)} {IMAGE_TOKEN} tags but {len(images)} images were given")
        sequences, views, tilings, layouts = [], [], [], []
        remaining = iter(images)
        for prompt, count in zip(prompts, counts, strict=True):
            prompt_tilings = []
            for _ in range(count):
                pixels, tiling = self.tile_image(next(remaining), cropping=count <= MAX_IMAGES_WITH_TILES)
                views.append(pixels)
                prompt_tilings.append(tiling)
            sequences.append(self._tokenize(prompt, prompt_tilings))
            tilings += prompt_tilings
            layouts.append([image_layout(*tiling, self.cells, self.global_view_pos) for tiling in prompt_tilings])
        length = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, length - len(ids) :] = torch.tensor(ids)
            attention_mask[row, length - len(ids) :] = 1
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if views:
            inputs["pixel_values"] = torch.cat(views)
            inputs["images_spatial_crop"] = torch.tensor(tilings, dtype=torch.long)
        inputs["image_layouts"] = layouts
        return inputs
