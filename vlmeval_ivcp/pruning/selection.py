"""One cut of a prefill: a method chooses, per image of every sample, which visual tokens stay.

Each image is its own span with its own budget `max(1, round(ratio · L_i))`; the method sees one image at a time
(`SelectionContext`), with the image's layout while all its tokens are alive, and the per-image answers are merged into
one `Selection` per sample (indices into the sample's visual tokens at this cut).
"""

from __future__ import annotations

import torch

from .capture import rows_attention
from .config import Cut, PruneConfig
from .context import MergedTokens, RopeSpec, Selection, SelectionContext
from .gather import gather_positions, pad_ragged
from .images import Layouts
from .layout import ImageLayout
from .merge import row_merge
from .registry import MethodSpec
from .state import PromptState, clock


def select_cut(
    state: PromptState, cut: Cut, hidden: torch.Tensor, captured: dict, method: MethodSpec, config: PruneConfig,
    rope: RopeSpec,
) -> torch.Tensor:
    """Choose the kept tokens of every sample at `cut` (each image with its own budget), record the choice in
    `state`, and return the kept tokens' positions in the current sequence `[B, n]`: rows that keep fewer than the
    longest are padded with fillers (`state.live` False there; docs/engine.md, ragged batches).

    Raises:
        ValueError: the method returned indices outside its image.
    """
    start = clock(hidden)
    keep = state.keep  # [B, n] prompt positions alive now (a ragged batch's fillers included)
    in_sequence = torch.gather(state.visual_mask, 1, keep.to(state.visual_mask.device)).to(hidden.device)
    # Fillers (docs/engine.md, ragged batches) were visual tokens: the method sees neither them nor padding.
    live = state.live.to(hidden.device)
    visual = in_sequence & live
    image_of = torch.gather(state.image_of.to(keep.device), 1, keep).to(hidden.device).masked_fill(~live, -1)
    real = torch.gather(state.real_mask.to(keep.device), 1, keep).to(hidden.device) & live
    # Everything a method reads is on the device of the layer it cuts before (with a `device_map`, the embeddings
    # and the captured layer K-1 may sit on other GPUs).
    positions = gather_positions(state.rope_positions, keep.to(state.rope_positions.device)).to(hidden.device)
    captured = {name: value.to(hidden.device) for name, value in captured.items()}
    rows, selections, state.merges = [], [], []
    for row in range(keep.shape[0]):
        visual_index = visual[row].nonzero().flatten()
        # Every image is its own span with its own budget; the text query is what follows the last image.
        sample = dict(
            query_index=torch.arange(int(in_sequence[row].nonzero()[-1]) + 1, keep.shape[1], device=hidden.device),
            text_index=(~in_sequence[row] & real[row]).nonzero().flatten(),
            key_mask=real[row],
            position_ids=positions[:, row],
            rope=rope,
            hidden_states=hidden[row] if "hidden_states" in method.needs or cut.layer == 0 else None,
            normed_hidden_states=captured["normed_hidden_states"][row] if "normed_hidden_states" in captured else None,
            values=captured["values"][row] if "values" in captured else None,
            queries=captured["queries"][row] if "queries" in captured else None,
            keys=captured["keys"][row] if "keys" in captured else None,
            scaling=float(captured["scaling"]) if "scaling" in captured else None,
            seed=config.seed,
            question_text=state.questions[row][0] if state.questions is not None else None,
            question_embeds=state.questions[row][1].to(hidden.device) if state.questions is not None else None,
        )
        if "rater_attention" in method.needs:
            sample.update(_rater_inputs(state, captured, row, sample["query_index"], keep[row], real[row]))
        parts = []
        for image in range(int(image_of[row].max()) + 1):
            image_index = (image_of[row] == image).nonzero().flatten()
            layout = _intact_layout(state.layouts, row, image, image_index.numel())
            if "rater_attention" in method.needs:
                sample["image_embeds"] = _image_embeds(state, row, image, hidden.device)
            ctx = SelectionContext(
                **_vision_fields(state, method, row, image, keep[row, image_index.to(keep.device)]),
                n_keep=max(1, round(cut.ratio * image_index.numel())),
                visual_index=image_index,
                layout=layout,
                grid=layout.view_grid() if layout is not None else None,
                **sample,
            )
            selection = method.select(ctx, config)
            _check_selection(selection, ctx, method.name)
            parts.append((ctx, selection))
        selection = _merge(parts)
        merge = row_merge(row, visual_index, selection, cut.layer)
        if merge is not None:
            state.merges.append(merge)
        alive = ~in_sequence[row]
        alive[visual_index[selection.keep.to(hidden.device)]] = True
        rows.append(alive)
        selections.append(selection)
    # Rows that keep fewer tokens than the longest are padded with masked fillers.
    rel, state.live = pad_ragged(torch.stack(rows))
    state.keep = torch.gather(keep, 1, rel.to(keep.device))
    state.stage_lives.append(state.live)
    state.record.stages.append(selections)
    state.stage_keeps.append(state.keep)
    state.record.select_seconds += clock(hidden) - start
    return rel


