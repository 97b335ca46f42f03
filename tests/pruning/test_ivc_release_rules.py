"""IVC-Prune's tiled rules `tiled_rule="internvl"` and `"deepseek"` against small references, one per release.

Each reference is written here, with plain Python loops, from a reading of the release (FireRedTeam/IVC-Prune):
InternVL: `transformers/src/transformers/models/internvl/modeling_internlm2.py`, the branch `idx == IVCP_k` of
`IVCP_forward_flashattention` and `map_thumbnail_token_indices_to_blocks`; DeepSeek-VL2:
`DeepSeek-VL2/deepseek_vl2/models/modeling_deepseek.py`, the branch `layer_idx == IVCP_k` of
`IVCP_forward_flashattention` and `thumbnail_tokens_to_detailed_blocks`. Ties never occur (random values, distinct
positions), so the release's `topk` and this project's stable sort rank alike.
"""

from __future__ import annotations

import math

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.models.internvl import internvl_layout
from vlmeval_ivcp.pruning.layout import ImageLayout, View
from vlmeval_ivcp.pruning.methods.ivc_prune import IVCPruneConfig, ivc_prune, official_config

PREFIX, SUFFIX, THETA, ROTARY = 3, 6, 10000.0, 8


def _context(layout: ImageLayout, n_keep: int, seed: int):
    """The image after a 3-token prefix, then 6 text tokens; random value vectors; positions 0..S-1."""
    seq = PREFIX + layout.n_tokens + SUFFIX
    values = torch.randn(2, seq, 8, generator=torch.Generator().manual_seed(seed))
    visual = torch.arange(PREFIX, PREFIX + layout.n_tokens)
    after = torch.arange(PREFIX + layout.n_tokens, seq)
    text = torch.cat([torch.arange(PREFIX), after])
    return make_context(seq, visual, n_keep, text_index=text.tolist(), query_index=after, values=values, layout=layout)


def _scores(values: torch.Tensor, rows: list[int], keys: list[int]) -> dict[int, float]:
    """Mean over heads and query rows of the softmax (over `keys`) of value dot products (sequence positions)."""
    heads, _, dim = values.shape
    total = torch.zeros(len(keys), dtype=torch.float64)
    for head in range(heads):
        for row in rows:
            logits = torch.stack([values[head, row].double() @ values[head, key].double() for key in keys])
            total += (logits / math.sqrt(dim)).softmax(0)
    return dict(zip(keys, (total / (heads * len(rows))).tolist()))


def _best(tokens, score, n: int) -> list[int]:
    """The `n` tokens of highest score (image-token indices), best first."""
    return sorted(tokens, key=lambda token: -score(token))[:n]


