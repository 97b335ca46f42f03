"""The engine on every model family's tiny checkpoint, with SDPA and eager: keeping everything is the unpruned model,
pruned runs equal the masked reference of the unpruned model, cached decoding equals uncached recomputation, caches
have the promised lengths, decode steps continue the original positions, and each image has its own budget."""

from __future__ import annotations

import pytest
import torch
from support.reference import (
    alive_per_layer, check_merged_run, check_pruned_run, forward_decode_loop, greedy_generate, kept_positions,
    merged_slots,
)
from support.tiny import FAMILIES, family_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning.arch import arch_for, projector_of, rope_spec

QUESTIONS = {1: ["What is in the picture?"], 2: ["What is in the picture?", "Colour?"]}
NEW_TOKENS = 5
LAYER = 2


def _setup(family: str, attention: str = "sdpa", batch: int = 2, sizes=None):
    wrapper = tiny_wrapper(attention, family=family)
    inputs, layouts = family_inputs(wrapper, QUESTIONS[batch], sizes=sizes)
    return wrapper.model, inputs, layouts


def _is_mrope(model) -> bool:
    return rope_spec(model.config.get_text_config()).mrope_section is not None


def _prefill_positions(model, inputs: dict) -> dict:
    """generate() numbers a left-padded 1D-RoPE prompt from each row's first real token, a plain forward() from
    column 0: give forward() generate()'s positions so that position-aware methods choose alike (M-RoPE models
    compute their own)."""
    if _is_mrope(model):
        return {}
    return {"position_ids": (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)}


def _forward(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).logits


def _n_layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "options",
    [
        dict(method="none"),
        dict(method="random", ratio=1.0, layer=LAYER),
        dict(method="random", ratio=1.0, layer=0, scope="before_llm"),
    ],
    ids=["none", "random-1.0", "before-llm-1.0"],
)
def test_keeping_everything_is_the_unpruned_model(family, attention, options):
    model, inputs, _ = _setup(family, attention)
    base_logits, base = _forward(model, inputs), greedy_generate(model, inputs, NEW_TOKENS)
    with prune(model, **options):
        logits, out = _forward(model, inputs), greedy_generate(model, inputs, NEW_TOKENS)
    assert torch.equal(logits, base_logits)
    assert torch.equal(out.sequences, base.sequences)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    "options",
    [
        dict(method="random", cache_policy="all", seed=3, layer=LAYER),
        dict(method="random", cache_policy="after", seed=3, layer=LAYER),
        dict(method="random", scope="before_llm", seed=3, layer=0),
        dict(method="ivc_prune", layer=LAYER),
        dict(method="dart", layer=LAYER),
        dict(method="cdpruner", layer=0),
        dict(method="vispruner", layer=0),
        dict(method="holov", layer=0),
        dict(method="visionzip", layer=0),
        dict(method="prumerge_plus", layer=0, preset="matched"),
        # The official count differs between rows: test_engine_ragged.py runs it on every family.
        dict(method="sparsevlm", layers=(1, LAYER, 3), preset="matched"),
        dict(method="sparsevlm", layers=(1, LAYER), preset="matched", cache_policy="all"),
    ],
    ids=[
        "random-all", "random-after", "before-llm", "ivc_prune", "dart", "cdpruner", "vispruner", "holov", "visionzip",
        "prumerge_plus", "sparsevlm-after", "sparsevlm-all",
    ],
)
def test_pruned_runs_equal_the_masked_reference(family, attention, batch, options):
    """Methods that merge tokens (`Selection.merged`) are checked against the reference fed their merged vectors."""
    model, inputs, layouts = _setup(family, attention, batch)
    tokenizer = tiny_wrapper(attention, family=family).processor.tokenizer
    with prune(model, ratio=0.5, **options) as pruner:
        pruner.set_image_layouts(layouts)
        pruner.set_question_texts(QUESTIONS[batch], tokenizer)  # read by cdpruner, ignored by the others
        out = greedy_generate(model, inputs, NEW_TOKENS)
        kept_by_generate = pruner.last.kept
        pruner.set_image_layouts(layouts)
        pruner.set_question_texts(QUESTIONS[batch], tokenizer)
        prefill = _forward(model, inputs, **_prefill_positions(model, inputs))
    assert all(torch.equal(a, b) for a, b in zip(kept_by_generate, pruner.last.kept, strict=True))
    image_id = model.config.image_token_id
    stage = pruner.last.stages[0]
    if any(selection.merged is not None for selection in stage):
        keep = kept_positions(inputs["input_ids"], image_id, pruner.last.kept)
        merged = merged_slots(inputs["input_ids"], image_id, stage, projector_of(model))
        check_merged_run(model, inputs, prefill, out, keep, merged, 0, pruner.config.cache_policy, attention)
        return
    cuts = [cut.layer for cut in pruner.config.cuts()]
    alive = alive_per_layer(inputs["input_ids"], image_id, cuts, pruner.last.stages, _n_layers(model))
    held = [alive[-1]] * len(alive) if pruner.config.cache_policy == "all" else alive
    check_pruned_run(model, inputs, prefill, out, alive, held, attention)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("policy", ["all", "after"])
