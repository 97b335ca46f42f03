"""SparseVLM (v1, drop only): text raters from the input embeddings, the rank-based official count, the matched count,
the rater attention helper, and a loop reference written from the release's description (batch 1)."""

import numpy as np
import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.capture import rows_attention
from vlmeval_ivcp.pruning.methods.sparsevlm import (
    SparseVLMConfig,
    official_count,
    sparsevlm_select,
    text_raters,
)
from vlmeval_ivcp.pruning.registry import get_method


def test_registered_with_the_release_stages_and_drop_only():
    spec = get_method("sparsevlm")
    assert spec.needs == {"rater_attention"}
    config = SparseVLMConfig()
    assert [cut.layer for cut in config.cuts()] == [3, 7, 16, 20]  # pruning_loc [2, 6, 15, 19] + 1
    assert (config.preset, config.scale, config.bias, config.recycling, config.cache_policy) == (
        "official", 13.5, 0.0, False, "after"
    )
    with pytest.raises(ValueError, match="recycling"):
        SparseVLMConfig(recycling=True)
    with pytest.raises(ValueError, match="preset"):
        SparseVLMConfig(preset="v2")
    with pytest.raises(ValueError, match="sparsevlm's layer is its first cut"):
        SparseVLMConfig(layer=2)


def test_text_raters_on_a_hand_made_case():
    # Two visual tokens along x; text tokens along x (twice as long), along y, and against x.
    image = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    query = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Visual token 0: softmax(2, 0, -1); token 1: softmax(4, 0, -2). Only the first text token beats the mean 1/3.
    assert text_raters(image, query).tolist() == [True, False, False]
    assert text_raters(image, query[1:2]).tolist() == [True]  # one text token: its score is the mean, it still rates


def test_official_count_on_hand_made_ranks():
    full = torch.eye(3)[:, :3]  # rank 3 = V: keep everything
    assert official_count(full, 13.5, 0.0) == 3
    low = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]])  # rank 1 of V = 4
    assert official_count(low, 2.0, 0.0) == 2
    assert official_count(low, 2.0, 6.0) == 3  # int(1 * 2 + 6) = 8, at most V - 1
    assert official_count(low, 0.8, 0.0) == 1  # int(0.8) = 0: at least one token stays


def test_selection_on_a_hand_made_case():
    # Positions 0 (system), 1..4 the picture, 5..7 the text. Text 5 and 6 rate (embeddings along the image's), 7 not.
    image = torch.tensor([[1.0, 0.0]] * 4)
    query = torch.tensor([[3.0, 0.0], [3.0, 0.0], [-3.0, 0.0]])
    attention = torch.zeros(3, 8)
    attention[0, 1:5] = torch.tensor([0.1, 0.4, 0.2, 0.3])
    attention[1, 1:5] = torch.tensor([0.2, 0.4, 0.1, 0.3])  # rank 2 with row 0; means 0.15, 0.4, 0.15, 0.3
    attention[2, 1:5] = torch.tensor([0.9, 0.0, 0.0, 0.0])  # not a rater: ignored
    ctx = make_context(
        8, [1, 2, 3, 4], n_keep=2, text_index=[0, 5, 6, 7], query_attention=attention, image_embeds=image,
        query_embeds=query,
    )
    ctx = type(ctx)(**{**ctx.__dict__, "query_index": torch.tensor([5, 6, 7])})
    # official: rank 2, int(2 * 1 + 1) = 3 tokens: 0.4, 0.3, then the tie 0.15 / 0.15 goes to the lower index.
    assert sparsevlm_select(ctx, SparseVLMConfig(layers=(1,), scale=1.0, bias=1.0)).keep.tolist() == [0, 1, 3]
    assert sparsevlm_select(ctx, SparseVLMConfig(layers=(1,), preset="matched")).keep.tolist() == [1, 3]


def test_rows_attention_is_causal_and_masks_padding():
    torch.manual_seed(0)
    queries, keys = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    key_mask = torch.tensor([False, True, True, True, True])  # left padding
    got = rows_attention(queries, keys, 0.5, torch.tensor([2, 4]), key_mask)
    for out_row, row in enumerate([2, 4]):
        per_head = []
        for head in range(2):
            logits = [float(queries[head, row] @ keys[head, col]) * 0.5 for col in range(1, row + 1)]
            weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=0)
            per_head.append(torch.cat([torch.zeros(1), weights.float(), torch.zeros(4 - row)]))
        torch.testing.assert_close(got[out_row], torch.stack(per_head).mean(0), atol=1e-6, rtol=0)


def _release_stage(image, query, attention, visual, scale, bias):
    """The release's stage as its description reads, batch 1, with Python loops and numpy: raters from the
    embeddings (`v_t @ t_t^T`, softmax over the text, mean over the visual tokens, above the mean), then
    `attn_postprocess_rank` over the visual columns `visual` of the raters' rows."""
    image, query = image.double().numpy(), query.double().numpy()
    scores = []
    for t in range(len(query)):
        total = 0.0
        for v in range(len(image)):
            logits = image[v] @ query.T
            weights = np.exp(logits - logits.max())
            total += weights[t] / weights.sum()
        scores.append(total / len(image))
    raters = [t for t in range(len(query)) if scores[t] > sum(scores) / len(scores)]
    relation = attention[raters][:, visual].float().numpy()
    rank = int(np.linalg.matrix_rank(relation))  # tolerance sigma_max * max(M, N) * eps, as torch's default
    n_visual = len(visual)
    mean = relation.mean(axis=0)
    count = n_visual if rank == n_visual else max(1, min(int(rank * scale + bias), n_visual - 1))
    order = sorted(range(n_visual), key=lambda i: (-mean[i], i))  # ties to the lower index
    return sorted(order[:count])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale,bias", [(13.5, 0.0), (9.0, 6.0), (0.8, 0.0), (2.0, 1.0)])
def test_official_preset_matches_the_release_reference(seed, scale, bias):
    generator = torch.Generator().manual_seed(seed)
    n_visual, n_query, dim = 24, 7, 8
    seq = 1 + n_visual + n_query
    visual = list(range(1, 1 + n_visual))
    image = torch.randn(n_visual, dim, generator=generator)
    query = torch.randn(n_query, dim, generator=generator)
    # Low-rank attention rows (rank 1 or 2 over the visual tokens) so that the rank-based count cuts.
    basis = torch.rand(2, seq, generator=generator)
    mix = torch.rand(n_query, 2, generator=generator) * (torch.arange(n_query)[:, None] % 2 + seed % 2)
    attention = torch.softmax(torch.log(mix @ basis + 1e-3), dim=-1)
    alive = sorted(torch.randperm(n_visual, generator=generator)[: n_visual - seed].tolist())  # a later stage
    ctx = make_context(
        seq, [visual[i] for i in alive], n_keep=3, text_index=[0, *range(1 + n_visual, seq)],
        query_attention=attention, image_embeds=image, query_embeds=query,
    )
    expected = _release_stage(image, query, attention, [visual[i] for i in alive], scale, bias)
    got = sparsevlm_select(ctx, SparseVLMConfig(layers=(1,), scale=scale, bias=bias)).keep.tolist()
    assert got == expected
