"""Built-in methods; importing this package registers them."""

from . import (  # noqa: F401
    cdpruner, dart, divprune, downsample, fastv, holov, ivc_prune, keep_all, pdrop, prumerge_plus, random, resprune,
    sparsevlm, uniform, visionzip, vispruner,
)