def test_cache_lengths_and_decode_positions(family, policy):
    model, inputs, _ = _setup(family)
    prompt_len, n_layers = inputs["input_ids"].shape[1], _n_layers(model)
    text_model = arch_for(model).text_model

    def record_positions():
        seen = []
        module = model.get_submodule(text_model)
        # M-RoPE positions under generate() carry an extra text row first: compare the rotary rows only.
        hook = module.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["position_ids"][-3:].clone()), with_kwargs=True
        )
        return seen, hook

    base_positions, hook = record_positions()
    greedy_generate(model, inputs, NEW_TOKENS)  # the unpruned run: generate() computes its own positions
    hook.remove()
    with prune(model, "random", ratio=0.5, layer=LAYER, cache_policy=policy) as pruner:
        positions, hook = record_positions()
        loop_logits, cache = forward_decode_loop(model, inputs, **_prefill_positions(model, inputs))
        hook.remove()
        generated = greedy_generate(model, inputs, NEW_TOKENS)
    n_visual = pruner.last.n_visual[0]
    kept = prompt_len - n_visual + round(0.5 * n_visual)
    expected = [kept] * n_layers if policy == "all" else [prompt_len] * LAYER + [kept] * (n_layers - LAYER)
    assert pruner.last.cache_lengths == expected
    assert [layer_cache.keys.shape[2] - 3 for layer_cache in cache.layers] == expected  # 3 decoded tokens
    for got, want in zip(positions[1:], base_positions[1:4], strict=True):
        assert torch.equal(got, want)
    torch.testing.assert_close(loop_logits, torch.stack(generated.logits[:4], 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["random", "ivc_prune"])
def test_each_image_of_a_prompt_has_its_own_budget(family, method):
    model, inputs, layouts = _setup(family, batch=1, sizes=[(112, 112), (112, 56)])
    image_id = model.config.image_token_id
    visual = inputs["input_ids"][0] == image_id
    if layouts is not None:  # the wrapper's layouts split the tokens (LLaVA-OneVision puts images side by side)
        first = layouts[0][0].n_tokens
    else:
        starts = (visual & ~torch.cat([visual.new_zeros(1), visual[:-1]])).nonzero().flatten().tolist()
        assert len(starts) == 2, "each image is its own run of image tokens"
        first = int(visual[: starts[1]].sum())
    second = int(visual.sum()) - first
    with prune(model, method, ratio=0.5, layer=LAYER) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        pruner.set_image_layouts(layouts)
        prefill = _forward(model, inputs)
    kept = pruner.last.kept[0]
    assert int((kept < first).sum()) == round(0.5 * first)
    assert int((kept >= first).sum()) == round(0.5 * second)
    alive = alive_per_layer(inputs["input_ids"], image_id, [LAYER], pruner.last.stages, _n_layers(model))
    check_pruned_run(model, inputs, prefill, out, alive, [alive[-1]] * len(alive), "sdpa")


# Pictures that give a global view plus local tiles, per family with a tiled layout.
TILED_PICTURES = {"internvl": (224, 224), "deepseek_vl2": (90, 70), "llava_onevision": (112, 112)}


@pytest.mark.parametrize("family", sorted(TILED_PICTURES))
def test_ivc_prune_follows_the_tiling_and_equals_the_masked_reference(family):
    model, inputs, layouts = _setup(family, batch=1, sizes=[TILED_PICTURES[family]])
    layout = layouts[0][0]
    assert layout.tiles is not None and any(view.kind == "global" for view in layout.views)
    with prune(model, "ivc_prune", ratio=0.5, layer=LAYER) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        pruner.set_image_layouts(layouts)
        prefill = _forward(model, inputs)
    selection = pruner.last.stages[0][0]
    assert selection.keep.numel() == round(0.5 * layout.n_tokens)
    assert selection.parts["mapped"].numel() > 0, "kept global cells were mapped onto the tiles"
    assert torch.isin(layout.separators(), selection.keep).all()
    image_id = model.config.image_token_id
    alive = alive_per_layer(inputs["input_ids"], image_id, [LAYER], pruner.last.stages, _n_layers(model))
    check_pruned_run(model, inputs, prefill, out, alive, [alive[-1]] * len(alive), "sdpa")
