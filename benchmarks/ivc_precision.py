"""How much IVC-Prune's kept sets change between `score_dtype="float32"` and `"model"` (bf16), on random inputs.

    python benchmarks/ivc_precision.py [--sizes 64 144 256 576 1024] [--trials 20] [--heads 4] [--head-dim 128]
        [--noise 1.0]
    python benchmarks/ivc_precision.py --tiled [--trials 20]

For each image size L: random bf16 value vectors (`--heads` heads of `--head-dim`, a 15-token prefix, the image,
40 text tokens), each one vector shared by all tokens of a head plus `--noise` times its own (real value vectors
are alike, which brings scores closer and makes bf16 rounding matter more; 1.0 is nearly independent tokens), 1D
RoPE with Qwen2.5-VL-7B's base (1e6) and rotary width (128), the plain rule at ratio 0.5. Both runs see the same
bf16 tensors; "float32" upcasts them and evaluates the IVC angles in float64, "model" computes as the release does
(bf16 RoPE tables, bf16 products, softmax in float32 rounded to bf16, bf16 means). The figure is the share of kept
tokens that one run keeps and the other does not, |A \\ B| / n_keep, mean and max over trials.
No model is loaded; nothing is timed.

`--tiled` measures instead how far this project's `tiled_rule="ranked"` is from the release's `"internvl"` on
InternVL2.5-8B's tilings (256-token tiles and thumbnail, 26 IVC tokens per ranking, 3 seeds, ratio 0.5, float32
scores on the same random values), as the same share of kept tokens.
"""

from __future__ import annotations

import argparse

import torch

from vlmeval_ivcp.models.internvl import internvl_layout
from vlmeval_ivcp.pruning.context import RopeSpec, SelectionContext
from vlmeval_ivcp.pruning.methods.ivc_prune import IVCPruneConfig, ivc_prune

PREFIX, TEXT = 15, 40


def random_context(n_visual: int, seed: int, heads: int, head_dim: int, noise: float, layout=None):
    """One image after a 15-token prefix, 40 text tokens after it; bf16 values; Qwen2.5-VL-7B's RoPE base."""
    seq = PREFIX + n_visual + TEXT
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(heads, 1, head_dim, generator=generator)
    values = (shared + noise * torch.randn(heads, seq, head_dim, generator=generator)).to(torch.bfloat16)
    after = torch.arange(PREFIX + n_visual, seq)
    return SelectionContext(
        n_keep=max(1, round(0.5 * n_visual)), visual_index=torch.arange(PREFIX, PREFIX + n_visual),
        query_index=after, text_index=torch.cat([torch.arange(PREFIX), after]),
        key_mask=torch.ones(seq, dtype=torch.bool), position_ids=torch.arange(seq)[None],
        rope=RopeSpec(theta=1e6, rotary_dim=head_dim), values=values, layout=layout,
    )


def difference(ctx: SelectionContext, first: IVCPruneConfig, second: IVCPruneConfig) -> float:
    """Share of `ctx.n_keep` that `first` keeps and `second` does not."""
    kept, other = ivc_prune(ctx, first).keep, ivc_prune(ctx, second).keep
    return (~torch.isin(kept, other)).sum().item() / ctx.n_keep


def kept_difference(n_visual: int, seed: int, heads: int, head_dim: int, noise: float) -> float:
    ctx = random_context(n_visual, seed, heads, head_dim, noise)
    full, model = IVCPruneConfig(layer=1, score_dtype="float32"), IVCPruneConfig(layer=1, score_dtype="model")
    return difference(ctx, full, model)


def tiled_difference(tiles: tuple[int, int], seed: int, heads: int, head_dim: int, noise: float) -> float:
    layout = internvl_layout(*tiles, 256)
    ctx = random_context(layout.n_tokens, seed, heads, head_dim, noise, layout)
    settings = dict(layer=1, n_ivc=26, n_seed=3)
    return difference(ctx, IVCPruneConfig(**settings), IVCPruneConfig(**settings, tiled_rule="internvl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 144, 256, 576, 1024])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--tiled", action="store_true", help="ranked against the release's InternVL rule")
    args = parser.parse_args()
    if args.tiled:
        print("| tiles | mean kept-set difference | max |")
        print("|---|---:|---:|")
        for tiles in [(1, 2), (2, 1), (2, 2), (2, 3), (3, 2)]:
            figures = [tiled_difference(tiles, seed, args.heads, args.head_dim, args.noise)
                       for seed in range(args.trials)]
            print(f"| {tiles[0]}x{tiles[1]} | {100 * sum(figures) / len(figures):.1f}% | {100 * max(figures):.1f}% |")
        return
    print("| L | mean kept-set difference | max |")
    print("|---:|---:|---:|")
    everything = []
    for n_visual in args.sizes:
        figures = [
            kept_difference(n_visual, seed, args.heads, args.head_dim, args.noise) for seed in range(args.trials)
        ]
        everything += figures
        print(f"| {n_visual} | {100 * sum(figures) / len(figures):.1f}% | {100 * max(figures):.1f}% |")
    print(f"| all | {100 * sum(everything) / len(everything):.1f}% | {100 * max(everything):.1f}% |")


if __name__ == "__main__":
    main()
