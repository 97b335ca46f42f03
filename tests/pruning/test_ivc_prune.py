"""IVC-Prune's selection (`vlmeval_ivcp.pruning.methods.ivc_prune`) on hand-made tensors; no model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext
from vlmeval_ivcp.pruning.methods import ivc_prune as ivc_module
from vlmeval_ivcp.pruning.methods.ivc_prune import (
    OFFICIAL_PRESETS,
    IVCPruneConfig,
    budget,
    ivc_prune,
    official_config,
    refined_relevance,
    semantic_seeds,
    text_relevance,
)
from vlmeval_ivcp.pruning.registry import METHODS, make_config

ROPE_1D = RopeSpec(theta=10000.0, rotary_dim=16)


def _context(
    values: torch.Tensor, start: int, n_visual: int, n_keep: int, query_index: torch.Tensor | None = None
) -> SelectionContext:
    """One 1D-RoPE sample: text [0, start), visual [start, start + n_visual), text after; positions 0..S-1."""
    seq_len = values.shape[1]
    after = torch.arange(start + n_visual, seq_len)
    return SelectionContext(
        n_keep=n_keep,
        visual_index=torch.arange(start, start + n_visual),
        query_index=after if query_index is None else query_index,
        text_index=torch.cat([torch.arange(start), after]),
        key_mask=torch.ones(seq_len, dtype=torch.bool),
        position_ids=torch.arange(seq_len)[None],
        rope=ROPE_1D,
        values=values,
    )


def _dense_relevance(values: torch.Tensor, visual_index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The definition, one head and one query at a time."""
    n_heads, _, head_dim = values.shape
    total = torch.zeros(visual_index.numel(), dtype=torch.float64)
    for h in range(n_heads):
        for q in rows.tolist():
            logits = values[h, visual_index].double() @ values[h, q].double() / math.sqrt(head_dim)
            total += logits.softmax(dim=0)
    return (total / (n_heads * rows.numel())).float()


def test_text_relevance_matches_the_definition():
    values = torch.randn(3, 30, 8, generator=torch.Generator().manual_seed(0))
    visual_index, rows = torch.arange(4, 20), torch.arange(20, 30)
    t = text_relevance(values, visual_index, rows)
    torch.testing.assert_close(t, _dense_relevance(values, visual_index, rows), rtol=1e-5, atol=1e-6)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t.sum(), torch.tensor(1.0))


def test_text_relevance_is_the_same_in_chunks_and_in_bfloat16_inputs(monkeypatch):
    values = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(1))
    visual_index, rows = torch.arange(0, 25), torch.arange(25, 40)
    whole = text_relevance(values, visual_index, rows)
    monkeypatch.setattr(ivc_module, "_QUERY_CHUNK", 4)
    torch.testing.assert_close(text_relevance(values, visual_index, rows), whole, rtol=1e-6, atol=1e-7)
    assert text_relevance(values.bfloat16(), visual_index, rows).dtype == torch.float32


def test_text_relevance_refuses_an_empty_query_set():
    with pytest.raises(ValueError, match="at least one query row"):
        text_relevance(torch.randn(1, 5, 4), torch.arange(3), torch.arange(0))


def test_a_visual_token_aligned_with_the_query_becomes_the_seed():
    values = 0.1 * torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(2))
    query = 15
    values[:, 9] = 4.0 * values[:, query] / values[:, query].norm(dim=-1, keepdim=True)  # visual token 9 - 2 = 7
    visual_index = torch.arange(2, 12)
    t = text_relevance(values, visual_index, torch.tensor([query]))
    assert semantic_seeds(t, 1).tolist() == [7]
    assert semantic_seeds(t, 3)[0] == 7 and len(semantic_seeds(t, 3)) == 3


def test_refined_relevance_is_the_plain_mean_over_text_and_seed_rows():
    values = torch.randn(2, 24, 8, generator=torch.Generator().manual_seed(3))
    visual_index, text_rows = torch.arange(0, 16), torch.arange(16, 24)
    seeds = torch.tensor([5, 2])
    r = refined_relevance(values, visual_index, text_rows, seeds)
    t = text_relevance(values, visual_index, text_rows)
    from_seeds = text_relevance(values, visual_index, visual_index[seeds])
    torch.testing.assert_close(r, (8 * t + 2 * from_seeds) / 10)


