"""Ragged batches: rows of one batch keep different numbers of tokens (different image sizes and counts, budgets,
prompt-dependent counts, several cuts). Each row of a 3-row batch equals the masked reference of that row run alone
with the same kept set (methods that merge tokens: the reference fed the merged vectors, `check_merged_run`), at
prefill and at every decode step; cached greedy decoding equals uncached recomputation;
each row keeps what it keeps alone; cache lengths and the record are as documented (docs/engine.md).

The default matrix keeps the suite short: every registered method on one family (in turn) with SDPA and the
method's own cache policy, the multi-cut methods on every family with SDPA under `all` and eager under `after`, and
a before-LLM method with eager. VLMEVAL_IVCP_FULL_MATRIX=1 runs every family × method × policy × backend (513 runs,
77 s on the 2-core sandbox: all passed at 2026-12-03).
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from types import SimpleNamespace

import pytest
import torch
from support.reference import (
    alive_per_layer, check_merged_run, check_pruned_run, greedy_generate, kept_positions, merged_slots,
)
from support.tiny import FAMILIES, ragged_inputs, tiny_wrapper

from vlmeval_ivcp import prune
import vlmeval_ivcp.pruning.methods  # noqa: F401  (registers the built-in methods: every one is tested)
from vlmeval_ivcp.pruning import METHODS, Pruner, get_method, make_config
from vlmeval_ivcp.pruning.arch import projector_of, rope_spec

QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]  # per row: one picture per size
NEW_TOKENS = 2
# Options that fit the tiny checkpoints (4 decoder layers); any other method keeps half, in-LLM ones at layer 2.
# CDPruner's relevance reads the prompt here (no question is given; tests/pruning/test_cdpruner.py gives them).
OPTIONS = {
    "pdrop": dict(layers=(1, 2, 3)), "sparsevlm": dict(layers=(1, 2, 3)), "none": {},
    "cdpruner": dict(ratio=0.5, instruction="prompt_tail"),
}
MULTI_CUT = {"pdrop", "sparsevlm"}


def _options(name: str) -> dict:
    in_llm = get_method(name).config_cls().scope == "llm"
    return OPTIONS.get(name, dict(ratio=0.5, **({"layer": 2} if in_llm else {})))


# Every method the engine runs (an input-side method such as `downsample` attaches no pruner).
CASES = [(name, _options(name)) for name in sorted(METHODS) if not METHODS[name].changes_inputs] + [
    ("ivc_prune", dict(ratio=0.5, layer=2, fill=False, n_foreground=3)),  # a count that depends on the prompt
]
FULL = os.environ.get("VLMEVAL_IVCP_FULL_MATRIX") == "1"


def _lean(family: str, case: int, attention: str, policy: str) -> bool:
    method = CASES[case][0]
    own_policy = get_method(method).config_cls().cache_policy
    if method in MULTI_CUT:
        return (attention, policy) in {("sdpa", "all"), ("eager", "after")}
    in_turn = FAMILIES[case % len(FAMILIES)] == family and policy == own_policy
    return in_turn and (attention == "sdpa" or method == "resprune")


def _matrix() -> list:
    params = []
    for family in FAMILIES:
        for case, (method, options) in enumerate(CASES):
            for attention in ("sdpa", "eager"):
                for policy in ("all", "after"):
                    if FULL or _lean(family, case, attention, policy):
                        ident = f"{family}-{method}-{'-'.join(map(str, options.values()))}-{attention}-{policy}"
                        params.append(pytest.param(family, attention, policy, method, options, id=ident))
    return params


@lru_cache(maxsize=None)
def _inputs(family: str, attention: str):
    return ragged_inputs(tiny_wrapper(attention, family=family), QUESTIONS, SIZES)


def _prefill(model, inputs: dict) -> torch.Tensor:
    """Prefill logits, with generate()'s positions for a left-padded 1D-RoPE prompt (M-RoPE models compute their
    own), so that position-aware methods choose as under generate()."""
    extra = {}
    if rope_spec(model.config.get_text_config()).mrope_section is None:
        extra["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**inputs, **extra).logits


@pytest.mark.parametrize("family,attention,policy,method,options", _matrix())
def test_each_row_of_a_ragged_batch_equals_its_masked_reference_alone(family, attention, policy, method, options):
    model = tiny_wrapper(attention, family=family).model
    inputs, layouts, alone = _inputs(family, attention)
    with prune(model, method, cache_policy=policy, **options) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        record = pruner.last
        pruner.set_image_layouts(layouts)
        prefill = _prefill(model, inputs)
        kept_by_forward = pruner.last.kept
        kept_alone = []
        for row_inputs, row_layouts in alone:
            pruner.set_image_layouts(row_layouts)
            _prefill(model, row_inputs)
            kept_alone.append(pruner.last.kept[0])
    # Each row chooses as it would alone: no hidden batch-1 assumption in the method or the engine.
    assert all(torch.equal(a, b) for a, b in zip(record.kept, kept_alone, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(record.kept, kept_by_forward, strict=True))
    image_id, prompt_len = model.config.image_token_id, inputs["input_ids"].shape[1]
    n_layers = model.config.get_text_config().num_hidden_layers
    cuts = [cut.layer for cut in pruner.config.cuts()]
    if method != "none":
        assert bool(record.filler.any()), "the rows keep different counts: some are padded with fillers"
    cache = out.past_key_values
    assert [layer.keys.shape[2] for layer in cache.layers] == [n + NEW_TOKENS - 1 for n in record.cache_lengths]
    for row, (row_inputs, _) in enumerate(alone):
        pad = prompt_len - row_inputs["input_ids"].shape[1]
        stages = [[stage[row]] for stage in record.stages]
        alive = alive_per_layer(row_inputs["input_ids"], image_id, cuts, stages, n_layers)
        held = [alive[-1]] * n_layers if policy == "all" else alive
        assert record.row_cache_lengths[row] == [layer_held.shape[1] for layer_held in held]
        # The row's real slots of the final sequence are its kept positions alone, shifted by its left padding.
        slots = ~record.filler[row] & (record.positions[row] >= pad)
        assert torch.equal(record.positions[row][slots] - pad, alive[-1][0])
        row_out = SimpleNamespace(
            sequences=torch.cat([row_inputs["input_ids"], out.sequences[row : row + 1, prompt_len:]], dim=1),
            logits=[step[row : row + 1] for step in out.logits],
        )
        if record.stages and record.stages[0][row].merged is not None:  # merged tokens: one before-LLM cut
            merged = merged_slots(row_inputs["input_ids"], image_id, stages[0], projector_of(model))
            keep = kept_positions(row_inputs["input_ids"], image_id, [record.kept[row]])
            check_merged_run(model, row_inputs, prefill[row : row + 1, slots], row_out, keep, merged, cuts[0], policy,
                             attention)
            continue
        check_pruned_run(model, row_inputs, prefill[row : row + 1, slots], row_out, alive, held, attention)


def test_a_method_that_needs_batch_size_1_is_refused_a_batch():
    wrapper = tiny_wrapper()
    inputs, layouts, alone = ragged_inputs(wrapper, QUESTIONS[:2], SIZES[:2])
    spec = replace(get_method("random"), single_row=True)
    with Pruner(wrapper.model, make_config("random", ratio=0.5), spec):
        with torch.no_grad(), pytest.raises(ValueError, match="one prompt at a time"):
            wrapper.model(**inputs)
        with torch.no_grad():
            wrapper.model(**alone[0][0])  # one prompt is fine
