"""CDPruner: relevance scaling, the greedy MAP of the DPP against the determinant definition, hand-made cases,
the selection on a context, config."""

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.methods.cdpruner import (
    CDPrunerConfig,
    cdpruner_select,
    dpp_greedy_map,
    instruction_relevance,
)
from vlmeval_ivcp.pruning.registry import get_method


def _determinant_reference(kernel: torch.Tensor, k: int) -> list[int]:
    """Greedy MAP by its definition: each step adds the token that maximises det(L[S + j]) (float64)."""
    kernel = kernel.double()
    chosen: list[int] = []
    for _ in range(k):
        best, best_det = -1, -float("inf")
        for j in range(kernel.shape[0]):
            if j in chosen:
                continue
            subset = chosen + [j]
            det = float(torch.linalg.det(kernel[subset][:, subset]))
            if det > best_det:
                best, best_det = j, det
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(4))
def test_greedy_map_matches_the_determinant_definition(seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(14, 20, generator=generator), dim=-1)
    relevance = torch.rand(14, generator=generator) + 0.1
    kernel = relevance[:, None] * (features @ features.T) * relevance[None]
    assert dpp_greedy_map(kernel, 8).tolist() == _determinant_reference(kernel, 8)


def test_greedy_map_on_hand_made_kernels():
    # A diagonal kernel: the picks follow the diagonal, largest first, ties to the lower index.
    assert dpp_greedy_map(torch.diag(torch.tensor([1.0, 3.0, 2.0, 3.0])), 4).tolist() == [1, 3, 2, 0]
    # Two near-duplicates of weight 1 and an orthogonal token of weight 0.8: after the first duplicate the
    # orthogonal token beats the second duplicate (whose residual is 1 - 0.99^2).
    kernel = torch.tensor([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 0.64]])
    assert dpp_greedy_map(kernel, 3).tolist() == [0, 2, 1]
    # Exact duplicates leave no residual: the release would divide by zero, here the picks stay distinct, no NaN.
    assert sorted(dpp_greedy_map(torch.ones(3, 3), 3).tolist()) == [0, 1, 2]
    assert dpp_greedy_map(torch.ones(3, 3), 0).numel() == 0


def test_relevance_is_mean_cosine_min_max_scaled():
    visual = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    rhat = torch.tensor([(1 + 2**-0.5) / 2, (0 + 2**-0.5) / 2, (-1 - 2**-0.5) / 2])
    spread = rhat.max() - rhat.min()
    torch.testing.assert_close(instruction_relevance(visual, text), (rhat - rhat.min() + 1e-6) / spread)
    torch.testing.assert_close(instruction_relevance(visual, text, negate=True), (-rhat + rhat.max() + 1e-6) / spread)
    torch.testing.assert_close(instruction_relevance(visual, text[:0]), torch.ones(3))
    torch.testing.assert_close(instruction_relevance(visual[:1].repeat(3, 1), text), torch.ones(3))


def test_select_prefers_relevant_and_diverse_tokens():
    # Visual tokens at positions 1..4: two copies along the question, one orthogonal, one opposite the question.
    hidden = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0],
                           [1.0, 0.0, 0.0]])
    ctx = make_context(6, [1, 2, 3, 4], 2, text_index=[0, 5], hidden_states=hidden)
    # The first copy is the most relevant; the orthogonal token is the most relevant one not duplicating it.
    assert cdpruner_select(ctx, CDPrunerConfig(ratio=0.5)).keep.tolist() == [0, 2]
    # Negated (the release on CLIP embeddings): the opposite token is now the most relevant.
    assert cdpruner_select(ctx, CDPrunerConfig(ratio=0.5, negate_relevance=True)).keep.tolist() == [2, 3]


def test_config_defaults_and_registry():
    config = CDPrunerConfig()
    assert (config.scope, config.layer, config.negate_relevance) == ("before_llm", 0, False)
    assert get_method("cdpruner").needs == frozenset({"hidden_states"})
    with pytest.raises(TypeError):
        CDPrunerConfig(negate_relevance="yes")
