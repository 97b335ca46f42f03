"""vlmeval-ivcp: training-free visual-token pruning for LVLMs, with a VLMEvalKit-style benchmark harness."""

from .pruning import PruneConfig, Pruner, prune, unprune

__version__ = "0.1.0"
__all__ = ["PruneConfig", "Pruner", "prune", "unprune", "__version__"]
