"""Efficiency accounting of a prefill: KV-cache bytes, theoretical decoder FLOPs, time to first token.

FLOPs count a multiply-add as 2 and cover the decoder layers only: the q/k/v/o projections (grouped-query widths),
attention scores and the weighted sum over the full n x n square (what a dense kernel computes; the causal half is
not subtracted), and the gated MLP's three matmuls. The vision tower, embeddings, lm_head, norms, RoPE, softmax,
biases and activations are left out (the first three do not depend on the pruning inside the LLM; the rest are
O(n * hidden), small next to the matmuls). See docs/efficiency.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers.generation.streamers import BaseStreamer

from ..pruning.config import Cut
from ..pruning.engine import PrefillRecord


def kv_cache_bytes(cache: Any) -> int:
    """Bytes held by the key and value tensors of a transformers cache (e.g. a `DynamicCache` after prefill).

    Read from the tensors themselves (`numel * element_size`), so it counts every row of the batch, padding
    included, and whatever each layer really holds (a pruned layer holds fewer tokens).

    Args:
        cache: a transformers `Cache` with `.layers`, each holding `.keys` and `.values` (`[B, H_kv, n, d]`).

    Returns:
        `int`: the bytes summed over layers, keys and values (layers not yet filled count 0).
    """
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"expected a transformers Cache with .layers, got {type(cache).__name__}")
    total = 0
    for layer in layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    return total


def kv_bytes_per_token(cache: Any) -> list[int]:
    """Per layer, the bytes of keys and values one token of one row takes in a transformers cache (0 where a layer
    holds nothing)."""
    widths = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or keys.numel() == 0:
            widths.append(0)
            continue
        per_row_token = keys.shape[0] * keys.shape[2]
        widths.append((keys.numel() * keys.element_size() + values.numel() * values.element_size()) // per_row_token)
    return widths


def row_kv_cache_bytes(per_token: Sequence[int], lengths: Sequence[int]) -> int:
    """KV bytes of one row of a batch whose cache layer i holds `lengths[i]` of its own tokens (no padding): what
    `kv_cache_bytes` reads at batch size 1.

    Args:
        per_token (`Sequence[int]`): `kv_bytes_per_token(cache)`.
        lengths (`Sequence[int]`): the row's tokens per layer (`PrefillRecord.row_cache_lengths[row]`, or its prompt
            length in every layer unpruned).
    """
    if len(per_token) != len(lengths):
        raise ValueError(f"{len(lengths)} layer lengths for a cache of {len(per_token)} layers")
    return sum(width * length for width, length in zip(per_token, lengths))


@dataclass(frozen=True)
class DecoderWidths:
    """The widths of one decoder layer that its FLOPs depend on."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int

    @classmethod
    def from_config(cls, config: Any) -> DecoderWidths:
        """Read the widths from a transformers config (a composite VLM config is read through its text config).

        `head_dim` is taken from the config when set, else `hidden_size // num_attention_heads`;
        `num_key_value_heads` defaults to `num_attention_heads` (no grouped-query attention).
        """
        text = config.get_text_config() if hasattr(config, "get_text_config") else config

        def read(key: str) -> int:
            value = getattr(text, key, None)
            if value is None:
                raise KeyError(f"the text config ({type(text).__name__}) has no {key!r}, needed to count FLOPs")
            return int(value)

        heads = read("num_attention_heads")
        head_dim = getattr(text, "head_dim", None) or read("hidden_size") // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        return cls(
            hidden=read("hidden_size"),
            heads=heads,
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            intermediate=read("intermediate_size"),
            layers=read("num_hidden_layers"),
        )


