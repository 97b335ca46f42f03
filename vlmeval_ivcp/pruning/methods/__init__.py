"""Built-in methods; importing this package registers them."""

from . import (  # noqa: F401
    cdpruner, dart, divprune, fastv, holov, ivc_prune, keep_all, pdrop, random, resprune, uniform, vispruner,
)
