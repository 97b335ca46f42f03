"""`ivc_prune`: IVC-Prune (Sun et al., "IVC-Prune: Revealing the Implicit Visual Coordinates in LVLMs for Vision Token
Pruning", ICLR 2026, https://arxiv.org/abs/2602.03060).

Where: inside the LLM, once, before layer K; with `cache_policy="all"` the KV cache of layers 0..K-1 is cut to the same
tokens after prefill, so every layer decodes over the reduced context. Signals: RoPE positions (IVC tokens, see
`..rope`) and the value vectors of layer K-1 (foreground tokens). No attention map is read: works with eager, SDPA and
FlashAttention-2.

Kept visual tokens = IVC tokens ∪ semantic seeds ∪ foreground tokens ranked by refined value similarity, filled to the
engine's budget (or, with `fill=False`, the LLaVA release rule: a fixed number of foreground tokens, no fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import PruneConfig, check_choice
from ..context import Selection, SelectionContext, sorted_keep
from ..layout import ImageLayout, View
from ..registry import register_method
from ..rope import MROPE_MODES, ivc_scores, ivc_tokens, top_n
from .ivc_views import by_score, covered_cells, first_occurrences, local_grid, view_ivc, view_tokens

# Query rows scored per step: bounds the similarity block to [H, _QUERY_CHUNK, L] whatever the prompt length.
_QUERY_CHUNK = 256
TILED_RULES = ("ranked", "internvl", "deepseek")
SCORE_DTYPES = ("float32", "model")


@dataclass
class IVCPruneConfig(PruneConfig):
    """Settings of IVC-Prune. Absolute counts (`n_ivc`, `n_seed`), when set, replace their fractions."""

    layer: int = field(
        default=16, metadata={"help": "K: first decoder layer that runs pruned; values of K-1 are read"}
    )
    cache_policy: str = field(
        default="all", metadata={"help": "'all' (the release: layers 0..K-1 are trimmed too after prefill) or 'after'"}
    )
    ivc_frac: float = field(
        default=0.10,
        metadata={
            "help": "IVC tokens per ranking (cos and sin each) as a fraction of L, in [0, 1]; round(ivc_frac*L)"
        },
    )
    n_ivc: int | None = field(
        default=None, metadata={"help": "IVC tokens per ranking as an absolute count (>= 0); overrides ivc_frac"}
    )
    seed_frac: float = field(
        default=0.01, metadata={"help": "semantic seeds as a fraction of L, in [0, 1]; max(1, round(seed_frac*L))"}
    )
    n_seed: int | None = field(
        default=None, metadata={"help": "semantic seeds as an absolute count (>= 0, 0 = none); overrides seed_frac"}
    )
    text_offset: int = field(
        default=2,
        metadata={"help": "prompt tokens after the image skipped before the text queries (image-end marker + 1)"},
    )
    mrope_mode: str = field(
        default="axis_mean",
        metadata={"help": "M-RoPE IVC score: 'axis_mean' (release: mean over t/h/w and all dims) or 'section'"},
    )
    row_ivc_frac: float | None = field(
        default=None,
        metadata={
            "help": "tiled images: IVC tokens per row of a local view spanning several tiles, as a fraction of "
            "the row (DeepSeek-VL2's release rule); None: n_ivc/ivc_frac over the whole view"
        },
    )
    tiled_rule: str = field(
        default="ranked",
        metadata={
            "help": "images with a global view (layout): 'internvl' or 'deepseek' (each release's own rule), or "
            "'ranked' (this project's: exact budget by refined score, any ratio)"
        },
    )
    score_dtype: str = field(
        default="float32",
        metadata={
            "help": "'float32' (scores in float32, IVC angles in float64) or 'model' (the release: RoPE tables and "
            "value similarities in the dtype of the captured values, bf16 for a bf16 model)"
        },
    )
    fill: bool = field(
        default=True,
        metadata={"help": "True: fill with top tokens by refined score to exactly round(ratio*L); False: no fill"},
    )
    n_foreground: int | None = field(
        default=None,
        metadata={"help": "with fill=False only: top tokens by refined score added to IVC ∪ seeds (>= 0)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope != "llm":
            raise ValueError(
                f"ivc_prune reads the value vectors of layer K-1: scope must be 'llm', got {self.scope!r}"
            )
        self.ivc_frac = _fraction("ivc_frac", self.ivc_frac)
        self.seed_frac = _fraction("seed_frac", self.seed_frac)
        if self.row_ivc_frac is not None:
            self.row_ivc_frac = _fraction("row_ivc_frac", self.row_ivc_frac)
        _count("n_ivc", self.n_ivc, optional=True)
        _count("n_seed", self.n_seed, optional=True)
        _count("text_offset", self.text_offset)
        _count("n_foreground", self.n_foreground, optional=True)
        check_choice("tiled_rule", self.tiled_rule, TILED_RULES)
        check_choice("score_dtype", self.score_dtype, SCORE_DTYPES)
        check_choice("mrope_mode", self.mrope_mode, MROPE_MODES)
        if not isinstance(self.fill, bool):
            raise TypeError(f"fill must be True or False, got {self.fill!r}")
        if not self.fill and self.n_foreground is None:
            raise ValueError("fill=False needs n_foreground (how many top tokens by refined score to add), got None")
        if self.fill and self.n_foreground is not None:
            raise ValueError(
                f"n_foreground={self.n_foreground} only applies with fill=False; with fill=True the budget "
                "round(ratio*L) sets the foreground count (set n_foreground=None)"
            )

    def ivc_count(self, n_visual: int) -> int:
        """Tokens taken from each of the cos and sin rankings for `n_visual` visual tokens."""
        count = self.n_ivc if self.n_ivc is not None else round(self.ivc_frac * n_visual)
        return min(count, n_visual)

    def seed_count(self, n_visual: int, at_least_one: bool = True) -> int:
        """Semantic seeds for `n_visual` tokens (`at_least_one=False`, DeepSeek-VL2's release: no `max(1, .)`)."""
        from_frac = round(self.seed_frac * n_visual)
        count = self.n_seed if self.n_seed is not None else max(int(at_least_one), from_frac)
        return min(count, n_visual)

    def table_dtype(self, values: torch.Tensor) -> torch.dtype | None:
        """The dtype of the RoPE tables for `ivc_scores`: the captured values' with `score_dtype="model"`."""
        return values.dtype if self.score_dtype == "model" else None


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0{' or None' if optional else ''}, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def text_relevance(
    values: torch.Tensor, visual_index: torch.Tensor, query_index: torch.Tensor, model_dtype: bool = False
) -> torch.Tensor:
    """Mean value-vector attention of the query tokens over the visual tokens.

    `A_h[q, k] = softmax_k(<v_h(q), v_h(k)> / sqrt(d))` with the softmax over the visual keys only; the result is
    `mean_h mean_q A_h[q, k]`. Computed `_QUERY_CHUNK` query rows at a time: the largest intermediate is
    `[H, min(Q, _QUERY_CHUNK), L]`, never `S x S`.

    Args:
        values (`Tensor [H, S, d]`): value vectors of every token (grouped-query heads expanded).
        visual_index (`LongTensor [L]`): sequence positions of the visual tokens (the keys).
        query_index (`LongTensor [Q]`): sequence positions of the query rows, Q >= 1.
        model_dtype (`bool`): False: float32 throughout. True: as the release, in the dtype of `values` (products
            in that dtype, softmax in float32 rounded back to it, then the head mean and the query mean in it).

    Returns:
        `Tensor [L]` (float32): each row of `A_h` sums to one, so the scores sum to one.
    """
    if query_index.numel() == 0:
        raise ValueError("text_relevance needs at least one query row, got an empty query_index")
    n_heads, _, head_dim = values.shape
    if model_dtype:
        keys = values[:, visual_index]
        rows = [
            (torch.matmul(values[:, chunk], keys.transpose(1, 2)) / math.sqrt(head_dim))
            .softmax(dim=-1, dtype=torch.float32).to(values.dtype).mean(dim=0)
            for chunk in query_index.split(_QUERY_CHUNK)
        ]
        return torch.cat(rows).mean(dim=0).float()
    keys = values[:, visual_index].float()  # [H, L, d]
    total = torch.zeros(visual_index.numel(), dtype=torch.float32, device=values.device)
    for rows in query_index.split(_QUERY_CHUNK):
        logits = torch.matmul(values[:, rows].float(), keys.transpose(1, 2)) / math.sqrt(head_dim)  # [H, q, L]
        total += logits.softmax(dim=-1).sum(dim=(0, 1))
    return total / (n_heads * query_index.numel())


def semantic_seeds(t: torch.Tensor, n_seed: int) -> torch.Tensor:
    """Stage 1: the `n_seed` visual tokens most relevant to the text.

    Args:
        t (`Tensor [L]`): text relevance (`text_relevance`).
        n_seed (`int`): how many.

    Returns:
        `LongTensor [n_seed]`: indices into the visual tokens, best first (ties: lower index first).
    """
    return top_n(t, n_seed)


def refined_relevance(
    values: torch.Tensor,
    visual_index: torch.Tensor,
    query_index: torch.Tensor,
    seeds: torch.Tensor,
    model_dtype: bool = False,
) -> torch.Tensor:
    """Stage 2: relevance with the seeds added as extra query rows.

    `r(k)` is the plain mean of `A[q, k]` over the `|T| + n_seed` rows (text queries, then seeds), so each text
    token and each seed weighs the same.

    Args:
        values (`Tensor [H, S, d]`), visual_index (`LongTensor [L]`): as in `text_relevance`.
        query_index (`LongTensor [Q]`): sequence positions of the text queries T.
        seeds (`LongTensor [n_seed]`): indices into the visual tokens.
        model_dtype (`bool`): as in `text_relevance`.

    Returns:
        `Tensor [L]` (float32).
    """
    rows = torch.cat([query_index, visual_index[seeds]])
    return text_relevance(values, visual_index, rows, model_dtype)


def budget(
    ivc: torch.Tensor,
    seeds: torch.Tensor,
    r: torch.Tensor,
    target: int,
    fill: bool = True,
    n_foreground: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which visual tokens to keep.

    Tokens are taken in this order until `target` are chosen: the seeds (best first), the other IVC tokens by
    descending `r`, then the foreground candidates by descending `r` (ties: lower index first). Foreground
    candidates are every other token when `fill` (so exactly `min(target, L)` are kept), and otherwise the tokens
    among the top `n_foreground` by `r` that are not already in `IVC ∪ seeds` (the LLaVA release rule; `target`
    then only caps the count). When `IVC ∪ seeds` alone exceeds `target`, this order keeps the seeds first, then the
    IVC tokens with the highest `r`.

    Args:
        ivc (`LongTensor [n_i]`): IVC tokens (indices into the visual tokens).
        seeds (`LongTensor [n_s]`): semantic seeds, best first.
        r (`Tensor [L]`): refined relevance.
        target (`int`): the budget, `>= 0`.
        fill (`bool`): fill up to `target` with the highest-`r` tokens.
        n_foreground (`int` or `None`): with `fill=False`, how many top tokens by `r` are candidates.

    Returns:
        `(keep, foreground)`: `LongTensor`s sorted ascending; `foreground` is the part of `keep` chosen by `r`
        outside `IVC ∪ seeds`.
    """
    if not fill and n_foreground is None:
        raise ValueError("budget(fill=False) needs n_foreground, got None")
    n_visual = r.numel()
    in_priority = torch.zeros(n_visual, dtype=torch.bool, device=r.device)
    in_priority[ivc] = True
    in_priority[seeds] = True
    is_seed = torch.zeros_like(in_priority)
    is_seed[seeds] = True
    ivc_rest = sorted_keep(ivc)
    ivc_rest = ivc_rest[~is_seed[ivc_rest]]
    ivc_rest = ivc_rest[top_n(r[ivc_rest], ivc_rest.numel())]
    by_r = top_n(r, n_visual if fill else n_foreground)
    candidates = by_r[~in_priority[by_r]]
    chosen = torch.cat([seeds, ivc_rest, candidates])[: max(0, target)]
    foreground = chosen[len(seeds) + len(ivc_rest) :]
    return sorted_keep(chosen), sorted_keep(foreground)


def _text_queries(ctx: SelectionContext, text_offset: int) -> torch.Tensor:
    """T = the prompt tokens after the image, less the first `text_offset`.

    When that leaves nothing (a prompt that ends at or right after the image), T falls back to the last real prompt
    token, the one whose prediction starts the answer, so the method never divides by an empty query set.
    """
    # Right padding also follows the image: it is no prompt token.
    after = ctx.query_index[ctx.key_mask[ctx.query_index]]
    queries = after[text_offset:]
    if queries.numel() > 0:
        return queries
    if after.numel() > 0:
        return after[-1:]
    return ctx.key_mask.nonzero().flatten()[-1:]


@register_method("ivc_prune", IVCPruneConfig, needs=("values",))
def ivc_prune(ctx: SelectionContext, config: IVCPruneConfig) -> Selection:
    """IVC tokens ∪ semantic seeds ∪ foreground tokens, within `ctx.n_keep` (exactly `ctx.n_keep` when `fill`).

    Parts (indices into the visual tokens, each a subset of `keep`): `ivc_cos`, `ivc_sin` and their union `ivc`,
    `seeds`, `foreground` (the tokens kept for their refined score alone).
    """
    if ctx.values is None:
        raise ValueError("ivc_prune needs the value vectors of layer K-1 (ctx.values), got None")
    tiles = local_grid(ctx.layout) if ctx.layout is not None else None
    has_global = ctx.layout is not None and any(view.kind == "global" for view in ctx.layout.views)
    if config.tiled_rule != "ranked" and has_global:
        return _release_tiled_ivc_prune(ctx, config, ctx.layout, tiles)
    if tiles is not None:
        return _tiled_ivc_prune(ctx, config, ctx.layout, tiles)
    n_visual = ctx.n_visual
    model_dtype = config.score_dtype == "model"
    positions = ctx.position_ids[:, ctx.visual_index]
    c, s = ivc_scores(positions, ctx.rope, config.mrope_mode, config.table_dtype(ctx.values))
    n_ivc = config.ivc_count(n_visual)
    ivc = ivc_tokens(c, s, n_ivc)
    queries = _text_queries(ctx, config.text_offset)
    t = text_relevance(ctx.values, ctx.visual_index, queries, model_dtype)
    seeds = semantic_seeds(t, config.seed_count(n_visual))
    r = refined_relevance(ctx.values, ctx.visual_index, queries, seeds, model_dtype)
    keep, foreground = budget(ivc, seeds, r, ctx.n_keep, config.fill, config.n_foreground)
    parts = {"ivc": ivc, "ivc_cos": top_n(c, n_ivc), "ivc_sin": top_n(s, n_ivc), "seeds": seeds}
    # Report only what was kept: the budget may drop part of IVC ∪ seeds when it is smaller than them.
    parts = {name: keep[torch.isin(keep, part)] for name, part in parts.items()}
    parts["foreground"] = foreground
    return Selection(keep=keep, parts=parts)


def _global_view(layout: ImageLayout) -> View:
    global_view = next((view for view in layout.views if view.kind == "global"), None)
    if global_view is None:
        raise ValueError(f"a tiled image needs a global view (thumbnail) to score: {layout}")
    return global_view


def _tiled_parts(
    keep: torch.Tensor, ivc: torch.Tensor, seeds: torch.Tensor, separators: torch.Tensor, mapped: torch.Tensor
) -> Selection:
    """`keep` (sorted) with its parts; `foreground` is what was kept for its refined score alone."""
    parts = {"ivc": ivc, "seeds": seeds, "separators": separators, "mapped": mapped}
    parts = {name: keep[torch.isin(keep, part)] for name, part in parts.items()}
    parts["foreground"] = keep[~torch.isin(keep, torch.cat([ivc, seeds, separators, mapped]))]
    return Selection(keep=keep, parts=parts)


def _tiled_ivc_prune(
    ctx: SelectionContext, config: IVCPruneConfig, layout: ImageLayout, tiles: torch.Tensor
) -> Selection:
    """`tiled_rule="ranked"`, this project's rule for a global view plus local tiles (see `ivc_views`; `tiles` is
    `local_grid(layout)`): scores on the global view, its kept cells mapped onto the tiles, per-view IVC, separators
    kept; trimmed or filled to `ctx.n_keep` by refined relevance."""
    global_view = _global_view(layout)
    device = ctx.values.device
    model_dtype = config.score_dtype == "model"
    positions = ctx.position_ids[:, ctx.visual_index]
    ivc = torch.cat([
        view_ivc(view, positions, ctx.rope, config.mrope_mode, config.ivc_count(view.rows * view.cols),
                 config.row_ivc_frac, dtype=config.table_dtype(ctx.values))
        for view in layout.views
    ]).to(device)
    global_cells = global_view.cells().flatten().to(device)
    queries = _text_queries(ctx, config.text_offset)
    t = text_relevance(ctx.values, ctx.visual_index, queries, model_dtype)
    seeds = global_cells[top_n(t[global_cells], config.seed_count(global_cells.numel()))]
    r = refined_relevance(ctx.values, ctx.visual_index, queries, seeds, model_dtype)
    # The global view keeps its IVC tokens and seeds, then its best cells by r up to half of it.
    priority = first_occurrences(torch.cat([seeds, by_score(ivc[torch.isin(ivc, global_cells)], r)]))
    global_keep = first_occurrences(torch.cat([priority, by_score(global_cells, r)]))
    global_keep = global_keep[: max(round(0.5 * global_cells.numel()), priority.numel())]
    mapped = covered_cells(global_keep, global_view, tiles.to(device))
    separators = layout.separators().to(device)
    order = [separators, seeds, by_score(ivc, r), by_score(torch.cat([global_keep, mapped]), r)]
    if config.fill:
        order.append(by_score(torch.arange(ctx.n_visual, device=device), r))
    keep = first_occurrences(torch.cat(order))[: ctx.n_keep]
    return _tiled_parts(sorted_keep(keep), ivc, seeds, separators, mapped)


def _release_tiled_ivc_prune(
    ctx: SelectionContext, config: IVCPruneConfig, layout: ImageLayout, tiles: torch.Tensor | None
) -> Selection:
    """`tiled_rule="internvl"` or `"deepseek"`: the release's own rule for an image with a global view
    (`tiles` is `local_grid(layout)`, `None` for a single view). See docs/methods/ivc_prune.md, "Tiled images"."""
    deepseek = config.tiled_rule == "deepseek"
    global_view = _global_view(layout)
    device = ctx.values.device
    model_dtype = config.score_dtype == "model"
    positions = ctx.position_ids[:, ctx.visual_index]
    # Each view ranks all of its tokens, row separators included (DeepSeek-VL2's release does; InternVL has none).
    view_ivcs = [
        view_ivc(view, positions, ctx.rope, config.mrope_mode, config.ivc_count(view.n_tokens), config.row_ivc_frac,
                 with_separators=True, dtype=config.table_dtype(ctx.values)).to(device)
        for view in layout.views
    ]
    global_ivc = view_ivcs[layout.views.index(global_view)]
    ivc = torch.cat(view_ivcs)
    global_cells = global_view.cells().flatten().to(device)
    # The softmax keys: InternVL's release normalises over every token (here: the image's), DeepSeek-VL2's over the
    # global view's tokens (separators included) only.
    keys = view_tokens(global_view).flatten().to(device) if deepseek else torch.arange(ctx.n_visual, device=device)
    queries = _text_queries(ctx, config.text_offset)

    def relevance(rows: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(ctx.n_visual, dtype=torch.float32, device=device)
        scores[keys] = text_relevance(ctx.values, ctx.visual_index[keys], rows, model_dtype)
        return scores

    t = relevance(queries)
    seeds = global_cells[top_n(t[global_cells], config.seed_count(global_cells.numel(), at_least_one=not deepseek))]
    r = relevance(torch.cat([queries, ctx.visual_index[seeds]]))
    by_r = by_score(global_cells, r)
    # Half of the global view: its IVC tokens, then its best cells by r outside them (the seeds count apart).
    extra_count = max(int(deepseek), round(0.5 * global_view.n_tokens) - global_ivc.numel())
    extra = by_r[~torch.isin(by_r, global_ivc)][:extra_count]
    # Only the cells chosen by r map onto the tiles (DeepSeek-VL2: the seeds too), never the global IVC tokens.
    to_map = torch.cat([seeds, extra]) if deepseek else extra
    mapped = covered_cells(to_map, global_view, tiles.to(device)) if tiles is not None else extra[:0]
    separators = layout.separators().to(device)
    priority = torch.unique(torch.cat([separators, ivc, seeds, extra, mapped]))
    if priority.numel() >= ctx.n_keep:
        # The release keeps the lowest indices of an overfull priority set: the thumbnail (last) goes first.
        keep = priority[: ctx.n_keep]
    else:
        # The fill comes from the global view's cells only, by r: it can stop short of the budget.
        fill = by_r[~torch.isin(by_r, priority)][: ctx.n_keep - priority.numel()] if config.fill else by_r[:0]
        keep = sorted_keep(torch.cat([priority, fill]))
    return _tiled_parts(keep, ivc, seeds, separators, mapped)


OFFICIAL_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' release settings, per model (the `official` preset of each); every release scores in the model's
    # dtype (bf16), hence score_dtype="model".
    "qwen2_5_vl_7b": {
        "layer": 16, "ratio": 0.5, "ivc_frac": 0.10, "seed_frac": 0.01, "text_offset": 2, "fill": True,
        "score_dtype": "model",
    },
    "qwen2_5_vl_3b": {
        "layer": 22, "ratio": 0.5, "ivc_frac": 0.10, "seed_frac": 0.01, "text_offset": 2, "fill": True,
        "score_dtype": "model",
    },
    "llava_1_5_7b": {
        "layer": 16, "n_ivc": 29, "n_seed": 6, "text_offset": 2, "fill": False, "n_foreground": 115,
        "score_dtype": "model",
    },
    # Per 256-token tile and on the thumbnail: 26 IVC tokens per ranking; 3 seeds from the thumbnail; the release's
    # InternVL rule (half of the thumbnail, mapped onto the tiles, 50% of the image, filled from the thumbnail).
    "internvl2_5_8b": {
        "layer": 16, "ratio": 0.5, "n_ivc": 26, "n_seed": 3, "text_offset": 2, "fill": True,
        "tiled_rule": "internvl", "score_dtype": "model",
    },
    # Structural, no fill: 21 IVC per ranking on the global view's 210 tokens, 15% of each row of the local view,
    # seeds round(1%) of the global cells (no max(1, .)), text after the image less 1 token; ratio 1.0 is only the
    # cap (the release keeps ~50-65%). n_foreground applies only to images without a layout.
    "deepseek_vl2_small": {
        "layer": 17, "ratio": 1.0, "n_ivc": 21, "row_ivc_frac": 0.15, "seed_frac": 0.01, "text_offset": 1,
        "fill": False, "n_foreground": 0, "tiled_rule": "deepseek", "score_dtype": "model",
    },
}


def official_config(model_key: str, **overrides: Any) -> IVCPruneConfig:
    """The release's settings for `model_key`, with `overrides` applied on top.

    Raises:
        KeyError: `model_key` has no preset (the message lists the known keys).
    """
    try:
        preset = OFFICIAL_PRESETS[model_key]
    except KeyError:
        raise KeyError(f"no official ivc_prune preset for {model_key!r}; known: {sorted(OFFICIAL_PRESETS)}") from None
    return IVCPruneConfig(**{**preset, **overrides})
