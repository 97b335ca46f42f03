"""Checks of a run config that need no model: every problem found before any weights load, one line each.

`preflight(config, mode, judge)` returns the problems (an empty list: go ahead):
- every dataset's TSV exists and its header has the columns its benchmark needs (a missing file names where
  VLMEvalKit publishes it and the command that fetches it, `datasets.sources`);
- every model's checkpoint can be found (a local folder, or a hub id that is cached when the hub is offline);
- every method's layers lie within the model's depth (read from `config.json`, `runner.checkpoints`);
- an input-side method (`downsample`) is only paired with families whose visual tokens follow the picture's size
  (not LLaVA-1.5);
- a judge is given when a benchmark is scored by one, and its API key is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..datasets.demo import DEMO_MCQ_NAME
from ..datasets.judged import JudgedDataset
from ..datasets.registry import dataset_class
from ..datasets.sources import how_to_get
from ..datasets.tsv import lmu_root, tsv_path
from ..models.registry import MODEL_CLASSES
from ..pruning.registry import get_method, make_config
from .checkpoints import depth, inspect_checkpoint, model_path
from .config import RunConfig, registry_adapter


def dataset_problems(name: str, root: str | os.PathLike | None) -> list[str]:
    """A missing TSV, one that cannot be read, or a header without the columns the benchmark needs."""
    if name == DEMO_MCQ_NAME:
        return []  # written by the run itself
    path = tsv_path(name, root)
    if not path.is_file():
        folder = Path(root) if root is not None else lmu_root()
        return [f"{name}: {path} does not exist; {how_to_get(name, folder)}"]
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError) as error:
        return [f"{name}: {path} cannot be read: {error}"]
    needed = list(dict.fromkeys(("index", *dataset_class(name).REQUIRED_COLUMNS)))
    missing = [column for column in needed if column not in header]
    if not {"image", "image_path"} & set(header):
        missing.append("image (or image_path)")
    if missing:
        return [f"{name}: {path} lacks column(s) {missing}; its header has {header}"]
    return []


def model_problems(config: RunConfig) -> list[str]:
    """Checkpoints that cannot be found, and method layers at or beyond a model's decoder depth."""
    problems = []
    for model in config.models:
        checkpoint = inspect_checkpoint(model_path(model))
        if checkpoint.problem:
            problems.append(f"model {model.name}: {checkpoint.problem}")
        layers, where = depth(checkpoint)
        if layers is None:
            continue
        for point in config.points:
            if point.method == "none":
                continue
            for cut in make_config(point.method, **point.options).cuts():
                if cut.layer != 0 and not 1 <= cut.layer < layers:
                    problems.append(
                        f"method {point.name}: layer {cut.layer} is not within {model.name}'s {layers} decoder layers "
                        f"(K must be in [1, {layers - 1}]; depth {where})"
                    )
    return problems


def input_method_problems(config: RunConfig) -> list[str]:
    """Input-side methods (`downsample`) paired with a family whose visual-token count is fixed (LLaVA-1.5)."""
    points = [point for point in config.points if point.method != "none" and get_method(point.method).changes_inputs]
    if not points:
        return []
    from ..models.base import input_method_problem  # model code (seconds): only for a run that needs it

    problems = []
    for model in config.models:
        wrapper_class = (MODEL_CLASSES[model.cls] if model.cls is not None else registry_adapter(model.name)).load()
        for point in points:
            problem = input_method_problem(wrapper_class, point.method)
            if problem:
                problems.append(f"method {point.name} on model {model.name}: {problem}")
    return problems


def judge_problems(config: RunConfig, mode: str, judge: str | None) -> list[str]:
    """A benchmark scored by a judge with no `--judge`, or a judge without `OPENAI_API_KEY`."""
    if mode == "infer":
        return []
    judged = [name for name in config.datasets if issubclass(dataset_class(name), JudgedDataset)]
    if judged and not judge:
        return [f"datasets {judged} are scored by a judge: give --judge MODEL (an OpenAI-compatible server at "
                "OPENAI_API_BASE, key OPENAI_API_KEY), or run --mode infer"]
    if judge and not os.environ.get("OPENAI_API_KEY"):
        return [f"--judge {judge}: OPENAI_API_KEY is not set (any placeholder, e.g. EMPTY, for a local server)"]
    return []


def preflight(config: RunConfig, mode: str = "all", judge: str | None = None) -> list[str]:
    """Every problem of `config` that can be seen without loading a model, one line each (see the module doc)."""
    problems = [line for name in config.datasets for line in dataset_problems(name, config.data_root)]
    if mode != "eval":  # scoring stored predictions loads no model
        problems += model_problems(config) + input_method_problems(config)
    return problems + judge_problems(config, mode, judge)
