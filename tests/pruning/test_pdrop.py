"""PyramidDrop: stage resolution (ratio vs stage_ratios), validation, cuts, and the last-query ranking per stage."""

import json
import math

import pytest
import torch

from vlmeval_ivcp.pruning.config import Cut
from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext
from vlmeval_ivcp.pruning.methods.pdrop import PDropConfig, pdrop_select
from vlmeval_ivcp.pruning.registry import get_method, make_config


def test_defaults_are_the_papers_three_halvings():
    config = PDropConfig()
    assert config.cuts() == [Cut(8, 0.5), Cut(16, 0.5), Cut(24, 0.5)]
    assert (config.ratio, config.layer, config.scope, config.cache_policy) == (0.125, 8, "llm", "after")


def test_ratio_alone_splits_evenly_over_the_stages():
    config = PDropConfig(ratio=0.25, layers=(4, 12))
    assert config.stage_ratios == (0.5, 0.5)
    assert config.cuts() == [Cut(4, 0.5), Cut(12, 0.5)]


def test_stage_ratios_alone_define_the_overall_ratio():
    config = PDropConfig(stage_ratios=[0.5, 0.4, 1])  # lists, as YAML gives them
    assert config.stage_ratios == (0.5, 0.4, 1.0)
    assert math.isclose(config.ratio, 0.2)


def test_consistent_ratio_and_stage_ratios_are_accepted():
    assert PDropConfig(ratio=0.125, stage_ratios=(0.5, 0.5, 0.5)).cuts() == PDropConfig().cuts()


def test_round_trips_through_json():
    config = PDropConfig(layers=[3, 9], stage_ratios=[0.6, 0.3], seed=4)
    assert PDropConfig(**json.loads(json.dumps(config.to_dict()))) == config
    assert make_config("pdrop", layers=[3, 9], stage_ratios=[0.6, 0.3], seed=4) == config


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"ratio": 0.3, "stage_ratios": (0.5, 0.5, 0.5)}, ValueError, "disagrees"),
        ({"stage_ratios": (0.5, 0.5)}, ValueError, "one entry per layer"),
        ({"stage_ratios": (0.5, 0.0, 0.5)}, ValueError, r"\(0, 1\]"),
        ({"stage_ratios": (0.5, 1.5, 0.5)}, ValueError, r"\(0, 1\]"),
        ({"stage_ratios": "0.5"}, TypeError, "stage_ratios"),
        ({"layers": (8, 8, 24)}, ValueError, "strictly increasing"),
        ({"layers": (0, 16)}, ValueError, ">= 1"),
        ({"layers": ()}, TypeError, "non-empty"),
        ({"layers": (8.0, 16.0)}, TypeError, "ints"),
        ({"layer": 2}, ValueError, "layers\\[0\\]"),
        ({"ratio": 1.5}, ValueError, "ratio"),
        ({"scope": "before_llm", "layer": 0}, ValueError, "scope"),
    ],
)
def test_rejects_bad_stages(options, error, message):
    with pytest.raises(error, match=message):
        PDropConfig(**options)


def test_each_stage_keeps_the_most_attended_visual_tokens():
    generator = torch.Generator().manual_seed(3)
    seq_len = 12
    ctx = SelectionContext(
        n_keep=4,
        visual_index=torch.arange(1, 10),
        query_index=torch.tensor([10, 11]),
        text_index=torch.tensor([0, 10, 11]),
        key_mask=torch.ones(seq_len, dtype=torch.bool),
        position_ids=torch.arange(seq_len)[None],
        rope=RopeSpec(theta=10000.0, rotary_dim=8),
        queries=torch.randn(3, 1, 8, generator=generator),
        keys=torch.randn(3, seq_len, 8, generator=generator),
        scaling=8**-0.5,
    )
    head_mean = torch.softmax((ctx.queries @ ctx.keys.transpose(1, 2)).squeeze(1) * ctx.scaling, dim=-1).mean(0)
    expected = head_mean[1:10].topk(4).indices.sort().values
    assert pdrop_select(ctx, PDropConfig()).keep.tolist() == expected.tolist()
    spec = get_method("pdrop")
    assert spec.config_cls is PDropConfig and spec.needs == frozenset({"cut_attention"})
