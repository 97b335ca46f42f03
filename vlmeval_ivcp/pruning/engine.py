"""The engine: applies a method's selection inside a stock transformers decoder through hooks.

At prefill the visual tokens are scored at each cut, the kept set is chosen, and the later layers run on the kept
tokens with their original position ids (RoPE tables, M-RoPE rows, masks are gathered, not renumbered; a before-LLM
cut with `positions="compact"` renumbers 1D positions contiguously). After prefill the KV caches follow the cache
policy; decode steps continue at the original (or compact) positions.

Hooks (all `with_kwargs=True`, all removed by `Pruner.remove`):
- multimodal pre-hook: at prefill records the prompt (image tokens, padding); at decode checks that the cache
  continues this prefill and supplies the original position ids when the caller gave none;
- text-model pre-hook: at prefill records positions (and, when the arch found no image grid, reads it from the
  M-RoPE positions), takes over the family's visual additions (DeepStack, `inject.py`), runs a before-LLM cut;
  at decode gathers the 2D mask to the columns layer 0's cache holds and checks the positions;
- layer pre-hooks: add the previous layer's visual additions to the tokens alive; at a cut, select and gather the
  hidden states; on later layers, gather the RoPE tables, position ids and mask; at decode, gather the mask columns
  of layers whose cache holds a different set than layer 0;
- text-model post-hook: trims the caches (policy `all`) and publishes the selection (`Pruner.last`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from .arch import arch_for, get_submodule, model_rope_spec, projector_of
from .capture import AttentionTap, expand_heads
from .config import Cut, PruneConfig
from .gather import (
    compact_positions,
    decode_columns,
    gather_mask,
    gather_positions,
    gather_seq,
    hide_keys,
    position_in,
)
from .images import Layouts, check_layouts, image_ordinals, layouts_from_positions, split_layouts
from .inject import take_injections
from .layout import ImageLayout
from .merge import write_merged
from .question import Tokenizer, check_question_texts, question_embeddings
from .registry import MethodSpec, get_method, make_config, method_of_config
from .selection import select_cut
from .state import PrefillRecord, PromptState, clock
from .vision_tap import VISION_INPUTS, VisionTap

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")
# What a decoder layer hands its attention module besides the hidden states (the cache stays out of a scoring call).
_ATTENTION_INPUTS = ("attention_mask", "position_embeddings", "position_ids")
_MARKER = "_vlmeval_ivcp_pruner"


class Pruner:
    """A pruning method attached to a model. Use `prune(...)` to make one, `remove()` (or `with`) to undo it."""

    def __init__(self, model: nn.Module, config: PruneConfig, method: MethodSpec):
        if method.changes_inputs:
            raise ValueError(
                f"{method.name} changes the pictures before the processor, not the model's tokens: give it to a model "
                f"wrapper (method: {method.name}), not to prune()"
            )
        arch = arch_for(model)
        if getattr(model, _MARKER, None) is not None:
            raise RuntimeError("this model already has a pruner attached; call .remove() on it first")
        self.model, self.config, self.method = model, config, method
        text_config = getattr(model.config, arch.text_config)
        attention = getattr(text_config, "_attn_implementation", None) or "eager"
        if attention not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"attention implementation {attention!r} is not supported by the pruning engine "
                f"(a flex BlockMask cannot be gathered); load the model with one of {SUPPORTED_ATTENTION}"
            )
        self._attention = attention
        self._arch = arch
        self._multimodal = get_submodule(model, arch.multimodal)
        self._text_model = get_submodule(model, arch.text_model)
        self._layers: nn.ModuleList = get_submodule(model, arch.layers)
        self._rope = model_rope_spec(model)
        self._projector = projector_of(model)  # for merged tokens given as projector inputs
        if config.positions == "compact" and self._rope.position_rows > 1:
            raise ValueError(
                f"positions='compact' renumbers 1D RoPE positions; {model.config.model_type} rotates by M-RoPE "
                "(t, h, w rows), whose kept tokens keep their original positions: use positions='original'"
            )
        self._image_token_id = int(getattr(model.config, arch.image_token_attr))
        self._cuts = self._check_cuts(config.cuts(), len(self._layers))
        self._cut_at = {cut.layer: cut for cut in self._cuts if cut.layer > 0}
        self._state: PromptState | None = None
        self._pending_layouts: Sequence[Sequence[ImageLayout]] | None = None
        self._pending_questions: tuple[Sequence[str], Tokenizer] | None = None
        self._taps: list[AttentionTap] = []
        self._cut_taps: dict[int, AttentionTap] = {}
        self._vision: VisionTap | None = None
        self.last: PrefillRecord | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            self._attach()
        except BaseException:
            self.remove()
            raise
        setattr(model, _MARKER, self)

    # ------------------------------------------------------------------ attach / detach
    @staticmethod
    def _check_cuts(cuts: list[Cut], n_layers: int) -> list[Cut]:
        layers = [cut.layer for cut in cuts]
        if layers != sorted(set(layers)):
            raise ValueError(f"cut layers must be strictly increasing, got {layers}")
        for cut in cuts:
            if cut.layer == 0:
                continue
            if not 1 <= cut.layer < n_layers:
                raise ValueError(
                    f"layer {cut.layer} is outside [1, {n_layers}) for this model ({n_layers} decoder layers); "
                    "layer is K, the first layer that runs pruned"
                )
        if 0 in layers and layers.index(0) != 0:
            raise ValueError("a before-LLM cut (layer 0) must come first")
        return cuts

    def _attach(self) -> None:
        hook = self._handles.append
        hook(self._multimodal.register_forward_pre_hook(self._on_multimodal, with_kwargs=True))
        hook(self._text_model.register_forward_pre_hook(self._on_text_model, with_kwargs=True))
        hook(self._text_model.register_forward_hook(self._after_text_model, with_kwargs=True))
        for index, layer in enumerate(self._layers):
            hook(layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True))
        if self.method.needs & {"values", "attention", "rater_attention"}:
            self._taps = [
                AttentionTap(self._layers[cut.layer - 1].self_attn, self._capture) for cut in self._cut_at.values()
            ]
        if self.method.needs & VISION_INPUTS:
            self._vision = VisionTap(
                self.model, self.method.needs, getattr(self.config, "vision_layer", None),
                getattr(self.config, "vision_cls_softmax", "per_head"),
            )
        if "cut_attention" in self.method.needs:
            self._cut_taps = {
                layer: AttentionTap(self._layers[layer].self_attn, self._keep_states, hooks=False)
                for layer in self._cut_at
            }

    def remove(self) -> None:
        """Remove every hook and forget all state: the model behaves exactly as before `prune`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for tap in [*self._taps, *self._cut_taps.values()]:
            tap.remove()
        self._taps.clear()
        self._cut_taps.clear()
        if self._vision is not None:
            self._vision.remove()
            self._vision = None
        self._state = None
        if getattr(self.model, _MARKER, None) is self:
            delattr(self.model, _MARKER)

    def set_image_layouts(self, layouts: Sequence[Sequence[ImageLayout]] | None) -> None:
        """Give the layouts of the next prefill's images (per prompt, one per image) when the model's forward inputs
        do not carry them (InternVL's tiles, DeepSeek-VL2's views); layout-aware methods read them. Used once."""
        self._pending_layouts = layouts

    def set_question_texts(self, texts: Sequence[str] | None, tokenizer: Tokenizer | None = None) -> None:
        """Give the question of each prompt of the next prefill (the benchmark's question alone, no chat template)
        and the model's tokenizer; methods that need `question_text` read it and its tokens' input embeddings
        (`question.py`). Used once; ignored by the other methods."""
        if texts is not None and tokenizer is None:
            raise ValueError("set_question_texts needs the model's tokenizer with the texts (to embed their tokens)")
        self._pending_questions = None if texts is None else (texts, tokenizer)

    def __enter__(self) -> Pruner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ hooks
    def _on_multimodal(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = _cache_in(kwargs)
        if cache is not None and not _is_dynamic(cache):
            raise ValueError(
                f"pruning needs a DynamicCache (layers change length), got {type(cache).__name__} with layers "
                f"{sorted({type(layer).__name__ for layer in cache.layers})}: do not use static or sliding caches"
            )
        if cache is not None and cache.get_seq_length() > 0:
            return self._check_decode(cache, input_ids, args, kwargs)
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(
                "pruning needs `input_ids` at prefill to locate the image tokens (got inputs_embeds only)"
            )
        if self.method.single_row and input_ids.shape[0] > 1:
            raise ValueError(
                f"method {self.method.name!r} selects over a whole batch at once (registered single_row=True): "
                f"give it one prompt at a time, not a batch of {input_ids.shape[0]}"
            )
        visual_mask = input_ids == self._image_token_id
        for row, count in enumerate(visual_mask.sum(dim=1).tolist()):
            if count == 0:
                raise ValueError(
                    f"prompt {row} of the batch has no image token (id {self._image_token_id}): "
                    "visual-token pruning needs an image in every prompt"
                )
        attention_mask = kwargs.get("attention_mask")
        real = attention_mask.bool() if attention_mask is not None and attention_mask.dim() == 2 else None
        real = torch.ones_like(visual_mask) if real is None else real
        counts = visual_mask.sum(dim=1).tolist()
        layouts = self._layouts(kwargs, counts)
        image_of = torch.stack(
            [image_ordinals(visual_mask[row], layouts[row] if layouts else None) for row in range(len(counts))]
        )
        record = PrefillRecord(counts, layouts=layouts)
        self._state = PromptState(input_ids.shape[1], visual_mask, real, image_of, layouts, record)
        self._take_questions(self._state, len(counts))
        for tap in self._taps:
            tap.armed = True
        return None

    def _layouts(self, kwargs: dict, counts: list[int]) -> Layouts | None:
        """The images' layouts: given by the wrapper for this prefill, else read by the arch from the inputs."""
        pending, self._pending_layouts = self._pending_layouts, None
        if pending is not None:
            return check_layouts(pending, counts)
        flat = self._arch.layouts(kwargs, self.model.config) if self._arch.layouts is not None else None
        return split_layouts(flat, counts) if flat is not None else None

    def _take_questions(self, state: PromptState, batch: int) -> None:
        """The questions given for this prefill, embedded when the method reads them (counted as selection time)."""
        pending, self._pending_questions = self._pending_questions, None
        if pending is None or "question_text" not in self.method.needs:
            return
        texts = check_question_texts(pending[0], batch)
        embedding = self.model.get_input_embeddings()
        start = clock(embedding.weight)
        state.questions = list(zip(texts, question_embeddings(texts, pending[1], embedding), strict=True))
        state.record.select_seconds += clock(embedding.weight) - start

    def _check_decode(self, cache: Any, input_ids: torch.Tensor | None, args: tuple, kwargs: dict):
        state = self._state
        if state is None or state.held is None:
            raise RuntimeError("a decode step reached a pruned model without a pruned prefill before it")
        expected = state.held[0].shape[1] + state.generated
        new_tokens = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[1]
        if cache.get_seq_length() != expected or new_tokens != 1:
            raise ValueError(
                f"this cache holds {cache.get_seq_length()} tokens and {new_tokens} new token(s) were given, but the "
                f"pruned prefill left {expected} and decoding feeds one token at a time: continuing a pruned cache "
                "from another prefill or with several new tokens (a second turn) is not supported; run a fresh "
                "prefill (generate() without a cache) on the whole conversation"
            )
        if kwargs.get("position_ids") is None:
            kwargs = dict(kwargs, position_ids=self._next_positions(state))
            return args, kwargs
        if state.position_shift is not None:  # generate() counts on from the original numbering
            return args, dict(kwargs, position_ids=self._compact_decode_positions(state, kwargs["position_ids"]))
        return None

    def _compact_decode_positions(self, state: PromptState, given: torch.Tensor) -> torch.Tensor:
        """The compact position ids of a decode step given in the original numbering (as generate() counts)."""
        shift = state.position_shift.to(given.device).view(-1, 1)
        expected = self._next_positions(state).to(given.device) + shift
        if given.shape != expected.shape or not torch.equal(given, expected):
            raise ValueError(
                f"decode position ids {given.flatten().tolist()} do not continue the pruned prompt (expected "
                f"{expected.flatten().tolist()} in the original numbering, which positions='compact' shifts)"
            )
        return given - shift

    def _next_positions(self, state: PromptState) -> torch.Tensor:
        """Position ids of the next token (original, or compact under `positions="compact"`), in the shape the
        model's forward takes."""
        assert state.rope_positions is not None
        nxt = state.rope_positions[:, :, -1:] + 1 + state.generated  # [A, B, 1]
        if state.position_shift is not None:
            nxt = nxt - state.position_shift.to(nxt.device).view(1, -1, 1)
        return nxt if self._rope.position_rows > 1 else nxt[0]

    def _on_text_model(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        state = self._state
        if state is None:
            return None
        cache = _cache_in(kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            return args, self._decode_text_kwargs(state, kwargs)
        embeds = kwargs["inputs_embeds"]
        if self._arch.injections is not None:
            kwargs, state.injections = take_injections(
                kwargs, self._arch.injections, state.visual_mask, len(self._layers)
            )
        if "rater_attention" in self.method.needs:
            state.input_embeds = embeds
        state.rope_positions = _rope_rows(kwargs.get("position_ids"), embeds.shape[0], embeds.shape[1], embeds.device)
        if state.layouts is None and self._rope.mrope_section is not None:
            # generate() encodes the images before prefill and drops `image_grid_thw` from the forward's kwargs, so
            # the arch finds no grid there; the M-RoPE (t, h, w) rows of the visual tokens still lay it out.
            state.layouts = [
                layouts_from_positions(state.rope_positions[:, row], state.image_of[row])
                for row in range(embeds.shape[0])
            ]
            state.record.layouts = state.layouts
        if self._vision is not None:
            images = (state.image_of.max(dim=1).values + 1).tolist()
            state.vision, seconds = self._vision.take(state.layouts, images)
            state.record.select_seconds += seconds
        full = torch.arange(state.prompt_len, device=embeds.device).expand(embeds.shape[0], -1)
        state.base_keep = state.keep = full
        state.base_live = state.live = torch.ones_like(full, dtype=torch.bool)
        if self._cuts[0].layer != 0:
            return args, kwargs
        rel = select_cut(state, self._cuts[0], embeds, {}, self.method, self.config, self._rope)
        kwargs = dict(kwargs, inputs_embeds=write_merged(state, gather_seq(embeds, rel), rel, self._projector))
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = full.clone()
        kwargs["position_ids"] = gather_positions(kwargs["position_ids"], rel)
        mask = kwargs.get("attention_mask")
        # An explicit all-ones mask keeps transformers from reading gaps in the positions as packed sequences.
        mask = torch.ones_like(rel) if mask is None else gather_seq(mask, rel)
        kwargs["attention_mask"] = mask.masked_fill(~state.live.to(mask.device), 0)  # a ragged batch's fillers
        if self.config.positions == "compact":
            kwargs["position_ids"] = self._compact(state, kwargs["position_ids"])
        state.base_keep, state.base_live = state.keep, state.live
        return args, kwargs

    def _compact(self, state: PromptState, positions: torch.Tensor) -> torch.Tensor:
        """The kept real tokens renumbered contiguously (the LLaVA releases' concatenation); notes how far the
        numbering now lags the original one at the end of the prompt, where decoding continues."""
        counted = torch.gather(state.real_mask.to(state.keep.device), 1, state.keep) & state.live
        compact = compact_positions(positions, counted)
        last = compact.masked_fill(~counted.to(compact.device), -1).amax(dim=1)
        state.position_shift = state.rope_positions[0, :, -1].to(last.device) - last
        return compact

    def _decode_text_kwargs(self, state: PromptState, kwargs: dict) -> dict:
        assert state.held is not None and state.rope_positions is not None
        positions = kwargs.get("position_ids")
        first_full = state.held[0].shape[1] == state.prompt_len
        if positions is None and not first_full:
            raise ValueError("a pruned decode step needs position ids; call the multimodal model, not its decoder")
        if positions is not None:
            got = _rope_rows(positions, state.keep.shape[0], positions.shape[-1], positions.device)
            want = self._next_positions(state)
            want = want if want.dim() == 3 else want[None]
            if got.shape != want.shape or not torch.equal(got, want.to(got.device)):
                raise ValueError(
                    f"decode position ids {got.flatten().tolist()} do not continue the pruned prompt (expected "
                    f"{want.flatten().tolist()}): positions must follow the original, unpruned sequence"
                )
        mask = kwargs.get("attention_mask")
        if mask is not None and not first_full:
            if mask.dim() != 2 or mask.shape[1] != state.prompt_len + state.generated + 1:
                raise ValueError(
                    f"expected a 2D attention mask over the {state.prompt_len + state.generated + 1} tokens of the "
                    f"unpruned sequence, got shape {tuple(mask.shape)}"
                )
            cols = decode_columns(state.held[0], state.prompt_len, mask.shape[1])
            kwargs = dict(kwargs, attention_mask=gather_seq(mask, cols))
        hidden = state.held_hidden[0]
        if hidden is not None:  # a ragged batch's fillers in layer 0's cache
            total = hidden.shape[1] + state.generated + 1
            mask = kwargs.get("attention_mask")
            mask = torch.ones(hidden.shape[0], total, dtype=torch.long, device=hidden.device) if mask is None else mask
            kwargs = dict(kwargs, attention_mask=mask.masked_fill(_pad_columns(hidden, total).to(mask.device), 0))
        return kwargs

    def _layer_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            state = self._state
            if state is None or state.base_keep is None:
                return None
            if state.held is not None:  # decoding
                return self._decode_layer_kwargs(state, index, args, kwargs)
            injected = state.injections is not None and 0 < index <= len(state.injections.embeds)
            if injected:  # the previous layer's visual additions, on the tokens alive after it
                args = (state.injections.add(args[0], state.keep, index - 1),) + args[1:]
            if index in self._cut_at:
                hidden = args[0]
                if index in self._cut_taps:
                    self._attend_before_cut(module, index, hidden, dict(kwargs, **(state.stage_kwargs or {})))
                if "normed_hidden_states" in self.method.needs:
                    self._normalise_before_cut(hidden)
                rel = select_cut(
                    state, self._cut_at[index], hidden, state.captured, self.method, self.config, self._rope
                )
                state.captured = {}
                args = (write_merged(state, gather_seq(hidden, rel), rel, self._projector),) + args[1:]
                state.stage_kwargs = self._gather_layer_kwargs(state, kwargs, hidden.dtype)
            if state.stage_kwargs is None:
                return (args, kwargs) if injected else None
            return args, dict(kwargs, **state.stage_kwargs)

        return hook

    def _gather_layer_kwargs(self, state: PromptState, kwargs: dict, dtype: torch.dtype) -> dict[str, Any]:
        """The layer inputs that depend on the sequence, restricted to the tokens alive now (a ragged batch's fillers
        hidden in the mask)."""
        rel = position_in(state.keep, state.base_keep)
        gathered: dict[str, Any] = {}
        tables = kwargs.get("position_embeddings")
        if isinstance(tables, tuple):  # (cos, sin)
            gathered["position_embeddings"] = tuple(gather_seq(table, rel) for table in tables)
        elif tables is not None:  # one complex table (DeepSeek-V2)
            gathered["position_embeddings"] = gather_seq(tables, rel)
        if kwargs.get("position_ids") is not None:
            # FlashAttention reads gaps in position_ids as packed sequences; RoPE already sits in the tables.
            gathered["position_ids"] = None if self._attention == "flash_attention_2" else gather_seq(
                kwargs["position_ids"], rel
            )
        if "attention_mask" in kwargs:
            mask = kwargs["attention_mask"]
            gathered["attention_mask"] = gather_mask(mask, rel if mask is not None and mask.dim() == 4 else None, rel)
        if not bool(state.live.all()):
            mask = gathered.get("attention_mask")
            gathered["attention_mask"] = hide_keys(mask, ~state.live, rel.shape[1], self._attention, dtype)
        return gathered

    def _decode_layer_kwargs(self, state: PromptState, index: int, args: tuple, kwargs: dict):
        assert state.held_in_first is not None and state.held_hidden is not None
        cols_in_first, hidden = state.held_in_first[index], state.held_hidden[index]
        mask = kwargs.get("attention_mask")
        if cols_in_first is not None and mask is not None:
            first_len = state.held[0].shape[1]
            generated = torch.arange(first_len, mask.shape[-1], device=cols_in_first.device)
            cols = torch.cat([cols_in_first, generated.expand(cols_in_first.shape[0], -1)], dim=1)
            mask = gather_mask(mask, None, cols)
        elif index == 0 or cols_in_first is None and hidden is None:
            return None  # layer 0's own set: its mask already hides its fillers
        if hidden is not None:
            total = hidden.shape[1] + state.generated + 1
            mask = hide_keys(mask, _pad_columns(hidden, total), 1, self._attention, args[0].dtype)
        return args, dict(kwargs, attention_mask=mask)

    def _after_text_model(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        state = self._state
        if state is None or state.base_keep is None:
            return
        if state.held is not None:
            state.generated += 1
            return
        self._finish_prefill(state, getattr(output, "cache", None))

    def _finish_prefill(self, state: PromptState, cache: Any) -> None:
        # Which prompt positions each layer saw: the text model's input, then each in-LLM cut's survivors.
        first = 1 if self._cuts[0].layer == 0 else 0
        in_llm_keeps = iter(zip(state.stage_keeps[first:], state.stage_lives[first:], strict=True))
        held, held_live, current = [], [], (state.base_keep, state.base_live)
        for index in range(len(self._layers)):
            if index in self._cut_at:
                current = next(in_llm_keeps)
            held.append(current[0])
            held_live.append(current[1])
        final = state.keep
        if self.config.cache_policy == "all":
            if cache is not None:
                for index, layer_keep in enumerate(held):
                    if layer_keep.shape[1] != final.shape[1]:
                        rel = position_in(final, layer_keep)
                        layer = cache.layers[index]
                        layer.keys = gather_seq(layer.keys, rel, dim=2)
                        layer.values = gather_seq(layer.values, rel, dim=2)
            held, held_live = [final] * len(held), [state.live] * len(held)
        state.held = held
        state.held_in_first = [
            None if layer_keep.shape[1] == held[0].shape[1] else position_in(layer_keep, held[0])
            for layer_keep in held
        ]
        # Fillers each layer's decode mask must hide beyond what layer 0's (the 2D mask the model builds from) does.
        state.held_hidden = [
            None if bool(live.all()) or index > 0 and state.held_in_first[index] is None
            and torch.equal(live, held_live[0]) else ~live
            for index, live in enumerate(held_live)
        ]
        state.stage_kwargs = None
        state.injections = None
        state.input_embeds = None
        for tap in self._taps:
            tap.armed = False
        ordinal = state.visual_mask.long().cumsum(dim=1) - 1
        live_visual = torch.gather(state.visual_mask.to(final.device), 1, final) & state.live.to(final.device)
        state.record.kept = [ordinal[row, final[row][live_visual[row]]] for row in range(len(final))]
        state.record.cache_lengths = [layer_keep.shape[1] for layer_keep in held]
        real = state.real_mask.to(final.device)
        # One host sync for all rows and layers, not one per row and layer.
        state.record.row_cache_lengths = torch.stack(
            [(torch.gather(real, 1, keep) & live).sum(dim=1) for keep, live in zip(held, held_live)], dim=1
        ).tolist()
        state.record.positions, state.record.filler = final, ~state.live
        self.last = state.record
        if cache is None:
            self._state = None  # no cache: the next forward is a fresh prefill

    # ------------------------------------------------------------------ capture
    def _capture(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> None:
        """Keep what the method reads from the attention of the layer before a cut."""
        state = self._state
        if state is None or state.held is not None:
            return
        start = clock(query)
        self._keep_states(query, key, value, scaling)
        # Keeping copies of the states is work the unpruned model does not do: it counts as selection time.
        state.record.select_seconds += clock(query) - start

    def _keep_states(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> None:
        """Store the attention states the method reads (grouped heads expanded) for the next selection."""
        captured, n_heads = self._state.captured, query.shape[1]
        if "values" in self.method.needs:
            captured["values"] = expand_heads(value, n_heads)
        if self.method.needs & {"attention", "cut_attention", "rater_attention"}:
            captured["queries"] = query[:, :, -1:]
            captured["keys"] = expand_heads(key, n_heads)
            captured["scaling"] = torch.tensor(scaling)
        if "rater_attention" in self.method.needs:  # every row's query: selection reads the rows after the image
            captured["query_states"] = query

    def _attend_before_cut(self, layer: nn.Module, index: int, hidden: torch.Tensor, kwargs: dict) -> None:
        """The attention states of layer `index` itself on the tokens reaching it, before they are pruned: one extra
        call of its attention module on its normalised input, without the cache (PyramidDrop's release ranks this
        way). Counted as selection time."""
        start = clock(hidden)
        inputs = {name: kwargs[name] for name in _ATTENTION_INPUTS if name in kwargs}
        self._cut_taps[index].call(hidden_states=layer.input_layernorm(hidden), **inputs)
        self._state.record.select_seconds += clock(hidden) - start

    def _normalise_before_cut(self, hidden: torch.Tensor) -> None:
        """The cut layer's input through the decoder's final norm, for methods that compare tokens in the space the
        LM head reads (DART). Counted as selection time."""
        norm = getattr(self._text_model, "norm", None)
        if not isinstance(norm, nn.Module):
            raise TypeError(f"{type(self._text_model).__name__} has no final `norm`: cannot give normed_hidden_states")
        start = clock(hidden)
        self._state.captured["normed_hidden_states"] = norm(hidden)
        self._state.record.select_seconds += clock(hidden) - start


def _cache_in(kwargs: dict) -> Any:
    """The KV cache a forward was called with: `cache`, or its alias `past_key_values` (deprecated in 5.24, accepted
    by transformers until 5.40; hooks see the name the caller used)."""
    return kwargs["cache"] if kwargs.get("cache") is not None else kwargs.get("past_key_values")


def _pad_columns(hidden: torch.Tensor, total: int) -> torch.Tensor:
    """Hidden prompt columns `[B, n]` extended to `total` key columns: the generated tokens are never hidden."""
    return torch.cat([hidden, hidden.new_zeros(hidden.shape[0], total - hidden.shape[1])], dim=1)


def _is_dynamic(cache: Any) -> bool:
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _rope_rows(position_ids: torch.Tensor | None, batch: int, seq: int, device: torch.device) -> torch.Tensor:
    """The rotary position rows `[A, B, S]` from any accepted `position_ids` shape (None: 0 .. S-1)."""
    if position_ids is None:
        return torch.arange(seq, device=device).view(1, 1, -1).expand(1, batch, -1)
    if position_ids.dim() == 2:
        return position_ids[None].expand(1, batch, -1)
    if position_ids.shape[0] == 4:  # Qwen under generate(): row 0 holds text positions for the mask
        return position_ids[1:].expand(-1, batch, -1)
    return position_ids.expand(-1, batch, -1)


def prune(model: nn.Module, method: str | PruneConfig = "none", **options: Any) -> Pruner:
    """Make `model` prune visual tokens. Returns the attached `Pruner` (also a context manager).

    Example:
        >>> pruner = prune(model, method="ivc_prune", ratio=0.5, layer=16)
        >>> out = model.generate(**inputs)   # pruned
        >>> pruner.last.kept                 # kept visual indices per sample
        >>> pruner.remove()                  # or: unprune(model)
    """
    if isinstance(method, PruneConfig):
        if options:
            raise TypeError(f"pass options inside the config, not as keywords: {sorted(options)}")
        return Pruner(model, method, method_of_config(method))
    return Pruner(model, make_config(method, **options), get_method(method))


def unprune(model: nn.Module) -> None:
    """Remove the pruner attached to `model` (no-op when there is none)."""
    pruner = getattr(model, _MARKER, None)
    if pruner is not None:
        pruner.remove()

