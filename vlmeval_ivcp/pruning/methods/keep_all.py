"""`none`: keep every visual token (the unpruned reference, also the reference for loyalty)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PruneConfig
from ..context import Selection, SelectionContext
from ..registry import register_method


@dataclass
class KeepAllConfig(PruneConfig):
    """`none` ignores the ratio: every visual token is kept."""

    ratio: float = 1.0


@register_method("none", KeepAllConfig)
def keep_all(ctx: SelectionContext, config: KeepAllConfig) -> Selection:
    return Selection(keep=torch.arange(ctx.n_visual, device=ctx.visual_index.device))