def test_refinement_lifts_tokens_that_resemble_the_seed_but_not_the_text():
    # One head, d = 4: the query points along e0; token 0 along e0 + e1 (the seed); token 1 along e1 only.
    values = torch.zeros(1, 7, 4)
    values[0, 0] = torch.tensor([3.0, 3.0, 0.0, 0.0])
    values[0, 1] = torch.tensor([0.0, 3.0, 0.0, 0.0])
    values[0, 2:6] = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0], [0, 0, 0, -1.0]])
    values[0, 6] = torch.tensor([3.0, 0.0, 0.0, 0.0])
    visual_index, text_rows = torch.arange(6), torch.tensor([6])
    t = text_relevance(values, visual_index, text_rows)
    seeds = semantic_seeds(t, 1)
    assert seeds.tolist() == [0]
    assert torch.allclose(t[1], t[2])  # token 1 is invisible to the text alone
    r = refined_relevance(values, visual_index, text_rows, seeds)
    assert r.argsort(descending=True)[:2].tolist() == [0, 1]


def test_budget_fills_to_the_target_with_priority_first():
    r = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])
    keep, foreground = budget(ivc=torch.tensor([1, 3]), seeds=torch.tensor([5]), r=r, target=5)
    assert keep.tolist() == [0, 1, 2, 3, 5]
    assert foreground.tolist() == [0, 2]


def test_budget_keeps_seeds_then_best_ivc_tokens_when_priority_overflows():
    r = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])
    keep, foreground = budget(ivc=torch.tensor([1, 3, 7]), seeds=torch.tensor([5, 1]), r=r, target=3)
    assert keep.tolist() == [1, 5, 7]  # both seeds, then the IVC token with the highest r (7 over 3)
    assert foreground.numel() == 0
    keep, _ = budget(ivc=torch.tensor([1, 3]), seeds=torch.tensor([5, 1, 0]), r=r, target=2)
    assert keep.tolist() == [1, 5]  # the two best seeds


def test_budget_without_fill_adds_only_the_top_foreground_tokens():
    r = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])
    ivc, seeds = torch.tensor([1, 3]), torch.tensor([0])
    keep, foreground = budget(ivc, seeds, r, target=8, fill=False, n_foreground=3)
    assert keep.tolist() == [0, 1, 2, 3, 4]  # top-3 by r = {0, 2, 4}; 0 is already a seed
    assert foreground.tolist() == [2, 4]
    keep, _ = budget(ivc, seeds, r, target=4, fill=False, n_foreground=3)
    assert keep.tolist() == [0, 1, 2, 3]  # the target caps the count
    with pytest.raises(ValueError, match="needs n_foreground"):
        budget(ivc, seeds, r, target=4, fill=False)


@pytest.mark.parametrize("n_visual", [1, 7, 64, 200])
@pytest.mark.parametrize("ratio", [0.05, 0.5, 1.0])
def test_method_keeps_exactly_the_budget_and_parts_are_subsets(n_visual, ratio):
    values = torch.randn(4, n_visual + 20, 8, generator=torch.Generator().manual_seed(n_visual))
    n_keep = round(ratio * n_visual)
    selection = ivc_prune(_context(values, 5, n_visual, n_keep), IVCPruneConfig(ratio=ratio))
    keep = selection.keep
    assert keep.numel() == n_keep
    assert keep.dtype == torch.long and bool((keep >= 0).all()) and bool((keep < n_visual).all())
    assert set(selection.parts) == {"ivc", "ivc_cos", "ivc_sin", "seeds", "foreground"}
    for name, part in selection.parts.items():
        assert set(part.tolist()) <= set(keep.tolist()), name
    assert set(selection.parts["ivc_cos"].tolist()) | set(selection.parts["ivc_sin"].tolist()) == set(
        selection.parts["ivc"].tolist()
    )
    assert not set(selection.parts["foreground"].tolist()) & set(selection.parts["ivc"].tolist())


