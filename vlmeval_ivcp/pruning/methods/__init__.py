"""Built-in methods; importing this package registers them."""

from . import (  # noqa: F401
    cdpruner, dart, divprune, fastv, ivc_prune, keep_all, pdrop, random, resprune, sparsevlm, uniform,
)
