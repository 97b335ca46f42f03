"""The oracle for the engine: the unpruned model, run without a cache, with per-layer masks that hide exactly
the keys a cache policy says a query may not see."""

from __future__ import annotations

from dataclasses import replace

import torch

from vlmeval_ivcp.pruning import Pruner, Selection, SelectionContext, get_method, make_config
from vlmeval_ivcp.pruning.arch import arch_for, get_submodule

# Config attributes of the token ids that open or fill an image or video span, in any family.
PLACEHOLDER_IDS = ("image_token_id", "video_token_id", "vision_start_token_id")


def kept_positions(input_ids: torch.Tensor, image_token_id: int, kept_visual: list[torch.Tensor]) -> torch.Tensor:
    """Prompt positions alive after pruning `[B, n]`: every non-image token plus the kept image tokens."""
    rows = []
    for row, kept in zip(input_ids, kept_visual):
        visual = (row == image_token_id).nonzero().flatten()
        alive = torch.ones(row.numel(), dtype=torch.bool)
        alive[visual] = False
        alive[visual[kept]] = True
        rows.append(alive.nonzero().flatten())
    return torch.stack(rows)


def reference_masks(real: torch.Tensor, prompt_len: int, keep: torch.Tensor, layer: int, policy: str,
                    n_layers: int) -> list[torch.Tensor]:
    """Boolean `[B, 1, T, T]` masks per layer (True = may attend) over prompt + generated tokens, for one cut.

    From layer K on, every query sees only kept prompt keys; before K, generated tokens see only kept prompt keys
    under the `all` policy (trimmed caches) and every prompt key under `after`.
    """
    full = torch.arange(prompt_len).expand(keep.shape[0], -1)
    alive = [full] * layer + [keep] * (n_layers - layer)
    return cut_masks(real, prompt_len, alive, [keep] * n_layers if policy == "all" else alive)


def cut_masks(real: torch.Tensor, prompt_len: int, alive: list[torch.Tensor],
              held: list[torch.Tensor]) -> list[torch.Tensor]:
    """Boolean `[B, 1, T, T]` masks per layer (True = may attend) over prompt + generated tokens, for any cuts.

    In layer i, prompt queries see the prompt keys alive there (`alive[i]`, `[B, n_i]` positions) and generated
    tokens see the prompt keys that layer's cache holds (`held[i]`) plus every generated token, causally.
    """
    batch, total = real.shape
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    allowed = causal[None] & real[:, None, :].bool()
    is_generated = torch.arange(total) >= prompt_len
    self_only = torch.eye(total, dtype=torch.bool)[None]  # rows of dropped/pad queries: never read, must not be empty

    def visible_keys(prompt_keys: torch.Tensor) -> torch.Tensor:  # [B, n] -> [B, 1, T]
        visible = is_generated.repeat(batch, 1)
        visible.scatter_(1, prompt_keys, True)
        return visible[:, None, :]

    masks = []
    for seen, kept in zip(alive, held, strict=True):
        visible = torch.where(is_generated[None, :, None], visible_keys(kept), visible_keys(seen))  # [B, T, T]
        masks.append(((allowed & visible) | self_only)[:, None])
    return masks


def alive_per_layer(input_ids: torch.Tensor, image_token_id: int, cut_layers: list[int],
                    stages: list[list[Selection]], n_layers: int) -> list[torch.Tensor]:
    """Prompt positions each layer runs on `[B, n_i]`, from `PrefillRecord.stages` of cuts at `cut_layers`.

    Each stage's `keep` indexes the visual tokens that reached that cut, so the stages are composed in order.
    """
    reached = [torch.arange(int((row == image_token_id).sum())) for row in input_ids]
    current = torch.arange(input_ids.shape[1]).expand(input_ids.shape[0], -1)
    after_cut = {}
    for layer, stage in zip(cut_layers, stages, strict=True):
        reached = [visual[selection.keep.cpu()] for visual, selection in zip(reached, stage, strict=True)]
        after_cut[layer] = kept_positions(input_ids, image_token_id, reached)
    alive = []
    for index in range(n_layers):
        current = after_cut.get(index, current)
        alive.append(current)
    return alive


def reference_logits(model, inputs: dict, masks: list[torch.Tensor], attention: str) -> torch.Tensor:
    layers = get_submodule(model, arch_for(model).layers)
    dtype = next(model.parameters()).dtype

    def mask_hook(mask):
        if attention == "eager":
            mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
        return lambda module, args, kwargs: (args, {**kwargs, "attention_mask": mask})

    handles = [layer.register_forward_pre_hook(mask_hook(m), with_kwargs=True) for layer, m in zip(layers, masks)]
    try:
        with torch.no_grad():
            return model(**inputs, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()


def extend_inputs(inputs: dict, generated: torch.Tensor) -> dict:
    """The prompt inputs followed by the generated tokens (`[B, g]`), as one uncached forward takes them."""
    extra = generated.shape[1]
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], generated], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(generated)], dim=1)
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([types, types.new_zeros(types.shape[0], extra)], dim=1)
    return out


