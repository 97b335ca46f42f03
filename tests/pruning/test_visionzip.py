"""VisionZip's rule (no model): counts, a hand-computed case, and a loop reference written from the release's
`CLIPVisionTower_VisionZip.forward` on random inputs (exact kept sets and contextual tokens)."""

from __future__ import annotations

import pytest
import torch

from support.releases import release_visionzip

from vlmeval_ivcp.pruning.methods.visionzip import (
    contextual_targets,
    visionzip_counts,
    visionzip_rule,
    visionzip_selection,
)


@pytest.mark.parametrize(
    "n_keep,preset,counts",
    [(192, "official", (162, 30)), (128, "official", (108, 20)), (64, "official", (54, 10)),
     (640, "official", (540, 100)), (8, "official", (6, 1)), (8, "matched", (7, 1)), (100, "matched", (85, 15)),
     (1, "matched", (1, 0)), (192, "matched", (162, 30))],
)
def test_counts_follow_the_release_split(n_keep, preset, counts):
    assert visionzip_counts(n_keep, preset) == counts


def test_targets_are_evenly_spaced_among_the_remaining_patches():
    assert contextual_targets(10, 3).tolist() == [0, 3, 6]
    assert contextual_targets(2, 5).tolist() == [0, 1]  # fewer remaining patches than contextual tokens
    assert contextual_targets(0, 2).tolist() == []


def test_a_hand_computed_case():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.05])
    keys = torch.tensor([[1.0, 0.0], [5.0, 5.0], [1.0, 0.1], [3.0, -1.0], [0.0, 1.0], [0.1, 1.0]])
    features = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    # Dominant 1 and 3; remaining 0, 2, 4, 5, step 2: targets 0 and 4; 2 joins 0, 5 joins 4.
    dominant, targets, contextual = visionzip_rule(scores, keys, features, 2, 2)
    assert dominant.tolist() == [1, 3] and targets.tolist() == [0, 4]
    assert contextual.flatten().tolist() == [1.0 + 3.0, 5.0 + 6.0]
    selection = visionzip_selection(scores, keys, features, 2, 2, "projector_input")
    assert selection.keep.tolist() == [0, 1, 3, 4]
    assert selection.merged.slots.tolist() == [0, 3] and selection.merged.space == "projector_input"
    assert selection.parts["merged"].tolist() == [0, 4] and selection.parts["dominant"].tolist() == [1, 3]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n,n_dominant,n_contextual", [(40, 10, 5), (576, 162, 30), (30, 27, 5)])
def test_equals_the_release_loop_on_random_inputs(seed, n, n_dominant, n_contextual):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, generator=generator)
    keys = torch.randn(n, 16, generator=generator)
    features = torch.randn(n, 12, generator=generator)
    dominant, targets, contextual = visionzip_rule(scores, keys, features, n_dominant, n_contextual)
    want_dominant, want_targets, want_contextual = release_visionzip(scores, keys, features, n_dominant, n_contextual)
    assert dominant.tolist() == want_dominant and targets.tolist() == want_targets
    torch.testing.assert_close(contextual, want_contextual, atol=1e-5, rtol=1e-5)