def test_method_keeps_every_ivc_token_and_seed_when_the_budget_allows():
    n_visual = 100
    values = torch.randn(2, 130, 8, generator=torch.Generator().manual_seed(4))
    selection = ivc_prune(_context(values, 10, n_visual, 50), IVCPruneConfig())
    parts = selection.parts
    assert len(parts["ivc_cos"]) == len(parts["ivc_sin"]) == 10
    assert parts["ivc_cos"].min() < 5  # the earliest 1D positions win by cos
    assert len(parts["seeds"]) == 1
    assert len(parts["foreground"]) == 50 - len(set(parts["ivc"].tolist()) | set(parts["seeds"].tolist()))


def test_llava_preset_keeps_ivc_seeds_and_115_foreground_without_fill():
    n_visual = 576
    values = torch.randn(2, n_visual + 40, 8, generator=torch.Generator().manual_seed(5))
    config = official_config("llava_1_5_7b")
    selection = ivc_prune(_context(values, 5, n_visual, round(config.ratio * n_visual)), config)
    priority = set(selection.parts["ivc"].tolist()) | set(selection.parts["seeds"].tolist())
    assert len(selection.parts["seeds"]) == 6
    assert len(selection.parts["ivc_cos"]) == len(selection.parts["ivc_sin"]) == 29
    assert selection.keep.numel() == len(priority) + len(selection.parts["foreground"]) <= 179
    assert len(selection.parts["foreground"]) <= 115


@pytest.mark.parametrize(
    ("query_index", "text_offset"),
    [(torch.tensor([30, 31]), 2), (torch.tensor([30]), 5), (torch.tensor([], dtype=torch.long), 2)],
)
def test_method_falls_back_to_the_last_prompt_token_when_no_text_query_is_left(query_index, text_offset):
    values = 0.1 * torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(6))
    values[:, 13] = 4.0 * values[:, 31] / values[:, 31].norm(dim=-1, keepdim=True)  # visual token 13 - 2 = 11
    selection = ivc_prune(_context(values, 2, 28, 14, query_index), IVCPruneConfig(text_offset=text_offset))
    assert selection.keep.numel() == 14
    assert selection.parts["seeds"].tolist() == [11]  # the seed answers the last prompt token (position 31)


@pytest.mark.parametrize("query_tail", [3, 1])
def test_padding_after_the_prompt_is_never_a_text_query(query_tail):
    # A right-padded row: real text query rows at 22..(22 + query_tail), padding to 31. The padding's values point
    # at visual token 4, the last real token's at visual token 11: the seed must answer the real token.
    values = 0.1 * torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(8))
    last_real = 21 + query_tail
    values[:, 6] = 4.0 * values[:, 31] / values[:, 31].norm(dim=-1, keepdim=True)
    values[:, last_real + 1 :] = values[:, 31:32]
    values[:, 13] = 4.0 * values[:, last_real] / values[:, last_real].norm(dim=-1, keepdim=True)
    ctx = _context(values, 2, 18, 9, query_index=torch.arange(20, 32))
    ctx = SelectionContext(**{**ctx.__dict__, "key_mask": torch.arange(32) <= last_real})
    selection = ivc_prune(ctx, IVCPruneConfig(text_offset=2, n_seed=1))
    assert selection.parts["seeds"].tolist() == [11]


def test_method_needs_value_vectors():
    ctx = _context(torch.randn(1, 10, 4), 2, 6, 3)
    ctx = SelectionContext(**{**ctx.__dict__, "values": None})
    with pytest.raises(ValueError, match="ctx.values"):
        ivc_prune(ctx, IVCPruneConfig())


