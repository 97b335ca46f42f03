"""Visual-token pruning: methods (pure selection functions) and the engine that applies them inside a decoder."""

from importlib import import_module
from typing import Any

from .config import Cut, PruneConfig
from .context import MergedTokens, RopeSpec, Selection, SelectionContext
from .registry import METHODS, get_method, make_config, register_method

# The engine imports transformers' attention and cache code (seconds): loaded on first use, so that checking a config
# against the methods' options (the runner's pre-flight, `vlmeval-ivcp list methods`) needs none of it.
_ENGINE = ("PrefillRecord", "Pruner", "prune", "unprune")

__all__ = [
    "Cut",
    "METHODS",
    "MergedTokens",
    "PrefillRecord",
    "PruneConfig",
    "Pruner",
    "RopeSpec",
    "Selection",
    "SelectionContext",
    "get_method",
    "make_config",
    "prune",
    "register_method",
    "unprune",
]


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        return getattr(import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
