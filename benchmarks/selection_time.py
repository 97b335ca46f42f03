"""How long each pruning method spends choosing, relative to the unpruned prefill of the same model.

    python benchmarks/selection_time.py [--model qwen2.5-vl-7b|llava-1.5-7b|qwen3-vl-8b|llava-onevision-7b]
        [--layers 4] [--dtype auto|bfloat16|float32] [--device cpu|cuda] [--repeats 3] [--methods NAME ...]

`--model qwen2.5-vl-7b` (default) builds a Qwen2.5-VL decoder with the real 7B widths (hidden 3584, 28 query heads, 4
KV heads, MLP 18944, M-RoPE sections (16, 24, 24)); `--model llava-1.5-7b` a LLaVA-1.5 decoder with Vicuna-7B's (hidden
4096, 32 heads without grouping, MLP 11008, 1D RoPE); `--model qwen3-vl-8b` a Qwen3-VL decoder with the 8B widths
(hidden 4096, 32 query heads of 128, 8 KV heads, MLP 12288, interleaved M-RoPE (24, 20, 20), three DeepStack
injections); `--model llava-onevision-7b` a LLaVA-OneVision decoder with Qwen2-7B's widths (as Qwen2.5-VL-7B's, 1D
RoPE) and a picture of one 27 x 27 view: its base view and one tile with newlines, 1,485 visual tokens. All have only
`--layers` layers and random weights (nothing is downloaded). The prompt is synthetic: a short system text, one image
of `--grid` x `--grid` visual tokens (Qwen2.5-VL: 36 x 36 = 1,296 by default, a 1008 x 1008 picture; Qwen3-VL: 32 x 32
= 1,024, a 1024 x 1024 picture; LLaVA: 24 x 24 = 576, its 336-pixel input) and a short question. Qwen2.5-VL's vision
tower is skipped: the visual tokens enter the LLM as random embeddings passed with `inputs_embeds`, while `input_ids`,
`mm_token_type_ids` and `image_grid_thw` still tell the model (M-RoPE positions) and the engine (image tokens, grid)
where the picture is. Qwen3-VL gets random pixels through a three-block, 32-wide tower (that also makes the DeepStack
features) and LLaVA a two-layer CLIP tower with ViT-L/14's widths on a random picture (LLaVA-OneVision a one-layer,
32-wide SigLIP tower; their cost is small next to the decoder), because their forwards take `input_ids` or
`inputs_embeds`, not both. The vision-tower methods (VisPruner, HoloV, VisionZip, PruMerge+) score a layer of the
encoder: they run with random pixels through Qwen2.5-VL's two vision blocks of the 7B ViT's widths (1280 wide, 16
heads; a windowed block, then a full-attention one over the picture's 4 x 1,296 patches, as its last block) and
LLaVA's first CLIP-L layer (`vision_layer` -2); their selection time includes that scoring (not the tower's own
forward). Qwen3-VL's and LLaVA-OneVision's towers are small stand-ins: those methods are not measured there.

For every method the script reports the engine's `PrefillRecord.select_seconds` (capturing the method's inputs,
scoring and choosing) as a fraction of the unpruned prefill time of the LLM (the vision tower's share, where the
prompt's pixels run through it, taken out), both medians of `--repeats` runs in this process. The vocabulary is
small (its size only affects the embedding lookup and the one-token `lm_head`). With few layers the fraction is
larger than on the full model: a column scales the LLM's prefill to its depth (28, 32, 36), and where the tower has
the real encoder's widths (Qwen2.5-VL, LLaVA-1.5) a last column adds the full encoder's time, estimated from its
layers' measured times (Qwen2.5-VL-7B's 28 windowed and 4 full-attention blocks, CLIP-L's 24 layers): a model's
prefill runs both.

`--dtype auto` (the default) is bfloat16 on a GPU and float32 on a CPU: most CPUs have no bfloat16 matrix units, so a
bfloat16 prefill there is many times slower than a float32 one (on the 2-core AMD EPYC of docs/efficiency.md, 124.6 s
for four 7B-width Qwen layers in bfloat16, 8.8 s for two in float32) while the selections score in float32, which
would flatter every share.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from vlmeval_ivcp.pruning import get_method, prune
from vlmeval_ivcp.pruning.arch import get_submodule
from vlmeval_ivcp.pruning.vision_tap import VISION_INPUTS, vision_arch_for

VOCAB = 1024
IMAGE, VIDEO, VISION_START, VISION_END = range(VOCAB - 4, VOCAB)
SYSTEM_TOKENS, QUESTION_TOKENS = 20, 24  # text around the picture (system prompt; question and chat tail)

# The real models' widths (the tests shrink them to run the script's code quickly).
QWEN_7B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4)
QWEN_7B_VISION = dict(hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584)
VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
CLIP_L = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16)


def random_model(model_class: type, config: Any, dtype: torch.dtype, device: str) -> Any:
    """`model_class(config)` with seeded random weights, made on `device` itself: a 28-layer 7B-width model takes
    about two minutes to initialise on a 2-core CPU, before any copy to a GPU."""
    torch.manual_seed(0)
    with torch.device(device):
        return model_class._from_config(config, dtype=dtype).eval()


def build_qwen(layers: int, dtype: torch.dtype, device: str, grid: int) -> Qwen2_5_VLForConditionalGeneration:
    """A random-weight Qwen2.5-VL with the 7B text widths, `layers` decoder layers and a one-block vision tower."""
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **QWEN_7B_TEXT,
            vocab_size=VOCAB,
            num_hidden_layers=layers,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        ),
        # Two blocks with the 7B ViT's widths (1280 wide, 16 heads): a windowed one and a full-attention one, like
        # the last of its 32 (28 windowed, 4 full). The tower runs for the vision-tower methods, whose tap scores the
        # last block, and to time the encoder; the other methods get the visual tokens as embeddings.
        vision_config=dict(**QWEN_7B_VISION, depth=2, fullatt_block_indexes=[1]),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        attn_implementation="sdpa",
    )
    return random_model(Qwen2_5_VLForConditionalGeneration, config, dtype, device)


def _text(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, IMAGE, (count,), generator=generator)


def qwen_inputs(model: Qwen2_5_VLForConditionalGeneration, grid: int) -> dict[str, torch.Tensor]:
    """One prompt: text, `<vision_start>`, `grid * grid` image tokens with random embeddings, `<vision_end>`, text.

    Returns the forward kwargs (batch 1): `input_ids`, `inputs_embeds`, `attention_mask`, `mm_token_type_ids` and
    `image_grid_thw` (in vision patches, before Qwen's 2 x 2 merge).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    n_visual = grid * grid
    ids = torch.cat([
        _text(SYSTEM_TOKENS, generator),
        torch.tensor([VISION_START]),
        torch.full((n_visual,), IMAGE),
        torch.tensor([VISION_END]),
        _text(QUESTION_TOKENS, generator),
    ])[None]
    is_image = ids == IMAGE
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids.to(device))
        scale = float(embeds.float().std())
        visual = torch.randn(n_visual, embeds.shape[-1], generator=generator) * scale
        embeds[is_image.to(device)] = visual.to(device, embeds.dtype)
    merge = model.config.vision_config.spatial_merge_size
    return {
        "input_ids": ids.to(device),
        "inputs_embeds": embeds,
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_token_type_ids": is_image.long().to(device),
        "image_grid_thw": torch.tensor([[1, grid * merge, grid * merge]], device=device),
    }


