"""Built-in methods; importing this package registers them."""

from . import cdpruner, dart, divprune, fastv, ivc_prune, keep_all, pdrop, random, resprune, uniform  # noqa: F401
