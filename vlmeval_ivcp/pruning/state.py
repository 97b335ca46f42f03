"""Per-prefill bookkeeping of the engine: what the last prefill chose (published) and the prompt's working state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .context import Selection
from .images import Layouts
from .inject import Injections

if TYPE_CHECKING:
    from .vision_tap import VisionInputs


@dataclass
class PrefillRecord:
    """What the last prefill chose, per sample (indices count the image tokens of the prompt, 0 .. L-1).

    Attributes:
        n_visual (`list[int]`): visual tokens of each sample.
        kept (`list[LongTensor]`): the visual tokens that survived every cut.
        stages (`list[list[Selection]]`): per cut, per sample, the method's own answer (with its named parts),
            in the indices of the visual tokens that reached that cut.
        select_seconds (`float`): time spent choosing (capturing the method's inputs, scoring and selection, all
            cuts, whole batch).
        cache_lengths (`list[int]`): per layer, prompt tokens its KV cache holds after prefill.
        layouts (`Layouts` or `None`): per sample, the `ImageLayout` of each image (`None` where unknown), for
            drawing the selection (`vlmeval_ivcp.visualize`).
        cache_lengths (`list[int]`): per layer, prompt tokens its KV cache holds after prefill (slots: left padding
            and a ragged batch's fillers included, the length of the cache tensors).
        row_cache_lengths (`list[list[int]]`): per sample, per layer, the prompt tokens its cache really holds
            (neither left padding nor fillers: what it holds at batch size 1).
        positions (`LongTensor [B, n]` or `None`): the prompt position of every slot of the sequence the last layers
            ran on, in the order a forward's logits come out.
        filler (`BoolTensor [B, n]` or `None`): slots that only pad a row to the batch's longest kept count
            (docs/engine.md, ragged batches).
    """

    n_visual: list[int]
    kept: list[torch.Tensor] = field(default_factory=list)
    stages: list[list[Selection]] = field(default_factory=list)
    select_seconds: float = 0.0
    cache_lengths: list[int] = field(default_factory=list)
    layouts: Layouts | None = None
    row_cache_lengths: list[list[int]] = field(default_factory=list)
    positions: torch.Tensor | None = None
    filler: torch.Tensor | None = None


@dataclass
class PromptState:
    """Per-prompt bookkeeping, rebuilt at every prefill."""

    prompt_len: int
    visual_mask: torch.Tensor  # [B, S] bool
    real_mask: torch.Tensor  # [B, S] bool, False at padding
    image_of: torch.Tensor  # [B, S] image ordinal of each visual token, -1 elsewhere
    layouts: Layouts | None  # per sample, per image
    record: PrefillRecord
    rope_positions: torch.Tensor | None = None  # [A, B, S]
    base_keep: torch.Tensor | None = None  # [B, n] prompt positions the text model ran on
    keep: torch.Tensor | None = None  # [B, n] prompt positions alive now (a ragged batch's fillers included)
    live: torch.Tensor | None = None  # [B, n] bool, False at the fillers of `keep`
    base_live: torch.Tensor | None = None  # [B, n] `live` of `base_keep`
    stage_keeps: list[torch.Tensor] = field(default_factory=list)  # prompt positions alive after each cut
    stage_lives: list[torch.Tensor] = field(default_factory=list)  # `live` after each cut
    stage_kwargs: dict[str, Any] | None = None  # gathered layer kwargs of the current stage
    captured: dict[str, torch.Tensor] = field(default_factory=dict)
    input_embeds: torch.Tensor | None = None  # [B, S, D] the LLM's input, kept for methods reading "rater_attention"
    held: list[torch.Tensor] | None = None  # per layer, prompt positions its cache holds
    held_in_first: list[torch.Tensor | None] | None = None  # per layer, its held set inside layer 0's (None: same)
    held_hidden: list[torch.Tensor | None] | None = None  # per layer, filler slots layer 0's mask does not hide
    generated: int = 0
    position_shift: torch.Tensor | None = None  # [B] original minus compact position of the prompt's end
    questions: list[tuple[str, torch.Tensor]] | None = None  # per prompt, its question and its tokens' embeddings
    injections: Injections | None = None  # the family's per-layer visual additions, until the prefill ends
    merges: list[Any] = field(default_factory=list)  # the current cut's `merge.RowMerge`s, until written
    vision: list[list[VisionInputs]] | None = None  # per sample, per image: the vision-tower tap's values


def clock(tensor: torch.Tensor) -> float:
    """A monotonic time stamp taken after the tensor's device has finished its queued work."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return time.perf_counter()