class _LargestResult(TorchFunctionMode):
    """Records the element count of the largest tensor any torch call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for out in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(out, torch.Tensor):
                self.largest = max(self.largest, out.numel())
        return result


def test_no_sequence_by_sequence_tensor_is_built():
    n_heads, n_visual, n_text = 2, 3000, 12
    seq_len = n_visual + n_text + 4
    values = torch.randn(n_heads, seq_len, 8, generator=torch.Generator().manual_seed(7))
    ctx = _context(values, 4, n_visual, n_visual // 2)
    with _LargestResult() as mode:
        selection = ivc_prune(ctx, IVCPruneConfig())
    assert selection.keep.numel() == n_visual // 2
    # Largest by design: the [L, D/2] float64 angles or the [H, Q, L] similarity block; S x S would be 9e6.
    assert mode.largest <= max(n_visual * ROPE_1D.rotary_dim // 2, n_heads * (n_text + 30) * n_visual)
    assert mode.largest < seq_len * seq_len // 10


def test_config_defaults_and_counts():
    config = IVCPruneConfig()
    assert (config.layer, config.cache_policy, config.scope, config.mrope_mode) == (16, "all", "llm", "axis_mean")
    assert (config.ivc_count(576), config.seed_count(576), config.seed_count(40)) == (58, 6, 1)
    counted = IVCPruneConfig(n_ivc=29, n_seed=0)
    assert (counted.ivc_count(576), counted.ivc_count(10), counted.seed_count(576)) == (29, 10, 0)
    assert IVCPruneConfig(**config.to_dict()) == config


def test_registered_with_its_config_and_inputs():
    spec = METHODS["ivc_prune"]
    assert spec.config_cls is IVCPruneConfig and spec.needs == frozenset({"values"})
    assert make_config("ivc_prune", ratio=0.25, layer=8).ivc_frac == 0.10


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"ivc_frac": 1.5}, ValueError, r"ivc_frac must be in \[0, 1\], got 1.5"),
        ({"ivc_frac": "0.1"}, TypeError, "ivc_frac must be a number"),
        ({"seed_frac": -0.01}, ValueError, r"seed_frac must be in \[0, 1\], got -0.01"),
        ({"n_ivc": -1}, ValueError, "n_ivc must be >= 0, got -1"),
        ({"n_ivc": 2.5}, TypeError, "n_ivc must be an int >= 0 or None, got 2.5"),
        ({"n_seed": True}, TypeError, "n_seed must be an int"),
        ({"text_offset": -2}, ValueError, "text_offset must be >= 0, got -2"),
        ({"text_offset": None}, TypeError, "text_offset must be an int >= 0, got None"),
        ({"mrope_mode": "sections"}, ValueError, "mrope_mode must be one of .*'sections'"),
        ({"fill": "no"}, TypeError, "fill must be True or False, got 'no'"),
        ({"fill": False}, ValueError, "fill=False needs n_foreground"),
        ({"n_foreground": 100}, ValueError, "n_foreground=100 only applies with fill=False"),
        ({"fill": False, "n_foreground": -3}, ValueError, "n_foreground must be >= 0, got -3"),
        ({"scope": "before_llm", "layer": 0}, ValueError, "scope must be 'llm', got 'before_llm'"),
        ({"ratio": 0.0}, ValueError, r"ratio must be in \(0, 1\]"),
        ({"row_ivc_frac": 1.5}, ValueError, r"row_ivc_frac must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_knobs_raise_naming_field_and_value(options, error, message):
    with pytest.raises(error, match=message):
        IVCPruneConfig(**options)


def test_official_presets():
    assert set(OFFICIAL_PRESETS) == {
        "qwen2_5_vl_7b", "qwen2_5_vl_3b", "llava_1_5_7b", "internvl2_5_8b", "deepseek_vl2_small"
    }
    internvl, deepseek = official_config("internvl2_5_8b"), official_config("deepseek_vl2_small")
    assert (internvl.layer, internvl.n_ivc, internvl.n_seed, internvl.ratio, internvl.fill) == (16, 26, 3, 0.5, True)
    assert (deepseek.layer, deepseek.n_ivc, deepseek.row_ivc_frac, deepseek.fill) == (17, 21, 0.15, False)
    assert deepseek.seed_count(196) == 2  # 1% of the 14x14 global view
    qwen7, qwen3 = official_config("qwen2_5_vl_7b"), official_config("qwen2_5_vl_3b")
    assert (qwen7.layer, qwen3.layer, qwen7.ratio, qwen7.ivc_frac, qwen7.seed_frac) == (16, 22, 0.5, 0.10, 0.01)
    assert qwen7.fill and qwen7.text_offset == 2 and qwen7.cache_policy == "all"
    llava = official_config("llava_1_5_7b")
    assert (llava.layer, llava.n_ivc, llava.n_seed, llava.n_foreground, llava.fill) == (16, 29, 6, 115, False)
    assert official_config("qwen2_5_vl_7b", ratio=0.25, mrope_mode="section").ratio == 0.25
    known = r"known: \['deepseek_vl2_small'"
    with pytest.raises(KeyError, match=r"no official ivc_prune preset for 'qwen2_vl_7b'; " + known):
        official_config("qwen2_vl_7b")
