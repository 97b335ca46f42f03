"""Efficiency accounting: FLOPs against hand counts, KV bytes and layer lengths on the tiny Qwen2.5-VL."""

from __future__ import annotations

import time

import pytest
import torch
from support.tiny import qwen_inputs, tiny_wrapper
from transformers import PretrainedConfig, Qwen2Config, Qwen3Config

from vlmeval_ivcp import prune
from vlmeval_ivcp.evaluation.efficiency import (
    DecoderWidths,
    FirstTokenTimer,
    flops_speedup,
    kv_cache_bytes,
    layer_prefill_flops,
    prefill_flops,
    pruned_layer_lengths,
)
from vlmeval_ivcp.pruning.config import Cut
from vlmeval_ivcp.pruning.context import Selection
from vlmeval_ivcp.pruning.engine import PrefillRecord

# hidden d = 64, 4 query heads and 2 KV heads of h = 16, MLP width m = 128: the tiny Qwen2.5-VL's text widths.
TINY = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, num_hidden_layers=4)


def tiny_layer_flops(n: int) -> int:
    """The per-layer count for the TINY widths, written out: 73728 n + 256 n^2."""
    q = 2 * n * 64 * 64  # 8192 n
    k = v = 2 * n * 64 * 32  # 4096 n each (2 KV heads x 16)
    o = 2 * n * 64 * 64  # 8192 n
    scores = weighted_sum = 2 * 4 * n * n * 16  # 128 n^2 each, full square
    mlp = 3 * 2 * n * 64 * 128  # 49152 n
    return q + k + v + o + scores + weighted_sum + mlp


def test_one_layer_matches_the_hand_count():
    widths = DecoderWidths.from_config(Qwen2Config(**TINY))
    assert widths == DecoderWidths(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, layers=4)
    # n = 10: 81920 (q) + 40960 (k) + 40960 (v) + 81920 (o) + 12800 + 12800 (attention) + 491520 (mlp)
    assert layer_prefill_flops(widths, 10) == 762880 == tiny_layer_flops(10)
    assert layer_prefill_flops(widths, 0) == 0


def test_prefill_sums_the_layers_at_their_own_lengths():
    config = Qwen2Config(**TINY)
    assert prefill_flops(config, [10, 10, 6, 6]) == 2 * 762880 + 2 * (73728 * 6 + 256 * 36)
    assert flops_speedup(config, [10] * 4, [10] * 4) == 1.0
    assert flops_speedup(config, [10] * 4, [10, 10, 6, 6]) == pytest.approx(4 * 762880 / (2 * 762880 + 2 * 451584))


def test_explicit_head_dim_and_missing_gqa_are_read():
    # head_dim 8 differs from hidden / heads = 16: q and o are 4 x 8 = 32 wide, k and v 2 x 8 = 16.
    config = Qwen3Config(**TINY, head_dim=8)
    n = 3
    expected = 2 * n * 64 * (32 + 2 * 16) + 2 * n * 32 * 64 + 2 * 2 * 4 * n * n * 8 + 3 * 2 * n * 64 * 128
    assert layer_prefill_flops(DecoderWidths.from_config(config), n) == expected
    no_gqa = PretrainedConfig(**{**TINY, "num_key_value_heads": None})
    assert DecoderWidths.from_config(no_gqa).kv_heads == 4


def test_a_composite_vlm_config_is_read_through_its_text_config():
    assert DecoderWidths.from_config(tiny_wrapper("sdpa").model.config) == DecoderWidths.from_config(
        Qwen2Config(**TINY)
    )


@pytest.mark.parametrize(
    "config,lengths,error,match",
    [
        (PretrainedConfig(hidden_size=64), [1], KeyError, "has no 'num_attention_heads'"),
        (Qwen2Config(**TINY), [10, 10], ValueError, r"got 2 layer lengths \[10, 10\] for a decoder of 4 layers"),
        (Qwen2Config(**TINY), [10, 10, 10, -1], ValueError, "must be >= 0, got -1"),
    ],
)
def test_bad_configs_and_lengths_are_refused_by_name(config, lengths, error, match):
    with pytest.raises(error, match=match):
        prefill_flops(config, lengths)


