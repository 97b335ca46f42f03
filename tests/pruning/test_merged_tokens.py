"""Merged tokens (docs/engine.md, "Merged tokens"): a selection's merged vectors enter the LLM in their kept slots, at
the slots' original positions, in the LLM's input space or through the family's own projector.

A test-only merging method (`merge_probe`, a real `MethodSpec` given to the real engine, not registered) keeps evenly
spaced visual tokens and gives its first and last kept slots new vectors. Runs are checked against an explicit
reference fed the merged vectors (tests/support/reference.py, `check_merged_run`): at a before-LLM cut the unpruned
model fed only the kept rows of its input embeddings, the merged rows replaced, at their original position ids; at an
in-LLM cut the unpruned model with the merged rows replaced at the cut layer's input and the dropped keys masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace

import pytest
import torch
from support.reference import check_merged_run, greedy_generate, kept_positions, merged_slots
from support.tiny import FAMILIES, family_inputs, picture, ragged_inputs, tiny_wrapper

from vlmeval_ivcp.pruning import MergedTokens, PruneConfig, Pruner, Selection, SelectionContext
from vlmeval_ivcp.pruning.arch import arch_for, get_submodule, projector_of
from vlmeval_ivcp.pruning.vision_tap import VisionTap
from vlmeval_ivcp.pruning.registry import MethodSpec
from vlmeval_ivcp.visualize import MERGED_COLOR, draw_selection

QUESTIONS = ["What is in the picture?", "Colour?"]
NEW_TOKENS = 3


@dataclass
class MergeProbeConfig(PruneConfig):
    space: str = field(default="llm_input", metadata={"help": "space of the merged vectors"})
    width: int = field(default=0, metadata={"help": "projector input width (projector_input only)"})


def merge_probe(ctx: SelectionContext, config: MergeProbeConfig) -> Selection:
    """`n_keep` evenly spaced visual tokens; the first and last kept slots carry new vectors: in the LLM's input
    space the slot's own token plus the mean of the dropped ones, in the projector's input space a random vector
    fixed by the image's size."""
    keep = torch.linspace(0, ctx.n_visual - 1, ctx.n_keep).round().long().unique()
    slots = torch.tensor([0, keep.numel() - 1]).unique()
    if config.space == "llm_input":
        visual = ctx.hidden_states[ctx.visual_index]
        dropped = torch.ones(ctx.n_visual, dtype=torch.bool)
        dropped[keep] = False
        mean = visual[dropped.to(visual.device)].mean(0) if bool(dropped.any()) else torch.zeros_like(visual[0])
        vectors = visual[keep[slots].to(visual.device)] + mean
    else:
        generator = torch.Generator().manual_seed(ctx.n_visual)
        vectors = torch.randn(slots.numel(), config.width, generator=generator).to(ctx.visual_index.device)
    return Selection(keep.to(ctx.visual_index.device), merged=MergedTokens(slots, vectors, config.space))


PROBE = MethodSpec("merge_probe", MergeProbeConfig, merge_probe, frozenset({"hidden_states"}))


