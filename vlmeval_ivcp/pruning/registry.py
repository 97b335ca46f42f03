"""Methods by name: each is a config class plus a pure selection function, or, for a method that changes the
model's inputs instead of its tokens (`downsample`), a pure image function the model wrapper applies."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .config import PruneConfig
from .context import Selection, SelectionContext

SelectFn = Callable[[SelectionContext, PruneConfig], Selection]
# An input-side method: one picture (as the family reads it, before its own resize and processor) -> the picture
# the model is given instead.
ImageFn = Callable[[Image.Image, PruneConfig], Image.Image]

# What a method may ask the engine to capture for it (fields of SelectionContext).
# "attention" is the attention of layer K-1, which runs on every token (FastV); "cut_attention" is layer K's own,
# computed on the tokens reaching it before they are pruned (PyramidDrop's release); "normed_hidden_states" is the cut
# layer's input through the decoder's final norm (DART compares tokens in that space); "rater_attention" is layer K-1's
# attention from every prompt token after the last image, with the LLM's input embeddings of those tokens and of the
# image (SparseVLM picks its text raters from the embeddings and ranks with their attention); "question_text" is the
# sample's question alone, given by the harness, with its tokens' input embeddings (CDPruner's relevance). The
# "vision_*" inputs come from one layer of the vision encoder (`vision_tap.py`; the method config's `vision_layer`
# chooses it).
INPUTS = frozenset({
    "hidden_states", "values", "attention", "cut_attention", "normed_hidden_states", "rater_attention",
    "question_text", "vision_attention", "vision_cls_attention", "vision_keys", "vision_features",
})


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Args:
        name (`str`): registry key (lowercase).
        config_cls (`type[PruneConfig]`): its settings.
        select (`SelectFn` or `None`): `(context, config) -> Selection`, pure; `None` for an input-side method.
        needs (`frozenset[str]`): which optional context fields the engine must fill (subset of `INPUTS`;
            "attention" and "cut_attention" fill `queries`, `keys` and `scaling`; "rater_attention" fills
            `query_attention`, `image_embeds` and `query_embeds`).
        single_row (`bool`): the method cannot choose for each prompt of a batch on its own; the engine refuses
            batches of more than one prompt for it.
        change_image (`ImageFn` or `None`): set for a method that acts on the inputs, not inside the model: the
            model wrapper applies it to every picture before the processor, and no pruner is attached.
    """

    name: str
    config_cls: type[PruneConfig]
    select: SelectFn | None
    needs: frozenset[str]
    single_row: bool = False
    change_image: ImageFn | None = None

    @property
    def changes_inputs(self) -> bool:
        """Whether the method acts on the pictures before the processor (no pruner, no cut)."""
        return self.change_image is not None


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type[PruneConfig], needs: tuple[str, ...] = (), single_row: bool = False):
    """Decorator registering a selection function under `name`."""
    _check_registration(name, config_cls)
    unknown = set(needs) - INPUTS
    if unknown:
        raise ValueError(f"method {name!r} needs unknown inputs {sorted(unknown)}; known: {sorted(INPUTS)}")

    def decorator(fn: SelectFn) -> SelectFn:
        METHODS[name] = MethodSpec(name, config_cls, fn, frozenset(needs), single_row)
        return fn

    return decorator


def register_input_method(name: str, config_cls: type[PruneConfig]):
    """Decorator registering under `name` a method that changes each picture before the processor (`ImageFn`)."""
    _check_registration(name, config_cls)

    def decorator(fn: ImageFn) -> ImageFn:
        METHODS[name] = MethodSpec(name, config_cls, None, frozenset(), change_image=fn)
        return fn

    return decorator


def _check_registration(name: str, config_cls: type[PruneConfig]) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"method name must be lowercase snake_case, got {name!r}")
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    if not (isinstance(config_cls, type) and issubclass(config_cls, PruneConfig)):
        raise TypeError(f"config_cls of {name!r} must subclass PruneConfig, got {config_cls!r}")


def get_method(name: str) -> MethodSpec:
    from . import methods  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown pruning method {name!r}; known: {sorted(METHODS)}") from None


def make_config(method: str, **options: Any) -> PruneConfig:
    """Build the config of `method` from keyword options, refusing unknown keys by name."""
    spec = get_method(method)
    allowed = spec.config_cls.field_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method {method!r}; allowed: {allowed}")
    return spec.config_cls(**options)


def method_of_config(config: PruneConfig) -> MethodSpec:
    """The registered method whose config class is exactly `type(config)`."""
    from . import methods  # noqa: F401

    for spec in METHODS.values():
        if type(config) is spec.config_cls:
            return spec
    raise TypeError(f"{type(config).__name__} is not the config of a registered method")
