"""Built-in methods; importing this package registers them."""

from . import ivc_prune, keep_all, random  # noqa: F401
