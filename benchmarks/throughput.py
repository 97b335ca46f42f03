"""Rows per second at several batch sizes, unpruned and with IVC-Prune at 0.5, with the ratio to batch size 1
measured in the same run, the peak memory, and whether the batched answers equal those of batch size 1.

    python benchmarks/throughput.py [--model tiny|qwen2.5-vl-7b] [--batches 1 2 4 8] [--rows 16] [--new-tokens 8]
        [--repeats 1] [--layers 4] [--grid 12] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--attn sdpa|eager|flash_attention_2] [--threads N]

- `tiny`: the tiny random Qwen2.5-VL through the harness's own loop (`runner.run.answer_rows`, as `run.py
  --batch-size` runs it: rows grouped by size, each batch's `generate_batch` and its records appended to a
  prediction store with one disk sync), on the DemoMCQ questions repeated to `--rows`. Its 560 to 672-pixel pictures are all
  read at 224 x 224 (64 visual tokens) under the tiny model's pixel budget; its byte-level tokenizer makes the
  prompts 272 or 278 tokens long. "same answers" counts the rows whose batched answer equals the batch-size-1
  answer, out of those whose greedy steps all had a top-2 logit margin above float noise (1e-4).
- `qwen2.5-vl-7b`: a random Qwen2.5-VL with the 7B text widths and `--layers` decoder layers (benchmarks/
  selection_time.py: a 1,024-token vocabulary instead of 152,064, no vision tower), one synthetic image of
  `--grid`² visual tokens per row fed as embeddings; rows per second of the prefill (one forward with a KV cache;
  generate() cannot take these embeddings with the input ids the engine needs); its random weights make answers
  meaningless, so only the speed is reported.

Rows per second is rows over the wall time of answering all of them (`--rows`, in batches), after one untimed
warm-up batch per setting. With `--repeats` R, the batch sizes are measured in turn R times (1, 2, 4, 8, 1, 2, ...)
so that a change in the machine's load falls on all of them; the table shows the median rows per second, the
median of the R ratios to batch size 1 measured next to each other, and their range. Peak memory: the CUDA
allocator's peak on a GPU; on a CPU the process's peak resident size sampled every millisecond (so the weights
count too).
"""

from __future__ import annotations

import argparse
import statistics
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
from vlmeval_ivcp.runner.run import answer_rows
from vlmeval_ivcp.runner.store import PredictionStore

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


def tiny_rows(args: argparse.Namespace, work: Path) -> tuple[Callable[..., dict], list]:
    """The tiny model's `answer(rows, setting, batch) -> {row: (answer, margin)}` and its rows (DemoMCQ messages,
    repeated)."""
    wrapper = build_model("TinyQwen2.5-VL", max_new_tokens=args.new_tokens, attn_implementation=args.attn,
                          dtype=args.dtype, device_map=args.device if args.device != "cpu" else None)
    dataset = build_dataset("DemoMCQ", write_demo_mcq(work).parent)
    demo = [dataset.message(position) for position in range(len(dataset.data))]
    messages = [demo[row % len(demo)] for row in range(args.rows)]
    files = iter(range(1_000_000))

    def answer(rows: list[int], setting: dict, batch: int) -> dict:
        wrapper.set_method(setting.get("method", "none"), **{k: v for k, v in setting.items() if k != "method"},
                           **({"layer": 2} if setting else {}))
        store = PredictionStore(work / f"predictions{next(files)}.jsonl")  # one file per pass over the rows
        answered = answer_rows(wrapper, dataset, [messages[row] for row in rows], rows, store, batch)
        return {row: (text, stats.decision_margin) for row, (text, stats) in answered.items()}

    return answer, messages


