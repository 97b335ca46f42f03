"""Rows per second at several batch sizes, unpruned and with IVC-Prune at 0.5, with the ratio to batch size 1
measured in the same run, the peak memory, and whether the batched answers equal those of batch size 1.

    python benchmarks/throughput.py [--model tiny|qwen2.5-vl-7b] [--batches 1 2 4 8] [--rows 16] [--new-tokens 8]
        [--layers 4] [--grid 12] [--device cpu|cuda] [--dtype float32|bfloat16] [--attn sdpa|eager|flash_attention_2]

- `tiny`: the tiny random Qwen2.5-VL through the harness's own path (`PrunedVLM.generate_batch`), on the DemoMCQ
  pictures (56 to 112 pixels: rows of one batch keep different numbers of tokens), rows grouped by size as
  `run.py --batch-size` groups them. "same answers" counts the rows whose batched answer equals the batch-size-1
  answer, out of those whose greedy steps all had a top-2 logit margin above float noise (1e-4).
- `qwen2.5-vl-7b`: a random Qwen2.5-VL with the 7B text widths and `--layers` decoder layers (benchmarks/
  selection_time.py), one synthetic image of `--grid`² visual tokens per row fed as embeddings; rows per second of
  the prefill (one forward with a KV cache; generate() cannot take these embeddings with the input ids the engine
  needs); its random weights make answers meaningless, so only the speed is reported.

Rows per second is rows over the wall time of answering all of them (`--rows`, in batches), after one untimed
warm-up batch per setting. Peak memory: the CUDA allocator's peak on a GPU; on a CPU the process's peak resident
size sampled every millisecond (so the weights count too). Each setting runs once: on a shared machine repeat the
command before trusting a difference of a few percent.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Callable

import torch

from vlmeval_ivcp import prune
from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.models.registry import build_model
from vlmeval_ivcp.runner.batching import group_rows

NOISE = 1e-4
SETTINGS = {"none": {}, "ivc_prune 0.5": dict(method="ivc_prune", ratio=0.5)}


class PeakMemory:
    """Peak memory of what runs inside the block: CUDA allocator peak, or sampled resident size on a CPU."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = torch.device(device), 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = 4096
        while not self._stop.is_set():
            resident = int(Path("/proc/self/statm").read_text().split()[1]) * page
            self.peak = max(self.peak, resident)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def timed(run: Callable[[], Any], device: str) -> tuple[Any, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def tiny_rows(args: argparse.Namespace, work: Path) -> tuple[Callable[[list[int]], list], list]:
    """The tiny model's `answer(rows) -> [(answer, margin)]` and its rows (DemoMCQ messages, repeated)."""
    wrapper = build_model("TinyQwen2.5-VL", max_new_tokens=args.new_tokens, attn_implementation=args.attn,
                          dtype=args.dtype, device_map=args.device if args.device != "cpu" else None)
    dataset = build_dataset("DemoMCQ", write_demo_mcq(work).parent)
    demo = [dataset.message(position) for position in range(len(dataset.data))]
    messages = [demo[row % len(demo)] for row in range(args.rows)]

    def answer(rows: list[int], setting: dict) -> list:
        wrapper.set_method(setting.get("method", "none"), **{k: v for k, v in setting.items() if k != "method"},
                           **({"layer": 2} if setting else {}))
        answers = wrapper.generate_batch([messages[row] for row in rows], dataset.name)
        return [(text, stats.decision_margin) for text, stats in zip(answers, wrapper.batch_stats)]

    return answer, messages


def wide_rows(args: argparse.Namespace) -> tuple[Callable[[list[int]], list], list]:
    """The 7B-width model's `answer(rows)`: `generate()` on copies of one synthetic prompt (answers unchecked)."""
    from selection_time import build_qwen, qwen_inputs

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = build_qwen(args.layers, dtype, args.device, args.grid)
    model.config.get_text_config()._attn_implementation = args.attn
    one = qwen_inputs(model, args.grid)

    def answer(rows: list[int], setting: dict) -> list:
        batch = {key: value.expand(len(rows), *value.shape[1:]) if key != "image_grid_thw"
                 else value.expand(len(rows), -1) for key, value in one.items()}
        layer = max(1, args.layers // 2)
        options = dict(setting or dict(method="none"), layer=layer)
        # generate() would drop the input ids the engine locates images by (the picture comes as embeddings): the
        # prefill alone is timed, where pruning saves.
        with torch.no_grad(), prune(model, **options):
            model(**batch, use_cache=True, logits_to_keep=1)
        return [(None, float("inf"))] * len(rows)

    return answer, list(range(args.rows))


def measure(answer: Callable, rows: list, messages: list | None, setting: dict, batch: int, device: str):
    """Answers every row in batches of `batch` (grouped by size for messages); returns (answers by row, seconds,
    peak memory)."""
    groups = group_rows(rows, messages, batch) if messages is not None else [
        rows[start : start + batch] for start in range(0, len(rows), batch)]
    answer(groups[0], setting)  # warm-up
    by_row: dict[int, Any] = {}
    with PeakMemory(device) as memory:
        def run() -> None:
            for group in groups:
                for row, result in zip(group, answer(group, setting), strict=True):
                    by_row[row] = result
        _, seconds = timed(run, device)
    return by_row, seconds, memory.peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "qwen2.5-vl-7b"], default="tiny")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rows", type=int, default=16, help="rows answered per setting")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the 7B-width model")
    parser.add_argument("--grid", type=int, default=12, help="visual tokens per side of the 7B-width model's image")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa")
    args = parser.parse_args(argv)
    if 1 not in args.batches:
        parser.error("--batches must include 1: every ratio is to batch size 1")
    torch.manual_seed(0)
    with TemporaryDirectory() as work:
        answer, messages = tiny_rows(args, Path(work)) if args.model == "tiny" else wide_rows(args)
        rows = list(range(len(messages)))
        grouped = messages if args.model == "tiny" else None
        print(f"{args.model}, {args.device}, {args.dtype}, {args.attn}; {len(rows)} rows, "
              f"{args.new_tokens} new tokens, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
        print("| setting | batch | rows/s | × batch 1 | peak memory (MiB) | same answers |")
        print("|---|---|---|---|---|---|")
        for name, setting in SETTINGS.items():
            single = None
            for batch in sorted(args.batches):
                by_row, seconds, peak = measure(answer, rows, grouped, setting, batch, args.device)
                rate = len(rows) / seconds
                single = single or (rate, by_row)
                clear = [row for row in rows if single[1][row][1] > NOISE]
                same = sum(by_row[row][0] == single[1][row][0] for row in clear)
                check = f"{same} / {len(clear)}" if args.model == "tiny" else "-"
                print(f"| {name} | {batch} | {rate:.2f} | {rate / single[0]:.2f} | {peak / 2**20:.0f} | {check} |",
                      flush=True)


if __name__ == "__main__":
    main()
