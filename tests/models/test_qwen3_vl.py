"""Qwen3-VL on its tiny checkpoint: the adapter's prompt and inputs, and DeepStack with cuts before, inside and
after its injection layers (against the stock model and the masked reference)."""

from __future__ import annotations

import pytest
import torch
from support.reference import alive_per_layer, check_pruned_run, greedy_generate
from support.tiny import family_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning.arch import ARCHS, model_rope_spec
from vlmeval_ivcp.pruning.rope import frequency_axes

QUESTIONS = ["What is in the picture?", "Colour?"]


def _model_and_inputs(batch: int = 2):
    wrapper = tiny_wrapper("sdpa", family="qwen3_vl")
    inputs, layouts = family_inputs(wrapper, QUESTIONS[:batch])
    return wrapper, inputs, layouts


def test_prompt_inputs_and_the_tiny_checkpoint_have_the_real_structure():
    wrapper, inputs, _ = _model_and_inputs(1)
    assert wrapper.chat_prompt(1, "Hi?") == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n"
    )
    config = wrapper.model.config
    assert config.vision_config.deepstack_visual_indexes == [1, 2, 3]
    assert config.text_config.num_hidden_layers > len(config.vision_config.deepstack_visual_indexes) + 1
    # 112 x 112 pixels -> 128 x 128 (multiples of 32) -> 8 x 8 patches of 16 -> 4 x 4 tokens after the 2 x 2 merge.
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((inputs["input_ids"] == config.image_token_id).sum()) == 16
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == config.image_token_id)
    rope = model_rope_spec(wrapper.model)
    assert (rope.mrope_layout, rope.mrope_section) == ("interleaved", (4, 2, 2))
    assert frequency_axes(rope).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
    assert ARCHS["qwen3_vl"].injections is not None


def test_inputs_without_mm_token_type_ids_get_the_models_own_error():
    wrapper, inputs, _ = _model_and_inputs(1)
    inputs = {key: value for key, value in inputs.items() if key != "mm_token_type_ids"}
    with prune(wrapper.model, "random", ratio=0.5, layer=2), pytest.raises(ValueError, match="mm_token_type_ids"):
        wrapper.model(**inputs)


@pytest.mark.parametrize("layer", [0, 1, 3], ids=["before-llm", "inside", "after"])
def test_keeping_everything_at_any_cut_equals_the_stock_deepstack_bit_for_bit(layer):
    wrapper, inputs, _ = _model_and_inputs()
    model = wrapper.model
    with torch.no_grad():
        base = model(**inputs, output_hidden_states=True)
    scope = dict(scope="before_llm") if layer == 0 else {}
    with prune(model, "random", ratio=1.0, layer=layer, **scope), torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    assert torch.equal(out.logits, base.logits)
    # Hidden states are recorded as stock records them: each layer's output before its visual addition.
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, base.hidden_states, strict=True))


@pytest.mark.parametrize(
    ("layer", "scope"),
    [(0, "before_llm"), (1, "llm"), (2, "llm"), (3, "llm"), (4, "llm")],
    ids=["before", "inside-1", "inside-2", "after-3", "after-4"],
)
@pytest.mark.parametrize("policy", ["all", "after"])
def test_cuts_before_inside_and_after_deepstack_equal_the_masked_reference(layer, scope, policy):
    wrapper, inputs, _ = _model_and_inputs()
    model = wrapper.model
    with prune(model, "random", ratio=0.5, layer=layer, scope=scope, cache_policy=policy, seed=1) as pruner:
        out = greedy_generate(model, inputs, 4)
        with torch.no_grad():
            prefill = model(**inputs).logits
    image_id = model.config.image_token_id
    n_layers = model.config.text_config.num_hidden_layers
    alive = alive_per_layer(inputs["input_ids"], image_id, [layer], pruner.last.stages, n_layers)
    held = [alive[-1]] * n_layers if policy == "all" else alive
    check_pruned_run(model, inputs, prefill, out, alive, held, "sdpa")


def test_visual_additions_on_other_than_image_tokens_are_refused():
    wrapper, inputs, _ = _model_and_inputs(1)
    language_model = wrapper.model.model.language_model

    def add_a_token(module, args, kwargs):  # as if a video token were marked too
        mask = kwargs["visual_pos_masks"].clone()
        mask[0, 0] = True
        return args, {**kwargs, "visual_pos_masks": mask}

    handle = language_model.register_forward_pre_hook(add_a_token, with_kwargs=True, prepend=True)
    try:
        with prune(wrapper.model, "random", ratio=0.5, layer=2), pytest.raises(ValueError, match="images only"):
            wrapper.model(**inputs)
    finally:
        handle.remove()
