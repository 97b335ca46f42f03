"""Hand-made selection contexts for unit tests of methods (no model)."""

from __future__ import annotations

import torch

from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext


def make_context(seq_len: int, visual_index, n_keep: int, text_index=None, **fields) -> SelectionContext:
    """A 1D-RoPE context over `seq_len` tokens; the text tokens default to the first and the last position.

    `fields` set any other `SelectionContext` field (hidden_states, grid, values, ...).
    """
    text = torch.tensor([0, seq_len - 1] if text_index is None else text_index)
    defaults = dict(
        query_index=text[-1:] if text_index is None else text,
        text_index=text,
        key_mask=torch.ones(seq_len, dtype=torch.bool),
        position_ids=torch.arange(seq_len)[None],
        rope=RopeSpec(theta=10000.0, rotary_dim=8),
    )
    return SelectionContext(n_keep=n_keep, visual_index=torch.as_tensor(visual_index), **{**defaults, **fields})
