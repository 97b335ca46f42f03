"""Every registered method through the engine: on every family's tiny checkpoint, then in detail on the tiny
Qwen2.5-VL (4 layers, 16 visual tokens per picture).

Before-LLM methods are checked against feeding the language model only the kept tokens at their original
positions; attention-scored methods against eager attention weights and the masked reference.
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from support.reference import (
    alive_per_layer,
    check_pruned_run,
    greedy_generate,
    kept_positions,
    recording_pruner,
)
from support.tiny import FAMILIES, family_inputs, qwen_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning import METHODS, make_config
from vlmeval_ivcp.pruning.gather import grid_from_positions
from vlmeval_ivcp.pruning.methods.fastv import last_query_attention
from vlmeval_ivcp.pruning.methods.vision_views import view_budget
from vlmeval_ivcp.pruning.methods.uniform import grid_uniform

METHODS_PACKAGE = "vlmeval_ivcp.pruning.methods."
QUESTIONS = ["What is in the picture?", "Colour?"]  # left-padded batch of 2
N_VISUAL = 16
GRID = (4, 4)
N_LAYERS = 4
NEW_TOKENS = 3
BEFORE_LLM = {
    "resprune": dict(ratio=0.25),
    "divprune": dict(ratio=0.25),
    "cdpruner": dict(ratio=0.25, instruction="prompt_tail"),  # no question given here (test_cdpruner.py gives it)
    "uniform": dict(ratio=0.25),
    "random": dict(ratio=0.25, scope="before_llm", layer=0, seed=2),
    "vispruner": dict(ratio=0.25),
    "holov": dict(ratio=0.25, preset="matched"),  # the official count (<= n_keep) is a rule test (test_holov.py)
}
# Vision-tower methods keep separators uncounted and budget each view's cells (VisPruner, VisionZip, PruMerge+) or the
# image's cells (HoloV): docs/methods/vispruner.md.
CELL_BUDGETS = {"vispruner": "view", "holov": "image", "visionzip": "view", "prumerge_plus": "view"}
EVERY_METHOD = [
    ("none", {}),
    ("random", dict(ratio=0.5, layer=2)),
    ("fastv", dict(ratio=0.5, layer=2)),
    ("pdrop", dict(layers=(1, 2, 3))),
    ("ivc_prune", dict(ratio=0.5, layer=2)),
    ("dart", dict(ratio=0.5, layer=2, preset="matched")),  # the official count is checked below
    ("sparsevlm", dict(layers=(1, 2, 3), preset="matched")),  # the official count: test_sparsevlm.py
    *BEFORE_LLM.items(),
    # Vision-tower methods: budgets per view, separators kept (tests/pruning/test_vision_tower_methods.py).
    ("visionzip", dict(ratio=0.5, preset="matched")),
    ("prumerge_plus", dict(ratio=0.5, preset="matched")),
]


def _kept_count(method: str, ratio: float, layouts, n_visual: int, n_separators: int) -> int:
    """What one sample keeps at a first cut: `round(ratio * L)`, or for the vision-tower methods the separators plus
    the cells' budgets (without a layout, LLaVA-NeXT's case, all cells of the image are one view)."""
    if method not in CELL_BUDGETS:
        return round(ratio * n_visual)
    if layouts is None:
        return n_separators + view_budget(ratio, n_visual - n_separators)
    total = 0
    for layout in layouts:
        cells = [view.rows * view.cols for view in layout.views]
        groups = cells if CELL_BUDGETS[method] == "view" else [sum(cells)]
        total += layout.n_tokens - sum(cells) + sum(view_budget(ratio, count) for count in groups)
    return total


def test_every_built_in_method_is_exercised():
    built_in = {name for name, spec in METHODS.items()
                if not spec.changes_inputs and spec.select.__module__.startswith(METHODS_PACKAGE)}
    assert {method for method, _ in EVERY_METHOD} == built_in


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method,options", EVERY_METHOD, ids=[f"{m}-{'-'.join(o)}" for m, o in EVERY_METHOD])
def test_generates_and_keeps_the_requested_count_on_every_family(family, method, options):
    wrapper = tiny_wrapper("sdpa", family=family)
    model = wrapper.model
    inputs, layouts = family_inputs(wrapper, QUESTIONS)
    config = make_config(method, **options)
    with prune(model, method, **options) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.sequences.shape == (2, prompt_len + NEW_TOKENS)

    # Each cut keeps round(ratio * L) of the L visual tokens that reach it (per view, separators kept besides, for
    # the vision-tower methods).
    n_visual, n_layers = pruner.last.n_visual[0], model.config.get_text_config().num_hidden_layers
    reaching, per_layer = n_visual, [n_visual] * n_layers
    for cut, stage in zip(config.cuts(), pruner.last.stages, strict=True):
        layouts = pruner.last.layouts[0] if pruner.last.layouts else None
        separators = len(stage[0].parts.get("separators", []))
        reaching = _kept_count(method, cut.ratio, layouts, reaching, separators)
        assert [len(selection.keep) for selection in stage] == [reaching, reaching]
        per_layer[cut.layer :] = [reaching] * (n_layers - cut.layer)
    assert [len(kept) for kept in pruner.last.kept] == [reaching, reaching]
    if config.cache_policy == "all":
        per_layer = [reaching] * n_layers
    expected = [prompt_len - n_visual + count for count in per_layer]
    assert pruner.last.cache_lengths == expected
    # generate() fed NEW_TOKENS - 1 tokens after the prompt.
    assert [layer.keys.shape[2] for layer in out.cache.layers] == [n + NEW_TOKENS - 1 for n in expected]


def _kept_tokens_logits(model, inputs: dict, keep: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Logits of the language model fed only the prompt tokens `keep [B, n]` (then `generated [B, g]`) at their
    original M-RoPE positions: the unpruned embedding and vision tower, no pruner, no cache."""
    inner = model.model
    rows = torch.arange(keep.shape[0])[:, None]
    with torch.no_grad():
        embeds = inner.get_input_embeddings()(inputs["input_ids"])
        image = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        embeds[inputs["input_ids"] == model.config.image_token_id] = torch.cat(image.pooler_output)
        positions, _ = inner.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )  # [3, B, S]
        # Generated tokens continue after the last prompt token, on all three axes.
        next_positions = positions[:, :, -1:] + 1 + torch.arange(generated.shape[1])
        hidden = inner.language_model(
            inputs_embeds=torch.cat([embeds[rows, keep], inner.get_input_embeddings()(generated)], dim=1),
            position_ids=torch.cat([positions[:, rows, keep], next_positions], dim=2),
            attention_mask=torch.cat([inputs["attention_mask"][rows, keep], torch.ones_like(generated)], dim=1),
            use_cache=False,
        ).last_hidden_state
        return model.lm_head(hidden)


