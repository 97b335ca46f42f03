"""Methods by name: each is a config class plus a pure selection function."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import PruneConfig
from .context import Selection, SelectionContext

SelectFn = Callable[[SelectionContext, PruneConfig], Selection]

# What a method may ask the engine to capture for it (fields of SelectionContext).
# "attention" is the attention of layer K-1, which runs on every token (FastV); "cut_attention" is layer K's own,
# computed on the tokens reaching it before they are pruned (PyramidDrop's release); "normed_hidden_states" is the cut
# layer's input through the decoder's final norm (DART compares tokens in that space); "question_text" is the
# sample's question alone, given by the harness, with its tokens' input embeddings (CDPruner's relevance).
INPUTS = frozenset({"hidden_states", "values", "attention", "cut_attention", "normed_hidden_states", "question_text"})


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Args:
        name (`str`): registry key (lowercase).
        config_cls (`type[PruneConfig]`): its settings.
        select (`SelectFn`): `(context, config) -> Selection`, pure.
        needs (`frozenset[str]`): which optional context fields the engine must fill (subset of `INPUTS`;
            "attention" and "cut_attention" fill `queries`, `keys` and `scaling`).
        single_row (`bool`): the method cannot choose for each prompt of a batch on its own; the engine refuses
            batches of more than one prompt for it.
    """

    name: str
    config_cls: type[PruneConfig]
    select: SelectFn
    needs: frozenset[str]
    single_row: bool = False


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type[PruneConfig], needs: tuple[str, ...] = (), single_row: bool = False):
    """Decorator registering a selection function under `name`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"method name must be lowercase snake_case, got {name!r}")
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    if not (isinstance(config_cls, type) and issubclass(config_cls, PruneConfig)):
        raise TypeError(f"config_cls of {name!r} must subclass PruneConfig, got {config_cls!r}")
    unknown = set(needs) - INPUTS
    if unknown:
        raise ValueError(f"method {name!r} needs unknown inputs {sorted(unknown)}; known: {sorted(INPUTS)}")

    def decorator(fn: SelectFn) -> SelectFn:
        METHODS[name] = MethodSpec(name, config_cls, fn, frozenset(needs), single_row)
        return fn

    return decorator


def get_method(name: str) -> MethodSpec:
    from . import methods  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown pruning method {name!r}; known: {sorted(METHODS)}") from None


def make_config(method: str, **options: Any) -> PruneConfig:
    """Build the config of `method` from keyword options, refusing unknown keys by name."""
    spec = get_method(method)
    allowed = spec.config_cls.field_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method {method!r}; allowed: {allowed}")
    return spec.config_cls(**options)


def method_of_config(config: PruneConfig) -> MethodSpec:
    """The registered method whose config class is exactly `type(config)`."""
    from . import methods  # noqa: F401

    for spec in METHODS.values():
        if type(config) is spec.config_cls:
            return spec
    raise TypeError(f"{type(config).__name__} is not the config of a registered method")
