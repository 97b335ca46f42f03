"""Position-only IVC scores (`vlmeval_ivcp.pruning.rope`) against the formula, transformers' rotary embedding, and
the rankings the paper describes."""

from __future__ import annotations

import math

import pytest
import torch
from support.tiny import FAMILIES, tiny_wrapper
from transformers import PhiConfig
from transformers.models.phi.modeling_phi import PhiRotaryEmbedding
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

from vlmeval_ivcp.pruning.arch import rope_spec
from vlmeval_ivcp.pruning.context import RopeSpec
from vlmeval_ivcp.pruning.rope import frequency_axes, ivc_scores, ivc_tokens, rotary_frequencies, top_n

ROPE_1D = RopeSpec(theta=10000.0, rotary_dim=8)
ROPE_M = RopeSpec(theta=1_000_000.0, rotary_dim=16, mrope_section=(2, 3, 3))


def _direct(angles_per_freq: list[list[float]]) -> tuple[list[float], list[float]]:
    """Mean cos and sin of each token's list of angles, in plain Python floats."""
    cos = [sum(math.cos(a) for a in angles) / len(angles) for angles in angles_per_freq]
    sin = [sum(math.sin(a) for a in angles) / len(angles) for angles in angles_per_freq]
    return cos, sin


def _thetas(rope: RopeSpec) -> list[float]:
    return [rope.theta ** (-2 * i / rope.rotary_dim) for i in range(rope.rotary_dim // 2)]


def _qwen_grid(rows: int, cols: int, offset: int) -> torch.Tensor:
    """Qwen2.5-VL-style position ids of one image: t constant, h = row + offset, w = col + offset."""
    h = torch.arange(rows).repeat_interleave(cols) + offset
    w = torch.arange(cols).repeat(rows) + offset
    return torch.stack([torch.full_like(h, offset), h, w])


def test_frequencies_follow_the_rope_formula():
    expected = torch.tensor(_thetas(ROPE_M), dtype=torch.float64)
    torch.testing.assert_close(rotary_frequencies(ROPE_M), expected, rtol=1e-12, atol=0)


def test_1d_scores_match_direct_evaluation():
    positions = [0, 1, 7, 35, 1000, 40_000]
    c, s = ivc_scores(torch.tensor([positions]), ROPE_1D)
    want_c, want_s = _direct([[p * th for th in _thetas(ROPE_1D)] for p in positions])
    assert c.dtype == s.dtype == torch.float32
    torch.testing.assert_close(c, torch.tensor(want_c), rtol=0, atol=1e-6)
    torch.testing.assert_close(s, torch.tensor(want_s), rtol=0, atol=1e-6)
    assert c[0] == 1.0 and s[0] == 0.0


def test_mrope_axis_mean_averages_every_axis_and_frequency():
    grid = [[4, 4, 4, 90], [4, 5, 9, 90], [4, 7, 3, 20_000]]  # [t, h, w] rows x 4 tokens
    c, s = ivc_scores(torch.tensor(grid), ROPE_M, "axis_mean")
    tokens = [[grid[a][k] * th for a in range(3) for th in _thetas(ROPE_M)] for k in range(4)]
    want_c, want_s = _direct(tokens)
    torch.testing.assert_close(c, torch.tensor(want_c), rtol=0, atol=1e-6)
    torch.testing.assert_close(s, torch.tensor(want_s), rtol=0, atol=1e-6)


def test_mrope_section_uses_each_frequencys_own_axis():
    grid = [[4, 4, 4], [4, 5, 9], [4, 7, 3]]
    c, s = ivc_scores(torch.tensor(grid), ROPE_M, "section")
    axis_of_frequency = [0, 0, 1, 1, 1, 2, 2, 2]  # mrope_section (2, 3, 3)
    thetas = _thetas(ROPE_M)
    tokens = [[grid[axis_of_frequency[i]][k] * thetas[i] for i in range(8)] for k in range(3)]
    want_c, want_s = _direct(tokens)
    torch.testing.assert_close(c, torch.tensor(want_c), rtol=0, atol=1e-6)
    torch.testing.assert_close(s, torch.tensor(want_s), rtol=0, atol=1e-6)


def test_both_modes_agree_with_transformers_qwen2_5_vl_rotary_embedding():
    section = (4, 6, 6)
    config = Qwen2_5_VLTextConfig(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": list(section)},
    )
    rotary = Qwen2_5_VLRotaryEmbedding(config)
    position_ids = _qwen_grid(4, 5, offset=12)
    rope = RopeSpec(theta=1_000_000.0, rotary_dim=32, mrope_section=section)

    # What the model rotates by: transformers recomposes the sections, duplicated over the two halves of D.
    model_cos, model_sin = rotary(torch.zeros(1, 20, 64), position_ids[:, None, :])
    c, s = ivc_scores(position_ids, rope, "section")
    torch.testing.assert_close(c, model_cos[0].mean(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(s, model_sin[0].mean(-1), rtol=0, atol=1e-5)

    # The release's score: the un-recomposed per-axis angles, averaged over axes and dims.
    angles = position_ids[..., None].float() * rotary.inv_freq
    c, s = ivc_scores(position_ids, rope, "axis_mean")
    torch.testing.assert_close(c, angles.cos().mean(dim=(0, 2)), rtol=0, atol=1e-5)
    torch.testing.assert_close(s, angles.sin().mean(dim=(0, 2)), rtol=0, atol=1e-5)


def _qwen3_rotary(section: tuple[int, int, int], head_dim: int) -> Qwen3VLTextRotaryEmbedding:
    config = Qwen3VLTextConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": list(section)},
    )
    return Qwen3VLTextRotaryEmbedding(config)


def _probed_axes(rotary: torch.nn.Module, half: int) -> torch.Tensor:
    """The axis of each frequency as the module applies it: a unit position on one axis rotates only its own."""
    axes = torch.full((half,), -1)
    for axis in range(3):
        positions = torch.zeros(3, 1, 1, dtype=torch.long)
        positions[axis] = 1
        _, sin = rotary(torch.zeros(1, 1, 8), positions)
        axes[sin[0, 0, :half] != 0] = axis
    return axes


@pytest.mark.parametrize(
    ("section", "head_dim"), [((24, 20, 20), 128), ((4, 2, 2), 16), ((2, 3, 3), 16)], ids=["8B", "tiny", "clipped"]
)
def test_interleaved_axes_equal_qwen3_vl_rotary_embedding(section, head_dim):
    rotary = _qwen3_rotary(section, head_dim)
    rope = RopeSpec(theta=5_000_000.0, rotary_dim=head_dim, mrope_section=section, mrope_layout="interleaved")
    axes = frequency_axes(rope)
    assert torch.equal(axes, _probed_axes(rotary, head_dim // 2))
    if section == (24, 20, 20):  # THW x 20 then TTTT
        assert axes.tolist() == [0, 1, 2] * 20 + [0] * 4
    # Random positions (not a grid; small enough for the module's float32 angles): the mean of its cos and sin.
    position_ids = torch.randint(0, 2_000, (3, 50), generator=torch.Generator().manual_seed(0))
    model_cos, model_sin = rotary(torch.zeros(1, 50, 8, dtype=torch.float64), position_ids[:, None, :])
    c, s = ivc_scores(position_ids, rope, "section")
    torch.testing.assert_close(c, model_cos[0].float().mean(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(s, model_sin[0].float().mean(-1), rtol=0, atol=1e-5)
    # The release's rule ignores the axis map: the same on both layouts.
    block = RopeSpec(theta=5_000_000.0, rotary_dim=head_dim, mrope_section=section)
    for got, want in zip(ivc_scores(position_ids, rope), ivc_scores(position_ids, block), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_block_axes_equal_qwen2_5_vl_rotary_embedding():
    config = Qwen2_5_VLTextConfig(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
    )
    rope = RopeSpec(theta=1_000_000.0, rotary_dim=32, mrope_section=(4, 6, 6))
    assert torch.equal(frequency_axes(rope), _probed_axes(Qwen2_5_VLRotaryEmbedding(config), 16))


def test_partial_rotary_scores_average_only_the_rotated_dims():
    # Half of each 32-dim head is rotated: theta and the rotary width come from the config, as the model reads them.
    config = PhiConfig(hidden_size=64, num_attention_heads=2, partial_rotary_factor=0.5, rope_theta=5000.0)
    rotary = PhiRotaryEmbedding(config)
    rope = rope_spec(config)
    assert rope == RopeSpec(theta=5000.0, rotary_dim=16)
    positions = torch.arange(3, 40)[None]
    model_cos, model_sin = rotary(torch.zeros(1, 37, 64), positions)  # [1, 37, 16]: the rotated dims only
    c, s = ivc_scores(positions, rope)
    torch.testing.assert_close(c, model_cos[0].mean(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(s, model_sin[0].mean(-1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_frequencies_read_from_each_family_equal_its_rotary_embedding(family):
    model = tiny_wrapper("sdpa", family=family).model
    rope = rope_spec(model.config.get_text_config())
    rotary = [module for module in model.model.language_model.modules() if hasattr(module, "inv_freq")]
    assert len(rotary) == 1
    torch.testing.assert_close(rotary_frequencies(rope), rotary[0].inv_freq.double(), rtol=1e-6, atol=0)


def test_1d_rope_ignores_the_mode():
    positions = torch.arange(20, 80)[None]
    for got, want in zip(
        ivc_scores(positions, ROPE_1D, "section"), ivc_scores(positions, ROPE_1D, "axis_mean"), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cos_ranking_picks_the_earliest_positions_of_a_1d_sequence():
    n_visual = 576
    rope = RopeSpec(theta=10000.0, rotary_dim=128)
    c, s = ivc_scores(torch.arange(35, 35 + n_visual)[None], rope)
    by_cos = top_n(c, 29)
    assert by_cos[0] < 5
    assert by_cos.max() < n_visual // 6
    assert top_n(s, 29).float().mean() > by_cos.float().mean()


@pytest.mark.parametrize("mode", ["axis_mean", "section"])
def test_cos_ranking_picks_the_top_left_block_of_a_qwen_grid(mode):
    rows, cols = 20, 24
    rope = RopeSpec(theta=1_000_000.0, rotary_dim=128, mrope_section=(16, 24, 24))
    c, _ = ivc_scores(_qwen_grid(rows, cols, offset=15), rope, mode)
    by_cos = top_n(c, round(0.1 * rows * cols))
    # Fine frequencies make c oscillate a little, so the very best token is near, not at, the corner.
    assert by_cos[0] // cols < 4 and by_cos[0] % cols < 4
    assert {0, 1, cols, cols + 1} <= set(by_cos.tolist())
    assert (by_cos // cols).float().mean() < rows / 4
    assert (by_cos % cols).float().mean() < cols / 2


def test_top_n_breaks_ties_by_lower_index_and_clamps():
    scores = torch.tensor([0.5, 1.0, 0.5, 1.0, 0.2])
    assert top_n(scores, 3).tolist() == [1, 3, 0]
    assert top_n(scores, 10).tolist() == [1, 3, 0, 2, 4]
    assert top_n(scores, 0).numel() == 0


def test_ivc_tokens_is_the_sorted_union_of_both_rankings():
    c = torch.tensor([0.9, 0.8, 0.1, 0.0, 0.7])
    s = torch.tensor([0.0, 0.8, 0.9, 0.95, 0.1])
    assert ivc_tokens(c, s, 2).tolist() == [0, 1, 2, 3]
    assert ivc_tokens(c, c, 2).tolist() == [0, 1]
    assert ivc_tokens(c, s, 0).numel() == 0


@pytest.mark.parametrize(
    ("position_ids", "rope", "mode", "message"),
    [
        (torch.zeros(1, 4, dtype=torch.long), ROPE_1D, "grid", "mode must be one of"),
        (torch.zeros(4, dtype=torch.long), ROPE_1D, "axis_mean", r"position_ids must be \[A, L\]"),
        (torch.zeros(3, 4, dtype=torch.long), ROPE_1D, "axis_mean", "1D RoPE takes position_ids with 1 row, got 3"),
        (torch.zeros(1, 4, dtype=torch.long), ROPE_M, "section", "M-RoPE takes position_ids with 3 rows"),
        (
            torch.zeros(3, 4, dtype=torch.long),
            RopeSpec(1e6, 16, mrope_section=(2, 2, 2)),
            "section",
            r"mrope_section \(2, 2, 2\) must sum to rotary_dim // 2 = 8",
        ),
        (torch.zeros(1, 4, dtype=torch.long), RopeSpec(1e4, 7), "axis_mean", "rotary_dim must be an even number"),
        (
            torch.zeros(3, 4, dtype=torch.long),
            RopeSpec(1e6, 16, mrope_section=(2, 3, 3), mrope_layout="spiral"),
            "section",
            "mrope_layout must be one of",
        ),
    ],
)
def test_bad_inputs_raise_clearly(position_ids, rope, mode, message):
    with pytest.raises(ValueError, match=message):
        ivc_scores(position_ids, rope, mode)
