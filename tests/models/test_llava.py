"""The LLaVA-1.5 adapter on its tiny checkpoint: what methods see, the wrapper's answers and costs, the registry."""

from __future__ import annotations

import torch
from support.reference import recording_pruner
from support.tiny import llava_inputs, picture, tiny_wrapper

from vlmeval_ivcp.models import registry

QUESTIONS = ["What is in the picture?", "Colour?"]
LAYER = 2


def _wrapper(attention: str = "sdpa"):
    return tiny_wrapper(attention, family="llava")


def test_methods_see_the_patch_grid_and_1d_positions():
    wrapper = _wrapper()
    inputs = llava_inputs(wrapper, QUESTIONS)
    pruner, seen = recording_pruner(wrapper.model, "ivc_prune", ratio=0.5, layer=LAYER)
    with pruner, torch.no_grad():
        wrapper.model(**inputs)
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
    assert type(model).__name__ == "Llava" and registry.MODEL_CLASSES["Llava"].load() is type(model)
    assert registry.supported_models["llava-1.5-7b-hf"].keywords["model_path"] == "llava-hf/llava-1.5-7b-hf"
