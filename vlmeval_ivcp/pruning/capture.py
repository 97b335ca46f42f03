"""Reading the query, key and value states an attention layer actually uses, for any stock decoder.

Every transformers attention module hands its (RoPE-rotated) queries and keys and its values to an attention
function looked up by `config._attn_implementation`. For the one forward of the layer before a cut, `AttentionTap`
points that lookup at a registered pass-through function that records the states and then calls the model's own
function. The states are therefore exactly the model's: grouped-query heads, Multi-head Latent Attention (DeepSeek),
partial rotary dims and M-RoPE need no per-family code.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

TAP_NAME = "vlmeval_ivcp_tap"
_TAP_ATTR = "_vlmeval_ivcp_tap"

# (query [B, H, S, d], key [B, Hkv, S, d], value [B, Hkv, S, dv], scaling) -> None
Sink = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], None]


class _StatesRead(Exception):
    """Ends a `call` made only to read the states, before the attention itself and the output projection run."""


def _tapped_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    tap: AttentionTap = getattr(module, _TAP_ATTR)
    module.config = tap.config  # the model's own function may read its implementation name back
    scaling = kwargs.get("scaling")
    tap.sink(query, key, value, float(scaling if scaling is not None else query.shape[-1] ** -0.5))
    if tap.reading_only:
        raise _StatesRead
    return tap.attention_function(module, query, key, value, attention_mask, **kwargs)


class AttentionTap:
    """Hooks on one attention module; while `armed`, its next forward sends its states to `sink` (`call` runs one
    such forward directly).

    Args:
        module (`nn.Module`): an attention module with a `config` (every transformers decoder attention has one).
        sink (`Sink`): receives `(query, key, value, scaling)` as the attention function gets them.
        hooks (`bool`): False when only `call` reads the states: the module's own forwards then pay nothing.
    """

    def __init__(self, module: nn.Module, sink: Sink, hooks: bool = True):
        if TAP_NAME not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(TAP_NAME, _tapped_attention)
        if not hasattr(module, "config"):
            raise TypeError(f"{type(module).__name__} has no `config`: cannot read its attention states")
        self.module, self.sink = module, sink
        self.armed = False
        self.reading_only = False
        self.config: Any = None
        self.attention_function: Callable | None = None
        self.handles = [
            module.register_forward_pre_hook(self._before),
            module.register_forward_hook(self._after),
        ] if hooks else []

    def call(self, **inputs: Any) -> None:
        """Run the module once on `inputs` with its states sent to `sink`, calling `forward` directly: an extra call
        made only to read the states must not reach forward hooks (transformers records `output_attentions` there).
        The call stops as soon as the states are read: its attention output is never used.
        """
        self._swap_in(self.module)
        self.reading_only = True
        try:
            self.module.forward(**inputs)
        except _StatesRead:
            pass
        finally:
            self.reading_only = False
            self._after(self.module, (), None)

    def _before(self, module: nn.Module, args: tuple) -> None:
        if self.armed:
            self._swap_in(module)

    def _swap_in(self, module: nn.Module) -> None:
        self._after(module, (), None)  # a forward that raised never restored the config
        self.config = module.config
        self.attention_function = _attention_function(module, module.config._attn_implementation)
        tapped = copy.copy(module.config)
        tapped._attn_implementation_internal = TAP_NAME  # this module's copy only; the shared config is untouched
        module.config = tapped
        setattr(module, _TAP_ATTR, self)

    def _after(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.config is not None:
            module.config = self.config
            self.config = None
            delattr(module, _TAP_ATTR)

    def remove(self) -> None:
        self._after(self.module, (), None)
        for handle in self.handles:
            handle.remove()


def _attention_function(module: nn.Module, implementation: str) -> Callable:
    """The function the module would call: a registered implementation, or its modeling file's eager one."""
    if implementation != "eager":
        return ALL_ATTENTION_FUNCTIONS[implementation]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise TypeError(f"cannot find the eager attention function of {type(module).__module__}")
    return eager


def expand_heads(states: torch.Tensor, n_heads: int) -> torch.Tensor:
    """`[B, Hkv, S, d]` grouped-query states repeated to `n_heads` heads (each query head next to its group)."""
    return states.repeat_interleave(n_heads // states.shape[1], dim=1)


def rows_attention(
    queries: torch.Tensor, keys: torch.Tensor, scaling: float, rows: torch.Tensor, key_mask: torch.Tensor
) -> torch.Tensor:
    """Softmax attention of some query rows over every key, averaged over heads, in float32: what the layer computed
    for those rows (causal: row `i` sees keys `0..i`; keys where `key_mask` is False get 0).

    Args:
        queries (`Tensor [H, S, d]`), keys (`Tensor [H, S, d]`): one sample's RoPE-rotated states, grouped heads
            expanded.
        scaling (`float`): the softmax scale.
        rows (`LongTensor [Q]`): the query rows wanted (sequence positions, each with at least one visible key).
        key_mask (`BoolTensor [S]`): True for real tokens.

    Returns:
        `FloatTensor [Q, S]`.
    """
    logits = queries[:, rows].float() @ keys.float().transpose(1, 2) * scaling  # [H, Q, S]
    columns = torch.arange(keys.shape[1], device=keys.device)
    visible = (columns[None, :] <= rows[:, None].to(keys.device)) & key_mask.to(keys.device)[None, :]
    return torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).mean(dim=0)