def qwen_pixels(model: Qwen2_5_VLForConditionalGeneration, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random pixels for the picture of `inputs` (the vision tower then runs and overwrites the image embeddings)."""
    vision = model.config.vision_config
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    n_patches = int(inputs["image_grid_thw"].prod())
    pixels = torch.randn(n_patches, patch_dim, generator=torch.Generator().manual_seed(1))
    return dict(inputs, pixel_values=pixels.to(inputs["input_ids"].device, model.dtype))


def build_qwen3(layers: int, dtype: torch.dtype, device: str, grid: int) -> Qwen3VLForConditionalGeneration:
    """A random-weight Qwen3-VL with the 8B text widths (explicit head_dim 128, interleaved M-RoPE (24, 20, 20)),
    `layers` decoder layers and a three-block, 32-wide vision tower whose blocks feed the three DeepStack
    injections, as the real one's blocks 8, 16, 24 do."""
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=4096, intermediate_size=12288, num_hidden_layers=layers,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                             "mrope_interleaved": True},
            bos_token_id=None, eos_token_id=None, pad_token_id=None,
        ),
        vision_config=dict(
            depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=4096,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2],
        ),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )
    return random_model(Qwen3VLForConditionalGeneration, config, dtype, device)


def qwen3_inputs(model: Qwen3VLForConditionalGeneration, grid: int) -> dict[str, torch.Tensor]:
    """As `qwen_inputs`, but with random pixels through the small vision tower (Qwen3-VL's forward takes
    `input_ids` or `inputs_embeds`, not both, and the tower also makes the DeepStack features)."""
    inputs = qwen_inputs(model, grid)
    inputs.pop("inputs_embeds")
    vision = model.config.vision_config
    patch_dim = 3 * vision.temporal_patch_size * vision.patch_size**2
    n_patches = int(inputs["image_grid_thw"].prod())
    pixels = torch.randn(n_patches, patch_dim, generator=torch.Generator().manual_seed(0))
    return dict(inputs, pixel_values=pixels.to(inputs["input_ids"].device, model.dtype))