def suppressed_ids(model) -> list[int]:
    """Tokens `greedy_generate` never emits: image placeholders (an uncached re-run of the output would read them as
    image tokens)."""
    return [getattr(model.config, name) for name in PLACEHOLDER_IDS if getattr(model.config, name, None)]


def greedy_generate(model, inputs: dict, new_tokens: int, **kwargs):
    """Greedy `generate()` of exactly `new_tokens` tokens (end of sequence suppressed) returning per-step logits
    (before suppression); `suppressed_ids(model)` are never emitted."""
    special = suppressed_ids(model)
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              suppress_tokens=special, return_dict_in_generate=True, output_logits=True, **kwargs)


def check_pruned_run(model, inputs: dict, prefill: torch.Tensor, out, alive: list[torch.Tensor],
                     held: list[torch.Tensor], attention: str, atol: float = 1e-5) -> None:
    """Assert that a pruned run equals the masked reference (`cut_masks(alive, held)` on prompt + generated tokens).

    Checks the prefill logits `[B, n, V]` of the real tokens the last layer kept (`alive[-1]`), the logits of every
    decode step of the greedy `generate()` output `out`, and that greedy decoding chose the reference's tokens.
    """
    prompt_len = inputs["input_ids"].shape[1]
    generated = out.sequences[:, prompt_len:]
    full = extend_inputs(inputs, generated)
    reference = reference_logits(model, full, cut_masks(full["attention_mask"], prompt_len, alive, held), attention)
    real = torch.gather(inputs["attention_mask"], 1, alive[-1]).bool()
    _check_against(model, prefill, out, generated, reference, alive[-1], real, prompt_len - 1, "masked", atol)


def _check_against(model, prefill: torch.Tensor, out, generated: torch.Tensor, reference: torch.Tensor,
                   prefill_rows: torch.Tensor, real: torch.Tensor, first_decode_row: int, name: str,
                   atol: float) -> None:
    """Assert that a pruned run equals `reference` (logits `[B, T, V]` of one uncached forward over prompt and
    `generated` tokens): the prefill logits `[B, n, V]` where `real [B, n]` (their rows in `reference`:
    `prefill_rows [B, n]`), every decode step's logits (step s at row `first_decode_row + s`), and greedy
    decoding's choices."""
    expected = torch.gather(reference, 1, prefill_rows[..., None].expand(-1, -1, reference.shape[-1]))
    prefill_gap = float((prefill - expected)[real].abs().max())
    assert prefill_gap <= atol, f"prefill logits differ from the {name} reference by {prefill_gap}"
    for step, step_logits in enumerate(out.logits):
        gap = float((step_logits - reference[:, first_decode_row + step]).abs().max())
        assert gap <= atol, f"decode step {step} logits differ from the {name} reference by {gap}"
    # generate() picks among the tokens it may emit: neither the suppressed ones nor, before its last step, the end
    # of sequence (min_new_tokens).
    allowed = reference[:, first_decode_row : first_decode_row + generated.shape[1]].clone()
    allowed[..., suppressed_ids(model)] = float("-inf")
    eos = model.generation_config.eos_token_id
    allowed[..., [eos] if isinstance(eos, int) else list(eos or [])] = float("-inf")
    chosen = allowed.argmax(-1)
    assert torch.equal(generated, chosen), f"greedy tokens differ: {generated.tolist()} vs {chosen.tolist()}"


def recording_pruner(model, method: str, **options) -> tuple[Pruner, list[SelectionContext]]:
    """`prune(model, method, **options)` that also records every `SelectionContext` the method is given."""
    spec = get_method(method)
    seen: list[SelectionContext] = []

    def select(ctx: SelectionContext, config) -> Selection:
        seen.append(ctx)
        return spec.select(ctx, config)

    return Pruner(model, make_config(method, **options), replace(spec, select=select)), seen


