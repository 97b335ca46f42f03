"""What a pruning method may read, and what it returns.

A method sees one image of one sample at one cut (each image of a prompt is pruned with its own budget). Every tensor
here is for that sample alone (no batch dimension), on the model's device; sequence indices refer to the sequence *as
it enters the cut* (for a first cut, the prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layout import ImageLayout


@dataclass(frozen=True)
class RopeSpec:
    """How the decoder rotates positions.

    Args:
        theta (`float`): the rope base (`rope_theta` of the text config).
        rotary_dim (`int`): the rotated width of one head (`D`; pairs are `D // 2`).
        mrope_section (`tuple[int, ...]` or `None`): Qwen-style M-RoPE split of the `D // 2` frequencies over the
            (t, h, w) axes; `None` for plain 1D RoPE.
        mrope_layout (`str`): how the split assigns frequencies to axes (`rope.MROPE_LAYOUTS`): `"block"`
            (Qwen2-VL, Qwen2.5-VL: consecutive blocks t, h, w) or `"interleaved"` (Qwen3-VL: t, h, w, t, h, w, ...);
            `rope.frequency_axes` turns it into the axis of each frequency.
    """

    theta: float
    rotary_dim: int
    mrope_section: tuple[int, ...] | None = None
    mrope_layout: str = "block"

    @property
    def position_rows(self) -> int:
        """How many position-id rows rotate a token: 3 (t, h, w) for M-RoPE, 1 for 1D RoPE."""
        return 1 if self.mrope_section is None else 3


@dataclass(frozen=True)
class SelectionContext:
    """One sample's view at one cut.

    Args:
        n_keep (`int`): how many visual tokens the method must keep (the engine derives it from the ratio);
            a method may keep fewer only where its config says so (e.g. IVC-Prune's "no fill" rule).
        visual_index (`LongTensor [L]`): positions of the image's visual tokens in the sequence, ascending.
        query_index (`LongTensor [Q]`): positions of every prompt token after the last visual token (the text
            query, chat-template tail included); may be empty. Methods apply their own offsets.
        text_index (`LongTensor [T]`): positions of every prompt token that is neither visual nor padding.
        position_ids (`LongTensor [A, S]`): the original position ids of every token (A = 1 for 1D RoPE,
            3 for M-RoPE's t/h/w rows).
        rope (`RopeSpec`): the decoder's rotary embedding.
        hidden_states (`Tensor [S, D]` or `None`): the input of the cut layer (for a before-LLM cut, the input
            embeddings), when the method asks for it.
        normed_hidden_states (`Tensor [S, D]` or `None`): the input of the cut layer passed through the decoder's
            final norm (the one before the LM head), when the method asks for it (in-LLM cuts only).
        values (`Tensor [H, S, d]` or `None`): value vectors of the layer before the cut, from that layer's own
            projection of its normalised input, grouped-query heads expanded, when the method asks for them.
        queries (`Tensor [H, 1, d]` or `None`), keys (`Tensor [H, S, d]` or `None`): the RoPE-rotated query of the
            last prompt token and all keys (grouped-query heads expanded) of the layer before the cut, for
            attention-scored methods; `scaling` is the attention's softmax scale.
        key_mask (`BoolTensor [S]`): True for real tokens, False for padding.
        layout (`ImageLayout` or `None`): how the image's tokens are laid out (views, tiles, separators), when the
            model says so and every token of the image is still alive.
        grid (`tuple[int, int]` or `None`): (rows, cols) of the visual tokens, when they form one grid.
        seed (`int`): seed for methods that draw at random.
        question_text (`str` or `None`): the sample's question alone (no chat template), when the method asks for
            it and the harness gave it (`Pruner.set_question_texts`).
        question_embeds (`Tensor [Q, D]` or `None`): the LLM input embeddings of that question's tokens (tokenised
            alone by the model's tokenizer, no special tokens), with `question_text`.
    """

    n_keep: int
    visual_index: torch.Tensor
    query_index: torch.Tensor
    text_index: torch.Tensor
    key_mask: torch.Tensor
    position_ids: torch.Tensor
    rope: RopeSpec
    hidden_states: torch.Tensor | None = None
    normed_hidden_states: torch.Tensor | None = None
    values: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    scaling: float | None = None
    layout: ImageLayout | None = None
    grid: tuple[int, int] | None = None
    seed: int = 0
    question_text: str | None = None
    question_embeds: torch.Tensor | None = None

    @property
    def n_visual(self) -> int:
        return int(self.visual_index.numel())


@dataclass
class Selection:
    """A method's answer for one sample.

    Args:
        keep (`LongTensor [k]`): indices into the visual tokens (0 .. L-1), strictly ascending.
        parts (`dict[str, LongTensor]`): named subsets of `keep` (e.g. IVC-Prune's `ivc`, `seeds`, `foreground`),
            indices into the visual tokens, for users to inspect and plot.
    """

    keep: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keep.dim() != 1:
            raise ValueError(f"Selection.keep must be 1-D, got shape {tuple(self.keep.shape)}")
        if self.keep.numel() > 1 and not bool((self.keep[1:] > self.keep[:-1]).all()):
            raise ValueError("Selection.keep must be strictly ascending (sorted, no duplicates)")


def sorted_keep(indices: torch.Tensor) -> torch.Tensor:
    """Sorted unique int64 indices: the canonical form of `Selection.keep`."""
    return torch.unique(indices.to(torch.long), sorted=True)