def build_llava(layers: int, dtype: torch.dtype, device: str, grid: int) -> LlavaForConditionalGeneration:
    """A random-weight LLaVA-1.5 with Vicuna-7B's widths, `layers` decoder layers and a one-layer CLIP tower whose
    patch grid is `grid x grid`."""
    config = LlavaConfig(
        text_config=dict(
            **VICUNA_7B, model_type="llama", vocab_size=VOCAB, num_hidden_layers=layers, max_position_embeddings=4096,
        ),
        # Two layers of CLIP ViT-L/14's widths: the vision-tower methods score the first (`vision_layer` -2).
        vision_config=dict(
            **CLIP_L, model_type="clip_vision_model", num_hidden_layers=2, image_size=grid * 14, patch_size=14,
            projection_dim=768,
        ),
        image_token_id=IMAGE,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        attn_implementation="sdpa",
    )
    return random_model(LlavaForConditionalGeneration, config, dtype, device)


def llava_inputs(model: LlavaForConditionalGeneration, grid: int) -> dict[str, torch.Tensor]:
    """One prompt: text, `grid * grid` image tokens, text; a random picture for the vision tower."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.cat([
        _text(SYSTEM_TOKENS, generator), torch.full((grid * grid,), IMAGE), _text(QUESTION_TOKENS, generator)
    ])[None]
    side = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, side, side, generator=generator)
    return {
        "input_ids": ids.to(device),
        "pixel_values": pixels.to(device, model.dtype),
        "attention_mask": torch.ones_like(ids).to(device),
    }


def build_llava_ov(
    layers: int, dtype: torch.dtype, device: str, grid: int
) -> LlavaOnevisionForConditionalGeneration:
    """A random-weight LLaVA-OneVision with Qwen2-7B's widths, `layers` decoder layers and a one-layer, 32-wide
    SigLIP tower whose views are `grid x grid` patches (27 for the real 384-pixel views)."""
    side = grid * 14
    config = LlavaOnevisionConfig(
        text_config=dict(
            **QWEN_7B_TEXT, model_type="qwen2", vocab_size=VOCAB, num_hidden_layers=layers,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, image_size=side, patch_size=14, vision_use_head=False,
        ),
        image_token_index=IMAGE, video_token_index=VIDEO, image_grid_pinpoints=[[side, side]],
        vision_feature_select_strategy="full", vision_feature_layer=-1, attn_implementation="sdpa",
    )
    return random_model(LlavaOnevisionForConditionalGeneration, config, dtype, device)


def llava_ov_inputs(model: LlavaOnevisionForConditionalGeneration, grid: int) -> dict[str, torch.Tensor]:
    """One prompt: text, one picture of exactly one view (base view `grid²` tokens, then its single tile's `grid`
    rows with a newline each: `grid² + grid·(grid + 1)` tokens, 1,485 for 27), text."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    n_visual = grid * grid + grid * (grid + 1)
    ids = torch.cat([
        _text(SYSTEM_TOKENS, generator), torch.full((n_visual,), IMAGE), _text(QUESTION_TOKENS, generator)
    ])[None]
    side = model.config.vision_config.image_size
    pixels = torch.randn(1, 2, 3, side, side, generator=generator)  # the base view and the one tile
    return {
        "input_ids": ids.to(device),
        "pixel_values": pixels.to(device, model.dtype),
        "image_sizes": torch.tensor([[side, side]], device=device),
        "attention_mask": torch.ones_like(ids).to(device),
    }