def wide_rows(args: argparse.Namespace) -> tuple[Callable[..., dict], list]:
    """The 7B-width model's `answer(rows, setting, batch)`: the prefill of copies of one synthetic prompt, `batch`
    at a time (answers unchecked)."""
    from selection_time import build_qwen, qwen_inputs

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = build_qwen(args.layers, dtype, args.device, args.grid)
    model.config.get_text_config()._attn_implementation = args.attn
    one = qwen_inputs(model, args.grid)
    text = model.config.get_text_config()
    print(f"7B widths (hidden {text.hidden_size}, {text.num_attention_heads} query / {text.num_key_value_heads} KV "
          f"heads, MLP {text.intermediate_size}), {text.num_hidden_layers} layers, random weights; vocabulary "
          f"shrunk to {text.vocab_size} (152,064 in Qwen2.5-VL-7B); vision tower skipped ({args.grid}² visual "
          f"tokens fed as embeddings); prefill only")

    def answer(rows: list[int], setting: dict, batch: int) -> dict:
        layer = max(1, args.layers // 2)
        options = dict(setting or dict(method="none"), layer=layer)
        for start in range(0, len(rows), batch):
            size = len(rows[start : start + batch])
            inputs = {key: value.expand(size, *value.shape[1:]) if key != "image_grid_thw"
                      else value.expand(size, -1) for key, value in one.items()}
            # generate() would drop the input ids the engine locates images by (the picture comes as embeddings):
            # the prefill alone is timed, where pruning saves.
            with torch.no_grad(), prune(model, **options):
                model(**inputs, use_cache=True, logits_to_keep=1)
        return dict.fromkeys(rows, (None, float("inf")))

    return answer, list(range(args.rows))


def measure(answer: Callable[..., dict], rows: list, setting: dict, batch: int, device: str):
    """Answers every row in batches of `batch`; returns (answers by row, seconds, peak memory)."""
    answer(rows[:batch], setting, batch)  # warm-up
    with PeakMemory(device) as memory:
        by_row, seconds = timed(lambda: answer(rows, setting, batch), device)
    return by_row, seconds, memory.peak


def same_answers(single: dict, by_row: dict, rows: list) -> tuple[int, int]:
    """Rows whose answer equals batch size 1's, and rows whose batch-size-1 steps were clear of float noise."""
    clear = [row for row in rows if single[row][1] > NOISE]
    return sum(by_row[row][0] == single[row][0] for row in clear), len(clear)


def argument_parser() -> argparse.ArgumentParser:
    """This script's flags (benchmarks/gpu_suite.sh's commands are checked against them without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "qwen2.5-vl-7b"], default="tiny")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rows", type=int, default=16, help="rows answered per setting")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="times each batch size is measured, in turn")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the 7B-width model")
    parser.add_argument("--grid", type=int, default=12, help="visual tokens per side of the 7B-width model's image")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if 1 not in args.batches:
        parser.error("--batches must include 1: every ratio is to batch size 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with TemporaryDirectory() as work:
        answer, messages = tiny_rows(args, Path(work)) if args.model == "tiny" else wide_rows(args)
        rows = list(range(len(messages)))
        work_done = f"{args.new_tokens} new tokens" if args.model == "tiny" else "prefill only"
        print(f"{args.model}, {args.device}, {args.dtype}, {args.attn}; {len(rows)} rows, {work_done}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
        print("| setting | batch | rows/s | × batch 1 | range of × batch 1 | peak memory (MiB) | same answers |")
        print("|---|---|---|---|---|---|---|")
        batches = sorted(args.batches)
        for name, setting in SETTINGS.items():
            rates: dict[int, list[float]] = {batch: [] for batch in batches}
            peaks, checks = dict.fromkeys(batches, 0), {batch: [0, 0] for batch in batches}
            single = None
            for _ in range(args.repeats):
                for batch in batches:
                    by_row, seconds, peak = measure(answer, rows, setting, batch, args.device)
                    rates[batch].append(len(rows) / seconds)
                    peaks[batch] = max(peaks[batch], peak)
                    single = single or by_row  # the first pass at batch size 1
                    checks[batch] = [a + b for a, b in zip(checks[batch], same_answers(single, by_row, rows))]
            for batch in batches:
                ratios = [rate / base for rate, base in zip(rates[batch], rates[1])]
                check = "{} / {}".format(*checks[batch]) if args.model == "tiny" else "-"
                print(f"| {name} | {batch} | {statistics.median(rates[batch]):.2f} | {statistics.median(ratios):.2f} "
                      f"| {min(ratios):.2f} - {max(ratios):.2f} | {peaks[batch] / 2**20:.0f} | {check} |", flush=True)


if __name__ == "__main__":
    main()
