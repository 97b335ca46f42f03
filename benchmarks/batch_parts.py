"""Where a batch's time goes: CPU time per row of the tiny Qwen2.5-VL's harness step by part (reading and fitting
the pictures, the processor, the model's `generate`, the rest), at batch size 1 and larger, so that per-row serial
work shows next to work a batch shares.

    python benchmarks/batch_parts.py [--method none|ivc_prune] [--batches 1 8] [--repeats 5] [--threads 1]

The rows are the 8 DemoMCQ questions through `runner.run.answer_batch` (as benchmarks/throughput.py). CPU time, not
wall time: on a shared machine the load of other processes changes it little, so parts can be compared between runs;
it counts work, not waiting (a disk sync or an idle thread costs none) and, with several threads, adds their times.
Medians of `--repeats` passes (the batch sizes in turn), after one untimed pass.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.datasets.registry import build_dataset
from vlmeval_ivcp.models.registry import build_model
from vlmeval_ivcp.runner.batching import group_rows
from vlmeval_ivcp.runner.run import answer_batch
from vlmeval_ivcp.runner.store import PredictionStore

PARTS = ("read_image", "fit_image", "encode", "generate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["none", "ivc_prune"], default="none")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wrapper = build_model("TinyQwen2.5-VL", max_new_tokens=8, dtype="float32")
    if args.method != "none":
        wrapper.set_method(args.method, ratio=0.5, layer=2)
    spent: dict[str, float] = {}

    def counted(name: str, call):
        def run(*pass_on, **options):
            start = time.thread_time()  # pictures are read on several threads: each call counts its own thread
            try:
                return call(*pass_on, **options)
            finally:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - start
        return run

    wrapper.read_image = counted("read_image", wrapper.read_image)
    wrapper.fit_image = counted("fit_image", wrapper.fit_image)
    wrapper.encode = counted("encode", wrapper.encode)
    wrapper.model.generate = counted("generate", wrapper.model.generate)
    with TemporaryDirectory() as work:
        dataset = build_dataset("DemoMCQ", write_demo_mcq(work).parent)
        messages = [dataset.message(position) for position in range(len(dataset.data))]
        rows = list(range(len(messages)))
        passes = iter(range(1_000_000))
        totals: dict[int, list[dict[str, float]]] = {batch: [] for batch in args.batches}
        for repeat in range(args.repeats + 1):
            for batch in args.batches:
                store = PredictionStore(Path(work) / f"pass{next(passes)}.jsonl")
                spent.clear()
                start = time.process_time()
                for group in group_rows(rows, messages, batch):
                    answer_batch(wrapper, dataset, [messages[row] for row in group], group, store)
                spent["total"] = time.process_time() - start
                if repeat:
                    totals[batch].append(dict(spent))
    print(f"tiny Qwen2.5-VL, {args.method}, {len(rows)} rows, 8 new tokens, {args.threads} torch thread(s); "
          f"CPU ms per row, median of {args.repeats}\n")
    print("| batch | total | " + " | ".join(PARTS) + " | rest |")
    print("|---" * (len(PARTS) + 3) + "|")
    for batch, passes_of in totals.items():
        median = {name: statistics.median(p.get(name, 0.0) for p in passes_of) * 1000 / len(rows)
                  for name in (*PARTS, "total")}
        rest = median["total"] - sum(median[name] for name in PARTS)
        print(f"| {batch} | {median['total']:.1f} | " + " | ".join(f"{median[name]:.1f}" for name in PARTS)
              + f" | {rest:.1f} |")


if __name__ == "__main__":
    main()
