"""HoloV's rule without a model: hand-computed chunk scores and allocations, and a loop reference written from the
release's `HoloV` description (docs/methods/holov.md)."""

from __future__ import annotations

import math

import pytest
import torch
from support.contexts import make_context as _make_context

from vlmeval_ivcp.pruning import make_config
from vlmeval_ivcp.pruning.methods.holov import (
    allocate, chunk_count, chunk_score, chunk_sizes, holov_keep, holov_select,
)


def make_context(n_visual: int, n_keep: int, **fields):
    return _make_context(n_visual + 2, torch.arange(1, n_visual + 1), n_keep, **fields)


def _reference(attention: list[float], features: list[list[float]], n_keep: int, n_chunks: int) -> list[int]:
    """The release's loops on Python lists (official count; ties: lower index first)."""
    n = len(attention)
    size, extra = divmod(n, n_chunks)
    chunks, start = [], 0
    for chunk in range(n_chunks):
        length = size + (1 if chunk < extra else 0)
        if length > 0:
            chunks.append(list(range(start, start + length)))
        start += length
    scores = []
    for members in chunks:
        if len(members) <= 1:
            scores.append(sum(attention[i] for i in members) / len(members))
            continue
        unit = [[x / (math.sqrt(sum(y * y for y in features[i])) + 1e-6) for x in features[i]] for i in members]
        sim = [[0.0 if a == b else sum(x * y for x, y in zip(unit[a], unit[b])) for b in range(len(members))]
               for a in range(len(members))]
        mean = [sum(row) / (len(members) - 1) for row in sim]
        var = [sum((s - mean[a]) ** 2 for s in sim[a]) / (len(members) - 1) for a in range(len(members))]
        scaled = [attention[i] * 1e3 for i in members]
        weight = (sum(abs(x) for x in scaled) / len(scaled)) / (sum(abs(v) for v in var) / len(var) + 1e-6)
        scores.append(sum(s + 0.09 * weight * v for s, v in zip(scaled, var)) / len(members))
    total = sum(scores) + 1e-6
    weights = [s / total for s in scores]
    allocated = [math.floor(w * n_keep) for w in weights]
    remaining = n_keep - sum(allocated)
    for chunk in sorted(range(len(weights)), key=lambda c: (-weights[c], c))[:max(0, remaining)]:
        allocated[chunk] += 1
    kept = []
    for members, count in zip(chunks, allocated):
        kept += sorted(members, key=lambda i: (-attention[i], i))[:count]
    return sorted(kept)


def test_chunks_and_their_count():
    assert chunk_sizes(576, 16) == [36] * 16
    assert chunk_sizes(10, 4) == [3, 3, 2, 2]
    assert chunk_sizes(3, 5) == [1, 1, 1]  # empty chunks dropped, as the release skips them
    assert [chunk_count(576, t) for t in (64, 128, 192)] == [16, 8, 5]


def test_chunk_score_of_two_tokens_by_hand():
    # cos = c between the two tokens: S = [[0, c], [c, 0]], mu = c, v_i = ((0 - c)^2 + (c - c)^2) / 1 = c^2.
    features = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # c = 0.6
    attention = torch.tensor([0.002, 0.004], dtype=torch.float64)
    c2 = (0.6 / (1 + 1e-6)) ** 2  # the release divides by (|x| + 1e-6)
    weight = 3.0 / (c2 + 1e-6)
    want = 3.0 + 0.09 * weight * c2
    assert float(chunk_score(attention, features)) == pytest.approx(want, rel=1e-9)
    assert float(chunk_score(attention[:1], features[:1])) == pytest.approx(0.002)  # one token: raw a


def test_allocation_official_loses_the_overflow_matched_hands_it_on():
    scores, sizes = torch.tensor([3.0, 1.0]), [2, 10]
    # w = [0.75, 0.25] (less 1e-6): floor(3.0) = 2 and floor(1.0) = 0 after the epsilon, leftover 2 -> [3, 1].
    assert allocate(scores, sizes, 4, "official") == [2, 1]  # chunk 0 holds 2: one token lost
    assert allocate(scores, sizes, 4, "matched") == [2, 2]


@pytest.mark.parametrize("n_cells,n_keep", [(576, 64), (576, 128), (576, 192), (37, 5), (40, 30), (9, 8)])
def test_matches_the_loop_reference(n_cells, n_keep):
    generator = torch.Generator().manual_seed(n_cells * 7 + n_keep)
    attention = torch.rand(n_cells, generator=generator, dtype=torch.float64) * 1e-2
    features = torch.randn(n_cells, 6, generator=generator, dtype=torch.float64)
    n_chunks = chunk_count(n_cells, n_keep)
    got = holov_keep(attention, features, n_keep, n_chunks, "official")
    assert got.tolist() == _reference(attention.tolist(), features.tolist(), n_keep, n_chunks)
    assert got.numel() <= n_keep
    assert holov_keep(attention, features, n_keep, n_chunks, "matched").numel() == n_keep


def test_select_keeps_separators_and_uses_cls_attention_where_present():
    scores = torch.tensor([0.1, float("nan"), 0.4, 0.3, float("nan"), 0.2])
    received = torch.tensor([0.9, float("nan"), 0.0, 0.0, float("nan"), 0.9])
    embeds = torch.randn(8, 4)
    ctx = make_context(6, 3, vision_cls_attention=scores, vision_attention=received, hidden_states=embeds)
    selection = holov_select(ctx, make_config("holov", ratio=0.5, chunks=1))
    assert selection.parts["separators"].tolist() == [1, 4]
    assert selection.parts["cells"].tolist() == [2, 3]  # the top 2 of 4 cells by [CLS] attention
    assert selection.keep.tolist() == [1, 2, 3, 4]


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="preset"):
        make_config("holov", preset="exact")
    with pytest.raises(ValueError, match="chunks"):
        make_config("holov", chunks=0)
    with pytest.raises(ValueError, match="before the LLM"):
        make_config("holov", scope="llm", layer=2)
