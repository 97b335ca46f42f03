"""`pdrop`: FastV-style pruning in several stages (PyramidDrop, https://arxiv.org/abs/2410.17247).

PyramidDrop splits the LLM into stages and, at each stage boundary, keeps a fraction of the visual tokens that
reached it, ranked by the attention the last prompt token pays them in the boundary layer itself, computed on those
tokens before they are dropped (as the release does; FastV reads the layer before instead). The token count thus
shrinks like a pyramid: early layers see the whole image, deep layers a small part of it. Scores are recomputed from
one query, so SDPA and FlashAttention-2 stay on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar
from itertools import pairwise

from ..config import Cut, PruneConfig
from ..context import Selection, SelectionContext
from ..registry import register_method
from .fastv import keep_most_attended, require_llm_scope

# The paper's λ for LLaVA-1.5: each stage keeps half of the tokens reaching it.
DEFAULT_STAGE_RATIO = 0.5


@dataclass
class PDropConfig(PruneConfig):
    """Settings of `pdrop`.

    Stage `i` starts at `layers[i]` and keeps `stage_ratios[i]` of the visual tokens that reach it; `ratio` is the
    overall fraction kept after the last stage, the product of the stage ratios. Give either one (or both, if they
    agree): with `ratio` alone every stage keeps `ratio ** (1 / n_stages)`; with neither every stage keeps 0.5.
    `layer` is the first cut and always equals `layers[0]`. Other multi-stage methods subclass it (`method_name`
    names them in errors).
    """

    method_name: ClassVar[str] = "pdrop"

    ratio: float | None = field(
        default=None,
        metadata={"help": "overall fraction kept after the last stage (product of stage_ratios); derived if omitted"},
    )
    layer: int | None = field(default=None, metadata={"help": "first cut; equals layers[0] (derived if omitted)"})
    cache_policy: str = field(
        default="after",
        metadata={"help": "'after' (each stage's layers cache the tokens that reach them) or 'all'"},
    )
    layers: tuple[int, ...] = field(
        default=(8, 16, 24),
        metadata={"help": "first layer of each pruned stage, strictly increasing, >= 1"},
    )
    stage_ratios: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "fraction kept at each stage, relative to the tokens reaching it, each in (0, 1]"},
    )

    def __post_init__(self) -> None:
        self.layers = _checked_layers(self.layers)
        n_stages = len(self.layers)
        if self.layer is None:
            self.layer = self.layers[0]
        stage_ratios = None if self.stage_ratios is None else _checked_stage_ratios(self.stage_ratios, n_stages)
        if self.ratio is None:
            stage_ratios = stage_ratios or (DEFAULT_STAGE_RATIO,) * n_stages
            self.ratio = math.prod(stage_ratios)
        super().__post_init__()
        require_llm_scope(self.scope, self.method_name)
        if self.layer != self.layers[0]:
            raise ValueError(
                f"{self.method_name}'s layer is its first cut: expected layers[0] = {self.layers[0]}, got {self.layer}"
            )
        if stage_ratios is None:
            stage_ratios = (self.ratio ** (1.0 / n_stages),) * n_stages
        elif not math.isclose(math.prod(stage_ratios), self.ratio, rel_tol=1e-6):
            raise ValueError(
                f"ratio {self.ratio} disagrees with stage_ratios {stage_ratios} (product {math.prod(stage_ratios)}); "
                "give one of them, or both consistent"
            )
        self.stage_ratios = stage_ratios

    def cuts(self) -> list[Cut]:
        return [Cut(layer, ratio) for layer, ratio in zip(self.layers, self.stage_ratios, strict=True)]


def _checked_layers(layers: Sequence[int]) -> tuple[int, ...]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"layers must be a non-empty list of ints, got {layers!r}")
    if any(isinstance(layer, bool) or not isinstance(layer, int) for layer in layers):
        raise TypeError(f"layers must hold ints, got {layers!r}")
    if layers[0] < 1 or any(later <= earlier for earlier, later in pairwise(layers)):
        raise ValueError(f"layers must be strictly increasing and >= 1 (0 is before the LLM), got {list(layers)}")
    return tuple(layers)


def _checked_stage_ratios(stage_ratios: Sequence[float], n_stages: int) -> tuple[float, ...]:
    if isinstance(stage_ratios, (str, bytes)) or not isinstance(stage_ratios, Sequence):
        raise TypeError(f"stage_ratios must be a list of numbers, got {stage_ratios!r}")
    if len(stage_ratios) != n_stages:
        raise ValueError(
            f"stage_ratios needs one entry per layer ({n_stages}), got {len(stage_ratios)}: {stage_ratios}"
        )
    if any(isinstance(value, bool) or not isinstance(value, (int, float)) for value in stage_ratios):
        raise TypeError(f"stage_ratios must hold numbers, got {stage_ratios!r}")
    if not all(0.0 < value <= 1.0 for value in stage_ratios):
        raise ValueError(f"every stage ratio must be in (0, 1], got {list(stage_ratios)}")
    return tuple(float(value) for value in stage_ratios)


@register_method("pdrop", PDropConfig, needs=("cut_attention",))
def pdrop_select(ctx: SelectionContext, config: PDropConfig) -> Selection:
    """One stage boundary: FastV's ranking over the visual tokens that reached it (`fastv.keep_most_attended`)."""
    return keep_most_attended(ctx)
