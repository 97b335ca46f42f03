"""One cut of a prefill: a method chooses, per image of every sample, which visual tokens stay.

Each image is its own span with its own budget `max(1, round(ratio · L_i))`; the method sees one image at a time
(`SelectionContext`), with the image's layout while all its tokens are alive, and the per-image answers are merged into
one `Selection` per sample (indices into the sample's visual tokens at this cut).
"""

from __future__ import annotations

import torch

from .config import Cut, PruneConfig
from .context import RopeSpec, Selection, SelectionContext
from .gather import gather_positions, pad_ragged
from .images import Layouts
from .layout import ImageLayout
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
    rows, selections = [], []
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
        parts = []
        for image in range(int(image_of[row].max()) + 1):
            image_index = (image_of[row] == image).nonzero().flatten()
            layout = _intact_layout(state.layouts, row, image, image_index.numel())
            ctx = SelectionContext(
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


def _intact_layout(layouts: Layouts | None, row: int, image: int, n_tokens: int) -> ImageLayout | None:
    """The image's layout while all its tokens are alive (after an earlier cut the survivors no longer fit it)."""
    if layouts is None or image >= len(layouts[row]):
        return None
    layout = layouts[row][image]
    return layout if layout is not None and layout.n_tokens == n_tokens else None


def _merge(parts: list[tuple[SelectionContext, Selection]]) -> Selection:
    """One sample's selection from its images' (indices shifted from each image's tokens to the sample's)."""
    keeps, named, offset = [], {}, 0
    for ctx, selection in parts:
        device = selection.keep.device
        keeps.append(selection.keep + offset)
        for name, part in selection.parts.items():
            named.setdefault(name, []).append(part.to(device) + offset)
        offset += ctx.n_visual
    return Selection(torch.cat(keeps), {name: torch.cat(values) for name, values in named.items()})


def _check_selection(selection: Selection, ctx: SelectionContext, name: str) -> None:
    keep = selection.keep
    if keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= ctx.n_visual:
        raise ValueError(f"method {name!r} returned indices outside [0, {ctx.n_visual}) or none at all")
