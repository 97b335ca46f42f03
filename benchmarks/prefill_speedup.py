"""Measured prefill speed-up of each pruning method against its FLOPs prediction, with the KV-cache saving.

    python benchmarks/prefill_speedup.py [--model qwen2.5-vl-7b|llava-1.5-7b|qwen3-vl-8b|llava-onevision-7b]
        [--layers 4] [--dtype auto|bfloat16|float32] [--device cpu|cuda]
        [--attn sdpa|eager|flash_attention_2] [--repeats 3] [--ratios 1.0 0.75 0.5 0.25]
        [--methods ivc_prune fastv random uniform divprune] [--with-resprune] [--out table.md]

Uses the models and prompts of `benchmarks/selection_time.py`: a random-weight Qwen2.5-VL with the 7B text widths
(one synthetic image of 36 x 36 = 1,296 visual tokens passed as embeddings) or LLaVA-1.5 with Vicuna-7B's widths
(576 visual tokens), each with `--layers` decoder layers. For every
method and kept ratio it prints one markdown row:

- measured speed-up: unpruned prefill time / pruned prefill time, one forward each (`use_cache=True`, logits of the
  last token) timed back to back, median over `--repeats` pairs; the pruned time includes the method's selection;
- FLOPs speed-up: `flops_speedup` with the lengths each layer really computed on (`pruned_layer_lengths`);
- measured / FLOPs: how much of the predicted saving the wall clock shows (below 1: overheads and kernels that do
  not scale with the sequence length; the FLOPs ignore the selection itself);
- select / prefill: the engine's `select_seconds` as a fraction of the unpruned prefill time;
- KV pruned / unpruned: bytes of the prefill's cache tensors (`kv_cache_bytes`), pruned over unpruned.

Every setting first runs one untimed warm-up forward; its cache and record give the KV bytes and layer lengths.
ResPrune is left out unless `--with-resprune` (its selection is slow on a CPU).

The full-depth GPU run is

    python benchmarks/prefill_speedup.py --layers 28 --device cuda --dtype bfloat16 --attn flash_attention_2

which has not been tested here (the script was only run on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from vlmeval_ivcp import prune
from vlmeval_ivcp.evaluation.efficiency import flops_speedup, kv_cache_bytes, pruned_layer_lengths

# The sibling benchmark: `python benchmarks/prefill_speedup.py` puts benchmarks/ first on sys.path.
from selection_time import BENCH_MODELS, IMAGE, add_common_args, check_common_args, prefill_seconds

DEFAULT_METHODS = ("ivc_prune", "fastv", "random", "uniform", "divprune")
DEFAULT_RATIOS = (1.0, 0.75, 0.5, 0.25)
FASTV_LAYER = 2  # FastV's K in its paper


def method_options(method: str, layers: int, ratio: float) -> dict[str, Any]:
    """The `prune()` options of `method` on a `layers`-deep model: in-LLM cuts at the middle (FastV at layer 2),
    before-LLM methods without a layer."""
    middle = max(1, layers // 2)
    in_llm_layer = {"ivc_prune": middle, "random": middle, "fastv": min(FASTV_LAYER, layers - 1)}
    if method in in_llm_layer:
        return dict(ratio=ratio, layer=in_llm_layer[method])
    if method in ("uniform", "divprune", "resprune"):
        return dict(ratio=ratio)
    raise ValueError(f"no benchmark settings for method {method!r}; choose from {[*DEFAULT_METHODS, 'resprune']}")


def _prefill_cache(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        return model(**inputs, use_cache=True, logits_to_keep=1).cache


def measure(model: torch.nn.Module, inputs: dict[str, torch.Tensor], method: str, ratio: float, repeats: int,
            unpruned_kv: int) -> dict[str, Any]:
    """One table row: `method` at kept `ratio`.

    Each repeat times an unpruned forward right before the pruned one, and the speed-up is the median of these
    paired ratios: on a shared machine the load drifts, and a baseline timed once at the start would drift with it.

    Returns:
        `dict`: `cut`, `kept` (visual tokens kept), `seconds` (median pruned prefill), `measured` (median paired
        speed-up), `flops` (FLOPs speed-up), `select` (median selection time / median unpruned prefill) and
        `kv_ratio`.
    """
    layers = model.config.get_text_config().num_hidden_layers
    prompt_len = inputs["input_ids"].shape[1]
    options = method_options(method, layers, ratio)
    with prune(model, method, **options) as pruner:
        cache = _prefill_cache(model, inputs)  # warm-up; its cache and record are the same in every run
        record, cuts = pruner.last, pruner.config.cuts()
    unpruned, pruned, select = [], [], []
    for _ in range(repeats):
        unpruned.append(prefill_seconds(model, inputs))
        with prune(model, method, **options) as pruner:
            pruned.append(prefill_seconds(model, inputs))
        select.append(pruner.last.select_seconds)
    lengths = pruned_layer_lengths(record, cuts, prompt_len, layers)
    return {
        "cut": f"layer {options['layer']}" if "layer" in options else "before LLM",
        "kept": len(record.kept[0]),
        "seconds": statistics.median(pruned),
        "measured": statistics.median(base / run for base, run in zip(unpruned, pruned)),
        "flops": flops_speedup(model.config, [prompt_len] * layers, lengths),
        "select": statistics.median(select) / statistics.median(unpruned),
        "kv_ratio": kv_cache_bytes(cache) / unpruned_kv,
    }


def argument_parser() -> argparse.ArgumentParser:
    """This script's flags (benchmarks/gpu_suite.sh's commands are checked against them without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa",
                        help="attention implementation (flash_attention_2 needs CUDA and the flash-attn package)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                        help="fractions of the visual tokens kept")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="methods to time")
    parser.add_argument("--with-resprune", action="store_true", help="also time resprune (slow on a CPU)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    bad_ratios = [ratio for ratio in args.ratios if not 0.0 < ratio <= 1.0]
    if bad_ratios:
        parser.error(f"--ratios must lie in (0, 1], got {bad_ratios}")
    methods = [*args.methods, "resprune"] if args.with_resprune and "resprune" not in args.methods else args.methods
    for method in methods:
        method_options(method, args.layers, 0.5)  # unknown names fail before the slow part

    bench = BENCH_MODELS[args.model]
    model = bench.build(args.layers, getattr(torch, args.dtype), args.device, args.grid)
    if args.attn != "sdpa":
        model.set_attn_implementation(args.attn)
    inputs = bench.inputs(model, args.grid)
    unpruned_kv = kv_cache_bytes(_prefill_cache(model, inputs))  # also the warm-up
    unpruned = statistics.median(prefill_seconds(model, inputs) for _ in range(args.repeats))

    seq, n_visual = inputs["input_ids"].shape[1], int((inputs["input_ids"] == IMAGE).sum())
    lines = [
        f"{bench.label}, {args.layers} layers, {args.dtype}, {args.device}, {args.attn}, torch "
        f"{torch.__version__}; {seq} prompt tokens of which {n_visual} visual; unpruned prefill "
        f"{unpruned * 1e3:.0f} ms at the start; medians of {args.repeats} (unpruned, pruned) pairs",
        "",
        "| method | cut | ratio | kept visual | prefill (ms) | measured speed-up | FLOPs speed-up | "
        "measured / FLOPs | select / prefill | KV pruned / unpruned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for method in methods:
        for ratio in args.ratios:
            row = measure(model, inputs, method, ratio, args.repeats, unpruned_kv)
            line = (f"| {method} | {row['cut']} | {ratio:g} | {row['kept']} / {n_visual} | "
                    f"{row['seconds'] * 1e3:.0f} | {row['measured']:.2f}x | {row['flops']:.2f}x | "
                    f"{row['measured'] / row['flops']:.2f} | "
                    f"{row['select']:.1%} | {row['kv_ratio']:.3f} |")
            lines.append(line)
            print(line, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
