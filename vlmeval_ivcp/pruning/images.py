"""Which image each visual token belongs to, and each image's layout, for one prefill.

Each image of a prompt is pruned with its own budget. Images are told apart by their layouts when the model or its
wrapper gives them (their token counts split the prompt's image tokens in order), otherwise as the contiguous runs of
image tokens (every supported family puts text or a marker between two images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .gather import grid_from_positions
from .layout import ImageLayout

# Per sample, per image in prompt order (`None`: unknown layout).
Layouts = list[list[ImageLayout | None]]


def split_layouts(flat: Sequence[ImageLayout], visual_counts: list[int]) -> Layouts:
    """Assign a batch's image layouts (in batch order) to its samples by their image-token counts.

    Raises:
        ValueError: the layouts' token counts do not add up to a sample's image tokens.
    """
    layouts: Layouts = []
    remaining = list(flat)
    for row, count in enumerate(visual_counts):
        taken: list[ImageLayout | None] = []
        while sum(layout.n_tokens for layout in taken) < count and remaining:
            taken.append(remaining.pop(0))
        covered = sum(layout.n_tokens for layout in taken)
        if covered != count:
            raise ValueError(
                f"the image layouts give {covered} tokens to prompt {row} of the batch, which has {count} image tokens"
            )
        layouts.append(taken)
    if remaining:
        raise ValueError(f"{len(remaining)} image layouts are left over after every prompt of the batch took its own")
    return layouts


def check_layouts(layouts: Sequence[Sequence[ImageLayout]], visual_counts: list[int]) -> Layouts:
    """Per-sample layouts given by a wrapper, checked against the prompts' image-token counts."""
    if len(layouts) != len(visual_counts):
        raise ValueError(
            f"image layouts were given for {len(layouts)} prompts, but the batch has {len(visual_counts)}"
        )
    for row, (sample, count) in enumerate(zip(layouts, visual_counts)):
        covered = sum(layout.n_tokens for layout in sample)
        if covered != count:
            raise ValueError(
                f"the image layouts of prompt {row} cover {covered} tokens, but it has {count} image tokens"
            )
    return [list(sample) for sample in layouts]


def image_ordinals(visual: torch.Tensor, layouts: list[ImageLayout | None] | None) -> torch.Tensor:
    """`LongTensor [S]`: the image (0, 1, ...) of each visual token of one prompt, -1 elsewhere.

    Args:
        visual (`BoolTensor [S]`): image tokens of the prompt.
        layouts: the prompt's image layouts (their counts split the image tokens in order), or `None` (runs).
    """
    ordinal = torch.full(visual.shape, -1, dtype=torch.long, device=visual.device)
    if layouts:
        counts = torch.tensor([layout.n_tokens for layout in layouts], device=visual.device)
        ordinal[visual] = torch.repeat_interleave(torch.arange(len(layouts), device=visual.device), counts)
        return ordinal
    starts = visual & ~torch.cat([visual.new_zeros(1), visual[:-1]])
    ordinal[visual] = (starts.long().cumsum(0) - 1)[visual]
    return ordinal


def layouts_from_positions(rope_positions: torch.Tensor, ordinal: torch.Tensor) -> list[ImageLayout | None]:
    """One prompt's image grids read from its M-RoPE (t, h, w) position rows `[3, S]` (Qwen under generate())."""
    layouts: list[ImageLayout | None] = []
    for image in range(int(ordinal.max()) + 1):
        grid = grid_from_positions(rope_positions[:, ordinal.to(rope_positions.device) == image])
        layouts.append(ImageLayout.grid(*grid) if grid is not None else None)
    return layouts
