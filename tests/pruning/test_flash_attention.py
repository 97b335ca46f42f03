"""FlashAttention-2 against SDPA and eager on a GPU, on every family's tiny checkpoint (float16): batch 1 and a
ragged batch (rows that keep different counts), one cut and three cuts. Not run on CPU-only machines; run by
benchmarks/gpu_suite.sh. Untested so far: no GPU has been lent to this project's sessions that wrote it."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from support.reference import greedy_generate
from support.tiny import ADAPTERS, FAMILIES, family_inputs, ragged_inputs, tiny_path

from vlmeval_ivcp import prune
from vlmeval_ivcp.models.registry import MODEL_CLASSES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
        reason="needs a CUDA GPU and flash-attn",
    ),
]
BACKENDS = ("flash_attention_2", "sdpa", "eager")
QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]
NEW_TOKENS = 4
# float16 kernels differ in rounding: logits agree to this, and greedy tokens wherever the margin is wider.
ATOL = 2e-2
CASES = [("ivc_prune", dict(ratio=0.5, layer=2)), ("pdrop", dict(layers=(1, 2, 3)))]


def _wrapper(family: str, attention: str):
    name, options = ADAPTERS[family]
    return MODEL_CLASSES[name](str(tiny_path(family)), attn_implementation=attention, dtype="float16",
                               device_map="cuda", max_new_tokens=NEW_TOKENS, **options)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ragged", [False, True], ids=["batch1", "ragged3"])
@pytest.mark.parametrize("method,options", CASES, ids=[m for m, _ in CASES])
def test_flash_attention_2_equals_sdpa_and_eager(family, ragged, method, options):
    runs = {}
    for attention in BACKENDS:
        wrapper = _wrapper(family, attention)
        if ragged:
            inputs, layouts, _ = ragged_inputs(wrapper, QUESTIONS, SIZES)
        else:
            inputs, layouts = family_inputs(wrapper, QUESTIONS[:1])
        inputs = {k: v.to("cuda") if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with prune(wrapper.model, method, **options) as pruner:
            pruner.set_image_layouts(layouts)
            out = greedy_generate(wrapper.model, inputs, NEW_TOKENS)
            runs[attention] = (out, [kept.cpu() for kept in pruner.last.kept], pruner.last.cache_lengths)
        del wrapper
        torch.cuda.empty_cache()
    flash, flash_kept, flash_lengths = runs["flash_attention_2"]
    for attention in BACKENDS[1:]:
        out, kept, lengths = runs[attention]
        assert lengths == flash_lengths, attention
        assert all(torch.equal(a, b) for a, b in zip(kept, flash_kept, strict=True)), attention
        first = out.logits[0].float()
        gap = float((flash.logits[0].float() - first).abs().max())
        assert gap <= ATOL, f"{attention}: first-token logits differ from FlashAttention-2's by {gap}"
        top = first.topk(2, dim=-1).values
        clear = (top[:, 0] - top[:, 1]) > 2 * ATOL
        assert torch.equal(out.sequences[clear, -NEW_TOKENS], flash.sequences[clear, -NEW_TOKENS]), attention