@lru_cache(maxsize=None)
def _projector_inputs(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision tap's `vision_features` of one prompt's visual tokens (separators left out) and the embeddings the
    LLM receives there: `([m, g*C], [m, D])`."""
    wrapper = tiny_wrapper("sdpa", family=family)
    model = wrapper.model
    inputs, layouts = family_inputs(wrapper, QUESTIONS[:1])
    tap = VisionTap(model, frozenset({"vision_features"}))
    grabbed = {}
    handle = get_submodule(model, arch_for(model).text_model).register_forward_pre_hook(
        lambda module, args, kwargs: grabbed.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**inputs)
        visual = inputs["input_ids"][0] == model.config.image_token_id
        images = [len(layouts[0])] if layouts else [1]
        values, _ = tap.take(layouts, images)
    finally:
        handle.remove()
        tap.remove()
    features = torch.cat([image.features for image in values[0]])
    cells = ~features.isnan().any(dim=1)
    return features[cells], grabbed["embeds"][0][visual][cells]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_projector_data_maps_the_taps_features_to_the_llms_embeddings(family):
    features, embeds = _projector_inputs(family)
    with torch.no_grad():
        projected = projector_of(tiny_wrapper("sdpa", family=family).model)(features)
    torch.testing.assert_close(projected, embeds, rtol=1e-5, atol=1e-5)


def _config(family: str, space: str, layer: int, **options) -> MergeProbeConfig:
    before = dict(scope="before_llm", layer=0) if layer == 0 else dict(layer=layer)
    width = _projector_inputs(family)[0].shape[1] if space == "projector_input" else 0
    return MergeProbeConfig(ratio=0.5, space=space, width=width, **before, **options)


def _run(model, config: MergeProbeConfig, inputs: dict, layouts):
    with Pruner(model, config, PROBE) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        record = pruner.last
        pruner.set_image_layouts(layouts)
        with torch.no_grad():
            prefill = model(**inputs).logits
    return out, record, prefill, pruner


def _check(model, inputs, out, record, prefill, config, attention):
    image_id = model.config.image_token_id
    keep = kept_positions(inputs["input_ids"], image_id, record.kept)
    merged = merged_slots(inputs["input_ids"], image_id, record.stages[0], projector_of(model))
    assert all(positions.numel() > 0 for positions, _ in merged)
    check_merged_run(model, inputs, prefill, out, keep, merged, config.layer, config.cache_policy, attention)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("space", ["llm_input", "projector_input"])
def test_before_llm_merges_equal_the_fed_reference_on_every_family(family, space):
    model = tiny_wrapper("sdpa", family=family).model
    inputs, layouts = family_inputs(tiny_wrapper("sdpa", family=family), QUESTIONS)
    config = _config(family, space, layer=0)
    out, record, prefill, _ = _run(model, config, inputs, layouts)
    _check(model, inputs, out, record, prefill, config, "sdpa")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava", "deepseek_vl2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("policy", ["all", "after"])
def test_in_llm_merges_equal_the_reference_with_the_merged_rows(family, attention, policy):
    wrapper = tiny_wrapper(attention, family=family)
    inputs, layouts = family_inputs(wrapper, QUESTIONS)
    config = _config(family, "llm_input", layer=2, cache_policy=policy)
    out, record, prefill, _ = _run(wrapper.model, config, inputs, layouts)
    _check(wrapper.model, inputs, out, record, prefill, config, attention)


@pytest.mark.parametrize("family", ["llava_next", "internvl"])
def test_before_llm_projector_merges_with_eager_attention(family):
    wrapper = tiny_wrapper("eager", family=family)
    inputs, layouts = family_inputs(wrapper, QUESTIONS)
    config = _config(family, "projector_input", layer=0)
    out, record, prefill, _ = _run(wrapper.model, config, inputs, layouts)
    _check(wrapper.model, inputs, out, record, prefill, config, "eager")


RAGGED_QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
RAGGED_SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]


@pytest.mark.parametrize(
    "family,space,layer",
    [("qwen2_5_vl", "projector_input", 0), ("internvl", "llm_input", 0), ("llava", "llm_input", 2),
     ("deepseek_vl2", "projector_input", 0)],
)
def test_each_row_of_a_ragged_batch_equals_its_reference_alone(family, space, layer):
    wrapper = tiny_wrapper("sdpa", family=family)
    model = wrapper.model
    inputs, layouts, alone = ragged_inputs(wrapper, RAGGED_QUESTIONS, RAGGED_SIZES)
    config = _config(family, space, layer)
    out, record, prefill, pruner = _run(model, config, inputs, layouts)
    assert bool(record.filler.any()), "the rows keep different counts"
    image_id, prompt_len = model.config.image_token_id, inputs["input_ids"].shape[1]
    for row, (row_inputs, row_layouts) in enumerate(alone):
        with Pruner(model, config, PROBE) as row_pruner, torch.no_grad():
            row_pruner.set_image_layouts(row_layouts)
            model(**row_inputs)
        assert torch.equal(row_pruner.last.kept[0], record.kept[row]), "each row keeps what it keeps alone"
        pad = prompt_len - row_inputs["input_ids"].shape[1]
        slots = ~record.filler[row] & (record.positions[row] >= pad)
        keep = kept_positions(row_inputs["input_ids"], image_id, [record.kept[row]])
        merged = merged_slots(row_inputs["input_ids"], image_id, [record.stages[0][row]], projector_of(model))
        row_out = SimpleNamespace(
            sequences=torch.cat([row_inputs["input_ids"], out.sequences[row : row + 1, prompt_len:]], dim=1),
            logits=[step[row : row + 1] for step in out.logits],
        )
        check_merged_run(model, row_inputs, prefill[row : row + 1, slots], row_out, keep, merged, layer,
                         config.cache_policy, "sdpa")


def test_the_record_names_the_merged_slots_and_the_picture_outlines_them():
    wrapper = tiny_wrapper("sdpa", family="qwen2_5_vl")
    inputs, layouts = family_inputs(wrapper, QUESTIONS[:1])
    config = _config("qwen2_5_vl", "llm_input", layer=0)
    _, record, _, _ = _run(wrapper.model, config, inputs, layouts)
    selection = record.stages[0][0]
    merged_visual = selection.keep[selection.merged.slots].sort().values
    assert torch.equal(selection.parts["merged"], merged_visual)
    drawn = draw_selection([picture(0)], record)  # family_inputs drew picture(0) for the first question
    for token in merged_visual.tolist():
        x0, y0, _, _ = drawn.info["cells"][token]
        assert drawn.getpixel((int(x0), int(y0))) == MERGED_COLOR
    unmerged = sorted(set(record.kept[0].tolist()) - set(merged_visual.tolist()))
    x0, y0, _, _ = drawn.info["cells"][unmerged[0]]
    assert drawn.getpixel((int(x0), int(y0))) != MERGED_COLOR


def test_merged_tokens_are_checked():
    keep = torch.tensor([1, 4, 6])
    with pytest.raises(ValueError, match="index Selection.keep"):
        Selection(keep, merged=MergedTokens(torch.tensor([3]), torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="distinct"):
        MergedTokens(torch.tensor([0, 0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="space"):
        MergedTokens(torch.tensor([0]), torch.zeros(1, 4), "clip")
    with pytest.raises(ValueError, match="reserved"):
        Selection(keep, parts={"merged": keep[:1]})
    assert torch.equal(Selection(keep, merged=MergedTokens(torch.tensor([2, 0]), torch.zeros(2, 4))).parts["merged"],
                       torch.tensor([1, 6]))


def test_projector_inputs_at_an_in_llm_cut_are_refused():
    wrapper = tiny_wrapper("sdpa", family="llava")
    inputs, layouts = family_inputs(wrapper, QUESTIONS[:1])
    with pytest.raises(ValueError, match="before-LLM cut"):
        _run(wrapper.model, _config("llava", "projector_input", layer=2), inputs, layouts)
