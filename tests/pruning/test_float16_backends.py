"""The attention backends against each other in float16, on every family's tiny checkpoint: batch 1 and a ragged
batch (rows that keep different counts), one cut and three cuts; on the CPU (SDPA against eager) and on a GPU.
On a GPU FlashAttention-2 is the reference where the flash-attn package is installed; without it (it ships no
binary wheels, so a machine that cannot build it has none) SDPA is, against eager. The GPU cases run in
benchmarks/gpu_suite.sh; untested so far: no GPU has been lent to this project's sessions that wrote them.

The other backends replay the reference's selections: in float16 each backend's hidden states round differently,
which flips near-tied scores, so selecting anew would compare different kept sets. The selection itself is checked
in float32 on the CPU (tests/pruning/test_engine*.py); here, what each backend does with a given kept set."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch
from support.reference import greedy_generate
from support.tiny import ADAPTERS, FAMILIES, family_inputs, ragged_inputs, tiny_path

from vlmeval_ivcp.models.registry import MODEL_CLASSES
from vlmeval_ivcp.pruning import Pruner, Selection, get_method, make_config

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])]
QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]
NEW_TOKENS = 4
# float16 kernels differ in rounding: logits agree to this, and greedy tokens wherever the margin is wider.
ATOL = 2e-2
CASES = [("ivc_prune", dict(ratio=0.5, layer=2)), ("pdrop", dict(layers=(1, 2, 3)))]


def _backends(device: str) -> tuple[str, ...]:
    """The backends to compare on `device`, the reference first."""
    flash = device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return ("flash_attention_2",) * flash + ("sdpa", "eager")


def _wrapper(family: str, attention: str, device: str):
    name, options = ADAPTERS[family]
    return MODEL_CLASSES[name](str(tiny_path(family)), attn_implementation=attention, dtype="float16",
                               device_map=device if device != "cpu" else None, max_new_tokens=NEW_TOKENS, **options)


def _pruned_run(wrapper, ragged: bool, method: str, options: dict, replayed: list[Selection] | None):
    """Greedy generation under `method`, choosing anew (`replayed` None) or replaying those selections in order.
    Returns the output, the record's kept sets and cache lengths, and the selections made."""
    if ragged:
        inputs, layouts, _ = ragged_inputs(wrapper, QUESTIONS, SIZES)
    else:
        inputs, layouts = family_inputs(wrapper, QUESTIONS[:1])
    inputs = {k: v.to(wrapper.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    spec, made = get_method(method), []

    def select(context, config) -> Selection:
        made.append(spec.select(context, config) if replayed is None else replayed[len(made)])
        return made[-1]

    with Pruner(wrapper.model, make_config(method, **options), replace(spec, select=select)) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(wrapper.model, inputs, NEW_TOKENS)
        return out, [kept.cpu() for kept in pruner.last.kept], pruner.last.cache_lengths, made


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ragged", [False, True], ids=["batch1", "ragged3"])
@pytest.mark.parametrize("method,options", CASES, ids=[m for m, _ in CASES])
@pytest.mark.parametrize("device", DEVICES)
def test_attention_backends_agree_in_float16(device, family, ragged, method, options):
    backends, runs, selections = _backends(device), {}, None
    for attention in backends:
        wrapper = _wrapper(family, attention, device)
        out, kept, lengths, made = _pruned_run(wrapper, ragged, method, options, selections)
        assert selections is None or len(made) == len(selections), f"{attention} made a different number of cuts"
        selections, runs[attention] = made, (out, kept, lengths)
        del wrapper
        if device == "cuda":
            torch.cuda.empty_cache()
    reference, reference_kept, reference_lengths = runs[backends[0]]
    for attention in backends[1:]:
        out, kept, lengths = runs[attention]
        assert lengths == reference_lengths, attention
        assert all(torch.equal(a, b) for a, b in zip(kept, reference_kept, strict=True)), attention
        generated, expected_tokens = out.sequences[:, -NEW_TOKENS:], reference.sequences[:, -NEW_TOKENS:]
        for step, (logits, expected) in enumerate(zip(out.logits, reference.logits, strict=True)):
            # Rows that have generated the same tokens so far (a near-tied step may pick another token, after
            # which the rows' inputs differ): equal logits, and the same token wherever the margin is wider.
            same = (generated[:, :step] == expected_tokens[:, :step]).all(dim=1)
            if not bool(same.any()):
                break
            gap = float((expected.float() - logits.float())[same].abs().max())
            assert gap <= ATOL, f"{attention}: step {step} logits differ from {backends[0]}'s by {gap}"
            top = logits[same].float().topk(2, dim=-1).values
            clear = (top[:, 0] - top[:, 1]) > 2 * ATOL
            assert torch.equal(generated[same, step][clear], expected_tokens[same, step][clear]), (attention, step)
