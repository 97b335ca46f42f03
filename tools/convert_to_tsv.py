"""Convert MDETR RefCOCO / RefCOCO+ / RefCOCOg annotation files into VLMEvalKit TSVs.

    python tools/convert_to_tsv.py --images_folder coco/train2014 \\
        --annotations_files mdetr/finetune_refcoco_val.json mdetr/finetune_refcoco_testA.json \\
        --output_dir ~/LMUData [--qwen25] [--patch_size 28]

Each annotation file becomes one TSV named after the dataset it holds (`finetune_refcoco+_testA.json` ->
`RefCOCO+_testA.tsv`, or `RefCOCO+_testA_for_qwen25vl.tsv` with `--qwen25`) with the columns `index`, `image`
(base64 of the picture file's bytes), `question` (the referring expression), `height`, `width` (of the original
picture) and `answer` (`x1 y1 x2 y2` per box). See docs/grounding.md.

The script needs only the standard library and tqdm, so it runs where the package is not installed. Rows are
streamed: each picture is read when its row is written, and the TSV appears under its final name only once every
row is written.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

COLUMNS = ("index", "image", "question", "height", "width", "answer")
QWEN25_SUFFIX = "_for_qwen25vl"
BOX_TOLERANCE = 1.0
"""How far (pixels) a box may reach outside its picture; COCO boxes overshoot the border by rounding."""

# MDETR file stems -> VLMEvalKit dataset names: finetune_refcoco+_testA -> RefCOCO+_testA.
_MDETR_STEM = re.compile(r"finetune_(refcoco|refcoco\+|refcocog)_(\w+)")
_DATASET_PREFIX = {"refcoco": "RefCOCO", "refcoco+": "RefCOCO+", "refcocog": "RefCOCOg"}
_IMAGE_KEYS = ("id", "file_name", "height", "width", "caption")
_ANNOTATION_KEYS = ("image_id", "bbox")


@dataclass(frozen=True)
class Expression:
    """One referring expression of an annotation file: one TSV row.

    Attributes:
        index (`int`): the `images[]` entry's `id`.
        file_name (`str`): the picture, relative to the images folder.
        caption (`str`): the referring expression.
        width (`int`), height (`int`): the original picture's size.
        boxes (`tuple`): the entry's boxes as `(x, y, w, h)` in original pixels, in file order.
    """

    index: int
    file_name: str
    caption: str
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]


def dataset_name(annotation_file: str | os.PathLike, qwen25: bool = False) -> str:
    """The dataset name (and TSV stem) of an annotation file.

    MDETR stems map to VLMEvalKit names (`finetune_refcoco_val` -> `RefCOCO_val`, `finetune_refcoco+_testA` ->
    `RefCOCO+_testA`, `finetune_refcocog_test` -> `RefCOCOg_test`); any other stem is kept as it is. `qwen25`
    appends `_for_qwen25vl`.
    """
    stem = Path(annotation_file).stem
    match = _MDETR_STEM.fullmatch(stem)
    name = f"{_DATASET_PREFIX[match.group(1)]}_{match.group(2)}" if match else stem
    return name + QWEN25_SUFFIX if qwen25 else name


def snapped_size(width: int, height: int, patch_size: int = 28) -> tuple[int, int]:
    """Qwen2.5-VL's input size for a picture: each side rounded to the nearest multiple of `patch_size`.

    Python's `round` rounds half to even (a side of 42 = 1.5 patches becomes 56, one of 70 = 2.5 patches also 56);
    a side never shrinks below one patch.

    Returns:
        `tuple[int, int]`: `(new_width, new_height)`.
    """
    new_width = max(patch_size, round(width / patch_size) * patch_size)
    new_height = max(patch_size, round(height / patch_size) * patch_size)
    return new_width, new_height


def format_number(value: float) -> str:
    """A coordinate as TSV text: integral values without `.0`, others with at most 4 decimals.

    The rounding only drops float-addition noise (`x + w` of two 2-decimal COCO numbers).
    """
    rounded = round(float(value), 4)
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def answer_text(expression: Expression, qwen25: bool = False, patch_size: int = 28) -> str:
    """The `answer` cell of an expression: `x1 y1 x2 y2` per box, all boxes' numbers space separated.

    By default the corners are in original pixels (`x2 = x + w`, `y2 = y + h`). With `qwen25` they are scaled by
    `new_width / width` and `new_height / height` (see `snapped_size`) and rounded to integers (half to even).
    """
    corners = [(x, y, x + w, y + h) for x, y, w, h in expression.boxes]
    if not qwen25:
        return " ".join(format_number(value) for box in corners for value in box)
    new_width, new_height = snapped_size(expression.width, expression.height, patch_size)
    scales = (new_width / expression.width, new_height / expression.height) * 2
    return " ".join(str(round(value * scale)) for box in corners for value, scale in zip(box, scales, strict=True))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_image_entry(entry: Any, position: int, where: str) -> None:
    """Raise ValueError naming the file and the entry id when an `images[]` entry is malformed."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: images[{position}] must be an object, got {type(entry).__name__}")
    if "id" not in entry:
        raise ValueError(f"{where}: images[{position}] has no 'id'")
    entry_id = entry["id"]
    label = f"{where}: image entry id={entry_id!r}"
    if not isinstance(entry_id, int) or isinstance(entry_id, bool):
        raise ValueError(f"{label}: 'id' must be an integer")
    missing = [key for key in _IMAGE_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{label}: missing key(s) {missing}")
    if not _is_positive_int(entry["height"]) or not _is_positive_int(entry["width"]):
        raise ValueError(
            f"{label}: height and width must be positive integers, got {entry['height']!r}, {entry['width']!r}"
        )
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        raise ValueError(f"{label}: 'file_name' must be a non-empty string, got {entry['file_name']!r}")
    if not isinstance(entry["caption"], str) or not entry["caption"].strip():
        raise ValueError(f"{label}: 'caption' must be a non-empty string, got {entry['caption']!r}")


def _checked_box(
    annotation: Any, position: int, entries: dict[int, dict], where: str
) -> tuple[int, tuple[float, float, float, float]]:
    """Validate `annotations[position]`; return its image id and its `(x, y, w, h)` box."""
    if not isinstance(annotation, dict):
        raise ValueError(f"{where}: annotations[{position}] must be an object, got {type(annotation).__name__}")
    image_id = annotation.get("image_id")
    label = f"{where}: annotations[{position}] (image entry id={image_id!r})"
    missing = [key for key in _ANNOTATION_KEYS if key not in annotation]
    if missing:
        raise ValueError(f"{label}: missing key(s) {missing}")
    if image_id not in entries:
        raise ValueError(f"{label}: no images[] entry has this id")
    bbox = annotation["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
        raise ValueError(f"{label}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise ValueError(f"{label}: bbox {bbox!r} must have a positive width and height")
    width, height = entries[image_id]["width"], entries[image_id]["height"]
    inside = (
        x >= -BOX_TOLERANCE
        and y >= -BOX_TOLERANCE
        and x + w <= width + BOX_TOLERANCE
        and y + h <= height + BOX_TOLERANCE
    )
    if not inside:
        raise ValueError(
            f"{label}: bbox {bbox!r} lies outside its {width}x{height} picture (tolerance {BOX_TOLERANCE:g} pixel)"
        )
    return image_id, (x, y, w, h)


def load_expressions(annotation_file: str | os.PathLike) -> list[Expression]:
    """Read and validate an MDETR annotation file.

    Raises:
        ValueError: naming the file and the entry id, for a malformed entry or annotation, a duplicate id, a box
            that is not 4 numbers, a box outside its picture (beyond `BOX_TOLERANCE`), or an entry without a box.

    Returns:
        `list[Expression]`: one per `images[]` entry, in file order.
    """
    where = str(annotation_file)
    with open(annotation_file, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}: not UTF-8 text ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise ValueError(f"{where}: expected an object with a non-empty 'images' list (MDETR/COCO format)")
    if not isinstance(data.get("annotations"), list):
        raise ValueError(f"{where}: expected an 'annotations' list (MDETR/COCO format)")
    entries: dict[int, dict] = {}
    for position, entry in enumerate(data["images"]):
        _check_image_entry(entry, position, where)
        if entry["id"] in entries:
            raise ValueError(f"{where}: image entry id={entry['id']!r} appears twice in images[]")
        entries[entry["id"]] = entry
    boxes: dict[int, list[tuple]] = {entry_id: [] for entry_id in entries}
    for position, annotation in enumerate(data["annotations"]):
        image_id, box = _checked_box(annotation, position, entries, where)
        boxes[image_id].append(box)
    unboxed = [entry_id for entry_id, entry_boxes in boxes.items() if not entry_boxes]
    if unboxed:
        raise ValueError(f"{where}: image entry id={unboxed[0]!r} has no annotation ({len(unboxed)} such entries)")
    return [
        Expression(
            index=entry_id,
            file_name=entry["file_name"],
            caption=entry["caption"],
            width=entry["width"],
            height=entry["height"],
            boxes=tuple(boxes[entry_id]),
        )
        for entry_id, entry in entries.items()
    ]


def read_image_base64(path: str | os.PathLike) -> str:
    """Base64 of a picture file's bytes, unchanged (no decoding or re-encoding)."""
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def iter_rows(
    expressions: Sequence[Expression],
    images_folder: str | os.PathLike,
    qwen25: bool = False,
    patch_size: int = 28,
    read_image: Callable[[str], str] = read_image_base64,
) -> Iterator[list[str]]:
    """Yield the TSV rows (in `COLUMNS` order) of `expressions` one at a time.

    A picture is read by `read_image` only when its row is produced, so a consumer that writes each row before
    asking for the next holds one picture at a time.
    """
    for expression in expressions:
        yield [
            str(expression.index),
            read_image(os.path.join(images_folder, expression.file_name)),
            expression.caption,
            str(expression.height),
            str(expression.width),
            answer_text(expression, qwen25, patch_size),
        ]


def _check_pictures_exist(expressions: Sequence[Expression], images_folder: str | os.PathLike, where: str) -> None:
    """Fail before any writing when a picture is missing, rather than minutes into a split."""
    for expression in expressions:
        path = os.path.join(images_folder, expression.file_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: image entry id={expression.index!r}: picture file {path} not found")


def convert_file(
    annotation_file: str | os.PathLike,
    images_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    qwen25: bool = False,
    patch_size: int = 28,
    read_image: Callable[[str], str] = read_image_base64,
) -> Path:
    """Convert one annotation file into `output_dir/<dataset_name>.tsv`.

    The rows go to a hidden `.partial` file in `output_dir` that is renamed to the final name only after the last row,
    so a failed conversion leaves no TSV that looks complete (an earlier TSV of the same name stays untouched).

    Returns:
        `Path`: the written TSV.
    """
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    name = dataset_name(annotation_file, qwen25)
    expressions = load_expressions(annotation_file)
    _check_pictures_exist(expressions, images_folder, str(annotation_file))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{name}.tsv"
    # A per-process name keeps concurrent conversions apart; plain open() keeps the usual (umask) permissions.
    temp_name = output_dir / f".{name}.tsv.{os.getpid()}.partial"
    try:
        with open(temp_name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(COLUMNS)
            rows = iter_rows(expressions, images_folder, qwen25, patch_size, read_image)
            for row in tqdm(rows, total=len(expressions), desc=name, unit="row"):
                writer.writerow(row)
        os.replace(temp_name, target)
    except BaseException:
        temp_name.unlink(missing_ok=True)
        raise
    return target


def convert_files(
    annotation_files: Sequence[str | os.PathLike],
    images_folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    qwen25: bool = False,
    patch_size: int = 28,
) -> list[Path]:
    """Convert several annotation files; two files that would write the same TSV are refused up front."""
    names = [dataset_name(path, qwen25) for path in annotation_files]
    for name in set(names):
        clashing = [str(path) for path, other in zip(annotation_files, names, strict=True) if other == name]
        if len(clashing) > 1:
            raise ValueError(f"annotation files {clashing} would all be written to {name}.tsv")
    return [convert_file(path, images_folder, output_dir, qwen25, patch_size) for path in annotation_files]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Convert MDETR RefCOCO annotation files into VLMEvalKit TSVs.")
    parser.add_argument("--images_folder", required=True, help="folder of the pictures (COCO train2014)")
    parser.add_argument("--annotations_files", required=True, nargs="+", help="MDETR annotation json file(s)")
    parser.add_argument("--output_dir", required=True, help="where the TSVs go (usually $LMUData)")
    parser.add_argument(
        "--qwen25",
        action="store_true",
        help="write boxes in pixels of Qwen2.5-VL's resized input (sides snapped to --patch_size) and add the "
        f"suffix {QWEN25_SUFFIX} to the dataset names",
    )
    parser.add_argument("--patch_size", type=int, default=28, help="side multiple of the resized input (28)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = convert_files(
            args.annotations_files, args.images_folder, args.output_dir, args.qwen25, args.patch_size
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"convert_to_tsv: error: {err}") from None
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
