"""IVC-Prune through the engine on the tiny Qwen2.5-VL (4 layers, 16 visual tokens per picture), end to end."""

from __future__ import annotations

import pytest
import torch
from support.reference import (
    alive_per_layer,
    check_pruned_run,
    greedy_generate,
    kept_positions,
    recording_pruner,
)
from support.tiny import qwen_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning.methods.ivc_prune import official_config

QUESTIONS = {1: ["What is in the picture?"], 2: ["What is in the picture?", "Colour?"]}
N_VISUAL = 16
N_LAYERS = 4
NEW_TOKENS = 4


def _at(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows `keep [B, n]` of `x [B, S, ...]`."""
    return x[torch.arange(keep.shape[0])[:, None], keep]


def _run_recording_layer_inputs(model, inputs):
    """A cached forward; returns its cache and, per layer, the (hidden states, cos, sin) the layer received."""
    seen = []
    hooks = [
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append((args[0], *kwargs["position_embeddings"])), with_kwargs=True
        )
        for layer in model.model.language_model.layers
    ]
    try:
        with torch.no_grad():
            cache = model(**inputs, use_cache=True).cache
    finally:
        for hook in hooks:
            hook.remove()
    return cache, seen


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8, 1.0])
def test_keeps_the_budget_and_every_text_token_at_the_original_positions(ratio):
    layer = 2
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[2])
    base_cache, base_seen = _run_recording_layer_inputs(model, inputs)
    with prune(model, "ivc_prune", ratio=ratio, layer=layer) as pruner:
        cache, seen = _run_recording_layer_inputs(model, inputs)
    record = pruner.last
    n_keep = round(ratio * N_VISUAL)
    assert [len(kept) for kept in record.kept] == [n_keep, n_keep]
    assert [kept.tolist() for kept in record.kept] == [selection.keep.tolist() for selection in record.stages[0]]
    keep = kept_positions(inputs["input_ids"], model.config.image_token_id, record.kept)
    assert keep.shape[1] == inputs["input_ids"].shape[1] - N_VISUAL + n_keep

    for index, ((hidden, cos, sin), (base_hidden, base_cos, base_sin)) in enumerate(zip(seen, base_seen, strict=True)):
        if index < layer:  # layers before K run on the whole prompt, exactly as unpruned
            assert torch.equal(hidden, base_hidden) and torch.equal(cos, base_cos) and torch.equal(sin, base_sin)
            continue
        # Every text token and the kept visual tokens, with the rotary tables of their original positions.
        assert hidden.shape[1] == keep.shape[1]
        assert torch.equal(cos, _at(base_cos, keep)) and torch.equal(sin, _at(base_sin, keep))
    # Layer K reads what layer K-1 wrote for exactly those tokens.
    assert torch.equal(seen[layer][0], _at(base_seen[layer][0], keep))

    # Policy `all`: every layer's cache holds only the kept tokens; layers before K hold their unpruned keys/values.
    assert record.cache_lengths == [keep.shape[1]] * N_LAYERS
    for index, (layer_cache, base_layer) in enumerate(zip(cache.layers, base_cache.layers, strict=True)):
        assert layer_cache.keys.shape[2] == layer_cache.values.shape[2] == keep.shape[1]
        if index < layer:
            assert torch.equal(layer_cache.keys, _at(base_layer.keys.transpose(1, 2), keep).transpose(1, 2))
            assert torch.equal(layer_cache.values, _at(base_layer.values.transpose(1, 2), keep).transpose(1, 2))


@pytest.mark.parametrize(
    "attention,batch,layer", [("sdpa", 1, 2), ("sdpa", 2, 2), ("eager", 2, 2), ("eager", 1, 3), ("sdpa", 2, 1)]
)
def test_pruned_logits_equal_the_masked_reference(attention, batch, layer):
    wrapper = tiny_wrapper(attention)
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[batch])
    with prune(model, "ivc_prune", ratio=0.5, layer=layer) as pruner, torch.no_grad():
        prefill = model(**inputs).logits
        out = greedy_generate(model, inputs, NEW_TOKENS)
    alive = alive_per_layer(inputs["input_ids"], model.config.image_token_id, [layer], pruner.last.stages, N_LAYERS)
    check_pruned_run(model, inputs, prefill, out, alive, [alive[-1]] * N_LAYERS, attention)


def test_official_preset_keeps_exactly_half():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[2])
    config = official_config("qwen2_5_vl_7b", layer=2)  # the 7B release settings, K moved into the 4-layer model
    with prune(model, config) as pruner:
        out = greedy_generate(model, inputs, NEW_TOKENS)
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + NEW_TOKENS
    record = pruner.last
    assert [len(kept) for kept in record.kept] == [N_VISUAL // 2] * 2
    for kept, selection in zip(record.kept, record.stages[0], strict=True):
        parts = {name: set(part.tolist()) for name, part in selection.parts.items()}
        assert len(parts["ivc_cos"]) == len(parts["ivc_sin"]) == round(0.10 * N_VISUAL)
        assert parts["ivc"] == parts["ivc_cos"] | parts["ivc_sin"]
        assert len(parts["seeds"]) == 1  # max(1, round(0.01 * 16))
        assert parts["ivc"] | parts["seeds"] | parts["foreground"] == set(kept.tolist())
    assert record.cache_lengths == [inputs["input_ids"].shape[1] - N_VISUAL // 2] * N_LAYERS


def test_selection_does_not_depend_on_the_attention_backend():
    chosen = {}
    for attention in ("sdpa", "eager"):
        wrapper = tiny_wrapper(attention)
        with prune(wrapper.model, "ivc_prune", ratio=0.5, layer=2) as pruner, torch.no_grad():
            wrapper.model(**qwen_inputs(wrapper, QUESTIONS[2]))
        chosen[attention] = [
            {name: part.tolist() for name, part in {"keep": selection.keep, **selection.parts}.items()}
            for selection in pruner.last.stages[0]
        ]
    assert chosen["sdpa"] == chosen["eager"]


@pytest.mark.parametrize("layer", [1, 3])
def test_captured_values_are_layer_k_minus_1_projection_of_its_normalised_input(layer):
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[2])
    source = model.model.language_model.layers[layer - 1]
    layer_inputs = []
    pruner, contexts = recording_pruner(model, "ivc_prune", ratio=0.5, layer=layer)
    hook = source.register_forward_pre_hook(lambda module, args: layer_inputs.append(args[0]))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        hook.remove()
        pruner.remove()
    attention = source.self_attn
    with torch.no_grad():
        values = attention.v_proj(source.input_layernorm(layer_inputs[0]))  # [B, S, kv_heads * d]
    batch, seq, _ = values.shape
    kv_heads, head_dim = model.config.text_config.num_key_value_heads, attention.head_dim
    groups = model.config.text_config.num_attention_heads // kv_heads
    # Query head h reads key/value head h // groups.
    values = values.view(batch, seq, kv_heads, 1, head_dim).expand(-1, -1, -1, groups, -1)
    values = values.reshape(batch, seq, kv_heads * groups, head_dim).transpose(1, 2)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    assert len(contexts) == batch
    for row, ctx in enumerate(contexts):
        torch.testing.assert_close(ctx.values, values[row], atol=1e-6, rtol=0)
        real = inputs["attention_mask"][row].bool()
        assert torch.equal(ctx.key_mask, real)
        assert torch.equal(ctx.position_ids[:, real], positions[:, row, real])
        visual = (inputs["input_ids"][row] == model.config.image_token_id).nonzero().flatten()
        assert torch.equal(ctx.visual_index, visual)
        assert torch.equal(ctx.query_index, torch.arange(int(visual[-1]) + 1, seq))


@pytest.mark.parametrize(
    "options,error,match",
    [
        (dict(ivc_frac=1.5), ValueError, r"ivc_frac must be in \[0, 1\], got 1.5"),
        (dict(seed_frac="0.01"), TypeError, r"seed_frac must be a number"),
        (dict(n_ivc=-1), ValueError, r"n_ivc must be >= 0, got -1"),
        (dict(text_offset=1.5), TypeError, r"text_offset must be an int"),
        (dict(mrope_mode="axes"), ValueError, r"mrope_mode must be one of .*'axes'"),
        (dict(fill=False), ValueError, r"fill=False needs n_foreground"),
        (dict(n_foreground=10), ValueError, r"n_foreground=10 only applies with fill=False"),
        (dict(scope="before_llm", layer=0), ValueError, r"scope must be 'llm'"),
        (dict(ratio=0.0), ValueError, r"ratio must be in \(0, 1\], got 0.0"),
        (dict(layer=4), ValueError, r"layer 4 is outside \[1, 4\)"),
        (dict(n_ivcs=3), TypeError, r"unknown option\(s\) \['n_ivcs'\] for method 'ivc_prune'"),
    ],
)
def test_bad_knobs_are_refused_by_prune_with_their_name(options, error, match):
    model = tiny_wrapper("sdpa").model
    with pytest.raises(error, match=match):
        prune(model, "ivc_prune", **{"layer": 2, **options})
    assert not hasattr(model, "_vlmeval_ivcp_pruner")
