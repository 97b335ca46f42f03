"""Answering rows N at a time (`batch_size` of a model entry, `run.py --batch-size N`).

Rows are grouped by size (number of images, their pixels, the prompt's length) so that the rows of one batch need
little padding: a batch runs every row at its longest prompt and, after pruning, at its longest kept sequence
(docs/engine.md, ragged batches). Grouping changes only the order rows are answered in; the prediction store keeps
them by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from PIL import Image

from .config import RunConfig


def message_size(message: list[dict[str, str]]) -> tuple:
    """A sort key of a VLMEvalKit message by the work it takes: images, their pixels and sizes, text length."""
    sizes = []
    for item in message:
        if item["type"] == "image":
            try:
                with Image.open(item["value"]) as image:  # reads the header only
                    sizes.append(image.size)
            except (OSError, ValueError):  # sorts first; answering its batch then fails naming the row
                sizes.append((0, 0))
    text = sum(len(item["value"]) for item in message if item["type"] == "text")
    return len(sizes), sum(width * height for width, height in sizes), tuple(sizes), text


def group_rows(positions: Sequence[int], messages: Sequence[Any], batch_size: int) -> list[list[int]]:
    """Indices into `positions` (and `messages`), in batches of at most `batch_size` rows of similar size.

    With `batch_size` 1 the rows keep their order (the answers come exactly as without batching).
    """
    order = list(range(len(positions)))
    if batch_size > 1:
        order.sort(key=lambda item: message_size(messages[item]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def with_batch_size(config: RunConfig, batch_size: int) -> RunConfig:
    """`config` with every model answering `batch_size` rows at a time (the command line's `--batch-size`)."""
    return replace(config, models=[replace(model, batch_size=batch_size) for model in config.models])
