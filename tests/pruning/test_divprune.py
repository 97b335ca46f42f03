"""DivPrune: farthest-point order on hand-made vectors, the max-min property, zero vectors, config."""

import math

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.context import SelectionContext
from vlmeval_ivcp.pruning.methods.divprune import DivPruneConfig, divprune_select, farthest_point_order
from vlmeval_ivcp.pruning.registry import get_method


def _unit_at(degrees: float, norm: float = 1.0) -> list[float]:
    return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


# Directions at 0, 5, 10, 90 and 180 degrees. The most isolated is 180 (its nearest neighbour, 90, is at cosine
# distance 1); the farthest from it is 0 (distance 2); then 90 (distance 1 from both) beats 5 and 10 (close to 0).
HAND_MADE = torch.tensor([_unit_at(0), _unit_at(5, 3.0), _unit_at(10, 0.5), _unit_at(90, 2.0), _unit_at(180)])


def test_picks_the_farthest_points_on_hand_made_vectors():
    assert farthest_point_order(HAND_MADE, 3).tolist() == [4, 0, 3]
    # The next pick is 10 degrees (farther from 0 than 5 is).
    assert farthest_point_order(HAND_MADE, 5).tolist() == [4, 0, 3, 2, 1]


def test_each_pick_maximises_the_distance_to_the_nearest_kept_token():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 6, generator=generator)
    unit = torch.nn.functional.normalize(features, dim=-1)
    distance = 1.0 - unit @ unit.T
    order = farthest_point_order(features, 12).tolist()
    for step in range(1, 12):
        nearest_kept = distance[:, order[:step]].amin(dim=1)
        nearest_kept[order[:step]] = -1.0
        assert math.isclose(nearest_kept[order[step]], nearest_kept.max(), abs_tol=1e-6)


def _reference_order(features: torch.Tensor, k: int) -> list[int]:
    """The definition, step by step, on the whole [L, L] cosine-distance matrix (the paper's code; kept tokens are
    excluded)."""
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    distance = (1.0 - unit @ unit.T).clamp_min(0.0)
    order: list[int] = []
    for _ in range(k):
        if order:
            score = distance[order].amin(dim=0)
        else:
            score = distance + torch.diag(torch.full((len(unit),), float("inf")))  # nearest *other* token
            score = score.amin(dim=1)
        score[order] = -1.0
        order.append(int(score.argmax()))
    return order


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_whole_matrix_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    n_tokens, dim = 20 + 13 * seed, 3 + 5 * seed
    features = torch.randn(n_tokens, dim, generator=generator)
    if seed % 2:
        features = features.bfloat16()
    k = n_tokens // 2 + seed
    assert farthest_point_order(features, k).tolist() == _reference_order(features, k)


def test_zero_vectors_and_duplicates_give_distinct_picks_without_nan():
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    order = farthest_point_order(features, 5)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]
    # A zero vector is at distance 1 from everything, so it is the most isolated and is picked first.
    assert order[0].item() == 0
    assert farthest_point_order(features[:1], 1).tolist() == [0]
    assert farthest_point_order(features, 0).numel() == 0


@pytest.mark.parametrize("features, k", [(torch.ones(4), 1), (torch.ones(4, 2), 5), (torch.ones(4, 2), -1)])
def test_rejects_bad_input(features, k):
    with pytest.raises(ValueError):
        farthest_point_order(features, k)


def _context(hidden_states: torch.Tensor, visual_index: list[int], n_keep: int) -> SelectionContext:
    return make_context(hidden_states.shape[0], visual_index, n_keep, hidden_states=hidden_states)


def test_select_reads_only_the_visual_rows():
    # A text token at 270 degrees would be the most isolated point; it must not take part.
    hidden = torch.cat([torch.tensor([_unit_at(270)]), HAND_MADE, torch.tensor([_unit_at(270)])])
    selection = divprune_select(_context(hidden, list(range(1, 6)), n_keep=3), DivPruneConfig())
    assert selection.keep.tolist() == [0, 3, 4]


def test_config_defaults_and_registry():
    config = DivPruneConfig()
    assert (config.scope, config.layer) == ("before_llm", 0)
    assert DivPruneConfig(**config.to_dict()) == config
    spec = get_method("divprune")
    assert spec.config_cls is DivPruneConfig and spec.needs == frozenset({"hidden_states"})
