"""ResPrune: relevance, the greedy residual-energy order against a brute-force reference, edge cases, config."""

import dataclasses

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.methods.resprune import (
    ResPruneConfig,
    prompt_relevance,
    residual_greedy,
    resprune_select,
)
from vlmeval_ivcp.pruning.registry import get_method


def _brute_force_order(features: torch.Tensor, weight: torch.Tensor, k: int) -> list[int]:
    """The definition, step by step: project every token on the span of the kept ones with an explicit projector."""
    tokens = features.double()
    order: list[int] = []
    for _ in range(k):
        if order:
            kept = tokens[order]  # [j, D]
            projector = torch.linalg.pinv(kept) @ kept  # [D, D]
            residual = tokens - tokens @ projector
        else:
            residual = tokens
        score = residual.square().sum(dim=1) * weight.double()
        score[order] = -1.0
        order.append(int(score.argmax()))
    return order


def _is_permutation_prefix(order: torch.Tensor, n_tokens: int, k: int) -> bool:
    return order.numel() == k and order.unique().numel() == k and bool(((order >= 0) & (order < n_tokens)).all())


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(15, 10, generator=generator)
    weight = torch.rand(15, generator=generator) + 0.1
    order = residual_greedy(features, weight, 8)
    assert order.tolist() == _brute_force_order(features, weight, 8)


def _reference_order_with_fallbacks(features: torch.Tensor, weight: torch.Tensor, k: int) -> list[int]:
    """The documented rule, step by step, with an explicit projector: the largest weighted energy; when none is
    positive, the largest energy; when no energy is left, by weight (descending), then index."""
    tokens, weight = features.double(), weight.double()
    own_energy = tokens.square().sum(dim=1)
    order: list[int] = []
    for _ in range(k):
        residual = tokens - tokens @ (torch.linalg.pinv(tokens[order]) @ tokens[order]) if order else tokens
        energy = residual.square().sum(dim=1)
        energy[energy <= 1e-10 * own_energy] = 0.0
        remaining = torch.tensor([i for i in range(len(tokens)) if i not in order])
        for score in (energy * weight, energy):
            if score[remaining].max() > 0:
                order.append(int(remaining[score[remaining].argmax()]))
                break
        else:
            order.append(int(remaining[torch.sort(weight[remaining], descending=True, stable=True).indices[0]]))
    return order


def _fallback_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    generic = torch.randn(15, 10, generator=generator)  # more tokens than dimensions
    low_rank = torch.randn(14, 3, generator=generator) @ torch.randn(3, 9, generator=generator)
    degenerate = torch.randn(16, 12, generator=generator)
    degenerate[[2, 5, 9]] = 0.0
    degenerate[[3, 7]] = degenerate[1].clone()
    degenerate[11] = 2.0 * degenerate[4] - degenerate[6]
    weight = torch.rand(16, generator=generator)
    weight[[0, 4, 8, 12]] = 0.0  # irrelevant tokens: picked once no relevant one adds a direction
    weight[[5, 9]] = weight[2].clone()  # the zero tokens tie in the last resort: by index
    return [
        ("generic", generic, torch.rand(15, generator=generator)),
        ("generic_bf16", generic.bfloat16(), torch.rand(15, generator=generator)),
        ("low_rank", low_rank, torch.rand(14, generator=generator)),
        ("degenerate", degenerate, weight),
        ("no_relevance", degenerate, torch.zeros(16)),
    ]