@dataclass(frozen=True)
class BenchModel:
    """A 7B-width model the benchmarks can build: its label, full depth, default grid, builder and prompt, and how
    the vision-tower methods get pixels through a tower whose layers have the real encoder's widths (`None`: the
    tower is a small stand-in, so those methods and the encoder's time are not measured on this model).
    `tower_layers[i]`: how many layers of the real encoder the tower's layer `i` stands for."""

    label: str
    full_depth: int
    default_grid: int
    build: Callable[[int, torch.dtype, str, int], torch.nn.Module]
    inputs: Callable[[torch.nn.Module, int], dict[str, torch.Tensor]]
    vision_inputs: Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    tower_layers: tuple[int, ...] = ()


BENCH_MODELS = {
    # Qwen2.5-VL-7B's ViT: 32 blocks, full attention at 7, 15, 23, 31 (windows of 8 x 8 patches elsewhere).
    "qwen2.5-vl-7b": BenchModel("Qwen2.5-VL 7B widths", 28, 36, build_qwen, qwen_inputs, qwen_pixels, (28, 4)),
    # CLIP ViT-L/14-336: 24 layers, all alike (transformers runs them all for `hidden_states[-2]`).
    "llava-1.5-7b": BenchModel("LLaVA-1.5 7B widths", 32, 24, build_llava, llava_inputs,
                               lambda model, inputs: inputs, (12, 12)),
    "qwen3-vl-8b": BenchModel("Qwen3-VL 8B widths", 36, 32, build_qwen3, qwen3_inputs),
    "llava-onevision-7b": BenchModel("LLaVA-OneVision 7B widths", 28, 27, build_llava_ov, llava_ov_inputs),
}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags both benchmark scripts take."""
    parser.add_argument("--model", choices=sorted(BENCH_MODELS), default="qwen2.5-vl-7b",
                        help="whose widths: Qwen2.5-VL-7B (M-RoPE, 1,296 visual tokens), LLaVA-1.5-7B (1D, 576) or "
                        "Qwen3-VL-8B (interleaved M-RoPE, DeepStack, 1,024) or LLaVA-OneVision-7B (1D, 1,485)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (the full models have 28 and 32)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="auto: bfloat16 on a GPU, float32 on a CPU (most have no bfloat16 matrix units: there a "
                        "bfloat16 prefill is many times slower than float32, which would flatter every share)")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (or 'cuda:N')")
    parser.add_argument("--grid", type=int,
                        help="visual tokens per side (default: 36 Qwen2.5-VL, 32 Qwen3-VL, 24 LLaVA, 27 LLaVA-OV)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is reported)")


def method_options(layers: int, ratio: float) -> dict[str, dict[str, Any]]:
    """Settings per method for a `layers`-deep model: in-LLM cuts at the middle layer, PDrop in three stages."""
    middle = max(1, layers // 2)
    stages = tuple(sorted({min(layers - 1, max(1, round(layers * quarter / 4))) for quarter in (1, 2, 3)}))
    return {
        "none": dict(layer=middle),
        "random": dict(ratio=ratio, layer=middle),
        "fastv": dict(ratio=ratio, layer=middle),
        "pdrop": dict(ratio=ratio, layers=stages),
        "ivc_prune": dict(ratio=ratio, layer=middle),
        "resprune": dict(ratio=ratio),
        "divprune": dict(ratio=ratio),
        "uniform": dict(ratio=ratio),
        "dart": dict(ratio=ratio, layer=middle),
        # The synthetic prompt has no question text: relevance to its 24 tokens after the picture costs the same.
        "cdpruner": dict(ratio=ratio, instruction="prompt_tail"),
        "vispruner": dict(ratio=ratio),
        "holov": dict(ratio=ratio),
        "visionzip": dict(ratio=ratio),
        "prumerge_plus": dict(ratio=ratio),
        "sparsevlm": dict(layers=stages),  # the official count (rank * 13.5); the matched one skips the SVD
    }


def _median_seconds(run: Callable[[], float], repeats: int) -> float:
    return statistics.median(run() for _ in range(repeats))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prefill_seconds(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Wall time of one prefill forward (with a KV cache, logits of the last token only)."""
    device = inputs["input_ids"].device
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(**inputs, use_cache=True, logits_to_keep=1)
    _sync(device)
    return time.perf_counter() - start


