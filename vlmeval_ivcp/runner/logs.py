"""Logging of the command-line tools: INFO by default, DEBUG with `--verbose`, and each hub warning once."""

from __future__ import annotations

import logging

# Libraries that print through a handler of their own: passed to the root handler too, each line would show twice.
OWN_HANDLER_LOGGERS = ("huggingface_hub",)


def configure_logging(verbose: bool = False) -> None:
    """Root logging at INFO (DEBUG when `verbose`, transformers' own messages at INFO too)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in OWN_HANDLER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.propagate = False
    if verbose:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_info()
