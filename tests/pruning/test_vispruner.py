"""VisPruner's rule without a model: hand-computed cases, FasterVLM's special case, and a loop reference written
from the release's description (docs/methods/vispruner.md)."""

from __future__ import annotations

import math

import pytest
import torch
from support.contexts import make_context as _make_context

from vlmeval_ivcp.pruning import make_config
from vlmeval_ivcp.pruning.layout import ImageLayout, View
from vlmeval_ivcp.pruning.methods.vispruner import vispruner_keep, vispruner_select


def make_context(n_visual: int, n_keep: int, **fields):
    """The image's tokens at positions 1 .. n_visual of a prompt with one text token on each side."""
    return _make_context(n_visual + 2, torch.arange(1, n_visual + 1), n_keep, **fields)


def _reference(scores: list[float], features: list[list[float]], n_keep: int, important_ratio: float):
    """The release's loop, on Python lists (ties: lower index first)."""
    n_important = int(n_keep * important_ratio)
    n_diverse = n_keep - n_important
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    important, residual = order[:n_important], order[n_important:]

    def cos(i, j):
        dot = sum(x * y for x, y in zip(features[i], features[j]))
        return dot / math.sqrt(sum(x * x for x in features[i]) * sum(y * y for y in features[j]))

    while len(residual) > n_diverse:
        drop = min(8, len(residual) - n_diverse)
        a, b = residual[0::2], residual[1::2]
        if not b:
            return important, residual[:n_diverse]
        best = [max(cos(i, j) for j in b) for i in a]
        ranked = sorted(range(len(a)), key=lambda k: (-best[k], k))
        residual = [a[k] for k in ranked[drop:]] + b
    return important, residual


def test_hand_computed_case():
    # Scores rank 0..5; T = 3, r = 1/3: important [0]; residual [1, 2, 3, 4, 5], T_div = 2, one round of m = 3:
    # A = [1, 3, 5], B = [2, 4]; 1 duplicates 2 and 3 duplicates 4 (cos 1), 5 is orthogonal to both (cos 0), so A
    # is dropped whole and the residual is B.
    scores = torch.tensor([6.0, 5, 4, 3, 2, 1])
    features = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])
    important, diverse = vispruner_keep(scores, features, 3, 1 / 3)
    assert important.tolist() == [0] and diverse.tolist() == [2, 4]


def test_a_round_may_drop_more_than_half_the_residual():
    # 12 residual tokens, T_div = 2: m = min(8, 10) = 8 > |A| = 6, so the first round drops all of A, as the release.
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(13, generator=generator)
    features = torch.randn(13, 5, generator=generator, dtype=torch.float64)
    got = vispruner_keep(scores, features, 3, 1 / 3)
    want = _reference(scores.tolist(), features.tolist(), 3, 1 / 3)
    assert (got[0].tolist(), got[1].tolist()) == want


def test_without_diverse_tokens_it_is_top_k_by_cls_attention():  # FasterVLM
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.2])
    important, diverse = vispruner_keep(scores, torch.randn(5, 4), 3, 1.0)
    assert important.tolist() == [3, 1, 2] and diverse.numel() == 0  # ties to the lower index


@pytest.mark.parametrize("n_cells,n_keep,ratio", [(576, 128, 0.5), (576, 64, 0.75), (37, 9, 0.5), (50, 21, 0.3),
                                                  (16, 15, 0.5), (16, 1, 0.5)])
def test_matches_the_loop_reference(n_cells, n_keep, ratio):
    generator = torch.Generator().manual_seed(n_cells + n_keep)
    scores = torch.rand(n_cells, generator=generator)
    features = torch.randn(n_cells, 8, generator=generator, dtype=torch.float64)
    important, diverse = vispruner_keep(scores, features, n_keep, ratio)
    want_important, want_diverse = _reference(scores.tolist(), features.tolist(), n_keep, ratio)
    assert important.tolist() == want_important
    assert diverse.tolist() == want_diverse
    assert important.numel() + diverse.numel() == n_keep


