"""The engine's API on the tiny Qwen2.5-VL: restoring the model, the published selection, and the refusals.

Exactness on every family is in test_engine_families.py."""

from __future__ import annotations

import pytest
import torch
from support.tiny import qwen_inputs, tiny_wrapper
from transformers import LogitsProcessor

from vlmeval_ivcp import prune, unprune

QUESTIONS = {1: ["What is in the picture?"], 2: ["What is in the picture?", "Colour?"]}
NEW_TOKENS = 5


def _generate(model, inputs, **kwargs):
    # A random model may emit image placeholders, which an uncached re-run would read as image tokens.
    special = [model.config.image_token_id, model.config.video_token_id, model.config.vision_start_token_id]
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            suppress_tokens=special,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_removing_restores_the_model_exactly_even_after_generate_raised():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[2])
    base = _forward(model, inputs)
    hooks_before = {name: (len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()}

    class Boom(LogitsProcessor):
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return scores

    pruner = prune(model, "random", ratio=0.25, layer=1)
    with pytest.raises(RuntimeError, match="boom"):
        _generate(model, inputs, logits_processor=[Boom()])
    assert _generate(model, inputs).sequences.shape[1] == inputs["input_ids"].shape[1] + NEW_TOKENS
    unprune(model)
    assert {
        name: (len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()
    } == hooks_before
    assert not hasattr(model, "_vlmeval_ivcp_pruner") and pruner.last is not None
    assert torch.equal(_forward(model, inputs), base)


def test_selection_is_exposed_per_sample():
    wrapper = tiny_wrapper("sdpa")
    inputs = qwen_inputs(wrapper, QUESTIONS[2])
    with prune(wrapper.model, "random", ratio=0.25, layer=2, seed=1) as pruner:
        _forward(wrapper.model, inputs)
    record = pruner.last
    assert record.n_visual == [16, 16]
    assert [k.tolist() for k in record.kept] == [s.keep.tolist() for s in record.stages[0]]
    assert all(len(k) == 4 for k in record.kept)
    assert record.select_seconds >= 0


def test_a_second_turn_from_a_returned_cache_is_refused():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[1])
    with prune(model, "random", ratio=0.5, layer=2):
        first = _generate(model, inputs)
        follow_up = dict(inputs, input_ids=torch.cat([first.sequences, first.sequences[:, -3:]], dim=1))
        follow_up["attention_mask"] = torch.ones_like(follow_up["input_ids"])
        follow_up["mm_token_type_ids"] = torch.nn.functional.pad(
            inputs["mm_token_type_ids"], (0, follow_up["input_ids"].shape[1] - inputs["input_ids"].shape[1])
        )
        with pytest.raises(ValueError, match="second turn"):
            model.generate(**follow_up, cache=first.cache, max_new_tokens=2)


def test_wrong_decode_positions_are_refused():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[1])
    with prune(model, "random", ratio=0.5, layer=2), torch.no_grad():
        out = model(**inputs, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        wrong = torch.zeros(3, 1, 1, dtype=torch.long)
        with pytest.raises(ValueError, match="do not continue the pruned prompt"):
            model(input_ids=token, cache=out.cache, position_ids=wrong, use_cache=True)



@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_a_decode_step_may_still_name_the_cache_past_key_values():
    """transformers' deprecated alias reaches the hooks as given when a caller runs the inner model directly."""
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[1])
    steps = {}
    for name in ("cache", "past_key_values"):
        with prune(model, "random", ratio=0.5, layer=2, seed=0), torch.no_grad():
            out = model(**inputs, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)], dim=1)
            step = model.model(input_ids=token, attention_mask=mask, use_cache=True, **{name: out.cache})
            steps[name] = step.last_hidden_state
    assert torch.equal(steps["cache"], steps["past_key_values"])

@pytest.mark.parametrize(
    "options,error,match",
    [
        (dict(method="random", ratio=0.0), ValueError, r"ratio must be in \(0, 1\], got 0.0"),
        (dict(method="random", ratio=1.5), ValueError, r"got 1.5"),
        (dict(method="random", layer=0), ValueError, r"layer=0"),
        (dict(method="random", layer=4), ValueError, r"layer 4 is outside \[1, 4\)"),
        (dict(method="no_such_method"), KeyError, r"unknown pruning method 'no_such_method'"),
        (dict(method="random", nonsense=1), TypeError, r"unknown option\(s\) \['nonsense'\]"),
    ],
)
def test_bad_settings_are_refused_by_name(options, error, match):
    model = tiny_wrapper("sdpa").model
    with pytest.raises(error, match=match):
        prune(model, **options)
    assert not hasattr(model, "_vlmeval_ivcp_pruner")


def test_bad_runtime_inputs_are_refused():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    with prune(model, "random"):
        with pytest.raises(RuntimeError, match="already has a pruner"):
            prune(model, "random")
        text_only = wrapper.processor(text=["<|im_start|>user\nhello<|im_end|>"], return_tensors="pt").data
        with pytest.raises(ValueError, match="has no image token"):
            _forward(model, text_only)
        with pytest.raises(ValueError, match="DynamicCache"):
            _generate(model, qwen_inputs(wrapper, QUESTIONS[1]), cache_implementation="static")


def test_flex_attention_is_refused():
    from transformers import Qwen2_5_VLForConditionalGeneration

    from support.tiny import tiny_path

    # Qwen2.5-VL itself refuses to load with flex; the engine's own check guards the families that allow it.
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_path(), attn_implementation="sdpa")
    model.config.text_config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="'flex_attention' is not supported"):
        prune(model, "random")


def test_the_attention_tap_leaves_the_shared_config_in_place_even_after_a_failure():
    wrapper = tiny_wrapper("sdpa")
    model = wrapper.model
    inputs = qwen_inputs(wrapper, QUESTIONS[1])
    text_config = model.config.text_config
    attention = model.model.language_model.layers[1].self_attn  # the layer before the cut: its states are read

    def fail(module, args):
        raise RuntimeError("failed inside attention")

    with prune(model, "fastv", ratio=0.5, layer=2):
        _forward(model, inputs)
        assert attention.config is text_config
        handle = attention.o_proj.register_forward_pre_hook(fail)
        with pytest.raises(RuntimeError, match="failed inside attention"):
            _forward(model, inputs)
        handle.remove()
        _forward(model, inputs)  # the next prefill recovers
        assert attention.config is text_config
        attention.o_proj.register_forward_pre_hook(fail)
        with pytest.raises(RuntimeError):
            _forward(model, inputs)
        attention.o_proj._forward_pre_hooks.clear()
    assert attention.config is text_config and not hasattr(attention, "_vlmeval_ivcp_tap")
