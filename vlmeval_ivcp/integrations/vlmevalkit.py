"""Register this project's pruning-aware models and datasets into an importable VLMEvalKit checkout.

After `register()`, VLMEvalKit's own `run.py` finds them: models in `vlmeval.config.supported_VLM` (as
`functools.partial`, like its own entries) and as attributes of `vlmeval.vlm` (for its `--config` JSON); dataset
classes at the front of `vlmeval.dataset.DATASET_CLASSES`, as attributes of `vlmeval.dataset` and in its
`SUPPORTED_DATASETS`, for the benchmark names VLMEvalKit's own classes lack (RefCOCO, DemoMCQ): a benchmark it has
keeps its own download, prompt and scoring.

What VLMEvalKit does with them, and so what the classes registered here provide:

- `run.py` builds a dataset with `build_dataset(name)` (the first class of `DATASET_CLASSES` whose
  `supported_datasets()` has the name, called as `cls(dataset=name)`) or, for `--config`, with only the keys its
  `__init__` names; it reads `dataset.MODALITY` and `dataset.TYPE`.
- `vlmeval/inference.py` builds a model from `supported_VLM[name]`, adding `use_vllm=` for names holding
  "Qwen2.5-VL"; calls `model.set_dump_image(dataset.dump_image)` on every local model, asks
  `model.use_custom_prompt(dataset_name)` if the model has it, else `dataset.build_prompt(row)`, and then
  `model.generate(message=..., dataset=dataset_name)`. It writes the dataset's table without `image`, plus a
  `prediction` column, to `<model>_<dataset>.xlsx` (`.tsv` or `.json` with `PRED_FORMAT`).
- `run.py` then calls `dataset.evaluate(that_file, **judge_kwargs)`, the kwargs holding the judge's short name under
  `model` ("exact_matching" for none) with `nproc`, `retry`, `verbose` and more, and logs the returned dict with
  `json.dumps`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from ..datasets.base import ImageDataset, Message
from ..datasets.demo import DEMO_MCQ_NAME, write_demo_mcq
from ..datasets.registry import DATASET_CLASSES
from ..datasets.tsv import atomic_write_bytes, summarize_values
from ..evaluation.judge import Judge
from ..models.base import PrunedVLM
from ..models.registry import MODEL_CLASSES, LazyClass, supported_models

INSTALL_HINT = (
    "VLMEvalKit is not importable. It is installed from its git checkout, not from the package registry: "
    "git clone https://github.com/open-compass/VLMEvalKit && pip install -e VLMEvalKit"
)

# The judge name by which VLMEvalKit's judge kwargs ask to score by rule only.
EXACT_MATCHING = "exact_matching"
# The short judge names VLMEvalKit's run.py picks for our benchmarks, and the API models they stand for there.
JUDGE_ALIASES = {
    "chatgpt-0125": "gpt-3.5-turbo-0125",
    "gpt-4-turbo": "gpt-4-1106-preview",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
}


def _vlmevalkit() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        return tuple(importlib.import_module(name) for name in ("vlmeval.config", "vlmeval.vlm", "vlmeval.dataset"))
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error


# Models.


def on_this_process_gpu(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` putting the whole model on this process's current GPU, unless they name a `device_map` or no GPU.

    VLMEvalKit builds a model without saying where it goes and expects it on the process's GPU (its launcher picks
    the GPU per rank before the model is built); our wrappers load on the CPU unless told.
    """
    if "device_map" in kwargs or not torch.cuda.is_available():
        return kwargs
    return {**kwargs, "device_map": {"": torch.cuda.current_device()}}


class VLMEvalKitModel:
    """How VLMEvalKit builds a local model: with `use_vllm` for some names, and without saying where it goes."""

    def __init__(self, *args: Any, use_vllm: bool = False, **kwargs: Any) -> None:
        # VLMEvalKit passes `use_vllm` to every model whose name holds "Qwen2.5-VL"; the pruning runs inside the
        # transformers forward, so a vLLM engine would silently evaluate the unpruned model.
        if use_vllm:
            raise ValueError("use_vllm is not supported: visual-token pruning runs inside the transformers model")
        super().__init__(*args, **on_this_process_gpu(kwargs))


def vlmevalkit_model(cls: type[PrunedVLM]) -> type[PrunedVLM]:
    """`cls` with the VLMEvalKit model interface, under the same name."""
    return type(cls.__name__, (VLMEvalKitModel, cls), {"__module__": __name__, "__doc__": cls.__doc__})


