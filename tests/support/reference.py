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
    final = alive[-1]
    real = torch.gather(inputs["attention_mask"], 1, final).bool()
    expected = torch.gather(reference, 1, final[..., None].expand(-1, -1, reference.shape[-1]))
    prefill_gap = float((prefill - expected)[real].abs().max())
    assert prefill_gap <= atol, f"prefill logits differ from the masked reference by {prefill_gap}"
    for step, step_logits in enumerate(out.logits):
        gap = float((step_logits - reference[:, prompt_len - 1 + step]).abs().max())
        assert gap <= atol, f"decode step {step} logits differ from the masked reference by {gap}"
    # generate() picks among the tokens it may emit: neither the suppressed ones nor, before its last step, the end
    # of sequence (min_new_tokens).
    allowed = reference[:, prompt_len - 1 : -1].clone()
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
