"""Pure index bookkeeping: gathering sequences, rotary tables and masks to a kept set.

`keep` is always `LongTensor [B, n]`, strictly ascending per row, indexing the sequence dimension.
"""

from __future__ import annotations

import torch


def gather_seq(x: torch.Tensor, keep: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Gather `x` along `dim` (which follows a batch dim at 0, or the batch is broadcast from size 1).

    Args:
        x (`Tensor [B or 1, ..., S, ...]`): batch first; `dim` is the sequence dimension.
        keep (`LongTensor [B, n]`).
    Returns:
        `Tensor` with `x.shape[dim]` replaced by `n` and batch `B`.
    """
    batch = keep.shape[0]
    if x.shape[0] != batch:
        x = x.expand(batch, *x.shape[1:])
    shape = [1] * x.dim()
    shape[0], shape[dim] = batch, keep.shape[1]
    index = keep.view(shape).expand(*[keep.shape[1] if d == dim else s for d, s in enumerate(x.shape)])
    return torch.gather(x, dim, index.to(x.device))


def gather_positions(position_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Gather position ids of shape `[B, S]` or `[A, B, S]` (M-RoPE rows first) along the sequence."""
    if position_ids.dim() == 2:
        return gather_seq(position_ids, keep, dim=1)
    return torch.stack([gather_seq(rows, keep, dim=1) for rows in position_ids])


def compact_positions(position_ids: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """1D position ids renumbered contiguously over the counted slots: what a model fed only those tokens uses.

    The counted slots of a row get consecutive positions from the position of its first counted slot (0 under
    generate(), whose left padding does not count); the other slots (left padding, a ragged batch's fillers) keep
    theirs, which no query reads (they are masked).

    Args:
        position_ids (`LongTensor [B, n]`): gathered original position ids.
        counted (`BoolTensor [B, n]`): the real tokens kept (neither padding nor fillers); at least one per row.
    Returns:
        `LongTensor [B, n]`.
    """
    counted = counted.to(position_ids.device)
    first = torch.gather(position_ids, 1, counted.long().argmax(dim=1, keepdim=True))
    return torch.where(counted, first + counted.long().cumsum(dim=1) - 1, position_ids)


def gather_mask(mask: torch.Tensor | None, rows: torch.Tensor | None, cols: torch.Tensor) -> torch.Tensor | None:
    """Restrict an attention mask to kept query rows and key columns.

    Args:
        mask (`Tensor [B, 1, Q, K]` (4D, bool or additive float), `Tensor [B, K]` (2D padding mask) or `None`).
        rows (`LongTensor [B, q]` or `None`): query rows to keep (None: keep all rows).
        cols (`LongTensor [B, k]`): key columns to keep.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        return gather_seq(mask, cols, dim=1)
    if rows is not None:
        mask = gather_seq(mask, rows, dim=2)
    return gather_seq(mask, cols, dim=3)


def hide_keys(mask: torch.Tensor | None, hidden: torch.Tensor, queries: int, attention: str,
              dtype: torch.dtype) -> torch.Tensor:
    """An attention mask that also hides the key columns `hidden` from every query (a ragged batch's fillers).

    Args:
        mask: what the layer (or the text model) would get: `Tensor [B, K]` (2D padding mask), `Tensor [B, 1, Q, K]`
            (bool, or additive float), or `None`: then one is made in the backend's format, causal over the last `Q`
            of the `K` keys (slots are in original order, so causal over slots is causal over positions).
        hidden (`BoolTensor [B, K]`): True at the key columns to hide.
        queries (`int`): Q, the query rows (used only when `mask` is `None`).
        attention (`str`): the backend, which decides the format of a new mask ("flash_attention_2": 2D).
        dtype: the additive mask's dtype for `eager`.
    """
    hidden = hidden.to(mask.device if mask is not None else hidden.device)
    if mask is None:
        batch, keys = hidden.shape
        if attention == "flash_attention_2":
            mask = torch.ones(batch, keys, dtype=torch.long, device=hidden.device)
        else:
            index = torch.arange(keys, device=hidden.device)
            causal = index[None, :] <= index[keys - queries:, None]
            mask = causal[None, None].expand(batch, 1, -1, -1)
            if attention == "eager":
                mask = torch.zeros(mask.shape, dtype=dtype, device=hidden.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
    if mask.dim() == 2:
        return mask.masked_fill(hidden, 0)
    if mask.dtype == torch.bool:
        return mask & ~hidden[:, None, None, :]
    return mask.masked_fill(hidden[:, None, None, :], torch.finfo(mask.dtype).min)


def decode_columns(held: torch.Tensor, prompt_len: int, total_len: int) -> torch.Tensor:
    """Key columns of the full (prompt + generated) sequence that a cache holding `held` prompt tokens sees.

    Args:
        held (`LongTensor [B, n]`): prompt positions the cache holds.
        prompt_len (`int`): S, the unpruned prompt length.
        total_len (`int`): S + tokens generated so far, including the ones being fed now.
    Returns:
        `LongTensor [B, n + total_len - S]`.
    """
    generated = torch.arange(prompt_len, total_len, device=held.device).expand(held.shape[0], -1)
    return torch.cat([held, generated], dim=1)


def pad_ragged(alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's alive positions, padded to the longest row's count with its first other positions (fillers).

    Args:
        alive (`BoolTensor [B, m]`): the tokens each row keeps.
    Returns:
        `(keep, live)`: `LongTensor [B, n]` ascending positions per row (n = the most any row keeps) and
        `BoolTensor [B, n]`, False at the fillers.
    """
    counts = alive.sum(dim=1)
    needed = counts.max() - counts
    dead = ~alive
    filler = dead & (dead.long().cumsum(dim=1) <= needed[:, None])
    keep = (alive | filler).nonzero()[:, 1].view(alive.shape[0], -1)
    return keep, torch.gather(alive, 1, keep)


def position_in(subset: torch.Tensor, superset: torch.Tensor) -> torch.Tensor:
    """Where each element of `subset` sits in `superset` (both `[B, *]`, ascending; subset ⊆ superset per row)."""
    superset = superset.contiguous()
    found = torch.searchsorted(superset, subset.contiguous())
    if not bool((torch.gather(superset, 1, found.clamp(max=superset.shape[1] - 1)) == subset).all()):
        raise ValueError("internal error: kept set is not contained in the held set")
    return found


def grid_from_positions(positions: torch.Tensor) -> tuple[int, int] | None:
    """(rows, cols) of one image's visual tokens, read from their M-RoPE position rows.

    Qwen-style M-RoPE numbers an image's tokens row-major: `t` is constant, `h = h0 + row`, `w = w0 + col`.
    Tokens that do not follow that pattern exactly (several images, video frames) have no single grid.

    Args:
        positions (`LongTensor [3, L]`): the (t, h, w) position ids of the visual tokens, in sequence order.
    Returns:
        `(rows, cols)` with `rows * cols == L`, or `None`.
    """
    if positions.dim() != 2 or positions.shape[0] != 3 or positions.shape[1] == 0:
        return None
    t, h, w = positions
    cols = int(w.max() - w.min()) + 1
    if positions.shape[1] % cols:
        return None
    index = torch.arange(positions.shape[1], device=positions.device)
    one_frame = bool((t == t[0]).all())
    row_major = torch.equal(h - h[0], index // cols) and torch.equal(w - w[0], index % cols)
    return (positions.shape[1] // cols, cols) if one_frame and row_major else None
