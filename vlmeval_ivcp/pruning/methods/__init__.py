"""Built-in methods; importing this package registers them."""

from . import divprune, fastv, ivc_prune, keep_all, pdrop, random, resprune, uniform  # noqa: F401