def test_parity_bump_of_the_qwen_port():
    important, _ = vispruner_keep(torch.rand(16), torch.randn(16, 4), 7, 0.5, parity_bump=True)
    assert important.numel() == 4  # int(7 * 0.5) = 3, and 16 - 3 is odd


def test_views_get_their_own_budgets_and_separators_are_kept():
    # Two views of 2 x 2 cells with a separator after each row (12 tokens, 4 separators): ratio 0.5 keeps 2 cells of
    # each view and every separator.
    layout = ImageLayout(12, (View(0, 2, 2, row_separator=True), View(6, 2, 2, row_separator=True, kind="local")))
    cells = torch.cat([view.cells().flatten() for view in layout.views])
    scores = torch.full((12,), float("nan"))
    scores[cells] = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.1, 0.2, 0.3, 0.4])
    ctx = make_context(n_visual=12, n_keep=6, layout=layout, vision_cls_attention=scores,
                       vision_features=torch.randn(12, 4), vision_patches_per_token=1)
    config = make_config("vispruner", ratio=0.5, important_ratio=1.0)
    selection = vispruner_select(ctx, config)
    assert selection.parts["separators"].tolist() == [2, 5, 8, 11]
    assert selection.parts["important"].tolist() == [0, 1, 9, 10]
    assert selection.keep.tolist() == [0, 1, 2, 5, 8, 9, 10, 11]


def test_without_cls_it_scores_received_attention_and_refuses_without_any():
    scores = torch.tensor([0.1, 0.4, 0.2, 0.3])
    ctx = make_context(n_visual=4, n_keep=2, vision_attention=scores, vision_features=torch.randn(4, 3),
                       vision_patches_per_token=1)
    selection = vispruner_select(ctx, make_config("vispruner", ratio=0.5, important_ratio=1.0))
    assert selection.keep.tolist() == [1, 3]
    with pytest.raises(ValueError, match="vision tap's attention"):
        vispruner_select(make_context(n_visual=4, n_keep=2), make_config("vispruner", ratio=0.5))


def test_auto_similarity_is_the_projector_input_for_one_patch_tokens_else_the_llm_input():
    # Cells 1 and 2 are duplicates in one space only: diversity then drops one of them in that space.
    scores = torch.tensor([0.9, 0.5, 0.4, 0.3])
    duplicates_12 = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 1]])
    duplicates_none = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    embeds = torch.cat([torch.zeros(1, 3), duplicates_none, torch.zeros(1, 3)])
    config = make_config("vispruner", ratio=0.75, important_ratio=1 / 3)  # T = 3: 1 important, 2 diverse
    one_patch = make_context(n_visual=4, n_keep=3, vision_cls_attention=scores, vision_features=duplicates_12,
                             hidden_states=embeds, vision_patches_per_token=1)
    merged = make_context(n_visual=4, n_keep=3, vision_cls_attention=scores, vision_features=duplicates_12,
                          hidden_states=embeds, vision_patches_per_token=4)
    # Residual [1, 2, 3], one round of m = 1: A = [1, 3], B = [2]; with 1 = 2 (features) cell 1 goes; with no
    # duplicates (embeddings: 1 and 2 orthogonal, cos(3, 2) = 1/sqrt(3)) cell 3 goes.
    assert vispruner_select(one_patch, config).keep.tolist() == [0, 2, 3]
    assert vispruner_select(merged, config).keep.tolist() == [0, 1, 2]


def test_config_refuses_in_llm_cuts_and_bad_values():
    with pytest.raises(ValueError, match="before the LLM"):
        make_config("vispruner", scope="llm", layer=2)
    with pytest.raises(ValueError, match="important_ratio"):
        make_config("vispruner", important_ratio=1.5)
    with pytest.raises(ValueError, match="similarity"):
        make_config("vispruner", similarity="pixels")