def with_classes(factory: partial, swap: dict[LazyClass, type]) -> partial:
    """`factory` with each adapter of `swap` it builds (as its function or an argument) replaced by `swap`'s class."""

    def swapped(value: Any) -> Any:
        return swap.get(value, value) if isinstance(value, LazyClass) else value

    return partial(swapped(factory.func), *map(swapped, factory.args), **factory.keywords)


# Datasets.


class VLMEvalKitDataset:
    """The VLMEvalKit dataset interface over one of our benchmark families (the next class in the MRO)."""

    MODALITY = "IMAGE"
    # The names VLMEvalKit builds this class for: ours that VLMEvalKit's own classes do not have (set by `register`).
    VLMEVALKIT_NAMES: tuple[str, ...] = ()

    def __init__(self, dataset: str, **options: Any) -> None:
        if dataset == DEMO_MCQ_NAME:
            # VLMEvalKit prepares a benchmark's TSV when it builds the dataset; the demo one is generated.
            write_demo_mcq(options.get("root"))
        super().__init__(dataset, **options)
        self.dataset_name = dataset

    @classmethod
    def supported_datasets(cls) -> list[str]:
        return list(cls.VLMEVALKIT_NAMES)

    def dump_image(self, line: pd.Series) -> list[str]:
        """The local image files of a row of `self.data` (VLMEvalKit passes rows, which carry their `index`)."""
        matches = (self.data["index"] == line["index"]).to_numpy().nonzero()[0]
        if len(matches) != 1:
            raise KeyError(f"{self.dataset_name}: no row with index {line['index']!r}")
        return self.image_paths(int(matches[0]))

    def build_prompt(self, line: pd.Series | int) -> Message:
        """The whole message of a row (or of the row at a position): its images, then the family's text."""
        row = self.data.iloc[line] if isinstance(line, int) else line
        images = [{"type": "image", "value": path} for path in self.dump_image(row)]
        return images + super().build_prompt(row)

    def evaluate(self, eval_file: str, **judge_kwargs: Any) -> dict[str, Any]:
        """Scores of VLMEvalKit's prediction file; also written to `<eval_file without suffix>_score.json`."""
        table = with_predictions(self.data, read_predictions(eval_file), eval_file)
        report = super().evaluate(table, judge=judge_from_kwargs(judge_kwargs, eval_file))
        return save_scores(report, eval_file)


def config_signature(family: type[ImageDataset]) -> inspect.Signature:
    """`family`'s constructor with `name` spelled `dataset`, VLMEvalKit's keyword for it.

    `run.py --config` passes a dataset only the keys its `__init__` names (`root`, a grounding set's `frame`, ...).
    """
    parameters = inspect.signature(family.__init__).parameters.values()
    return inspect.Signature([p.replace(name="dataset") if p.name == "name" else p for p in parameters])


def vlmevalkit_dataset(family: type[ImageDataset], taken: set[str] = frozenset()) -> type:
    """`family` with the VLMEvalKit dataset interface, under the same name, built by VLMEvalKit for the names of
    `family` that are not in `taken` (also by its class name from a `--config` JSON, for any of them)."""

    def __init__(self: Any, dataset: str, **options: Any) -> None:
        VLMEvalKitDataset.__init__(self, dataset, **options)

    __init__.__signature__ = config_signature(family)  # type: ignore[attr-defined]
    names = tuple(name for name in family.SUPPORTED if name not in taken)
    return type(
        family.__name__,
        (VLMEvalKitDataset, family),
        {"__init__": __init__, "__module__": __name__, "VLMEVALKIT_NAMES": names},
    )


# Scoring VLMEvalKit's prediction files.

# Every cell as text, as our benchmark files are read, so an index such as "007" or an answer such as "NA" survives.
_PREDICTION_READERS: dict[str, Callable[[str], pd.DataFrame]] = {
    ".xlsx": lambda path: pd.read_excel(path, dtype=str, keep_default_na=False),
    ".tsv": lambda path: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False),
    ".json": lambda path: pd.DataFrame(json.loads(Path(path).read_text(encoding="utf-8"))),
}


def read_predictions(eval_file: str) -> dict[str, str]:
    """`index` (as text) -> `prediction` of a VLMEvalKit prediction file (.xlsx, .tsv or .json records)."""
    suffix = Path(eval_file).suffix
    if suffix not in _PREDICTION_READERS:
        known = sorted(_PREDICTION_READERS)
        raise ValueError(f"{eval_file}: VLMEvalKit writes predictions as one of {known}, not {suffix!r}")
    frame = _PREDICTION_READERS[suffix](eval_file)
    missing = [column for column in ("index", "prediction") if column not in frame.columns]
    if missing:
        raise ValueError(f"{eval_file}: missing column(s) {missing}; the file has {list(frame.columns)}")
    return {str(index): str(answer) for index, answer in zip(frame["index"], frame["prediction"], strict=True)}


