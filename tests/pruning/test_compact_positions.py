"""`positions="compact"`: a before-LLM cut whose kept tokens are renumbered 0..n-1, as the LLaVA-codebase releases
that concatenate the kept embeddings run. Exact against the unpruned language model fed only the kept tokens'
embeddings at positions 0..n-1 (then the generated tokens at n, n+1, ...), each row of a ragged batch alone, at
prefill and at every decode step, with SDPA and eager and both cache policies, on every 1D-RoPE family."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from support.reference import forward_decode_loop, greedy_generate, kept_positions, merged_slots, suppressed_ids
from support.tiny import FAMILIES, ragged_inputs, tiny_wrapper

from vlmeval_ivcp import prune
from vlmeval_ivcp.pruning import make_config
from vlmeval_ivcp.pruning.arch import arch_for, get_submodule, model_rope_spec, projector_of
from vlmeval_ivcp.pruning.gather import compact_positions

ONE_D = ("llava", "llava_next", "llava_onevision", "internvl", "deepseek_vl2")
QUESTIONS = ["What?", "Colour of it?", "Is there a cat here?"]
SIZES = [[(112, 112)], [(112, 112), (56, 56)], [(56, 56)]]  # rows keep different counts: a ragged batch
NEW_TOKENS = 2
# A before-LLM method that needs no model input besides the embeddings; the option is the engine's, not its.
METHOD = dict(method="divprune", ratio=0.5, positions="compact")


def test_compact_positions_count_only_the_real_kept_tokens():
    positions = torch.tensor([[0, 0, 0, 1, 4, 5, 9], [3, 4, 5, 6, 7, 8, 9]])
    counted = torch.tensor([[False, False, True, True, True, False, True], [True, True, False, True, True, True, True]])
    assert compact_positions(positions, counted).tolist() == [[0, 0, 0, 1, 2, 5, 3], [3, 4, 5, 5, 6, 7, 8]]


def test_the_families_with_1d_rope_are_the_ones_tested_and_m_rope_families_refuse():
    one_d = tuple(f for f in FAMILIES if model_rope_spec(tiny_wrapper(family=f).model).position_rows == 1)
    assert one_d == ONE_D
    for family in sorted(set(FAMILIES) - set(ONE_D)):
        with pytest.raises(ValueError, match="M-RoPE"):
            prune(tiny_wrapper(family=family).model, **METHOD)


@pytest.mark.parametrize("method,options", [("fastv", dict(layer=2)), ("pdrop", dict(layers=(1, 2, 3))),
                                            ("random", dict(layer=1))])
def test_an_in_llm_cut_refuses_compact_positions(method, options):
    with pytest.raises(ValueError, match="before-LLM"):
        make_config(method, positions="compact", **options)


@lru_cache(maxsize=None)
def _inputs(family: str, attention: str):
    return ragged_inputs(tiny_wrapper(attention, family=family), QUESTIONS, SIZES)


def _text_model_input(model, inputs: dict) -> torch.Tensor:
    """The embeddings the unpruned model hands its decoder (image features already in place)."""
    seen = []
    text_model = get_submodule(model, arch_for(model).text_model)
    handle = text_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen[0]


def _kept_tokens_logits(model, embeds: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Logits `[1, n + g, V]` of the unpruned decoder fed the kept embeddings `[1, n, D]`, then `generated [1, g]`,
    at positions 0 .. n + g - 1, without a cache: the LLaVA releases' concatenation."""
    text_model = get_submodule(model, arch_for(model).text_model)
    sequence = torch.cat([embeds, model.get_input_embeddings()(generated)], dim=1)
    with torch.no_grad():
        hidden = text_model(
            inputs_embeds=sequence,
            position_ids=torch.arange(sequence.shape[1])[None],
            attention_mask=torch.ones(sequence.shape[:2], dtype=torch.long),
            use_cache=False,
        ).last_hidden_state
        return model.get_output_embeddings()(hidden)


def _cases() -> list:
    return [pytest.param(family, attention, policy, id=f"{family}-{attention}-{policy}")
            for family in ONE_D for attention, policy in (("sdpa", "all"), ("sdpa", "after"), ("eager", "all"))]


