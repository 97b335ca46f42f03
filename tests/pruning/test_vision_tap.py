"""The vision-tower tap on every family's tiny checkpoint: its features, run through the model's own projector (merger),
are exactly the embeddings the LLM receives at each visual token (so every value lands on the right token, separators
excepted), its attention scores equal the eager encoder's attention weights mapped the same way, and the encoder keeps
SDPA."""

from __future__ import annotations

import sys

import pytest
import torch
from support.tiny import FAMILIES, family_inputs, ragged_inputs, tiny_wrapper

from vlmeval_ivcp.pruning.arch import get_submodule
from vlmeval_ivcp.pruning.vision_tap import (
    VISION_INPUTS, VisionTap, layer_index, pool_onto_tokens, received_attention, vision_arch_for,
)

QUESTIONS = ["What is in the picture?", "Colour?"]
SIZES = [(112, 112), (168, 84)]


def _project(model, features: torch.Tensor) -> torch.Tensor:
    """The LLM embeddings the model makes of `features [L, g*C]` (the tap's `vision_features`)."""
    family = model.config.model_type
    if family.startswith("qwen"):
        visual = model.model.visual
        return visual.merger(features.reshape(-1, features.shape[1] // visual.config.spatial_merge_size ** 2))
    if family == "deepseek_vl_v2":  # F.unfold's channel-major order of the 2x2 block
        n, width = features.shape
        members = model.model.projector.ratio ** 2
        return model.model.projector.layers(features.view(n, members, width // members).transpose(1, 2).reshape(n, -1))
    return model.model.multi_modal_projector(features)


def _run(model, inputs, layouts, needs=VISION_INPUTS, **options):
    tap = VisionTap(model, frozenset(needs), **options)
    grabbed = {}
    hook = get_submodule(model, "model.language_model").register_forward_pre_hook(
        lambda module, args, kwargs: grabbed.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**inputs)
        visual = inputs["input_ids"] == model.config.image_token_id
        images = [len(row) for row in layouts] if layouts else _runs_per_row(visual)
        values, seconds = tap.take(layouts, images)
    finally:
        hook.remove()
        tap.remove()
    assert seconds > 0
    return values, grabbed["embeds"], visual


def _runs_per_row(visual: torch.Tensor) -> list[int]:
    starts = visual & ~torch.cat([visual.new_zeros(visual.shape[0], 1), visual[:, :-1]], dim=1)
    return starts.sum(dim=1).tolist()


def _check_features_land_on_their_tokens(model, values, embeds, visual):
    for row, images in enumerate(values):
        features = torch.cat([image.features for image in images])
        assert features.shape[0] == int(visual[row].sum())
        cells = ~features.isnan().any(dim=1)
        with torch.no_grad():
            projected = _project(model, features[cells])
        torch.testing.assert_close(projected, embeds[row][visual[row]][cells], rtol=1e-5, atol=1e-5)
        for image in images:  # separators: NaN in every field
            separators = image.features.isnan().any(dim=1)
            assert bool(image.attention[separators].isnan().all()) and not bool(image.attention[~separators].isnan().any())


@pytest.mark.parametrize("family", FAMILIES)
def test_features_are_the_projector_input_of_each_visual_token(family):
    wrapper = tiny_wrapper(family=family)
    inputs, layouts = family_inputs(wrapper, QUESTIONS, sizes=None if family == "llava" else SIZES)
    values, embeds, visual = _run(wrapper.model, inputs, layouts)
    _check_features_land_on_their_tokens(wrapper.model, values, embeds, visual)
    tower = get_submodule(wrapper.model, vision_arch_for(wrapper.model).tower)
    assert tower.config._attn_implementation == "sdpa"  # the tap needs no eager encoder


@pytest.mark.parametrize("family", [family for family in FAMILIES if family != "llava"])
def test_ragged_batch_maps_each_image_of_each_row(family):
    wrapper = tiny_wrapper(family=family)
    inputs, layouts, alone = ragged_inputs(wrapper, QUESTIONS, [[(112, 112)], [(168, 84), (84, 140)]])
    values, embeds, visual = _run(wrapper.model, inputs, layouts)
    _check_features_land_on_their_tokens(wrapper.model, values, embeds, visual)
    for row, (row_inputs, row_layouts) in enumerate(alone):  # each row's scores as when it runs alone
        own, _, _ = _run(wrapper.model, row_inputs, row_layouts)
        for batched, single in zip(values[row], own[0], strict=True):
            torch.testing.assert_close(batched.attention, single.attention, equal_nan=True, rtol=1e-4, atol=1e-6)


def _eager_weights(family, inputs, layer, monkeypatch):
    """Per attention call of the eager encoder's scored layer, its softmax weights `[B, H, n, n]`."""
    model = tiny_wrapper("eager", family=family).model
    arch = vision_arch_for(model)
    layers = get_submodule(get_submodule(model, arch.tower), arch.layers)
    target = getattr(layers[layer_index(layer, len(layers))], arch.attention)
    modeling = sys.modules[type(target).__module__]
    eager, calls = modeling.eager_attention_forward, []

    def recording(module, *args, **kwargs):
        output, weights = eager(module, *args, **kwargs)
        if module is target:
            calls.append(weights.float())
        return output, weights

    monkeypatch.setattr(modeling, "eager_attention_forward", recording)
    with torch.no_grad():
        model(**inputs)
    return model, arch, calls


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [-1, -2])
def test_attention_equals_the_eager_encoder_weights(family, layer, monkeypatch):
    wrapper = tiny_wrapper(family=family)
    inputs, layouts = family_inputs(wrapper, QUESTIONS, sizes=None if family == "llava" else SIZES)
    values, _, visual = _run(wrapper.model, inputs, layouts, vision_layer=layer)
    model, arch, calls = _eager_weights(family, inputs, layer, monkeypatch)
    assert calls, "the eager encoder never ran the scored layer"
    skip = 1 if arch.cls else 0
    received = torch.cat([weights.mean(dim=(1, 2))[:, skip:].flatten() for weights in calls])
    images = [len(row) for row in layouts] if layouts else _runs_per_row(visual)
    sources = arch.placement(model, dict(inputs, grid_thw=inputs.get("image_grid_thw")), [
        layout for row in layouts for layout in row] if layouts else [None] * sum(images))
    flat = [image for row in values for image in row]
    for image, source in zip(flat, sources, strict=True):
        torch.testing.assert_close(image.attention, pool_onto_tokens(received, source), equal_nan=True,
                                   rtol=1e-4, atol=1e-6)
        if arch.cls:
            cls_row = torch.cat([weights[:, :, 0].mean(dim=1)[:, skip:].flatten() for weights in calls])
            torch.testing.assert_close(image.cls_attention, pool_onto_tokens(cls_row, source), equal_nan=True,
                                       rtol=1e-4, atol=1e-6)
        else:
            assert image.cls_attention is None


def test_received_attention_accumulates_over_query_chunks(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 3, 50, 8, generator=generator), torch.randn(2, 3, 50, 8, generator=generator)
    whole = (query @ key.transpose(-1, -2) * 0.3).softmax(-1).mean(dim=(1, 2))
    monkeypatch.setattr("vlmeval_ivcp.pruning.vision_tap._LOGIT_BUDGET", 2 * 3 * 50 * 7)  # chunks of 7 rows
    torch.testing.assert_close(received_attention(query, key, 0.3), whole)


def test_concat_cls_softmax_is_one_head_over_concatenated_heads():
    wrapper = tiny_wrapper(family="llava")
    inputs, layouts = family_inputs(wrapper, QUESTIONS)
    values, _, _ = _run(wrapper.model, inputs, layouts, needs={"vision_cls_attention", "vision_keys"},
                        cls_softmax="concat")
    image = values[0][0]
    assert image.cls_attention.shape == image.cls_attention_heads.shape[1:]
    assert not torch.allclose(image.cls_attention, image.cls_attention_heads.mean(0))
