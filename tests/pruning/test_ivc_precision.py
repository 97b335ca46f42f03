"""IVC-Prune's `score_dtype`: "model" scores as the release does, in the model's dtype (bf16); "float32" does not.

The release (FireRedTeam/IVC-Prune) reads the mean of the model's bf16 RoPE tables (e.g. Qwen2.5-VL's
`cos[:, 0, image].mean(dim=(0, 2))`) and computes value similarities as `softmax(v_q v_k^T / sqrt(d), float32)`
cast back to bf16, then means over heads and query rows in bf16 (`calculate_avg_similarity_for_subset_einsum`).
"""

from __future__ import annotations

import math

import torch

from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext
from vlmeval_ivcp.pruning.methods.ivc_prune import IVCPruneConfig, ivc_prune, official_config, OFFICIAL_PRESETS
from vlmeval_ivcp.pruning.rope import ivc_scores

BF16 = torch.bfloat16


def _model_table_means(positions: torch.Tensor, theta: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The means of a transformers rotary table as a bf16 model holds it: [cos(freqs), cos(freqs)] in bf16."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[:, None] * inv_freq
    table = torch.cat([freqs, freqs], dim=-1)
    return table.cos().to(BF16).mean(-1).float(), table.sin().to(BF16).mean(-1).float()


def test_model_dtype_ivc_scores_are_the_means_of_the_models_bf16_tables():
    positions = torch.arange(0, 20000, 7)
    for theta, dim in [(1e6, 128), (1e4, 128), (1e6, 80)]:
        c, s = ivc_scores(positions[None], RopeSpec(theta=theta, rotary_dim=dim), dtype=BF16)
        want_c, want_s = _model_table_means(positions, theta, dim)
        assert torch.equal(c, want_c) and torch.equal(s, want_s)
        c32, _ = ivc_scores(positions[None], RopeSpec(theta=theta, rotary_dim=dim))
        assert not torch.equal(c32, want_c), "float32 scores are not the bf16 table's"


def _release_keep(values: torch.Tensor, start: int, n_visual: int, n_keep: int, theta: float) -> list[int]:
    """The plain rule with the release's arithmetic, written out (no chunking); ties by the lower index."""
    heads, seq, dim = values.shape
    visual = torch.arange(start, start + n_visual)
    text = torch.arange(start + n_visual + 2, seq)

    def relevance(rows):
        logits = values[:, rows] @ values[:, visual].transpose(1, 2) / math.sqrt(dim)
        return logits.softmax(-1, dtype=torch.float32).to(BF16).mean(0).mean(0).float()

    def best(scores, n):
        return torch.sort(scores, descending=True, stable=True).indices[:n]

    c, s = _model_table_means(visual, theta, 16)
    n_ivc, n_seed = round(0.1 * n_visual), max(1, round(0.01 * n_visual))
    ivc = set(best(c, n_ivc).tolist()) | set(best(s, n_ivc).tolist())
    seeds = best(relevance(text), n_seed).tolist()
    r = relevance(torch.cat([text, visual[seeds]]))
    chosen = list(seeds) + [k for k in best(r, n_visual).tolist() if k in ivc and k not in seeds]
    chosen += [k for k in best(r, n_visual).tolist() if k not in chosen]
    return sorted(chosen[:n_keep])


def _context(values: torch.Tensor, start: int, n_visual: int, n_keep: int, theta: float) -> SelectionContext:
    seq = values.shape[1]
    after = torch.arange(start + n_visual, seq)
    return SelectionContext(
        n_keep=n_keep, visual_index=torch.arange(start, start + n_visual), query_index=after,
        text_index=torch.cat([torch.arange(start), after]), key_mask=torch.ones(seq, dtype=torch.bool),
        position_ids=torch.arange(seq)[None], rope=RopeSpec(theta=theta, rotary_dim=16), values=values,
    )


def test_model_dtype_keeps_the_release_set_where_float32_does_not():
    differs = 0
    for seed in range(6):
        values = torch.randn(4, 160, 16, generator=torch.Generator().manual_seed(seed)).to(BF16)
        ctx = _context(values, start=5, n_visual=144, n_keep=72, theta=1e4)
        want = _release_keep(values, 5, 144, 72, theta=1e4)
        assert ivc_prune(ctx, IVCPruneConfig(layer=2, score_dtype="model")).keep.tolist() == want
        differs += ivc_prune(ctx, IVCPruneConfig(layer=2)).keep.tolist() != want
    assert differs > 0, "float32 scores should change some kept set on bf16 inputs"


def test_every_official_preset_scores_in_the_model_dtype():
    assert {official_config(key).score_dtype for key in OFFICIAL_PRESETS} == {"model"}
    assert IVCPruneConfig().score_dtype == "float32"
