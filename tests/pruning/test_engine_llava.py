"""The engine on the tiny LLaVA-1.5 (Llama decoder, 1D RoPE, a 4x4 CLIP patch grid): exactness against the unpruned
model and against the masked reference."""

from __future__ import annotations

import pytest
import torch
from support.reference import alive_per_layer, check_pruned_run, forward_decode_loop, recording_pruner
from support.tiny import llava_inputs, picture, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.models import registry

QUESTIONS = {1: ["What is in the picture?"], 2: ["What is in the picture?", "Colour?"]}
NEW_TOKENS = 5
LAYER = 2


def _wrapper(attention: str = "sdpa"):
    return tiny_wrapper(attention, family="llava")


def _generate(model, inputs, **kwargs):
    # A random model may emit `<image>`, which an uncached re-run would read as an image token.
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              suppress_tokens=[model.config.image_token_id], return_dict_in_generate=True,
                              output_logits=True, **kwargs)


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _generate_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids generate() gives a left-padded Llama prompt: counting from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _n_layers(model) -> int:
    return model.config.text_config.num_hidden_layers


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "options",
    [
        dict(method="none"),
        dict(method="random", ratio=1.0, layer=LAYER),
        dict(method="random", ratio=1.0, layer=0, scope="before_llm"),
    ],
)
def test_keeping_everything_is_the_unpruned_model(attention, options):
    wrapper = _wrapper(attention)
    model = wrapper.model
    inputs = llava_inputs(wrapper, QUESTIONS[2])
    base_logits, base = _forward(model, inputs), _generate(model, inputs)
    with prune(model, **options):
        logits, out = _forward(model, inputs), _generate(model, inputs)
    assert torch.equal(logits, base_logits)
    assert torch.equal(out.sequences, base.sequences)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    "options",
    [
        dict(method="random", cache_policy="all", seed=3),
        dict(method="random", cache_policy="after", seed=3),
        dict(method="ivc_prune"),
    ],
)
def test_pruned_logits_equal_the_masked_reference(attention, batch, options):
    wrapper = _wrapper(attention)
    model = wrapper.model
    inputs = llava_inputs(wrapper, QUESTIONS[batch])
    with prune(model, ratio=0.5, layer=LAYER, **options) as pruner:
        out = _generate(model, inputs)
        kept_by_generate = pruner.last.kept
        # Position-aware methods (IVC-Prune) select by the prefill's positions: give forward() generate()'s own.
        prefill = _forward(model, dict(inputs, position_ids=_generate_positions(inputs["attention_mask"])))
    assert all(torch.equal(a, b) for a, b in zip(kept_by_generate, pruner.last.kept, strict=True))
    alive = alive_per_layer(inputs["input_ids"], model.config.image_token_id, [LAYER], pruner.last.stages,
                            _n_layers(model))
    held = [alive[-1]] * len(alive) if pruner.config.cache_policy == "all" else alive
    check_pruned_run(model, inputs, prefill, out, alive, held, attention)


@pytest.mark.parametrize("policy", ["all", "after"])
def test_cache_lengths_and_decode_positions(policy):
    wrapper = _wrapper()
    model = wrapper.model
    inputs = llava_inputs(wrapper, QUESTIONS[2])
    prompt_len, n_layers = inputs["input_ids"].shape[1], _n_layers(model)

    def record_positions():
        seen = []
        hook = model.model.language_model.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["position_ids"].clone()), with_kwargs=True
        )
        return seen, hook

    base_positions, hook = record_positions()
    _generate(model, inputs)  # the unpruned run: generate() computes its own positions
    hook.remove()
    with prune(model, "random", ratio=0.5, layer=LAYER, cache_policy=policy) as pruner:
        positions, hook = record_positions()
        # The prefill runs at generate()'s positions (see docs/models/llava.md on left padding).
        prefill_positions = _generate_positions(inputs["attention_mask"])
        loop_logits, cache = forward_decode_loop(model, inputs, position_ids=prefill_positions)
        hook.remove()
        generated = _generate(model, inputs)
    kept = prompt_len - 16 + 8  # 16 visual tokens per picture, half kept
    expected = [kept] * n_layers if policy == "all" else [prompt_len] * LAYER + [kept] * (n_layers - LAYER)
    assert pruner.last.cache_lengths == expected
    assert [layer_cache.keys.shape[2] - 3 for layer_cache in cache.layers] == expected  # 3 decoded tokens
    for got, want in zip(positions[1:], base_positions[1:4], strict=True):
        assert torch.equal(got, want)
    torch.testing.assert_close(loop_logits, torch.stack(generated.logits[:4], 1), atol=1e-5, rtol=0)


def test_methods_see_the_patch_grid_and_1d_positions():
    wrapper = _wrapper()
    inputs = llava_inputs(wrapper, QUESTIONS[2])
    pruner, seen = recording_pruner(wrapper.model, "ivc_prune", ratio=0.5, layer=LAYER)
    with pruner:
        _forward(wrapper.model, inputs)
    assert [ctx.grid for ctx in seen] == [(4, 4), (4, 4)]
    assert [ctx.position_ids.shape[0] for ctx in seen] == [1, 1]
    assert [ctx.visual_index.numel() for ctx in seen] == [16, 16]


def test_wrapper_answers_a_message_and_records_its_cost(tmp_path):
    wrapper = _wrapper()
    image = tmp_path / "picture.png"
    picture(0, size=(90, 70)).save(image)
    message = [{"type": "image", "value": str(image)}, {"type": "text", "value": "What is in the picture?"}]
    try:
        wrapper.set_method("ivc_prune", ratio=0.25, layer=LAYER)
        answer = wrapper.generate(message)
    finally:
        wrapper.set_method("none")
    assert isinstance(answer, str)
    assert (wrapper.stats.visual_tokens, wrapper.stats.kept_visual_tokens) == (16, 4)
    assert wrapper.stats.prefill_flops < wrapper.stats.prefill_flops_unpruned
    assert wrapper.grounding_frame == "norm1"


def test_registry_builds_the_tiny_llava_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = registry.build_model("TinyLLaVA-1.5", max_new_tokens=2)
    assert (tmp_path / "vlmeval_ivcp" / "tiny-models" / "tiny-llava" / "config.json").exists()
    assert type(model).__name__ == "Llava" and registry.MODEL_CLASSES["Llava"] is type(model)
    assert registry.supported_models["llava-1.5-7b-hf"].keywords["model_path"] == "llava-hf/llava-1.5-7b-hf"
