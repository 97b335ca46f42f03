"""The oracle for the engine: the unpruned model, run without a cache, with per-layer masks that hide exactly
the keys a cache policy says a query may not see."""

from __future__ import annotations

import torch

from vlmeval_ivcp.pruning.arch import arch_for, get_submodule


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
    """Boolean `[B, 1, T, T]` masks per layer (True = may attend) over prompt + generated tokens.

    From layer K on, every query sees only kept prompt keys; before K, generated tokens see only kept prompt keys
    under the `all` policy (trimmed caches) and every prompt key under `after`.
    """
    batch, total = real.shape
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    allowed = causal[None] & real[:, None, :].bool()
    kept_key = torch.zeros(batch, total, dtype=torch.bool)
    kept_key[:, prompt_len:] = True
    kept_key.scatter_(1, keep, True)
    is_generated = torch.arange(total) >= prompt_len
    self_only = torch.eye(total, dtype=torch.bool)[None]  # rows of dropped/pad queries: never read, must not be empty
    masks = []
    for index in range(n_layers):
        restricted = torch.ones(total, dtype=torch.bool) if index >= layer else (
            is_generated if policy == "all" else torch.zeros(total, dtype=torch.bool))
        layer_mask = torch.where(restricted[None, :, None], allowed & kept_key[:, None, :], allowed) | self_only
        masks.append(layer_mask[:, None])
    return masks


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
