"""Run configs: a YAML file validated into dataclasses before any model loads, and its grid of runs.

    work_dir: results                      # results/<model>/<run>/ ...
    data_root: null                        # TSV folder; null: $LMUData, else ~/LMUData
    models:
      - name: Qwen2.5-VL-7B-Instruct       # registry name ...
        kwargs: {dtype: bfloat16}          # ... and constructor overrides
        batch_size: 1                      # rows answered at once (default 1)
    datasets: [MMStar, POPE]
    methods:                               # each entry expands over its list-valued ratio/layer
      - {method: none}
      - {method: ivc_prune, ratio: [0.25, 0.5, 0.75], layer: [8, 16]}
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..datasets.registry import dataset_class
from ..models.registry import MODEL_CLASSES, LazyClass, supported_models
from ..pruning.registry import get_method

TOP_LEVEL_KEYS = {"work_dir": str, "data_root": (str, type(None)), "models": list, "datasets": list, "methods": list}
MODEL_KEYS = {"name": str, "class": str, "kwargs": dict, "batch_size": int}
GRID_KEYS = ("ratio", "layer")


class ConfigError(ValueError):
    """A config file that does not validate; the message names the file and the key path."""


@dataclass(frozen=True)
class ModelSpec:
    """A registry model (`name`), or an adapter class of `MODEL_CLASSES` (`cls`) with `kwargs` naming its
    `model_path`, run under `name`; it answers `batch_size` rows at a time."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    cls: str | None = None
    batch_size: int = 1


@dataclass(frozen=True)
class RunPoint:
    """One point of the grid: a method with concrete options."""

    method: str
    options: dict[str, Any]

    @property
    def name(self) -> str:
        """A folder name that says what ran: `none`, `ivc_prune_r0.5_k16`, plus any other option."""
        parts = [self.method]
        if "ratio" in self.options:
            parts.append(f"r{self.options['ratio']}")
        if "layer" in self.options:
            parts.append(f"k{self.options['layer']}")
        parts += [f"{key}{value}" for key, value in sorted(self.options.items()) if key not in GRID_KEYS]
        return "_".join(str(part).replace("/", "-").replace(" ", "") for part in parts)


@dataclass(frozen=True)
class RunConfig:
    work_dir: str
    models: list[ModelSpec]
    datasets: list[str]
    points: list[RunPoint]
    data_root: str | None = None
    source: dict[str, Any] = field(default_factory=dict)


def _check_type(value: Any, expected: Any, where: str) -> None:
    if not isinstance(value, expected) or isinstance(value, bool) and expected in (int, float):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def _check_keys(mapping: Any, allowed: dict[str, Any], where: str) -> None:
    _check_type(mapping, dict, where)
    for key, value in mapping.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; allowed: {sorted(allowed)}")
        _check_type(value, allowed[key], f"{where}.{key}")


def expand_methods(entries: list[Any], where: str) -> list[RunPoint]:
    """Each entry's list-valued `ratio`/`layer` expand into their product; each point is checked by its config."""
    points = []
    for position, entry in enumerate(entries):
        here = f"{where}[{position}]"
        _check_type(entry, dict, here)
        options = dict(entry)
        method = options.pop("method", None)
        if not isinstance(method, str):
            raise ConfigError(f"{here}.method: required, a registered method name")
        try:
            spec = get_method(method)
        except KeyError as error:
            raise ConfigError(f"{here}.method: {error.args[0]}") from None
        allowed = set(spec.config_cls.field_names())
        for key in options:
            if key not in allowed:
                raise ConfigError(f"{here}.{key}: unknown option of method {method!r}; allowed: {sorted(allowed)}")
        axes = {key: options.pop(key) for key in GRID_KEYS if isinstance(options.get(key), list)}
        for values in itertools.product(*axes.values()):
            point_options = dict(options, **dict(zip(axes, values)))
            if isinstance(point_options.get("ratio"), int) and not isinstance(point_options["ratio"], bool):
                point_options["ratio"] = float(point_options["ratio"])  # `ratio: 1` and `--ratio 1.0`: one run
            try:
                spec.config_cls(**point_options)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{here}: {error}") from None
            points.append(RunPoint(method, point_options))
    names = [point.name for point in points]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}: runs {repeated} appear more than once")
    return points


def _model_spec(entry: dict[str, Any], here: str) -> ModelSpec:
    spec = _model_entry(entry, here)
    batch_size = entry.get("batch_size", 1)
    if batch_size < 1:
        raise ConfigError(f"{here}.batch_size: must be a whole number >= 1, got {batch_size}")
    return ModelSpec(spec.name, spec.kwargs, spec.cls, batch_size)


def _model_entry(entry: dict[str, Any], here: str) -> ModelSpec:
    kwargs = dict(entry.get("kwargs", {}))
    if "name" not in entry:
        raise ConfigError(f"{here}.name: required (a registry name, or the results name of a `class` entry)")
    if "class" not in entry:
        if entry["name"] not in supported_models:
            raise ConfigError(f"{here}.name: unknown model {entry['name']!r}; known: {sorted(supported_models)}")
        _check_model_kwargs(kwargs, registry_adapter(entry["name"]), here)
        return ModelSpec(entry["name"], kwargs)
    if entry["class"] not in MODEL_CLASSES:
        raise ConfigError(f"{here}.class: unknown adapter {entry['class']!r}; known: {sorted(MODEL_CLASSES)}")
    if "model_path" not in kwargs:
        raise ConfigError(f"{here}.kwargs.model_path: required with `class` (a hub id or a local checkpoint folder)")
    _check_model_kwargs(kwargs, MODEL_CLASSES[entry["class"]], here)
    return ModelSpec(entry["name"], kwargs, entry["class"])


def _check_model_kwargs(kwargs: dict[str, Any], adapter: LazyClass, here: str) -> None:
    if not kwargs:  # nothing to check: the adapter, whose import loads transformers' model code, is not imported
        return
    allowed = constructor_options(adapter.load())
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"{here}.kwargs.{key}: unknown option of {adapter.__name__}; allowed: {sorted(allowed)}")


def constructor_options(cls: type) -> set[str]:
    """The keyword options `cls(...)` accepts: its `__init__` parameters and those its `**kwargs` pass up the MRO."""
    options: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        options |= {p.name for p in parameters if p.kind in named and p.name != "self"}
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return options


def registry_adapter(name: str) -> LazyClass:
    """The adapter behind a registry name (a tiny entry names it as its first argument)."""
    entry = supported_models[name]
    return entry.func if isinstance(entry.func, LazyClass) else entry.args[0]


def parse_config(raw: Any, source: str = "<config>") -> RunConfig:
    _check_keys(raw, TOP_LEVEL_KEYS, source)
    for key in ("models", "datasets", "methods"):
        if not raw.get(key):
            raise ConfigError(f"{source}.{key}: required, a non-empty list")
    models = []
    for position, entry in enumerate(raw["models"]):
        here = f"{source}.models[{position}]"
        _check_keys(entry, MODEL_KEYS, here)
        models.append(_model_spec(entry, here))
    for position, name in enumerate(raw["datasets"]):
        _check_type(name, str, f"{source}.datasets[{position}]")
        try:
            dataset_class(name)
        except KeyError as error:
            raise ConfigError(f"{source}.datasets[{position}]: {error.args[0]}") from None
    return RunConfig(
        work_dir=raw.get("work_dir", "results"),
        models=models,
        datasets=list(raw["datasets"]),
        points=expand_methods(raw["methods"], f"{source}.methods"),
        data_root=raw.get("data_root"),
        source=raw,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path))
