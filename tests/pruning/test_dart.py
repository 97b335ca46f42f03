"""DART: pivots by key L1 norm, claims by least cosine in the final-norm space, counts of both presets, the pivot
order, and a reference written from the release's description (Python sets and lists, batch 1)."""

import math

import pytest
import torch
from support.contexts import make_context

from vlmeval_ivcp.pruning.methods.dart import DARTConfig, claims_per_pivot, claiming_order, dart_select
from vlmeval_ivcp.pruning.registry import get_method


def _angle(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def _hand_context(n_keep: int):
    # Position 0 is a system token, 1..6 the picture, 7..9 the question. One head of width 1: |key| is the L1 norm.
    keys = torch.tensor([0.0, 1.0, 5.0, 2.0, 3.0, 0.5, 4.0, 1.0, 9.0, 2.0]).view(1, 10, 1)
    degrees = [45, 0, 90, 10, 200, 95, 270, 30, 0, 60]
    normed = torch.tensor([_angle(angle) for angle in degrees])
    return make_context(10, list(range(1, 7)), n_keep, text_index=[0, 7, 8, 9], keys=keys, normed_hidden_states=normed)


def test_pivots_claim_the_least_similar_tokens_on_a_hand_made_case():
    # One visual pivot (position 2, the largest key) and one text pivot (position 8). Ascending order: position 2
    # (90 degrees) claims 270 and 200 degrees (visual 5 and 3), then position 8 (0 degrees) claims 95 and 10 degrees
    # (visual 4 and 2); the token along the text pivot (visual 0) is the one left out.
    ctx = _hand_context(n_keep=5)
    config = DARTConfig(image_pivots=1, text_pivots=1, pivot_order="ascending")
    selection = dart_select(ctx, config)
    assert selection.keep.tolist() == [1, 2, 3, 4, 5]
    assert selection.parts["pivots"].tolist() == [1]
    # The release's order iterates the set {2, 8}: CPython puts 8 first (slot 0 of 8). The text pivot then claims
    # 200 and 95 degrees, and the visual pivot 270 and 0 degrees: the kept set changes with the order.
    assert claiming_order([2, 8], "official") == [8, 2]
    assert dart_select(ctx, DARTConfig(image_pivots=1, text_pivots=1)).keep.tolist() == [0, 1, 3, 4, 5]


def test_matched_keeps_exactly_the_budget():
    ctx = _hand_context(n_keep=4)
    config = DARTConfig(image_pivots=1, text_pivots=1, pivot_order="ascending", preset="matched")
    assert dart_select(ctx, config).keep.tolist() == [1, 3, 4, 5]  # claims 2 (270, 200 degrees) then 1 (95)


@pytest.mark.parametrize(
    "n_keep, preset, expected",
    [
        (128, "official", [16] * 8),  # 4 + 128 = 132 kept, the release's LLaVA-1.5 count at 128
        (192, "official", [24] * 8),
        (64, "official", [8] * 8),
        (130, "matched", [16] * 6 + [15] * 2),  # 126 left after the 4 visual pivots
        (3, "matched", [0] * 8),
    ],
)
def test_claims_per_pivot(n_keep, preset, expected):
    assert claims_per_pivot(n_keep, min(4, n_keep), 8, preset) == expected


def _release_reference(keys: torch.Tensor, normed: torch.Tensor, start: int, length: int, target: int) -> list[int]:
    """The release's rule as its description reads, with batch 1: keys [S, H*d], normed hidden states [S, D];
    the picture is positions start .. start+length-1 and the text pivots come from everything after it."""
    per_pivot = target // 8
    l1 = keys.abs().sum(dim=-1)
    image = (torch.sort(l1[start : start + length], descending=True, stable=True).indices[:4] + start).tolist()
    query = (torch.sort(l1[start + length :], descending=True, stable=True).indices[:4] + start + length).tolist()
    chosen = set(image + query)
    valid = set(range(start, start + length)) - set(image)
    for pivot in list(chosen):
        pool = sorted(valid)
        cosine = torch.nn.functional.cosine_similarity(normed[pivot][None], normed[pool], dim=-1)
        picked = [pool[i] for i in torch.sort(cosine, stable=True).indices[:per_pivot].tolist()]
        chosen.update(picked)
        valid.difference_update(picked)
    return sorted(chosen - set(query))


@pytest.mark.parametrize("seed", range(4))
def test_official_preset_matches_the_release_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    start, length, seq = 5, 40 + seed, 60
    keys = torch.randn(2, seq, 3, generator=generator)  # [H, S, d]
    normed = torch.randn(seq, 16, generator=generator)
    target = 16 + 3 * seed
    text = list(range(start)) + list(range(start + length, seq))
    ctx = make_context(seq, list(range(start, start + length)), target, text_index=text, keys=keys,
                       normed_hidden_states=normed, query_index=torch.arange(start + length, seq))
    reference = _release_reference(keys.transpose(0, 1).reshape(seq, -1), normed, start, length, target)
    assert (dart_select(ctx, DARTConfig()).keep + start).tolist() == reference
    assert len(reference) == 4 + 8 * (target // 8)


@pytest.mark.parametrize("pad", [1, 3, 17])
def test_left_padding_does_not_change_the_claiming_order(pad):
    # The release's set order depends on the pivots' position values: a left-padded row must claim as unpadded.
    generator = torch.Generator().manual_seed(pad)
    start, length, seq = 5, 48, 64
    keys, normed = torch.randn(2, seq, 3, generator=generator), torch.randn(seq, 16, generator=generator)

    def kept(offset: int) -> list[int]:
        padded_keys = torch.cat([torch.zeros(2, offset, 3), keys], dim=1)
        padded_normed = torch.cat([torch.zeros(offset, 16), normed])
        key_mask = torch.arange(seq + offset) >= offset
        text = [offset + i for i in [*range(start), *range(start + length, seq)]]
        ctx = make_context(seq + offset, list(range(offset + start, offset + start + length)), 24,
                           text_index=text, keys=padded_keys, normed_hidden_states=padded_normed, key_mask=key_mask,
                           query_index=torch.arange(offset + start + length, offset + seq))
        return dart_select(ctx, DARTConfig()).keep.tolist()

    assert kept(pad) == kept(0)


def test_config_defaults_and_registry():
    config = DARTConfig()
    assert (config.layer, config.cache_policy, config.preset) == (2, "after", "official")
    assert (config.pivot_order, config.image_pivots, config.text_pivots) == ("official", 4, 4)
    spec = get_method("dart")
    assert spec.needs == frozenset({"attention", "normed_hidden_states"})


@pytest.mark.parametrize(
    "options",
    [
        dict(preset="exact"),
        dict(pivot_order="random"),
        dict(image_pivots=-1),
        dict(scope="before_llm", layer=0),
        dict(image_pivots=0, text_pivots=0),
    ],
)
def test_config_rejects_bad_values(options):
    with pytest.raises(ValueError):
        DARTConfig(**options)
