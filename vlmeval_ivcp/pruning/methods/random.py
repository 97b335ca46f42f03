"""`random`: a uniformly random subset of the visual tokens, seeded (a strong baseline in independent studies)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PruneConfig
from ..context import Selection, SelectionContext, sorted_keep
from ..registry import register_method


@dataclass
class RandomConfig(PruneConfig):
    pass


@register_method("random", RandomConfig)
def random_subset(ctx: SelectionContext, config: RandomConfig) -> Selection:
    """`n_keep` of the `L` visual tokens drawn without replacement; the same seed and `L` give the same subset."""
    generator = torch.Generator().manual_seed(config.seed)
    drawn = torch.randperm(ctx.n_visual, generator=generator)[: ctx.n_keep]
    return Selection(keep=sorted_keep(drawn).to(ctx.visual_index.device))
