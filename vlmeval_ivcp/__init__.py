"""vlmeval-ivcp: training-free visual-token pruning for LVLMs, with a VLMEvalKit-style benchmark harness."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
__all__ = ["PruneConfig", "Pruner", "prune", "unprune", "__version__"]


def __getattr__(name: str) -> Any:
    # The pruning API imports torch and transformers' model code (seconds): loaded on first use, so that the tools
    # and checks that need none of it (fetch_data, pre-flight errors, --help) start at once.
    if name in __all__:
        return getattr(import_module(".pruning", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