def _vision_fields(
    state: PromptState, method: MethodSpec, row: int, image: int, positions: torch.Tensor
) -> dict[str, torch.Tensor | int | None]:
    """The vision-tower tap's values the method needs, for the image's tokens alive at prompt `positions`."""
    if state.vision is None:
        return {}
    vision = state.vision[row][image]
    visual = state.visual_mask[row]
    first = int((state.image_of[row] == image).nonzero()[0])
    ordinal = (visual.long().cumsum(0) - 1)[positions.to(visual.device)] - int(visual[:first].sum())
    vision = vision.gather(ordinal)  # the image's tokens still alive (all of them at a first cut)
    fields = {
        "vision_attention": vision.attention,
        "vision_cls_attention": vision.cls_attention,
        "vision_keys": vision.keys,
        "vision_features": vision.features,
    }
    out = {name: value for name, value in fields.items() if name in method.needs}
    if "vision_cls_attention" in method.needs:
        out["vision_cls_attention_heads"] = vision.cls_attention_heads
    out = {name: None if value is None else value.to(positions.device) for name, value in out.items()}
    return dict(out, vision_patches_per_token=vision.patches_per_token, vision_heads=vision.heads)


def _rater_inputs(
    state: PromptState, captured: dict, row: int, query_index: torch.Tensor, keep: torch.Tensor, real: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Layer K-1's attention from the rows after the last image (recomputed from its queries and keys, so any
    attention backend serves) and the LLM's input embeddings of those rows: "rater_attention"."""
    queries, keys = captured["query_states"][row], captured["keys"][row]
    attention = rows_attention(queries, keys, float(captured["scaling"]), query_index, real)
    embeds = state.input_embeds[row]
    query_embeds = embeds[keep[query_index.to(keep.device)].to(embeds.device)]
    return dict(query_attention=attention, query_embeds=query_embeds.to(keys.device))


def _image_embeds(state: PromptState, row: int, image: int, device: torch.device) -> torch.Tensor:
    """The LLM's input embeddings of every token of one image, as the prompt entered the LLM (before any cut)."""
    embeds = state.input_embeds[row]
    return embeds[(state.image_of[row] == image).to(embeds.device)].to(device)


def _intact_layout(layouts: Layouts | None, row: int, image: int, n_tokens: int) -> ImageLayout | None:
    """The image's layout while all its tokens are alive (after an earlier cut the survivors no longer fit it)."""
    if layouts is None or image >= len(layouts[row]):
        return None
    layout = layouts[row][image]
    return layout if layout is not None and layout.n_tokens == n_tokens else None


def _merge(parts: list[tuple[SelectionContext, Selection]]) -> Selection:
    """One sample's selection from its images' (indices shifted from each image's tokens to the sample's, merged
    slots from each image's kept tokens to the sample's).

    Raises:
        ValueError: the images' merged tokens are in different spaces.
    """
    keeps, named, offset, kept = [], {}, 0, 0
    slots, vectors, spaces = [], [], set()
    for ctx, selection in parts:
        device = selection.keep.device
        keeps.append(selection.keep + offset)
        for name, part in selection.parts.items():
            named.setdefault(name, []).append(part.to(device) + offset)
        if selection.merged is not None:
            slots.append(selection.merged.slots.to(device) + kept)
            vectors.append(selection.merged.vectors)
            spaces.add(selection.merged.space)
        offset += ctx.n_visual
        kept += selection.keep.numel()
    if len(spaces) > 1:
        raise ValueError(f"the images of one sample merged tokens in different spaces: {sorted(spaces)}")
    merged = MergedTokens(torch.cat(slots), torch.cat(vectors), spaces.pop()) if spaces else None
    return Selection(torch.cat(keeps), {name: torch.cat(values) for name, values in named.items()}, merged)


def _check_selection(selection: Selection, ctx: SelectionContext, name: str) -> None:
    keep = selection.keep
    if keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= ctx.n_visual:
        raise ValueError(f"method {name!r} returned indices outside [0, {ctx.n_visual}) or none at all")
