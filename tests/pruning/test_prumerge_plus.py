"""PruMerge+'s rule (no model): the IQR count against numpy, hand-computed cases, and a loop reference written from
the release's `token_prune_merge_advanced_plus` on random inputs (exact kept sets and merged vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.releases import release_prumerge_plus

from vlmeval_ivcp.pruning.methods.prumerge_plus import (
    adaptive_order,
    budget_order,
    merge_kept,
    outlier_count,
    prumerge_selection,
)


def _spiky_attention(n: int, spikes: int, generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(n, generator=generator)
    logits[torch.randperm(n, generator=generator)[:spikes]] += 6.0
    return torch.softmax(logits, dim=0)


@pytest.mark.parametrize("seed", range(10))
def test_outliers_are_counted_as_numpy_percentiles_count_them(seed):
    attention = _spiky_attention(576, 7, torch.Generator().manual_seed(seed))
    values = attention.numpy().astype(np.float32)
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    assert outlier_count(attention) == int((values > q3 + 1.5 * (q3 - q1)).sum())


def test_a_hand_computed_adaptive_case():
    attention = torch.tensor([0.01] * 9 + [0.5])
    features = torch.arange(10.0)[:, None]
    keys = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    # One outlier (9): rho = 0.1, stride int(10 / 3) = 3, samples 0, 3, 6 (< N - 1).
    outliers, samples = adaptive_order(attention)
    assert outliers.tolist() == [9] and samples.tolist() == [0, 3, 6]
    # 9 other patches < 32 neighbours: each kept patch absorbs every other one, x_i + S - a_i x_i with S = 4.86.
    merged, extra = merge_kept(torch.tensor([9, 0, 3, 6]), attention, keys, features)
    torch.testing.assert_close(merged.flatten(), torch.tensor([9.36, 4.86, 7.83, 10.8]))
    torch.testing.assert_close(extra, torch.tensor([0.27]))  # 0.01 * (1 + 2 + 4 + 5 + 7 + 8)
    selection = prumerge_selection(attention, keys, features, outliers, samples, "projector_input")
    # The extra token sits in the slot of the pruned patch of largest attention (all 0.01: the lowest index).
    assert selection.keep.tolist() == [0, 1, 3, 6, 9] and selection.parts["extra"].tolist() == [1]
    assert selection.merged.slots.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(selection.merged.vectors.flatten(), torch.tensor([4.86, 0.27, 7.83, 10.8, 9.36]))


def test_without_outliers_one_is_kept():
    outliers, samples = adaptive_order(torch.full((12,), 0.5))
    assert outliers.tolist() == [0] and samples.tolist() == [4, 8]  # rho 1/12: stride 4; 0 is the outlier


def test_the_budget_rule():
    attention = torch.tensor([0.0, 0.9, 0.1, 0.2, 0.8, 0.3, 0.4, 0.5])
    # budget 4 > n_iqr 2: top 1, 4; then range(0, 8, 2) = 0, 2, 4, 6 minus {1, 4}, first two.
    outliers, samples = budget_order(attention, 4, 2)
    assert outliers.tolist() == [1, 4] and samples.tolist() == [0, 2]
    assert budget_order(attention, 2, 3)[0].tolist() == [1, 4]
    # budget 7 > n_iqr 1: range(0, 8, 1) minus {1} gives 6 samples.
    assert budget_order(attention, 7, 1)[1].tolist() == [0, 2, 3, 4, 5, 6]
    # budget 3, n_iqr 1, range(0, 8, 2): 0, 2 (truncated).
    assert budget_order(attention, 3, 1)[1].tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [64, 576])
def test_equals_the_release_loop_on_random_inputs(seed, n):
    generator = torch.Generator().manual_seed(seed)
    attention = _spiky_attention(n, 5, generator)
    keys, features = torch.randn(n, 16, generator=generator), torch.randn(n, 8, generator=generator)
    outliers, samples = adaptive_order(attention)
    idx, updated, extra = release_prumerge_plus(attention, keys, features)
    assert torch.cat([outliers, samples]).tolist() == idx
    merged, got_extra = merge_kept(torch.cat([outliers, samples]), attention, keys, features)
    torch.testing.assert_close(merged, updated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_extra, extra, atol=1e-5, rtol=1e-5)
