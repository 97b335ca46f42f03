"""FastV: the recomputed last-query attention against a hand computation, the top-k selection, config."""

import dataclasses
import math

import pytest
import torch

from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext
from vlmeval_ivcp.pruning.methods.fastv import FastVConfig, fastv_select, last_query_attention
from vlmeval_ivcp.pruning.registry import get_method


def test_last_query_attention_matches_hand_computation():
    queries = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # [H=2, 1, d=2]
    keys = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]], [[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]])  # [2, 3, 2]
    attention = last_query_attention(queries, keys, 0.5, torch.tensor([True, True, True]))
    # Head 0 logits: 0.5 * (1, 2, 0); head 1: 0.5 * (2, 0, 6).
    head0 = [math.exp(0.5), math.exp(1.0), 1.0]
    head1 = [math.exp(1.0), 1.0, math.exp(3.0)]
    expected = torch.tensor([[x / sum(head0) for x in head0], [x / sum(head1) for x in head1]])
    torch.testing.assert_close(attention, expected)


def test_padding_gets_no_attention_and_rows_sum_to_one():
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(4, 1, 8, generator=generator), torch.randn(4, 6, 8, generator=generator)
    key_mask = torch.tensor([False, False, True, True, True, True])  # left padding
    attention = last_query_attention(queries.bfloat16(), keys.bfloat16(), 8**-0.5, key_mask)
    assert attention.dtype == torch.float32
    assert bool((attention[:, :2] == 0).all())
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(4))


@pytest.mark.parametrize(
    "queries, keys, key_mask",
    [
        (torch.ones(2, 2, 4), torch.ones(2, 5, 4), torch.ones(5, dtype=torch.bool)),  # two queries
        (torch.ones(2, 1, 4), torch.ones(3, 5, 4), torch.ones(5, dtype=torch.bool)),  # head mismatch
        (torch.ones(2, 1, 4), torch.ones(2, 5, 4), torch.ones(4, dtype=torch.bool)),  # mask length
        (torch.ones(2, 1, 4), torch.ones(2, 5, 4), torch.ones(5)),  # mask not bool
        (torch.ones(2, 1, 4), torch.ones(2, 5, 4), torch.zeros(5, dtype=torch.bool)),  # everything masked
    ],
)
def test_last_query_attention_rejects_bad_shapes(queries, keys, key_mask):
    with pytest.raises(ValueError):
        last_query_attention(queries, keys, 0.5, key_mask)


def _attention_context(n_keep: int) -> SelectionContext:
    """10 tokens: 2 system, 6 visual (positions 2..7), 2 query; the last query attends most to visual 4, 1, 5."""
    generator = torch.Generator().manual_seed(0)
    heads, seq_len, head_dim = 2, 10, 4
    queries = torch.zeros(heads, 1, head_dim)
    queries[:, 0, 0] = 1.0
    keys = 0.1 * torch.randn(heads, seq_len, head_dim, generator=generator)
    keys[:, 2 + 4, 0] += 6.0
    keys[:, 2 + 1, 0] += 4.0
    keys[0, 2 + 5, 0] += 4.0  # strong in one head only: lower head mean than visual 1
    keys[:, 0, 0] += 20.0  # the attention sink is not a visual token and never competes
    return SelectionContext(
        n_keep=n_keep,
        visual_index=torch.arange(2, 8),
        query_index=torch.tensor([8, 9]),
        text_index=torch.tensor([0, 1, 8, 9]),
        key_mask=torch.ones(seq_len, dtype=torch.bool),
        position_ids=torch.arange(seq_len)[None],
        rope=RopeSpec(theta=10000.0, rotary_dim=head_dim),
        queries=queries,
        keys=keys,
        scaling=1.0,
    )


@pytest.mark.parametrize("n_keep, expected", [(1, [4]), (2, [1, 4]), (3, [1, 4, 5]), (6, [0, 1, 2, 3, 4, 5])])
def test_keeps_the_most_attended_visual_tokens(n_keep, expected):
    assert fastv_select(_attention_context(n_keep), FastVConfig()).keep.tolist() == expected


def test_select_needs_attention_inputs():
    ctx = dataclasses.replace(_attention_context(2), keys=None)
    with pytest.raises(ValueError, match="keys"):
        fastv_select(ctx, FastVConfig())


def test_config_defaults_and_registry():
    config = FastVConfig()
    assert (config.layer, config.scope, config.cache_policy, config.ratio) == (2, "llm", "after", 0.5)
    assert FastVConfig(**config.to_dict()) == config
    spec = get_method("fastv")
    assert spec.config_cls is FastVConfig and spec.needs == frozenset({"attention"})


def test_config_refuses_before_llm():
    with pytest.raises(ValueError, match="scope"):
        FastVConfig(scope="before_llm", layer=0)
