"""`make demo`: the runs of a config and their table, then one picture per pruning method of the tokens it kept.

    python -m vlmeval_ivcp.demo --config configs/demo.yaml

The pictures show the first row of the config's first dataset, answered once more by the config's first model under
each method (at ratio 0.5 where the config has it), drawn by `vlmeval_ivcp.visualize.draw_selection`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from .models.base import split_message
from .runner.cli import main as run_main
from .runner.config import RunConfig, RunPoint, load_config
from .runner.run import _build_dataset, _build_wrapper
from .visualize import draw_selection


def pictured_points(config: RunConfig) -> list[RunPoint]:
    """One run per pruning method of the config: its ratio-0.5 run when there is one, else its first."""
    chosen: dict[str, RunPoint] = {}
    for point in config.points:
        if point.method == "none":
            continue
        earlier = chosen.get(point.method)
        if earlier is None or (point.options.get("ratio") == 0.5 and earlier.options.get("ratio") != 0.5):
            chosen[point.method] = point
    return list(chosen.values())


def draw_pictures(config: RunConfig, out: Path) -> list[Path]:
    """Answers the first row of the first dataset once per pictured run and writes `<out>/<run>.png` for each."""
    model = config.models[0]
    wrapper = _build_wrapper(model, model.kwargs)
    dataset = _build_dataset(config.datasets[0], config.data_root, wrapper)
    message = dataset.message(0)
    images = [Image.open(path).convert("RGB") for path in split_message(message)[0]]
    layouts = wrapper.view_layouts(images) if hasattr(wrapper, "view_layouts") else None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for point in pictured_points(config):
        wrapper.set_method(point.method, **point.options)
        wrapper.generate(message, dataset=dataset.name)
        title = f"{model.name} · {point.name} · {dataset.name} row 0"
        picture = draw_selection(images, wrapper.pruner.last, layouts=layouts, fit=wrapper.view_fit, title=title)
        path = out / f"{point.name}.png"
        picture.save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="YAML run config (default: configs/demo.yaml)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads of torch (default 1: the tiny model's matrices gain nothing from more, and on shared cores "
        "waiting threads slow every step several times over)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    status = run_main(["--config", args.config])
    if status:
        return status
    config = load_config(args.config)
    out = Path(config.work_dir) / "pictures"
    paths = draw_pictures(config, out)
    print(f"\nKept tokens drawn over row 0 of {config.datasets[0]}, one picture per method, in {out}/:")
    for path in paths:
        print(f"  {path}")
    print(f"Tables and plots of these runs: python tools/make_tables.py {config.work_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
