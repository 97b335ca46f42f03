"""Merged tokens (docs/engine.md, "Merged tokens"): a method's new vectors written into kept slots at a cut.

A method that merges dropped tokens into kept ones returns `Selection.merged` (slots of its `keep`, vectors, space).
The engine gathers the sequence to the kept set as for any selection, then overwrites the rows of the merged slots:
a merged token keeps its slot's place in the sequence and its original position ids; only its vector changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .context import MergedTokens, Selection
from .state import PromptState, clock


@dataclass(frozen=True)
class RowMerge:
    """The merged slots of one row of the batch at one cut.

    Args:
        row (`int`): the batch row.
        positions (`LongTensor [m]`): where the merged slots sit in the sequence reaching the cut.
        merged (`MergedTokens`): the method's vectors and their space.
    """

    row: int
    positions: torch.Tensor
    merged: MergedTokens


def row_merge(row: int, visual_index: torch.Tensor, selection: Selection, cut_layer: int) -> RowMerge | None:
    """The merge a row's selection asks for (None: no merged token), with its slots located in the sequence.

    Raises:
        ValueError: projector-input vectors at an in-LLM cut (the projector's output is an input embedding).
    """
    merged = selection.merged
    if merged is None:
        return None
    if merged.space == "projector_input" and cut_layer != 0:
        raise ValueError(
            f"merged tokens in space 'projector_input' need a before-LLM cut (layer 0), not layer {cut_layer}: "
            "the projector's output is an input embedding"
        )
    slots = selection.keep[merged.slots.to(selection.keep.device)]
    return RowMerge(row, visual_index[slots.to(visual_index.device)], merged)


def write_merged(
    state: PromptState, sequence: torch.Tensor, rel: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Overwrite the merged slots of `sequence` (`[B, n, D]`, already gathered to `rel [B, n]`, the kept positions
    in the sequence that reached the cut) with the vectors of the cut's merges (`state.merges`, then cleared);
    projector-input vectors go through the family's projector first. Counted as selection time.

    Raises:
        ValueError: projector-input vectors on a family without a projector entry (`arch.PROJECTORS`), or vectors
            whose width is not the sequence's.
    """
    merges, state.merges = state.merges, []
    if not merges:
        return sequence
    start = clock(sequence)
    for merge in merges:
        vectors = merge.merged.vectors
        if merge.merged.space == "projector_input":
            if project is None:
                raise ValueError(
                    "merged tokens in space 'projector_input' need the family's projector, and this family has no "
                    "entry in vlmeval_ivcp.pruning.arch.PROJECTORS"
                )
            vectors = project(vectors)
        if vectors.shape[-1] != sequence.shape[-1]:
            raise ValueError(
                f"merged vectors of width {vectors.shape[-1]} ({merge.merged.space}) cannot replace tokens of width "
                f"{sequence.shape[-1]}"
            )
        row_keep = rel[merge.row].contiguous()
        slots = torch.searchsorted(row_keep, merge.positions.to(row_keep.device).contiguous())
        sequence[merge.row, slots.to(sequence.device)] = vectors.to(sequence.device, sequence.dtype)
    state.record.select_seconds += clock(sequence) - start
    return sequence
