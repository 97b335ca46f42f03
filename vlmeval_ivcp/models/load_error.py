"""A checkpoint that cannot be loaded, said in one line with what to do about it (instead of a hub traceback)."""

from __future__ import annotations


class ModelLoadError(OSError):
    """`from_pretrained` failed for a reason of the environment: offline hub, wrong path, gated repo, bad files."""


def load_error(model_path: str, error: BaseException) -> ModelLoadError:
    """The one-line error for `error`, raised while loading `model_path`, with a hint chosen from its text."""
    text = " ".join(str(error).split())
    lowered = text.lower()
    if "gated" in lowered or "restricted" in lowered:
        hint = "accept its licence on huggingface.co and log in (hf auth login), or give a local checkpoint folder"
    elif "connect" in lowered or "offline" in lowered or "cached files" in lowered:
        hint = (f"the hub is unreachable or HF_HUB_OFFLINE is set, and it is not in the hub cache: download it where "
                f"the hub is reachable (hf download {model_path}), or give a local checkpoint folder as model_path")
    elif "not a local folder" in lowered or "not a valid model identifier" in lowered or "404" in lowered:
        hint = "check the hub id or the path, or give a local checkpoint folder as model_path"
    else:
        hint = "give a local checkpoint folder as model_path, or set HF_HUB_OFFLINE=1 to read the hub cache only"
    first = text if len(text) <= 300 else text[:297] + "..."
    return ModelLoadError(f"cannot load model {model_path}: {first} (hint: {hint})")