@pytest.mark.parametrize("method", sorted(BEFORE_LLM))
def test_before_llm_methods_equal_feeding_only_the_kept_tokens(method):
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS)
    with prune(model, method, **BEFORE_LLM[method]) as pruner, torch.no_grad():
        prefill = model(**inputs).logits
        out = greedy_generate(model, inputs, NEW_TOKENS)
    assert pruner.last.cache_lengths[0] == prefill.shape[1]  # the LLM never saw the dropped tokens
    keep = kept_positions(inputs["input_ids"], model.config.image_token_id, pruner.last.kept)
    prompt_len, n_kept = inputs["input_ids"].shape[1], keep.shape[1]
    reference = _kept_tokens_logits(model, inputs, keep, out.sequences[:, prompt_len:])
    real = inputs["attention_mask"][torch.arange(2)[:, None], keep].bool()
    assert (prefill - reference[:, :n_kept])[real].abs().max() <= 1e-5
    for step, step_logits in enumerate(out.logits):
        assert (step_logits - reference[:, n_kept - 1 + step]).abs().max() <= 1e-5


def test_uniform_uses_the_image_grid_under_generate_and_forward():
    # generate() encodes the picture before prefill and drops `image_grid_thw`; the grid must still be found.
    wrapper = tiny_wrapper("sdpa")
    inputs = qwen_inputs(wrapper, QUESTIONS)
    expected = grid_uniform(*GRID, 4).tolist()
    with prune(wrapper.model, "uniform", ratio=0.25) as pruner:
        greedy_generate(wrapper.model, inputs, 1)
        under_generate = [kept.tolist() for kept in pruner.last.kept]
        with torch.no_grad():
            wrapper.model(**inputs)
        under_forward = [kept.tolist() for kept in pruner.last.kept]
    assert under_generate == under_forward == [expected, expected]