def layer_prefill_flops(widths: DecoderWidths, n_tokens: int) -> int:
    """Theoretical FLOPs of one decoder layer running a prefill on `n_tokens` tokens (one sequence).

    `2 n d (H h + 2 H_kv h)` (q, k, v) + `2 n (H h) d` (o) + `2 * 2 H n^2 h` (scores, weighted sum over the full
    square) + `3 * 2 n d m` (gate, up, down), with d the hidden size, m the MLP width, h the head dim.
    """
    if n_tokens < 0:
        raise ValueError(f"a layer's sequence length must be >= 0, got {n_tokens}")
    w, n = widths, n_tokens
    query_width, kv_width = w.heads * w.head_dim, w.kv_heads * w.head_dim
    projections = 2 * n * w.hidden * (query_width + 2 * kv_width) + 2 * n * query_width * w.hidden
    attention = 2 * (2 * w.heads * n * n * w.head_dim)
    mlp = 3 * (2 * n * w.hidden * w.intermediate)
    return projections + attention + mlp


def prefill_flops(config: Any, layer_lengths: Sequence[int]) -> int:
    """Theoretical decoder FLOPs of a prefill whose layer i runs on `layer_lengths[i]` tokens (one sequence).

    Args:
        config: a transformers config (text or composite VLM config).
        layer_lengths (`Sequence[int]`): one length per decoder layer, e.g. `[prompt_len] * n_layers` unpruned, or
            `pruned_layer_lengths(...)`.

    Returns:
        `int`: FLOPs summed over the layers (multiply-add = 2).
    """
    widths = DecoderWidths.from_config(config)
    if len(layer_lengths) != widths.layers:
        raise ValueError(
            f"got {len(layer_lengths)} layer lengths {list(layer_lengths)} for a decoder of {widths.layers} layers"
        )
    return sum(layer_prefill_flops(widths, n) for n in layer_lengths)


def flops_speedup(config: Any, unpruned_lengths: Sequence[int], pruned_lengths: Sequence[int]) -> float:
    """How many times fewer prefill FLOPs the pruned run needs: `flops(unpruned) / flops(pruned)`."""
    pruned = prefill_flops(config, pruned_lengths)
    if pruned == 0:
        raise ValueError(f"the pruned layer lengths {list(pruned_lengths)} give 0 FLOPs; cannot divide by them")
    return prefill_flops(config, unpruned_lengths) / pruned


def pruned_layer_lengths(
    record: PrefillRecord, cuts: Sequence[Cut], prompt_len: int, n_layers: int, row: int = 0
) -> list[int]:
    """Tokens each decoder layer computed on during a pruned prefill, for sample `row`.

    This is not `record.cache_lengths`: under cache policy `all` the layers before the cut ran on every token and
    were trimmed only after prefill, so their cache is shorter than the sequence they computed on.

    Args:
        record (`PrefillRecord`): the engine's record of the prefill (`pruner.last`).
        cuts (`Sequence[Cut]`): the method's cuts (`pruner.config.cuts()`), one per entry of `record.stages`.
        prompt_len (`int`): prompt length the text model received (padding included, as the kernels see it).
        n_layers (`int`): decoder layers.
        row (`int`): the sample of the batch.

    Returns:
        `list[int]`: per layer, `prompt_len` before the first cut, then `prompt_len - n_visual + kept` where kept
        counts the visual tokens surviving the latest cut at or before that layer.
    """
    if len(cuts) != len(record.stages):
        raise ValueError(f"{len(cuts)} cut(s) {list(cuts)} but the record holds {len(record.stages)} stage(s)")
    dropped_from = {cut.layer: record.n_visual[row] - len(stage[row].keep) for cut, stage in zip(cuts, record.stages)}
    lengths, dropped = [], 0
    for layer in range(n_layers):
        dropped = dropped_from.get(layer, dropped)
        lengths.append(prompt_len - dropped)
    return lengths


class FirstTokenTimer(BaseStreamer):
    """A `generate(streamer=...)` hook that notes when the first new token reaches the host.

    `generate` hands the streamer the prompt first, then each new token already copied to the CPU (so a CUDA
    prefill has finished). Make the timer right before `generate`; `seconds` is then the time to first token:
    generate's setup, the vision encoder, the prefill (pruning included) and choosing the first token.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self._puts = 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass

    @property
    def seconds(self) -> float:
        """Seconds from the timer's creation to the first new token."""
        if self.first_token_at is None:
            raise RuntimeError("no new token reached the timer: pass it to generate(streamer=...) first")
        return self.first_token_at - self.started
