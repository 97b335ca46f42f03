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
        query_attention (`Tensor [Q, S]` or `None`): float32 attention of each `query_index` row over every token in
            layer K-1, averaged over heads (causal; padding and a ragged batch's fillers get 0), recomputed from that
            layer's own queries and keys, when the method asks for "rater_attention".
        image_embeds (`Tensor [L0, D]` or `None`), query_embeds (`Tensor [Q, D]` or `None`): the LLM's input
            embeddings of every visual token of this image as the prompt entered the LLM (before any cut, so `L0`
            may exceed `n_visual` at a later cut) and of the `query_index` rows, with "rater_attention".
        key_mask (`BoolTensor [S]`): True for real tokens, False for padding.
        layout (`ImageLayout` or `None`): how the image's tokens are laid out (views, tiles, separators), when the
            model says so and every token of the image is still alive.
        grid (`tuple[int, int]` or `None`): (rows, cols) of the visual tokens, when they form one grid.
        vision_attention (`FloatTensor [L]` or `None`): attention each of the image's visual tokens received at the
            chosen vision-encoder layer (`vision_layer`): mean over heads and query rows, pooled over the token's
            patches (docs/engine.md, vision-tower tap); NaN at separators. For `needs=("vision_attention",)`.
        vision_cls_attention (`FloatTensor [L]` or `None`): the encoder's [CLS] row over the patches, head-mean (or
            one softmax over concatenated heads, `vision_cls_softmax="concat"`), pooled; NaN at separators; `None`
            where the encoder has no [CLS] (Qwen, SigLIP). `vision_cls_attention_heads` (`[H, L]`): per head.
        vision_keys (`FloatTensor [L, H*d]` or `None`): the layer's keys, heads concatenated in head order (head mean:
            `.view(L, H, d).mean(1)`), pooled; NaN rows at separators.
        vision_features (`Tensor [L, g*C]` or `None`): the projector-input rows of the token's `g` patches
            concatenated in the merger's order (g = 1 for LLaVA); NaN rows at separators.
        vision_patches_per_token (`int` or `None`): `g`, encoder patches per LLM visual token (1 for the LLaVA family,
            4 where the merger fuses 2x2: Qwen, InternVL, DeepSeek-VL2), given with any vision need.
        vision_heads (`int` or `None`): H, the heads of the scored encoder layer (for head means of `vision_keys`;
            None when no attention state was read), given with any vision need.
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
    query_attention: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    query_embeds: torch.Tensor | None = None
    layout: ImageLayout | None = None
    grid: tuple[int, int] | None = None
    vision_attention: torch.Tensor | None = None
    vision_cls_attention: torch.Tensor | None = None
    vision_cls_attention_heads: torch.Tensor | None = None
    vision_keys: torch.Tensor | None = None
    vision_features: torch.Tensor | None = None
    vision_patches_per_token: int | None = None
    vision_heads: int | None = None
    seed: int = 0
    question_text: str | None = None
    question_embeds: torch.Tensor | None = None

    @property
    def n_visual(self) -> int:
        return int(self.visual_index.numel())


# Where a merged token's vector lives (docs/engine.md, "Merged tokens"): "llm_input" vectors are written as they are
# into the sequence at the cut (the input embeddings of a before-LLM cut, the hidden states of an in-LLM one);
# "projector_input" vectors go through the model's own projector first (before-LLM cuts only).
MERGE_SPACES = ("llm_input", "projector_input")
MERGED_PART = "merged"


@dataclass(frozen=True)
class MergedTokens:
    """Kept slots whose token is replaced by a new vector (an average of dropped tokens, for instance).

    A merged token occupies its slot: its place in the sequence and its original position id (all three M-RoPE
    rows) are the slot's; only its vector changes.

    Args:
        slots (`LongTensor [m]`): indices into `Selection.keep` (not into the visual tokens), distinct.
        vectors (`Tensor [m, W]`): the new vectors, one per slot, in `space`.
        space (`str`): one of `MERGE_SPACES`.
    """

    slots: torch.Tensor
    vectors: torch.Tensor
    space: str = "llm_input"

    def __post_init__(self) -> None:
        if self.space not in MERGE_SPACES:
            raise ValueError(f"MergedTokens.space must be one of {MERGE_SPACES}, got {self.space!r}")
        if self.slots.dim() != 1 or self.vectors.dim() != 2 or self.vectors.shape[0] != self.slots.numel():
            raise ValueError(
                f"MergedTokens needs slots [m] and vectors [m, W], got {tuple(self.slots.shape)} and "
                f"{tuple(self.vectors.shape)}"
            )
        if torch.unique(self.slots).numel() != self.slots.numel():
            raise ValueError("MergedTokens.slots must be distinct (one vector per slot)")


@dataclass
class Selection:
    """A method's answer for one sample.

    Args:
        keep (`LongTensor [k]`): indices into the visual tokens (0 .. L-1), strictly ascending.
        parts (`dict[str, LongTensor]`): named subsets of `keep` (e.g. IVC-Prune's `ivc`, `seeds`, `foreground`),
            indices into the visual tokens, for users to inspect and plot.
        merged (`MergedTokens` or `None`): kept slots that carry a new vector instead of their own token; the part
            `"merged"` (visual indices of those slots) is added to `parts`.
    """

    keep: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    merged: MergedTokens | None = None

    def __post_init__(self) -> None:
        if self.keep.dim() != 1:
            raise ValueError(f"Selection.keep must be 1-D, got shape {tuple(self.keep.shape)}")
        if self.keep.numel() > 1 and not bool((self.keep[1:] > self.keep[:-1]).all()):
            raise ValueError("Selection.keep must be strictly ascending (sorted, no duplicates)")
        if MERGED_PART in self.parts and self.merged is None:
            raise ValueError(f"the part name {MERGED_PART!r} is reserved for Selection.merged")
        if self.merged is not None:
            slots = self.merged.slots
            if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= self.keep.numel()):
                raise ValueError(f"MergedTokens.slots must index Selection.keep (0 .. {self.keep.numel() - 1})")
            self.parts = {**self.parts, MERGED_PART: self.keep[slots.to(self.keep.device)].sort().values}


def sorted_keep(indices: torch.Tensor) -> torch.Tensor:
    """Sorted unique int64 indices: the canonical form of `Selection.keep`."""
    return torch.unique(indices.to(torch.long), sorted=True)


def merged_at(keep: torch.Tensor, tokens: torch.Tensor, vectors: torch.Tensor, space: str) -> MergedTokens:
    """`MergedTokens` for vectors that go to the slots of the visual tokens `tokens` (each in `keep`, ascending).

    Raises:
        ValueError: a token is not kept.
    """
    slots = torch.searchsorted(keep, tokens.to(keep.device))
    if bool((slots >= keep.numel()).any()) or not torch.equal(keep[slots.clamp(max=keep.numel() - 1)], tokens):
        raise ValueError("a merged token's slot must be one of the kept tokens")
    return MergedTokens(slots, vectors, space)