class Stopwatch:
    """Wall time spent in the forwards of `modules` while the block runs, per module (hooks; synchronised on a
    GPU). The modules may nest (a tower and its layers)."""

    def __init__(self, modules: list[torch.nn.Module], device: torch.device):
        self.seconds, self._device, self._handles = [0.0] * len(modules), device, []
        self._began = [0.0] * len(modules)
        for index, module in enumerate(modules):
            self._handles.append(module.register_forward_pre_hook(lambda *_, index=index: self._start(index)))
            self._handles.append(module.register_forward_hook(lambda *_, index=index: self._stop(index)))

    def _start(self, index: int) -> None:
        _sync(self._device)
        self._began[index] = time.perf_counter()

    def _stop(self, index: int) -> None:
        _sync(self._device)
        self.seconds[index] += time.perf_counter() - self._began[index]

    def __enter__(self) -> Stopwatch:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    return get_submodule(model, vision_arch_for(model).tower)


def llm_prefill_seconds(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """One prefill's wall time without the vision tower's share (where the prompt's pixels run through it)."""
    with Stopwatch([vision_tower(model)], inputs["input_ids"].device) as tower:
        total = prefill_seconds(model, inputs)
    return total - tower.seconds[0]


def encoder_seconds(model: torch.nn.Module, inputs: dict[str, torch.Tensor], stands_for: tuple[int, ...]) -> float:
    """The full vision encoder's time, estimated from one prefill through the benchmark's tower: its own parts
    (patch embedding, merger) as measured, plus each layer's time times the real layers it stands for."""
    tower = vision_tower(model)
    layers = get_submodule(tower, vision_arch_for(model).layers)
    device = inputs["input_ids"].device
    with Stopwatch([tower, *layers], device) as watch:
        prefill_seconds(model, inputs)
    whole, per_layer = watch.seconds[0], watch.seconds[1:]
    return whole - sum(per_layer) + sum(count * seconds for count, seconds in zip(stands_for, per_layer, strict=True))


def selection_seconds(model: torch.nn.Module, inputs: dict[str, torch.Tensor], method: str,
                      options: dict[str, Any]) -> tuple[float, int]:
    """One pruned prefill: the engine's selection time and how many visual tokens survived."""
    with prune(model, method, **options) as pruner:
        prefill_seconds(model, inputs)
    return pruner.last.select_seconds, len(pruner.last.kept[0])


def _where(options: dict[str, Any]) -> str:
    if "layers" in options:
        return "layers " + ", ".join(map(str, options["layers"]))
    return f"layer {options['layer']}" if "layer" in options else "before LLM"


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse the flags the benchmark scripts share (--layers, --repeats, --device, --grid) when they cannot work;
    fill in the model's default grid."""
    if args.grid is None:
        args.grid = BENCH_MODELS[args.model].default_grid
    if args.grid < 1:
        parser.error(f"--grid must be >= 1, got {args.grid}")
    if args.layers < 2:
        parser.error(f"--layers must be >= 2 (in-LLM methods cut at a layer K >= 1), got {args.layers}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"


def argument_parser() -> argparse.ArgumentParser:
    """This script's flags (benchmarks/gpu_suite.sh's commands are checked against them without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of the visual tokens kept")
    parser.add_argument("--methods", nargs="+", help="time only these methods (default: all)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    every_method = method_options(args.layers, args.ratio)
    unknown = sorted(set(args.methods or ()) - set(every_method))
    if unknown:
        parser.error(f"--methods: no benchmark settings for {unknown}; known: {sorted(every_method)}")

    bench = BENCH_MODELS[args.model]
    model = bench.build(args.layers, getattr(torch, args.dtype), args.device, args.grid)
    inputs = bench.inputs(model, args.grid)
    prefill_seconds(model, inputs)  # warm-up: first-call allocations and kernel selection
    unpruned = _median_seconds(lambda: llm_prefill_seconds(model, inputs), args.repeats)
    full_depth = unpruned * bench.full_depth / args.layers
    # The prompt with pixels through a tower of the real encoder's widths (the vision-tower methods' input).
    pixels = None if bench.vision_inputs is None else bench.vision_inputs(model, inputs)
    encoder = None
    if bench.tower_layers:
        encoder = _median_seconds(lambda: encoder_seconds(model, pixels, bench.tower_layers), args.repeats)

    n_visual, seq = int((inputs["input_ids"] == IMAGE).sum()), inputs["input_ids"].shape[1]
    print(f"{bench.label}, {args.layers} layers, {args.dtype}, {args.device}; {seq} prompt tokens of which "
          f"{n_visual} visual; unpruned prefill of the LLM {unpruned * 1e3:.0f} ms (median of {args.repeats}), "
          f"{full_depth * 1e3:.0f} ms at {bench.full_depth} layers (est.)"
          + (f"; the full vision encoder {encoder * 1e3:.0f} ms (est. from the tower's {len(bench.tower_layers)} "
             f"layers standing for {sum(bench.tower_layers)})" if encoder is not None else "") + "\n")
    print(f"| method | cut | kept visual | select (ms) | select / prefill | select / prefill, {bench.full_depth} "
          f"layers (est.) | select / prefill with the vision encoder, {bench.full_depth} layers (est.) |")
    print("|---|---|---|---|---|---|---|")
    for method, options in every_method.items():
        if args.methods and method not in args.methods:
            continue
        method_inputs = inputs
        if get_method(method).needs & VISION_INPUTS:
            if pixels is None:
                print(f"| {method} | before LLM | - | - | - | - | - (this model's vision tower is a small stand-in) |")
                continue
            method_inputs = pixels
        runs = [selection_seconds(model, method_inputs, method, options) for _ in range(args.repeats)]
        select = statistics.median(seconds for seconds, _ in runs)
        with_encoder = "-" if encoder is None else f"{select / (full_depth + encoder):.2%}"
        print(f"| {method} | {_where(options)} | {runs[0][1]} / {n_visual} | {select * 1e3:.1f} | "
              f"{select / unpruned:.2%} | {select / full_depth:.2%} | {with_encoder} |", flush=True)


if __name__ == "__main__":
    main()
