"""Position-only scores: how close RoPE's rotation at a token's position is to the identity or to a quarter turn.

IVC-Prune (arXiv 2602.03060) calls the visual tokens whose rotation is closest to the identity (large mean cosine)
or to a 90° turn (large mean sine) "implicit visual coordinates": reference points the model uses to localise. The
scores depend on the position ids and the rotary spec only, never on the image, so they are cheap and exact.

Precision: angles `p·θ_i` and their means are evaluated in float64 (positions reach tens of thousands, where a
float32 product is off by ~1e-3 rad), then the scores are returned in float32. Ranking happens on the float32 scores;
equal scores are ranked by lower visual-token index first (see `top_n`).
"""

from __future__ import annotations

import torch

from .context import RopeSpec, sorted_keep

MROPE_MODES = ("axis_mean", "section")
MROPE_LAYOUTS = ("block", "interleaved")


def rotary_frequencies(rope: RopeSpec, device: torch.device | str | None = None) -> torch.Tensor:
    """The `D // 2` rotary frequencies `θ_i = base^(-2i/D)`, float64.

    Args:
        rope (`RopeSpec`): the decoder's rotary embedding (`theta` = base, `rotary_dim` = D).
        device: where to build them.

    Returns:
        `Tensor [D // 2]` (float64), from 1 down to about `1 / base`.
    """
    exponents = torch.arange(0, rope.rotary_dim, 2, dtype=torch.float64, device=device) / rope.rotary_dim
    return float(rope.theta) ** (-exponents)


def _check_positions(position_ids: torch.Tensor, rope: RopeSpec, mode: str) -> None:
    if mode not in MROPE_MODES:
        raise ValueError(f"mode must be one of {MROPE_MODES}, got {mode!r}")
    if rope.rotary_dim < 2 or rope.rotary_dim % 2:
        raise ValueError(f"rope.rotary_dim must be an even number >= 2, got {rope.rotary_dim}")
    if rope.mrope_layout not in MROPE_LAYOUTS:
        raise ValueError(f"rope.mrope_layout must be one of {MROPE_LAYOUTS}, got {rope.mrope_layout!r}")
    if position_ids.dim() != 2:
        raise ValueError(f"position_ids must be [A, L], got shape {tuple(position_ids.shape)}")
    n_axes = position_ids.shape[0]
    if rope.mrope_section is None:
        if n_axes != 1:
            raise ValueError(f"1D RoPE takes position_ids with 1 row, got {n_axes} rows")
        return
    if n_axes != 3:
        raise ValueError(f"M-RoPE takes position_ids with 3 rows (t, h, w), got {n_axes} rows")
    if sum(rope.mrope_section) != rope.rotary_dim // 2:
        raise ValueError(
            f"rope.mrope_section {rope.mrope_section} must sum to rotary_dim // 2 = {rope.rotary_dim // 2}"
        )


def frequency_axes(rope: RopeSpec, device: torch.device | str | None = None) -> torch.Tensor:
    """Which position row rotates each of the `D // 2` frequencies (0 = t, 1 = h, 2 = w; all 0 for 1D RoPE).

    - `"block"` (Qwen2-VL, Qwen2.5-VL): block j of `mrope_section` uses row j % 3 (t, h, w in consecutive runs).
    - `"interleaved"` (Qwen3-VL): frequency i uses h if i ≡ 1 (mod 3) and i < 3·s_h, w if i ≡ 2 (mod 3) and
      i < 3·s_w, else t: the index rule of transformers' `Qwen3VLTextRotaryEmbedding.recomposition_frequencies`,
      which also clips a section that does not fit (so the counts need not equal the section's).

    Returns:
        `LongTensor [D // 2]`.
    """
    half = rope.rotary_dim // 2
    if rope.mrope_section is None:
        return torch.zeros(half, dtype=torch.long, device=device)
    if rope.mrope_layout == "block":
        block_axes = torch.arange(len(rope.mrope_section), device=device) % 3
        return block_axes.repeat_interleave(torch.tensor(rope.mrope_section, device=device))
    index = torch.arange(half, device=device)
    axes = torch.zeros(half, dtype=torch.long, device=device)
    for axis in (1, 2):
        axes[(index % 3 == axis) & (index < 3 * rope.mrope_section[axis])] = axis
    return axes