def forward_decode_loop(model, inputs: dict, steps: int = 3, **prefill_kwargs) -> tuple[torch.Tensor, object]:
    """A plain forward() loop: prefill (with `prefill_kwargs`), then one greedy token at a time with the cache, the
    grown 2D mask and no position ids. Returns the last-position logits of every step `[B, steps + 1, V]` and the
    cache."""
    with torch.no_grad():
        out = model(**inputs, **prefill_kwargs, use_cache=True)
        cache, mask, logits = out.cache, inputs["attention_mask"], [out.logits[:, -1]]
        for _ in range(steps):
            token = logits[-1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
            cache = out.cache
            logits.append(out.logits[:, -1])
    return torch.stack(logits, 1), cache


def merged_slots(input_ids: torch.Tensor, image_token_id: int, stage: list[Selection],
                 project=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per row of a one-cut run: the prompt positions of the merged slots (`Selection.merged`) and their vectors in
    the LLM's input space (`project`: the family's projector, for vectors given as projector inputs)."""
    rows = []
    for ids, selection in zip(input_ids, stage, strict=True):
        visual = (ids == image_token_id).nonzero().flatten()
        merged = selection.merged
        if merged is None:
            rows.append((visual[:0], torch.empty(0)))
            continue
        vectors = merged.vectors if merged.space == "llm_input" else project(merged.vectors)
        rows.append((visual[selection.keep.cpu()[merged.slots.cpu()]], vectors.detach().cpu()))
    return rows


def _kept_rows_logits(model, inputs: dict, rows: torch.Tensor, merged: list[tuple[torch.Tensor, torch.Tensor]]):
    """Logits `[B, n, V]` of the unpruned model fed only the rows `rows [B, n]` of its input embeddings, the merged
    slots' rows replaced, at their original position ids (Qwen3-VL's DeepStack additions of the fed visual rows)."""
    batch = torch.arange(rows.shape[0])[:, None]

    def feed_rows(module, args, kwargs):
        embeds = kwargs["inputs_embeds"].clone()
        for row, (positions, vectors) in enumerate(merged):
            embeds[row, positions] = vectors.to(embeds.dtype)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(embeds.shape[1]).expand(embeds.shape[0], -1)
        fed = dict(kwargs, inputs_embeds=embeds[batch, rows], attention_mask=kwargs["attention_mask"][batch, rows],
                   position_ids=positions[..., batch, rows])
        visual = kwargs.get("visual_pos_masks")
        if visual is not None:
            ordinal = (visual.flatten().long().cumsum(0) - 1).view_as(visual)
            fed["visual_pos_masks"] = visual[batch, rows]
            picked = ordinal[batch, rows][fed["visual_pos_masks"]]
            fed["deepstack_visual_embeds"] = [embeds_j[picked] for embeds_j in kwargs["deepstack_visual_embeds"]]
        return args, fed

    handle = get_submodule(model, arch_for(model).text_model).register_forward_pre_hook(feed_rows, with_kwargs=True)
    try:
        with torch.no_grad():
            return model(**inputs, use_cache=False).logits
    finally:
        handle.remove()


def check_merged_run(model, inputs: dict, prefill: torch.Tensor, out, keep: torch.Tensor,
                     merged: list[tuple[torch.Tensor, torch.Tensor]], layer: int, policy: str, attention: str,
                     atol: float = 1e-5) -> None:
    """Assert that a one-cut run with merged tokens equals an explicit reference fed the merged vectors.

    `keep [B, n]`: the prompt positions alive after the cut; `merged`: per row, `merged_slots`. At a before-LLM cut
    (`layer` 0) the reference is the unpruned model fed only the kept rows of its input embeddings (the merged
    slots' rows replaced) at their original position ids, then the generated tokens. At an in-LLM cut it is the
    unpruned model whose layer-`layer` input rows of the merged slots are replaced, with the masks that hide the
    dropped keys (`reference_masks`: layers before the cut run on every prompt token, as the engine's do).
    """
    prompt_len = inputs["input_ids"].shape[1]
    generated = out.sequences[:, prompt_len:]
    full = extend_inputs(inputs, generated)
    real = torch.gather(inputs["attention_mask"], 1, keep).bool()
    if layer == 0:
        total = full["input_ids"].shape[1]
        rows = torch.cat([keep, torch.arange(prompt_len, total).expand(keep.shape[0], -1)], dim=1)
        reference = _kept_rows_logits(model, full, rows, merged)
        kept_rows = torch.arange(keep.shape[1]).expand(keep.shape[0], -1)
        _check_against(model, prefill, out, generated, reference, kept_rows, real, keep.shape[1] - 1, "fed", atol)
        return
    layers = get_submodule(model, arch_for(model).layers)

    def replace_rows(module, args, kwargs):
        hidden = args[0].clone()
        for row, (positions, vectors) in enumerate(merged):
            hidden[row, positions] = vectors.to(hidden.dtype)
        return (hidden,) + args[1:], kwargs

    masks = reference_masks(full["attention_mask"], prompt_len, keep, layer, policy, len(layers))
    handle = layers[layer].register_forward_pre_hook(replace_rows, with_kwargs=True)
    try:
        reference = reference_logits(model, full, masks, attention)
    finally:
        handle.remove()
    _check_against(model, prefill, out, generated, reference, keep, real, prompt_len - 1, "merged-rows", atol)