@pytest.mark.parametrize("case", _fallback_cases(), ids=lambda case: case[0])
def test_every_rule_matches_the_projector_reference(case):
    _, features, weight = case
    n_tokens = features.shape[0]
    for k in (1, n_tokens // 2, n_tokens):
        assert residual_greedy(features, weight, k).tolist() == _reference_order_with_fallbacks(features, weight, k)


@pytest.mark.parametrize("seed", range(3))
def test_gram_space_greedy_keeps_the_sets_of_the_feature_space_greedy(seed):
    # Larger random inputs (more tokens than dimensions, bf16 as the model hands them): the pivoted Cholesky on the
    # Gram matrix picks what the step-by-step projector definition picks, past the rank of the features too.
    generator = torch.Generator().manual_seed(10 + seed)
    features = torch.randn(72, 40, generator=generator).bfloat16()
    weight = torch.rand(72, generator=generator)
    assert residual_greedy(features, weight, 56).tolist() == _reference_order_with_fallbacks(features, weight, 56)


def test_orthogonal_tokens_all_picked_before_a_duplicate():
    # Four orthogonal tokens, and a duplicate of the largest one: it ties with its twin, then has no energy left.
    features = torch.zeros(5, 6)
    features[0, 0], features[1, 1], features[2, 2], features[3, 3] = 5.0, 1.0, 2.0, 3.0
    features[4] = features[0]
    order = residual_greedy(features, torch.ones(5), 5)
    assert order.tolist() == [0, 3, 2, 1, 4]


def test_zero_relevance_never_picked_while_relevant_tokens_remain():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(10, 32, generator=generator)  # generic: every token adds a direction
    features[[1, 4, 7]] *= 10.0  # the irrelevant tokens carry the most energy
    weight = torch.ones(10)
    weight[[1, 4, 7]] = 0.0
    order = residual_greedy(features, weight, 10)
    assert set(order[:7].tolist()) == {0, 2, 3, 5, 6, 8, 9}
    assert set(order[7:].tolist()) == {1, 4, 7}


def test_fallback_prefers_a_new_direction_then_relevance():
    # After token 0 is kept, the relevant token 1 duplicates it; irrelevant token 2 is new; token 3 is zero.
    features = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    weight = torch.tensor([1.0, 0.9, 0.0, 0.5])
    assert residual_greedy(features, weight, 4).tolist() == [0, 2, 1, 3]


def test_all_zero_weight_is_pure_reconstruction():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(12, 6, generator=generator)
    reconstruction = residual_greedy(features, torch.ones(12), 6)
    assert residual_greedy(features, torch.zeros(12), 6).tolist() == reconstruction.tolist()


@pytest.mark.parametrize("k", [0, 1, 3, 4, 5, 11, 12])
def test_exact_count_when_the_span_fills_up(k):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(12, 4, generator=generator)  # rank 4 < 12 tokens
    order = residual_greedy(features, torch.rand(12, generator=generator), k)
    assert _is_permutation_prefix(order, 12, k)


def test_zeros_and_duplicates_give_no_nan_and_distinct_picks():
    features = torch.zeros(8, 5)
    features[1] = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0])
    features[2] = features[1]
    features[3] = 3.0 * features[1]
    features[5] = torch.tensor([0.0, 0.0, 1e-20, 0.0, 0.0])
    order = residual_greedy(features, torch.ones(8), 8)
    assert _is_permutation_prefix(order, 8, 8)
    assert order[:2].tolist() == [3, 5]  # the largest token, then the only other direction
    # Features in bfloat16 are promoted; the result is the same.
    assert residual_greedy(features.bfloat16(), torch.ones(8), 8).tolist() == order.tolist()


def test_ties_go_to_the_lowest_index():
    assert residual_greedy(torch.eye(4), torch.ones(4), 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "features, weight, k",
    [
        (torch.ones(3), torch.ones(3), 1),
        (torch.ones(3, 2), torch.ones(2), 1),
        (torch.ones(3, 2), torch.ones(3), 4),
        (torch.ones(3, 2), torch.tensor([1.0, -1.0, 1.0]), 1),
        (torch.tensor([[float("nan"), 0.0]]), torch.ones(1), 1),
    ],
)
def test_rejects_bad_input(features, weight, k):
    with pytest.raises(ValueError):
        residual_greedy(features, weight, k)


def test_prompt_relevance_is_max_cosine_clipped_at_zero():
    visual = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, 0.0]])
    text = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([1.0, 2**-0.5, 0.0, 0.0])
    torch.testing.assert_close(prompt_relevance(visual, text), expected)
    torch.testing.assert_close(prompt_relevance(visual, text[:0]), torch.ones(4))


def _context(hidden_states: torch.Tensor, visual_index: list[int], text_index: list[int], n_keep: int):
    seq_len = hidden_states.shape[0]
    return make_context(seq_len, visual_index, n_keep, text_index=text_index, hidden_states=hidden_states)


def test_select_keeps_the_prompt_relevant_directions():
    # Six orthogonal visual tokens at positions 1..6; the text token (position 7) points along tokens 1, 3 and 4.
    hidden = torch.zeros(8, 8)
    hidden[0, 7] = 1.0  # a system token, unrelated to every visual token
    hidden[1:7, :6] = torch.diag(torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0, 3.0]))
    hidden[7, [0, 2, 3]] = 1.0
    ctx = _context(hidden, list(range(1, 7)), [0, 7], n_keep=3)
    selection = resprune_select(ctx, ResPruneConfig(ratio=0.5))
    assert selection.keep.tolist() == [0, 2, 3]
    # alpha = 0 ignores the prompt: the two high-energy tokens come first.
    assert resprune_select(ctx, ResPruneConfig(ratio=0.5, alpha=0.0)).keep.tolist() == [0, 1, 5]


def test_select_needs_hidden_states():
    ctx = _context(torch.zeros(3, 2), [0, 1], [2], n_keep=1)
    with pytest.raises(ValueError, match="hidden_states"):
        resprune_select(dataclasses.replace(ctx, hidden_states=None), ResPruneConfig())


def test_config_defaults_and_registry():
    config = ResPruneConfig()
    assert (config.scope, config.layer, config.alpha, config.relevance) == ("before_llm", 0, 1.0, "all_prompt")
    assert ResPruneConfig(**config.to_dict()) == config
    spec = get_method("resprune")
    assert spec.config_cls is ResPruneConfig and spec.needs == frozenset({"hidden_states"})


@pytest.mark.parametrize(
    "options, error",
    [
        ({"alpha": -0.5}, ValueError),
        ({"alpha": float("inf")}, ValueError),
        ({"alpha": "1"}, TypeError),
        ({"relevance": "nouns"}, ValueError),
        ({"layer": 2}, ValueError),  # before_llm needs layer 0
    ],
)
def test_config_rejects_bad_values(options, error):
    with pytest.raises(error):
        ResPruneConfig(**options)