@pytest.mark.parametrize("family,attention,policy", _cases())
def test_each_row_equals_the_model_fed_only_its_kept_tokens(family, attention, policy):
    model = tiny_wrapper(attention, family=family).model
    inputs, layouts, alone = _inputs(family, attention)
    prompt_len = inputs["input_ids"].shape[1]
    with prune(model, cache_policy=policy, **METHOD) as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        record = pruner.last
        # generate()'s prefill positions: left padding does not count.
        pruner.set_image_layouts(layouts)
        with torch.no_grad():
            prefill = model(**inputs, position_ids=(inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits
        assert all(torch.equal(a, b) for a, b in zip(record.kept, pruner.last.kept, strict=True))
    assert bool(record.filler.any()), "the rows keep different counts: some are padded with fillers"
    image_id, eos = model.config.image_token_id, model.generation_config.eos_token_id
    for row, (row_inputs, _) in enumerate(alone):
        pad = prompt_len - row_inputs["input_ids"].shape[1]
        keep = kept_positions(row_inputs["input_ids"], image_id, [record.kept[row]])[0]
        generated = out.sequences[row : row + 1, prompt_len:]
        embeds = _text_model_input(model, row_inputs)[:, keep]
        reference = _kept_tokens_logits(model, embeds, generated)[0]
        n_kept = keep.numel()
        slots = ~record.filler[row] & (record.positions[row] >= pad)
        gap = float((prefill[row, slots] - reference[:n_kept]).abs().max())
        assert gap <= 1e-5, f"row {row}: prefill logits differ from the kept tokens alone by {gap}"
        for step, logits in enumerate(out.logits):
            gap = float((logits[row] - reference[n_kept - 1 + step]).abs().max())
            assert gap <= 1e-5, f"row {row}: decode step {step} differs from the kept tokens alone by {gap}"
        allowed = reference[n_kept - 1 : n_kept - 1 + NEW_TOKENS].clone()
        allowed[:, suppressed_ids(model)] = float("-inf")
        allowed[:, [eos] if isinstance(eos, int) else list(eos or [])] = float("-inf")
        assert torch.equal(generated[0], allowed.argmax(-1))


def test_compact_positions_change_the_result_and_a_plain_forward_loop_continues_them():
    model = tiny_wrapper(family="llava").model
    inputs = _inputs("llava", "sdpa")[2][0][0]  # one prompt, no padding
    with prune(model, **dict(METHOD, positions="original")):
        original, _ = forward_decode_loop(model, inputs, steps=2)
    with prune(model, **METHOD) as pruner:
        compact, _ = forward_decode_loop(model, inputs, steps=2)  # no position ids: the engine supplies them
        keep = kept_positions(inputs["input_ids"], model.config.image_token_id, pruner.last.kept)[0]
    generated = compact[:, :-1].argmax(-1)
    reference = _kept_tokens_logits(model, _text_model_input(model, inputs)[:, keep], generated)[0]
    assert float((compact[0] - reference[keep.numel() - 1 :]).abs().max()) <= 1e-5
    assert float((compact - original).abs().max()) > 1e-4, "renumbering the positions changes the logits"


@pytest.mark.parametrize("family,method", [("llava", "visionzip"), ("llava_onevision", "prumerge_plus"),
                                           ("internvl", "visionzip")])
def test_merged_tokens_with_compact_positions_equal_the_model_fed_the_kept_and_merged_rows(family, method):
    """The LLaVA-codebase releases of VisionZip and PruMerge+ feed the dominant and the merged tokens concatenated:
    each row equals the unpruned decoder fed its kept rows (merged slots replaced by their vectors) at 0..n-1."""
    model = tiny_wrapper(family=family).model
    inputs, layouts, alone = _inputs(family, "sdpa")
    prompt_len = inputs["input_ids"].shape[1]
    with prune(model, method, ratio=0.5, positions="compact") as pruner:
        pruner.set_image_layouts(layouts)
        out = greedy_generate(model, inputs, NEW_TOKENS)
        record = pruner.last
    image_id = model.config.image_token_id
    merged_rows = 0
    for row, (row_inputs, _) in enumerate(alone):
        keep = kept_positions(row_inputs["input_ids"], image_id, [record.kept[row]])[0]
        (slots, vectors), = merged_slots(row_inputs["input_ids"], image_id, [record.stages[0][row]],
                                         projector_of(model))
        merged_rows += slots.numel()
        embeds = _text_model_input(model, row_inputs).clone()
        embeds[0, slots] = vectors.to(embeds.dtype)
        generated = out.sequences[row : row + 1, prompt_len:]
        reference = _kept_tokens_logits(model, embeds[:, keep], generated)[0]
        for step, logits in enumerate(out.logits):
            gap = float((logits[row] - reference[keep.numel() - 1 + step]).abs().max())
            assert gap <= 1e-5, f"row {row}: step {step} differs from the fed kept and merged rows by {gap}"
    assert merged_rows > 0, "the method merged some tokens"