def ivc_scores(
    position_ids: torch.Tensor, rope: RopeSpec, mode: str = "axis_mean", dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine and mean sine of the rotation angles of each token.

    `c(p) = mean_i cos(p·θ_i)` and `s(p) = mean_i sin(p·θ_i)` over the `D // 2` frequencies (each frequency rotates
    two of the `D` dims, so this equals the mean over all rotary dims).

    Args:
        position_ids (`LongTensor [A, L]`): position ids of the tokens to score; A = 1 for 1D RoPE, 3 (t, h, w)
            for M-RoPE.
        rope (`RopeSpec`): the decoder's rotary embedding.
        mode (`str`): for M-RoPE only (1D RoPE gives the same result in both modes):
            - `"axis_mean"` (the release): average over the 3 axes *and* all frequencies, ignoring `mrope_section`;
            - `"section"`: frequency `i` uses the axis the model rotates it by (`frequency_axes`: the block or
              interleaved map of `rope.mrope_layout`), so `c` and `s` are the mean of the model's own cos/sin.
        dtype (`torch.dtype` or `None`): `None`: angles and means in float64. A dtype (the model's): the model's
            own tables, as the release reads them: angles in float32, cos/sin rounded to `dtype`, means in `dtype`.

    Returns:
        `(c, s)`: two `Tensor [L]` (float32) on the device of `position_ids`.
    """
    _check_positions(position_ids, rope, mode)
    frequencies = rotary_frequencies(rope, position_ids.device)
    positions = position_ids.to(torch.float64)
    if dtype is not None:
        # The models' own float32 arithmetic (transformers' inv_freq), not a rounded float64 result.
        exponents = torch.arange(0, rope.rotary_dim, 2, device=position_ids.device).float() / rope.rotary_dim
        frequencies, positions = 1.0 / (float(rope.theta) ** exponents), position_ids.float()
    if rope.mrope_section is not None and mode == "section":
        axes = frequency_axes(rope, position_ids.device)
        angles = positions[axes].T * frequencies  # [L, D/2]: frequency i at its own axis' position
    else:
        angles = positions[..., None] * frequencies  # [A, L, D/2]; the mean runs over axes and frequencies
    reduce_dims = tuple(d for d in range(angles.dim()) if d != angles.dim() - 2)
    table_dtype = angles.dtype if dtype is None else dtype
    cos_mean = angles.cos().to(table_dtype).mean(dim=reduce_dims)
    sin_mean = angles.sin().to(table_dtype).mean(dim=reduce_dims)
    return cos_mean.to(torch.float32), sin_mean.to(torch.float32)


def top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the `n` largest scores, best first; equal scores rank the lower index first.

    Args:
        scores (`Tensor [L]`).
        n (`int`): how many; clamped to `[0, L]`.

    Returns:
        `LongTensor [min(n, L)]`, in descending score order.
    """
    n = max(0, min(int(n), scores.numel()))
    # A stable descending sort keeps equal scores in index order: the tie rule does not depend on the backend.
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:n]


def ivc_tokens(c: torch.Tensor, s: torch.Tensor, n_ivc: int) -> torch.Tensor:
    """IVC tokens: the top-`n_ivc` tokens by `c` united with the top-`n_ivc` tokens by `s` (two separate rankings).

    Args:
        c (`Tensor [L]`), s (`Tensor [L]`): the scores of `ivc_scores`.
        n_ivc (`int`): how many each ranking contributes (ties: lower index first).

    Returns:
        `LongTensor [k]`, sorted ascending, `n_ivc <= k <= 2·n_ivc` (fewer only when `L` is smaller): indices into
        the scored tokens.
    """
    return sorted_keep(torch.cat([top_n(c, n_ivc), top_n(s, n_ivc)]))
