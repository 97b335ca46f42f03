"""Per-layer additions to the visual tokens' hidden states (Qwen3-VL's DeepStack), carried to the kept tokens.

A family that adds features to its visual tokens inside the decoder stack (`DecoderArch.injections`) hands the text
model a list of tensors, entry `j` of `[N, H]` (one row per visual token of the batch, in the row-major order of a
`[B, S]` mask) to be added to the output of decoder layer `j`. The stock code indexes with the unpruned mask, which no
longer fits once tokens are dropped. The engine takes the additions over at prefill: it removes them from the text
model's inputs and adds row `ord(x)` to every visual token `x` still alive at the input of layer `j + 1` (the same
elementwise sums, so keeping everything equals the stock model bit for bit); a cut at `K` happens after the additions
of layers `< K`, and a before-LLM cut keeps only the kept tokens' rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gather import gather_seq


@dataclass(frozen=True)
class VisualInjection:
    """Where a family's text model receives its per-layer visual additions.

    Args:
        embeds (`str`): keyword argument holding the list of `[N, H]` tensors (entry j follows layer j).
        mask (`str`): keyword argument holding the `[B, S]` bool mask whose True entries the rows follow.
    """

    embeds: str
    mask: str


@dataclass
class Injections:
    """The additions of one prefill: `embeds[j]` `[N, H]`, and `ordinal` `[B, S]` (row of each visual token, -1
    elsewhere)."""

    embeds: list[torch.Tensor]
    ordinal: torch.Tensor

    def add(self, layer_output: torch.Tensor, keep: torch.Tensor, layer: int) -> torch.Tensor:
        """`layer_output` `[B, n, H]` of decoder layer `layer`, whose tokens are prompt positions `keep` `[B, n]`,
        with that layer's additions on its visual tokens."""
        rows = gather_seq(self.ordinal.to(keep.device), keep)
        visual = rows >= 0
        added = self.embeds[layer].to(layer_output.device, layer_output.dtype)[rows[visual].to(layer_output.device)]
        layer_output = layer_output.clone()
        layer_output[visual.to(layer_output.device)] = layer_output[visual.to(layer_output.device)] + added
        return layer_output


def take_injections(
    kwargs: dict, spec: VisualInjection, visual_mask: torch.Tensor, n_layers: int
) -> tuple[dict, Injections | None]:
    """Remove the additions from the text model's keyword arguments and return them (None when there are none).

    Args:
        kwargs (`dict`): the text model's keyword arguments at prefill.
        spec (`VisualInjection`): the family's names.
        visual_mask (`BoolTensor [B, S]`): the image tokens the engine prunes.
        n_layers (`int`): decoder layers (an addition after the last layer has no next layer to carry it).
    """
    embeds = kwargs.get(spec.embeds)
    if embeds is None:
        return kwargs, None
    mask = kwargs.get(spec.mask)
    if mask is None or not torch.equal(mask.to(visual_mask.device).bool(), visual_mask):
        raise ValueError(
            f"`{spec.mask}` marks tokens other than the image tokens (video inputs?): the pruning engine prunes "
            "images only and cannot align these visual additions with the kept tokens"
        )
    if len(embeds) >= n_layers:
        raise ValueError(f"{len(embeds)} visual additions for a decoder of {n_layers} layers are not supported")
    ordinal = torch.where(visual_mask, visual_mask.flatten().long().cumsum(0).view_as(visual_mask) - 1, -1)
    return {**kwargs, spec.embeds: None, spec.mask: None}, Injections(list(embeds), ordinal)
