"""Visual-token pruning: methods (pure selection functions) and the engine that applies them inside a decoder."""

from .config import Cut, PruneConfig
from .context import MergedTokens, RopeSpec, Selection, SelectionContext
from .engine import PrefillRecord, Pruner, prune, unprune
from .registry import METHODS, get_method, make_config, register_method

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