def _rows_of(h: list[int], w: list[int], t: int = 7) -> torch.Tensor:
    return torch.tensor([[t] * len(h), h, w])


@pytest.mark.parametrize(
    "positions,grid",
    [
        (_rows_of([5, 5, 5, 6, 6, 6], [5, 6, 7, 5, 6, 7]), (2, 3)),
        (_rows_of([3], [3]), (1, 1)),
        (torch.tensor([[7, 7, 9, 9], [7, 7, 7, 7], [7, 8, 7, 8]]), None),  # two video frames
        (_rows_of([5, 5, 6, 6, 9, 9, 10, 10], [5, 6, 5, 6, 9, 10, 9, 10]), None),  # two images
        (_rows_of([5, 5, 6], [5, 6, 5]), None),  # not a full rectangle
        (torch.empty(3, 0, dtype=torch.long), None),
    ],
)
def test_grid_is_read_from_mrope_positions(positions, grid):
    assert grid_from_positions(positions) == grid


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fastv_scores_equal_eager_attention_weights(attention):
    layer = 2
    eager = tiny_wrapper("eager")
    inputs = qwen_inputs(eager, QUESTIONS)
    with torch.no_grad():
        weights = eager.model(**inputs, output_attentions=True).attentions[layer - 1][:, :, -1]  # [B, H, S]
    model = tiny_wrapper(attention).model  # SDPA keeps running: the engine recomputes the scores
    pruner, contexts = recording_pruner(model, "fastv", ratio=0.5, layer=layer)
    with pruner, torch.no_grad():
        model(**inputs)
    assert len(contexts) == 2
    for row, ctx in enumerate(contexts):
        recomputed = last_query_attention(ctx.queries, ctx.keys, ctx.scaling, ctx.key_mask)
        assert (recomputed - weights[row]).abs().max() <= 1e-5
        most_attended = weights[row].mean(0)[ctx.visual_index].topk(N_VISUAL // 2).indices.sort().values
        assert pruner.last.kept[row].tolist() == most_attended.tolist()


def test_pdrop_scores_each_stage_with_its_own_layers_attention_before_the_drop():
    """Stage s ranks with layer `layers[s]`'s attention over the tokens reaching it, as PyramidDrop's release does:
    eager weights of that layer in a run pruned by the earlier stages only."""
    layers = (1, 2, 3)
    wrapper = tiny_wrapper("eager")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS)
    pruner, contexts = recording_pruner(model, "pdrop", layers=layers)
    with pruner, torch.no_grad():
        model(**inputs)
    assert len(contexts) == 2 * len(layers)
    for stage, layer in enumerate(layers):
        with prune(model, "pdrop", layers=layers[:stage]) if stage else nullcontext(), torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
        assert len(attentions) == N_LAYERS  # the extra scoring calls do not show up as layers
        weights = attentions[layer][:, :, -1]  # [B, H, S_stage]
        for row in range(2):
            ctx = contexts[2 * stage + row]
            assert ctx.keys.shape[1] == weights.shape[-1]
            recomputed = last_query_attention(ctx.queries, ctx.keys, ctx.scaling, ctx.key_mask)
            assert (recomputed - weights[row]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "attention,method,options",
    [
        ("sdpa", "fastv", dict(ratio=0.5, layer=2)),
        ("eager", "fastv", dict(ratio=0.25, layer=1, cache_policy="all")),
        ("sdpa", "pdrop", dict(layers=(1, 2, 3))),
        ("eager", "pdrop", dict(layers=(1, 2, 3))),
        ("sdpa", "pdrop", dict(layers=(1, 3), stage_ratios=(0.75, 0.5), cache_policy="all")),
        ("sdpa", "dart", dict(ratio=0.5, layer=2)),
        ("eager", "dart", dict(ratio=0.75, layer=1, preset="matched", cache_policy="all")),
        # The official count differs between the rows here: test_engine_ragged.py checks it on every family.
        ("sdpa", "sparsevlm", dict(layers=(1, 2, 3), preset="matched")),
        ("eager", "sparsevlm", dict(layers=(1, 2, 3), preset="matched")),
        ("sdpa", "sparsevlm", dict(layers=(1, 3), preset="matched", stage_ratios=(0.75, 0.5), cache_policy="all")),
    ],
)
def test_attention_methods_equal_the_masked_reference(attention, method, options):
    wrapper = tiny_wrapper(attention)
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS)
    config = make_config(method, **options)
    with prune(model, config) as pruner, torch.no_grad():
        prefill = model(**inputs).logits
        out = greedy_generate(model, inputs, NEW_TOKENS)
    cut_layers = [cut.layer for cut in config.cuts()]
    alive = alive_per_layer(inputs["input_ids"], model.config.image_token_id, cut_layers, pruner.last.stages, N_LAYERS)
    held = [alive[-1]] * N_LAYERS if config.cache_policy == "all" else alive
    assert pruner.last.cache_lengths == [keep.shape[1] for keep in held]
    check_pruned_run(model, inputs, prefill, out, alive, held, attention)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_sparsevlm_rater_attention_equals_eager_attention_weights_at_every_stage(attention):
    """Stage s reads layer `layers[s] - 1`'s attention from every row after the image: the eager weights of that layer
    in a run pruned by the earlier stages only; the embeddings are the LLM's input, the image's whole at every stage."""
    layers = (1, 2, 3)
    eager = tiny_wrapper("eager")
    inputs = qwen_inputs(eager, QUESTIONS)
    model = tiny_wrapper(attention).model
    pruner, contexts = recording_pruner(model, "sparsevlm", layers=layers, scale=1.0, bias=2.0)
    with pruner, torch.no_grad():
        model(**inputs)
        embeds = model.model.get_input_embeddings()(inputs["input_ids"])
    stages = pruner.last.stages
    assert len(contexts) == 2 * len(layers)
    image_id = model.config.image_token_id
    for stage, layer in enumerate(layers):
        with prune(eager.model, "sparsevlm", layers=layers[:stage], scale=1.0, bias=2.0) if stage else nullcontext():
            with torch.no_grad():
                weights = eager.model(**inputs, output_attentions=True).attentions[layer - 1].mean(1)  # [B, S, S]
        for row in range(2):
            ctx = contexts[2 * stage + row]
            assert ctx.query_attention.shape == (ctx.query_index.numel(), weights.shape[-1])
            assert (ctx.query_attention - weights[row][ctx.query_index]).abs().max() <= 1e-5
            text = inputs["input_ids"][row] != image_id
            assert torch.equal(ctx.query_embeds, embeds[row][text][-ctx.query_index.numel():])
            assert ctx.image_embeds.shape[0] == N_VISUAL  # the image's tokens before any cut
            assert stages[stage][row].keep.numel() <= ctx.n_visual


def test_dart_reads_layer_k_input_through_the_final_norm_and_keeps_the_official_count():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS)
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[2]  # the input of layer 2
        normed = model.model.language_model.norm(hidden)
    pruner, contexts = recording_pruner(model, "dart", ratio=0.5, layer=2)
    with pruner, torch.no_grad():
        model(**inputs)
    for row, ctx in enumerate(contexts):
        assert (ctx.normed_hidden_states - normed[row]).abs().max() <= 1e-5
    # 8 of 16 visual tokens asked: every pivot claims 8 // 8 = 1, so 4 + 8 are kept.
    assert [len(kept) for kept in pruner.last.kept] == [12, 12]