def test_kv_bytes_refuse_a_non_cache():
    with pytest.raises(TypeError, match="got tuple"):
        kv_cache_bytes(())


def _record(n_visual: int, kept_per_stage: list[int]) -> PrefillRecord:
    stages = [[Selection(keep=torch.arange(kept))] for kept in kept_per_stage]
    return PrefillRecord(n_visual=[n_visual], stages=stages)


@pytest.mark.parametrize(
    "cuts,kept,expected",
    [
        ([Cut(2, 0.5)], [8], [30, 30, 22, 22]),
        ([Cut(0, 0.25)], [4], [18, 18, 18, 18]),
        ([Cut(1, 0.5), Cut(3, 0.25)], [8, 2], [30, 22, 22, 16]),  # PyramidDrop-style: each cut narrows again
    ],
)
def test_pruned_layer_lengths_follow_the_cuts(cuts, kept, expected):
    assert pruned_layer_lengths(_record(16, kept), cuts, prompt_len=30, n_layers=4) == expected


def test_pruned_layer_lengths_refuse_a_record_of_other_cuts():
    with pytest.raises(ValueError, match=r"2 cut\(s\)"):
        pruned_layer_lengths(_record(16, [8]), [Cut(1, 0.5), Cut(3, 0.25)], prompt_len=30, n_layers=4)


def _prefill_cache(model, inputs):
    with torch.no_grad():
        return model(**inputs, use_cache=True).cache


@pytest.mark.parametrize("policy", ["all", "after"])
def test_kv_bytes_and_flops_of_a_pruned_prefill_on_the_tiny_model(policy):
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, ["What is in the picture?"])
    prompt, n_layers, cut = inputs["input_ids"].shape[1], 4, 2
    text = prompt - 16  # one 112x112 picture gives 16 visual tokens
    unpruned_bytes = kv_cache_bytes(_prefill_cache(model, inputs))
    # 4 layers x (keys + values) x batch 1 x 2 KV heads x prompt tokens x head dim 16 x 4 bytes (float32)
    assert unpruned_bytes == 4 * 2 * 1 * 2 * prompt * 16 * 4
    with prune(model, "random", ratio=0.5, layer=cut, cache_policy=policy, seed=0) as pruner:
        pruned_bytes = kv_cache_bytes(_prefill_cache(model, inputs))
    record, kept = pruner.last, text + 8
    per_layer = [kept] * n_layers if policy == "all" else [prompt] * cut + [kept] * (n_layers - cut)
    assert record.cache_lengths == per_layer
    # exact integer proportions: bytes scale with the tokens each layer's cache holds
    assert pruned_bytes * n_layers * prompt == unpruned_bytes * sum(per_layer)
    if policy == "all":
        assert pruned_bytes * prompt == unpruned_bytes * (text + 8)

    # Layers before the cut computed on every token under both policies (`all` trims them only after prefill).
    computed = pruned_layer_lengths(record, pruner.config.cuts(), prompt, n_layers)
    assert computed == [prompt] * cut + [kept] * (n_layers - cut)
    unpruned_flops = prefill_flops(model.config, [prompt] * n_layers)
    pruned_flops = prefill_flops(model.config, computed)
    assert pruned_flops < unpruned_flops
    assert unpruned_flops == 4 * tiny_layer_flops(prompt)
    assert pruned_flops == 2 * tiny_layer_flops(prompt) + 2 * tiny_layer_flops(kept)
    assert flops_speedup(model.config, [prompt] * n_layers, computed) == unpruned_flops / pruned_flops


def test_first_token_timer_marks_the_first_new_token():
    wrapper = tiny_wrapper("sdpa")
    inputs = qwen_inputs(wrapper, ["What is in the picture?"])
    timer = FirstTokenTimer()
    with pytest.raises(RuntimeError, match="no new token"):
        _ = timer.seconds
    with torch.no_grad():
        wrapper.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, streamer=timer)
    returned = time.perf_counter()
    # the first token arrives after the timer started and before generate() finished the two later tokens
    assert timer.started < timer.first_token_at < returned
    assert timer.seconds == timer.first_token_at - timer.started
