"""Uniform: evenly spaced indices, spatially even grid subsets of exactly n_keep, config."""

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.context import SelectionContext
from vlmeval_ivcp.pruning.methods.uniform import UniformConfig, evenly_spaced, grid_uniform, uniform_select
from vlmeval_ivcp.pruning.registry import get_method


def test_evenly_spaced_takes_bin_centres():
    assert evenly_spaced(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert evenly_spaced(5, 1).tolist() == [2]
    assert evenly_spaced(7, 7).tolist() == list(range(7))
    assert evenly_spaced(4, 0).tolist() == []


@pytest.mark.parametrize("n", [1, 2, 37, 576])
def test_evenly_spaced_is_exact_unique_and_spread(n):
    for m in range(1, n + 1):
        picked = evenly_spaced(n, m)
        assert picked.numel() == m and bool((picked.diff() > 0).all())
        assert 0 <= int(picked[0]) and int(picked[-1]) < n
        # No gap is wider than one bin (plus rounding).
        assert int(torch.diff(picked, prepend=torch.tensor([-1]), append=torch.tensor([n])).max()) <= n / m + 1


def test_evenly_spaced_rejects_more_than_available():
    with pytest.raises(ValueError, match="6 of 5"):
        evenly_spaced(5, 6)


def test_grid_uniform_is_strided_when_the_budget_fits():
    picked = grid_uniform(24, 24, 144)
    rows, cols = picked // 24, picked % 24
    assert rows.unique().tolist() == list(range(1, 24, 2)) and cols.unique().tolist() == list(range(1, 24, 2))
    assert grid_uniform(4, 6, 6).tolist() == [7, 9, 11, 19, 21, 23]  # rows 1, 3 x cols 1, 3, 5


@pytest.mark.parametrize("rows, cols", [(24, 24), (6, 9), (1, 7), (7, 1), (3, 50)])
def test_grid_uniform_keeps_exactly_n_keep(rows, cols):
    for n_keep in range(rows * cols + 1):
        picked = grid_uniform(rows, cols, n_keep)
        assert picked.numel() == n_keep and bool((picked.diff() > 0).all())
        assert n_keep == 0 or (0 <= int(picked[0]) and int(picked[-1]) < rows * cols)


def test_grid_uniform_covers_every_region():
    # Keeping a quarter of a 24 x 24 grid leaves no 4 x 4 window empty.
    kept = torch.zeros(24, 24, dtype=torch.bool)
    kept.view(-1)[grid_uniform(24, 24, 144)] = True
    windows = kept.unfold(0, 4, 1).unfold(1, 4, 1)  # [21, 21, 4, 4]
    assert bool(windows.any(dim=-1).any(dim=-1).all())


def _context(n_visual: int, n_keep: int, grid: tuple[int, int] | None) -> SelectionContext:
    return make_context(n_visual + 2, torch.arange(1, n_visual + 1), n_keep, grid=grid)


def test_select_uses_the_grid_when_known():
    assert uniform_select(_context(24, 6, (4, 6)), UniformConfig()).keep.tolist() == [7, 9, 11, 19, 21, 23]
    assert uniform_select(_context(24, 6, None), UniformConfig()).keep.tolist() == [2, 6, 10, 14, 18, 22]


def test_select_rejects_a_grid_that_does_not_match():
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        uniform_select(_context(24, 6, (4, 5)), UniformConfig())


def test_config_defaults_and_registry():
    config = UniformConfig()
    assert (config.scope, config.layer) == ("before_llm", 0)
    assert UniformConfig(**config.to_dict()) == config
    spec = get_method("uniform")
    assert spec.config_cls is UniformConfig and spec.needs == frozenset()