def _ivc(tokens: list[int], n: int) -> set[int]:
    """Top `n` of the tokens by mean cos and by mean sin of their RoPE angles (position = PREFIX + index)."""
    thetas = [THETA ** (-2 * i / ROTARY) for i in range(ROTARY // 2)]

    def mean(f, token):
        return sum(f((PREFIX + token) * theta) for theta in thetas) / len(thetas)

    return set(_best(tokens, lambda k: mean(math.cos, k), n)) | set(_best(tokens, lambda k: mean(math.sin, k), n))


def internvl_reference(ctx, rows: int, cols: int, side: int, n_ivc: int, n_seed: int) -> list[int]:
    per_tile = side * side
    thumb_start = rows * cols * per_tile
    thumb = list(range(thumb_start, thumb_start + per_tile))
    image = list(range(ctx.n_visual))
    text = list(range(PREFIX + ctx.n_visual + 2, ctx.values.shape[1]))  # the marker and one more token skipped
    t = _scores(ctx.values, text, [PREFIX + k for k in image])
    seeds = _best(thumb, lambda k: t[PREFIX + k], n_seed)
    r = _scores(ctx.values, [PREFIX + k for k in seeds] + text, [PREFIX + k for k in image])
    blocks = [list(range(b * per_tile, (b + 1) * per_tile)) for b in range(rows * cols + 1)]
    ivc_by_block = [_ivc(block, n_ivc) for block in blocks]
    by_r = _best(thumb, lambda k: r[PREFIX + k], len(thumb))
    thumb_ivc = ivc_by_block[-1]
    extra = [k for k in by_r if k not in thumb_ivc][: max(0, round(0.5 * per_tile) - len(thumb_ivc))]
    mapped = set()
    for k in extra:  # each thumbnail cell covers rows x cols cells of the full grid, the tiles side by side
        i, j = divmod(k - thumb_start, side)
        for dy in range(rows):
            for dx in range(cols):
                full_row, full_col = i * rows + dy, j * cols + dx
                block = (full_row // side) * cols + full_col // side
                mapped.add(block * per_tile + (full_row % side) * side + full_col % side)
    priority = sorted(set().union(*ivc_by_block, extra, mapped, seeds))
    if len(priority) >= ctx.n_keep:
        return priority[: ctx.n_keep]
    return sorted(priority + [k for k in by_r if k not in priority][: ctx.n_keep - len(priority)])


TILINGS = [(1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3), (3, 2)]


@pytest.mark.parametrize("rows, cols", TILINGS)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_internvl_rule_keeps_the_release_set(rows, cols, ratio):
    side = 4
    layout = internvl_layout(rows, cols, side * side)
    for seed in range(3):
        ctx = _context(layout, n_keep=max(1, round(ratio * layout.n_tokens)), seed=seed)
        config = IVCPruneConfig(layer=2, n_ivc=2, n_seed=2, tiled_rule="internvl")
        selection = ivc_prune(ctx, config)
        assert selection.keep.tolist() == internvl_reference(ctx, rows, cols, side, n_ivc=2, n_seed=2)


def test_internvl_rule_on_a_single_tile_treats_it_as_the_thumbnail():
    # One tile: InternVL has no thumbnail; the release scores and keeps within that one 256-token block.
    layout = internvl_layout(1, 1, 16)
    for seed in range(3):
        ctx = _context(layout, n_keep=8, seed=seed)
        selection = ivc_prune(ctx, IVCPruneConfig(layer=2, n_ivc=2, n_seed=2, tiled_rule="internvl"))
        assert selection.keep.tolist() == internvl_reference(ctx, 0, 0, 4, n_ivc=2, n_seed=2)


def test_internvl_preset_uses_the_release_rule_and_dtype():
    config = official_config("internvl2_5_8b")
    assert (config.tiled_rule, config.score_dtype, config.text_offset) == ("internvl", "model", 2)


def deepseek_layout(side: int, tiles: tuple[int, int]) -> ImageLayout:
    global_view = View(0, side, side, row_separator=True)
    local = View(global_view.n_tokens + 1, tiles[0] * side, tiles[1] * side, row_separator=True, kind="local")
    return ImageLayout(global_view.n_tokens + 1 + local.n_tokens, (global_view, local), tiles=tiles)


def deepseek_reference(ctx, tiles: tuple[int, int], side: int, n_ivc: int, seed_frac: float, row_frac: float):
    height, width = tiles
    global_tokens = list(range(side * (side + 1)))  # rows of side cells, each followed by its separator
    cells = [k for k in global_tokens if k % (side + 1) != side]
    local_start = len(global_tokens) + 1  # after the view separator
    local_cols = width * side + 1
    local_rows = [list(range(local_start + row * local_cols, local_start + (row + 1) * local_cols))
                  for row in range(height * side)]
    separators = {k for k in global_tokens if k not in cells} | {len(global_tokens)} | {row[-1] for row in local_rows}
    text = list(range(PREFIX + ctx.n_visual + 1, ctx.values.shape[1]))  # only the marker skipped
    keys = [PREFIX + k for k in global_tokens]  # the softmax runs over the global view's tokens
    t = _scores(ctx.values, text, keys)
    seeds = _best(cells, lambda k: t[PREFIX + k], round(seed_frac * len(cells)))  # no max(1, .)
    r = _scores(ctx.values, text + [PREFIX + k for k in seeds], keys)
    global_ivc = _ivc(global_tokens, n_ivc)  # separators ranked too
    local_ivc = set().union(*(_ivc(row, round(row_frac * len(row))) for row in local_rows))
    extra_count = max(1, round(0.5 * len(global_tokens)) - len(global_ivc))
    extra = [k for k in _best(cells, lambda k: r[PREFIX + k], len(cells)) if k not in global_ivc][:extra_count]
    mapped = set()
    for k in set(seeds) | set(extra):  # the seeds map onto the local view too
        ty, tx = divmod(k, side + 1)
        for row in range(ty * height, (ty + 1) * height):
            for col in range(tx * width, (tx + 1) * width):
                mapped.add(local_start + row * local_cols + col)
    return sorted(separators | global_ivc | local_ivc | set(seeds) | set(extra) | mapped)


@pytest.mark.parametrize("tiles", [(1, 2), (2, 1), (2, 2), (1, 3), (3, 2)])
def test_deepseek_rule_keeps_the_release_set(tiles):
    side = 4
    layout = deepseek_layout(side, tiles)
    for seed in range(3):
        ctx = _context(layout, n_keep=layout.n_tokens, seed=seed)
        config = official_config("deepseek_vl2_small", layer=2, n_ivc=2, seed_frac=0.1, score_dtype="float32")
        selection = ivc_prune(ctx, config)
        expected = deepseek_reference(ctx, tiles, side, n_ivc=2, seed_frac=0.1, row_frac=0.15)
        assert selection.keep.tolist() == expected


def test_deepseek_preset_follows_the_release():
    config = official_config("deepseek_vl2_small")
    assert (config.tiled_rule, config.text_offset, config.score_dtype) == ("deepseek", 1, "model")
    # round(0.01 x 16 cells) = 0: no max(1, .), so no seeds at all, as in the release.
    layout = deepseek_layout(4, (1, 2))
    selection = ivc_prune(_context(layout, layout.n_tokens, seed=0), official_config("deepseek_vl2_small", layer=2))
    assert selection.parts["seeds"].numel() == 0


def test_an_unknown_tiled_rule_or_score_dtype_is_refused():
    with pytest.raises(ValueError, match="tiled_rule must be one of .* got 'thumbnail'"):
        IVCPruneConfig(tiled_rule="thumbnail")
    with pytest.raises(ValueError, match="score_dtype must be one of .* got 'bf16'"):
        IVCPruneConfig(score_dtype="bf16")


# Pictures that give a global view plus local tiles on each tiny checkpoint (as in test_engine_families.py).
TILED = {"internvl": ((224, 224), "internvl2_5_8b"), "deepseek_vl2": ((90, 70), "deepseek_vl2_small")}


@pytest.mark.parametrize("family", sorted(TILED))
def test_official_presets_run_the_release_rules_inside_the_tiny_models(family):
    from support.reference import alive_per_layer, check_pruned_run, greedy_generate
    from support.tiny import family_inputs, tiny_wrapper

    from vlmeval_ivcp import prune

    size, preset = TILED[family]
    wrapper = tiny_wrapper("sdpa", family=family)
    model = wrapper.model
    inputs, layouts = family_inputs(wrapper, ["What is in the picture?"], sizes=[size])
    layout = layouts[0][0]
    options = vars(official_config(preset, layer=2, n_ivc=1))  # the tiny views have only a few cells
    with prune(model, "ivc_prune", **options) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, 3)
        pruner.set_image_layouts(layouts)
        with torch.no_grad():
            prefill = model(**inputs).logits
    selection = pruner.last.stages[0][0]
    assert selection.parts["mapped"].numel() > 0 and torch.isin(layout.separators(), selection.keep).all()
    assert selection.keep.numel() <= max(1, round(options["ratio"] * layout.n_tokens))
    n_layers = model.config.get_text_config().num_hidden_layers
    alive = alive_per_layer(inputs["input_ids"], model.config.image_token_id, [2], pruner.last.stages, n_layers)
    check_pruned_run(model, inputs, prefill, out, alive, [alive[-1]] * len(alive), "sdpa")