def with_predictions(data: pd.DataFrame, predictions: dict[str, str], eval_file: str) -> pd.DataFrame:
    """The benchmark's rows (as read from its TSV, without `image`) with their `prediction`.

    The benchmark's own cells are used rather than the file's, whose types a spreadsheet round trip changes.
    VLMEvalKit adds `prediction` to the dataset's table and drops `image` from it in place: both are dropped first.
    """
    keys = [str(index) for index in data["index"]]
    absent = [key for key in keys if key not in predictions]
    if absent:
        raise ValueError(f"{eval_file}: no prediction for {len(absent)} row(s), indices {summarize_values(absent)}")
    table = data.drop(columns=[c for c in ("image", "prediction") if c in data.columns])
    return table.assign(prediction=[predictions[key] for key in keys])


def judge_from_kwargs(judge_kwargs: dict[str, Any], eval_file: str) -> Judge | None:
    """The judge VLMEvalKit asks for under `model`, or None to score by rule only.

    As in VLMEvalKit's own datasets, "exact_matching" or an unset OPENAI_API_KEY means no judge (the latter with a
    warning). The server is OPENAI_API_BASE; VLMEvalKit's LOCAL_LLM names the model a local server runs instead.
    Answers are cached beside the predictions.
    """
    name = judge_kwargs.get("model", EXACT_MATCHING)
    if name == EXACT_MATCHING:
        return None
    if not os.environ.get("OPENAI_API_KEY"):
        warnings.warn(f"OPENAI_API_KEY is not set: scoring {eval_file} by rule only, without the judge {name!r}")
        return None
    model = os.environ.get("LOCAL_LLM") or JUDGE_ALIASES.get(name, name)
    cache = f"{Path(eval_file).with_suffix('')}_judge_cache.jsonl"
    retries, nproc = int(judge_kwargs.get("retry", 3)), int(judge_kwargs.get("nproc", 4))  # VLMEvalKit's --api-nproc
    return Judge(model, max_retries=retries, nproc=nproc, cache_path=cache)


def _plain(value: Any) -> Any:
    """A JSON value for a numpy scalar (or text for anything else json cannot write)."""
    return value.item() if hasattr(value, "item") else str(value)


def save_scores(report: dict[str, Any], eval_file: str) -> dict[str, Any]:
    """Writes `report` to `<eval_file without suffix>_score.json` and returns it as plain JSON values.

    run.py only logs the scores, with `json.dumps`, so numpy numbers would break the log and the file keeps them.
    """
    text = json.dumps(report, indent=2, default=_plain)
    atomic_write_bytes(f"{Path(eval_file).with_suffix('')}_score.json", (text + "\n").encode("utf-8"))
    return json.loads(text)


def register() -> dict[str, list[str]]:
    """Add every model and dataset of this project to VLMEvalKit's registries; returns what was added."""
    config, vlm, dataset = _vlmevalkit()
    models = {adapter: vlmevalkit_model(adapter.load()) for adapter in MODEL_CLASSES.values()}
    for name, factory in supported_models.items():
        config.supported_VLM[name] = with_classes(factory, models)
    for cls in models.values():
        setattr(vlm, cls.__name__, cls)
    # A benchmark VLMEvalKit already has (MMStar, POPE, ...) stays its own: its download, prompt and scoring.
    theirs = {
        name for cls in dataset.DATASET_CLASSES if cls.__module__ != __name__ for name in cls.supported_datasets()
    }
    wrapped = [vlmevalkit_dataset(family, theirs) for family in DATASET_CLASSES]
    for cls in reversed(wrapped):
        dataset.DATASET_CLASSES.insert(0, cls)
        setattr(dataset, cls.__name__, cls)
    added = list(dict.fromkeys(name for cls in wrapped for name in cls.supported_datasets()))
    # VLMEvalKit fills this list when vlmeval.dataset is imported; `run.py --reuse` looks names up in it.
    if hasattr(dataset, "SUPPORTED_DATASETS"):
        dataset.SUPPORTED_DATASETS.extend([name for name in added if name not in dataset.SUPPORTED_DATASETS])
    return {"models": sorted(supported_models), "datasets": added}
