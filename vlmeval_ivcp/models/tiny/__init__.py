"""Tiny random-weight checkpoints built from the real configs, for tests and the demo (no download).

Each builder writes a complete checkpoint folder (weights, config, tokenizer, image processor) with
`save_pretrained`, so it loads back through the same `from_pretrained` path as a user's real checkpoint.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from ...datasets.tsv import current_umask
from ...locking import waiting_lock

logger = logging.getLogger(__name__)

# The decoder of every tiny family: hidden 64, 4 heads of 16 (2 KV heads), MLP 128.
TINY_TEXT_WIDTHS = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096
)
# The vision tower of the CLIP, SigLIP and InternViT families: 2 layers of width 32, 2 heads, MLP 64.
TINY_VISION_WIDTHS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def byte_level_tokenizer(tokenizer_cls: type, special_tokens: tuple[str, ...], **kwargs):
    """A BPE tokenizer over the 256 byte symbols with no merges, plus the model's special tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    tokenizer = tokenizer_cls(vocab=vocab, merges=[], unk_token=None, **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def chat_text_config(tokenizer: Any, num_layers: int, **extra: Any) -> dict[str, Any]:
    """The tiny decoder of a family whose turns end with `<|im_end|>` (Qwen-based LLMs): the shared widths,
    `num_layers` layers, the tokenizer's vocabulary and ids, and `extra` config keys (model_type, RoPE, ...)."""
    return dict(
        vocab_size=len(tokenizer),
        **TINY_TEXT_WIDTHS,
        **extra,
        num_hidden_layers=num_layers,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def random_model(model_cls: type, config: Any, seed: int, vision_prefix: str, eos_id: int, pad_id: int):
    """`model_cls(config)` with seeded random weights and greedy-decoding token ids set."""
    torch.manual_seed(seed)
    model = model_cls(config)
    # Random init gives near-uniform logits; larger weights make greedy decoding sensitive to every token kept.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and vision_prefix not in name:
                param.normal_(0.0, 0.1)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    return model


# One module per family in this package, each exposing `build(path, seed=0, num_layers=...) -> Path`.
TINY_FAMILIES = (
    "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llava", "llava_next", "llava_onevision", "internvl", "deepseek_vl2"
)


# A finished checkpoint folder holds at least these; older releases built in place and could leave a partial one.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def tiny_checkpoint(family: str, cache_dir: str | Path) -> Path:
    """The tiny checkpoint of `family` under `cache_dir`, built on first use.

    The build goes to a temporary folder that is renamed into place when complete, so a killed build leaves no
    partial checkpoint; concurrent builders (torchrun ranks on an empty cache) wait on a file lock and the later
    ones find the finished folder. A folder missing any of `CHECKPOINT_FILES` is rebuilt.
    """
    if family not in TINY_FAMILIES:
        raise KeyError(f"no tiny checkpoint for family {family!r}; known: {sorted(TINY_FAMILIES)}")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"tiny-{family}"
    if _complete(path):
        return path
    with waiting_lock(cache_dir / f".tiny-{family}.lock"):
        if _complete(path):  # another process built it while this one waited
            return path
        for leftover in cache_dir.glob(f".tiny-{family}.build-*"):  # from killed builds
            shutil.rmtree(leftover, ignore_errors=True)
        if path.exists():
            logger.warning("%s is incomplete (an interrupted build?); building it again", path)
            shutil.rmtree(path)
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".tiny-{family}.build-"))
        try:
            import_module(f"{__name__}.{family}").build(staging)
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; a cache folder follows the umask
            os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return path


def tiny_depth(family: str) -> int:
    """Decoder layers of `family`'s tiny checkpoint (its builder's default), known before the first build."""
    return inspect.signature(import_module(f"{__name__}.{family}").build).parameters["num_layers"].default


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in CHECKPOINT_FILES)

