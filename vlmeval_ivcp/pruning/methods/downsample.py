"""`downsample`: the image-downsampling baseline of VTC-Bench (Liao et al., arXiv 2510.07143).

Not a token selection: every picture is made smaller before the model's processor, so the model makes fewer visual
tokens and sees all of them, with fresh positions. The model wrapper applies `downsample_image` to each picture as
the family reads it (RGB), before the family's own resize (Qwen's `smart_resize` in its pixel budget) and its
processor; no pruner is attached. Release followed: Chenfei-Liao/VTC-Bench,
`external/DART/lmms-eval/lmms_eval/models/qwen2_vl.py`, `Qwen2_VL.generate_until` (the `image_ratio` block: an
integer factor per side, `(w // r, h // r)` with PIL bicubic, then the picture is sent as a JPEG); budget labels
`tools/analyze_results.py::DOWNSAMPLE_TO_BUDGET`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import BytesIO

from PIL import Image

from ..config import PruneConfig, check_choice
from ..registry import register_input_method

# The release's integer factors per side and their budget labels 1/r^2 (`DOWNSAMPLE_TO_BUDGET`; 1: the unchanged
# picture, which the release still sends through its JPEG round trip).
OFFICIAL_LABELS = {1: 1.0, 2: 0.25, 3: 0.1111, 4: 0.0625, 5: 0.04, 10: 0.01}
# How far a `ratio` may be from 1/r^2 and still name factor r (the release writes 1/9 as 0.1111).
LABEL_TOLERANCE = 1e-4
PRESETS = ("official", "continuous")


@dataclass
class DownsampleConfig(PruneConfig):
    """Settings of `downsample`. `ratio` is the budget label: about that fraction of the full-resolution visual
    tokens is made (the achieved count is recorded per row); `layer`, `scope`, `cache_policy` and `seed` do not
    apply (no pruner is attached)."""

    ratio: float = field(
        default=0.25, metadata={"help": "budget label: about this fraction of the full-resolution visual tokens"}
    )
    layer: int = field(default=0, metadata={"help": "unused: the pictures change before the model (0)"})
    scope: str = field(default="before_llm", metadata={"help": "unused: fixed 'before_llm' (before the processor)"})
    cache_policy: str = field(default="all", metadata={"help": "unused: every layer caches every token it makes"})
    seed: int = field(default=0, metadata={"help": "unused: deterministic"})
    preset: str = field(
        default="official",
        metadata={
            "help": "'official': an integer factor r per side, (w // r, h // r), named by its label 1/r^2 (ratio 1, "
            "0.25, 0.1111, 0.0625, 0.04, 0.01 for r = 1, 2, 3, 4, 5, 10); 'continuous': each side scaled by "
            "sqrt(ratio) and rounded, any ratio"
        },
    )
    jpeg: bool = field(
        default=True, metadata={"help": "the release's JPEG round trip (PIL quality 75) after the resize"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope != "before_llm":
            raise ValueError(f"downsample acts before the model: scope is 'before_llm', got {self.scope!r}")
        check_choice("preset", self.preset, PRESETS)
        if not isinstance(self.jpeg, bool):
            raise TypeError(f"jpeg must be true or false, got {self.jpeg!r}")
        if self.preset == "official":
            official_factor(self.ratio)

    @property
    def factor(self) -> int | None:
        """The integer factor per side of the `official` preset (`None` for `continuous`)."""
        return official_factor(self.ratio) if self.preset == "official" else None

    def cuts(self) -> list:
        """No cut: the model runs on every token of the smaller pictures."""
        return []


def official_factor(ratio: float) -> int:
    """The integer factor `r` whose label `1/r^2` is `ratio` (within `LABEL_TOLERANCE`).

    Raises:
        ValueError: `ratio` is no official label.
    """
    for factor in OFFICIAL_LABELS:
        if abs(ratio - 1 / factor**2) <= LABEL_TOLERANCE:
            return factor
    raise ValueError(
        f"ratio {ratio} is not an official downsampling label (1/r^2: "
        f"{', '.join(f'{label} for r={factor}' for factor, label in OFFICIAL_LABELS.items())}); "
        "use preset=continuous for any ratio"
    )


def downsampled_size(width: int, height: int, config: DownsampleConfig) -> tuple[int, int]:
    """(width, height) of the picture the model is given instead of one of `width x height` pixels.

    `official`: `(width // r, height // r)`; `continuous`: each side times `sqrt(ratio)`, rounded half to even.
    Either way a side keeps at least one pixel (the release would fail on a side shorter than `r`). The family's
    own resize (Qwen's `smart_resize` into its pixel budget, a LLaVA-NeXT/InternVL/DeepSeek-VL2 tiling) comes after.
    """
    if config.preset == "official":
        factor = official_factor(config.ratio)
        return max(1, width // factor), max(1, height // factor)
    scale = math.sqrt(config.ratio)
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg_round_trip(image: Image.Image) -> Image.Image:
    """`image` saved as a JPEG (PIL's defaults: quality 75, 4:2:0) and read back in RGB, as the release sends it."""
    buffer = BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


@register_input_method("downsample", DownsampleConfig)
def downsample_image(image: Image.Image, config: DownsampleConfig) -> Image.Image:
    """The picture resized to `downsampled_size` with PIL bicubic (unchanged at factor 1), then, with `jpeg`, the
    JPEG round trip."""
    size = downsampled_size(image.width, image.height, config)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return jpeg_round_trip(image) if config.jpeg else image
