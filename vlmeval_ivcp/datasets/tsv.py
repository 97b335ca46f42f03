"""VLMEvalKit's benchmark files: one TSV per benchmark under `$LMUData`, images stored inline as base64.

A benchmark `<Name>` lives in `$LMUData/<Name>.tsv` (`LMUData` defaults to `~/LMUData`). Its `index` column is
unique; its `image` column holds a base64 PNG/JPEG, or - when the value has at most 64 characters - the `index` of
another row whose image it reuses. Images are decoded once to `$LMUData/images/<Name>/<index>.png` (or the row's
`image_path`; `$VLMEVAL_IVCP_IMAGES/<Name>/` when that variable is set) and reused by later runs while their cell
is unchanged.
"""

from __future__ import annotations

import ast
import base64
import binascii
import glob
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

LMUDATA_ENV = "LMUData"
IMAGE_CACHE_ENV = "VLMEVAL_IVCP_IMAGES"
# VLMEvalKit's rule: an `image` cell this short cannot be an image, it names the row whose image it reuses.
MAX_REFERENCE_CHARS = 64
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_HOST = socket.gethostname()


def lmu_root() -> Path:
    """The benchmark data folder: `$LMUData`, or `~/LMUData` when the variable is unset or empty."""
    configured = os.environ.get(LMUDATA_ENV)
    return Path(configured).expanduser() if configured else Path.home() / "LMUData"


def tsv_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where benchmark `name` is expected: `<root>/<name>.tsv`, `root` defaulting to `lmu_root()`."""
    return Path(root if root is not None else lmu_root()) / f"{name}.tsv"


def image_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where the decoded images of benchmark `name` go: `$VLMEVAL_IVCP_IMAGES/<name>` when that variable is set (a
    writable cache beside a read-only data folder), else `<root>/images/<name>`."""
    cache = os.environ.get(IMAGE_CACHE_ENV)
    if cache:
        return Path(cache).expanduser() / name
    return Path(root if root is not None else lmu_root()) / "images" / name


def load_tsv(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    required_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Reads a benchmark TSV and checks its `index` column; image references are resolved.

    Every column is read as text (a numeric-looking option such as "5" stays "5"). Cells that pandas reads as
    missing by default (empty, "NA", "None", "nan", ...) become NaN, as in VLMEvalKit, so the set of options a
    prompt shows matches VLMEvalKit's. `index` values become ints when every one of them is written as an integer,
    and stay strings otherwise.

    Args:
        name_or_path (`str` or `os.PathLike`): a benchmark name (read from `<root>/<name>.tsv`), or the path of a
            `.tsv` file (anything that is an `os.PathLike` or ends in ".tsv").
        root (`str` or `os.PathLike`, *optional*): data folder for a name; defaults to `lmu_root()`.
        required_columns (`Sequence[str]`): columns the caller needs besides `index`.

    Returns:
        `pandas.DataFrame`: one row per sample, in file order; the `image` column (if any) holds base64 text
        with every reference replaced by the image it points to.

    Raises:
        FileNotFoundError: the file does not exist (the message names the path, and `root` or the `LMUData`
            variable).
        ValueError: the file is not a readable TSV or has no rows, `index` is missing, empty in some row or
            duplicated, a required column is missing, or an image reference points nowhere.
    """
    if isinstance(name_or_path, os.PathLike) or str(name_or_path).endswith(".tsv"):
        path = Path(name_or_path)
    else:
        path = tsv_path(str(name_or_path), root)
    if not path.is_file():
        where = (
            f"or set the config's data_root (now {str(root)!r}) to the folder that holds it"
            if root is not None
            else f"or point the {LMUDATA_ENV} environment variable (now {os.environ.get(LMUDATA_ENV)!r}) at the "
            "folder that holds it"
        )
        raise FileNotFoundError(f"benchmark file {path} not found; put the VLMEvalKit TSV there, {where}")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable tab-separated file: {err}") from err

    missing = [column for column in ("index", *required_columns) if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{path}: the file has a header but no rows")
    _check_index(frame["index"], path)
    frame = resolve_image_references(frame, source=str(path))
    if all(_CANONICAL_INT.fullmatch(value) for value in frame["index"]):
        frame["index"] = [int(value) for value in frame["index"]]
    return frame


def _check_index(index: pd.Series, path: Path) -> None:
    empty_rows = [position for position, value in enumerate(index) if pd.isna(value)]
    if empty_rows:
        # The header is line 1 and positions count from 0.
        lines = [position + 2 for position in empty_rows]
        raise ValueError(f"{path}: column 'index' is empty on line(s) {summarize_values(lines)}")
    duplicated = sorted(set(index[index.duplicated()]))
    if duplicated:
        raise ValueError(f"{path}: column 'index' must be unique; duplicated values {summarize_values(duplicated)}")


def resolve_image_references(frame: pd.DataFrame, source: str = "<DataFrame>") -> pd.DataFrame:
    """Replaces each `image` cell of at most 64 characters by the image of the row whose `index` it names.

    References are matched against `index` as text; the target must hold an image itself (no chains).

    Args:
        frame (`pandas.DataFrame`): rows with `index` and, optionally, `image`.
        source (`str`): the file the rows came from, for error messages.

    Returns:
        `pandas.DataFrame`: `frame` itself when it has no `image` column, otherwise a copy with references resolved.

    Raises:
        ValueError: a reference names an index that does not exist or whose image is itself a reference or empty.
    """
    if "image" not in frame.columns:
        return frame
    keys = [str(value) for value in frame["index"]]
    image_by_key = dict(zip(keys, frame["image"], strict=True))
    resolved = []
    for key, value in zip(keys, frame["image"], strict=True):
        if isinstance(value, str) and len(value) <= MAX_REFERENCE_CHARS:
            if value not in image_by_key:
                raise ValueError(
                    f"{source}: row index {key}: image {value!r} is a reference to index {value!r}, "
                    "which is not in the file"
                )
            target = image_by_key[value]
            if not isinstance(target, str) or len(target) <= MAX_REFERENCE_CHARS:
                raise ValueError(
                    f"{source}: row index {key}: image {value!r} refers to a row whose image is {target!r}, "
                    "not an image"
                )
            value = target
        resolved.append(value)
    resolved_frame = frame.copy()
    resolved_frame["image"] = resolved
    return resolved_frame


def dump_images(frame: pd.DataFrame, name: str, root: str | os.PathLike | None = None) -> list[list[str]]:
    """Decodes every row's image(s) to files once, and returns each row's local image paths.

    A row's image goes to `<root>/images/<name>/<index>.png`; a row whose `image` is a list (JSON or Python
    literal) of base64 strings gets `<index>_0.png`, `<index>_1.png`, ... When the frame has an `image_path`
    column, a non-empty cell (a path or a list of paths, one per image) names the files instead; relative paths
    are resolved under the images folder. A row without an image must name existing files in `image_path`.
    `<root>/images/<name>.cells.json` records a hash of the cell each file was decoded from: a file is reused only
    when its cell is unchanged, so a replaced TSV with the same indices never shows old pictures. Each file is
    written to a temporary name and renamed, so concurrent ranks never see half an image.

    Args:
        frame (`pandas.DataFrame`): rows as returned by `load_tsv` (references already resolved).
        name (`str`): the benchmark name, which names the images folder.
        root (`str` or `os.PathLike`, *optional*): data folder; defaults to `lmu_root()`.

    Returns:
        `list[list[str]]`: for each row, in order, the paths of its images.

    Raises:
        ValueError: a row has no image and no `image_path`, bad base64, bytes that are not an image, or a number
            of paths that does not match its number of images.
        FileNotFoundError: a row without an inline image names a file that does not exist.
    """
    folder = image_folder(name, root)
    has_images = "image" in frame.columns
    has_paths = "image_path" in frame.columns
    if not has_images and not has_paths:
        raise ValueError(f"benchmark {name}: the rows have neither an 'image' nor an 'image_path' column")
    # Column-wise access: iterrows() would turn an int index into a float when every column is numeric.
    no_cells = [None] * len(frame)
    image_cells = frame["image"].tolist() if has_images else no_cells
    path_cells = frame["image_path"].tolist() if has_paths else no_cells
    paths_per_row = []
    manifest_path = folder.with_name(f"{folder.name}.cells.json")
    manifest = _read_manifest(manifest_path)
    written = dict(manifest)
    for index, image_cell, path_cell in zip(frame["index"].tolist(), image_cells, path_cells, strict=True):
        encoded = _parse_list_cell(image_cell, "image", index)
        named = _parse_list_cell(path_cell, "image_path", index)
        if encoded is None:
            if named is None:
                raise ValueError(f"benchmark {name}: row index {index} has neither an image nor an image_path")
            paths = [_under(folder, path) for path in named]
            for path in paths:
                if not path.is_file():
                    raise FileNotFoundError(f"benchmark {name}: row index {index}: image file {path} not found")
        else:
            paths = _row_targets(folder, index, len(encoded), named)
            for path, image in zip(paths, encoded, strict=True):
                digest = hashlib.sha256(image.encode()).hexdigest()[:16]
                if not (path.is_file() and path.stat().st_size > 0 and manifest.get(str(path)) == digest):
                    atomic_write_bytes(path, _image_file_bytes(image, path, index))
                    written[str(path)] = digest
        paths_per_row.append([str(path) for path in paths])
    if written != manifest:
        atomic_write_bytes(manifest_path, json.dumps(written, indent=0, sort_keys=True).encode())
    return paths_per_row


def _read_manifest(path: Path) -> dict[str, str]:
    """Which cell each decoded image file was made from (file -> hash); empty when absent or unreadable."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _parse_list_cell(value: Any, column: str, index: Any) -> list[str] | None:
    """A cell as a list of strings: None when empty, the parsed list for a list (literal), else `[value]`."""
    if isinstance(value, list):
        parsed = value
    elif isinstance(value, str):
        if not value.startswith("["):  # base64 and ordinary paths never start with "["
            return [value]
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError) as err:  # TypeError: an unhashable key such as {[]: 1}
                raise ValueError(f"row index {index}: column {column!r} is not a valid list literal: {err}") from err
    elif value is None or pd.isna(value):
        return None
    else:
        raise ValueError(f"row index {index}: column {column!r} holds {type(value).__name__}, expected text")
    if not (isinstance(parsed, list) and parsed and all(isinstance(item, str) for item in parsed)):
        raise ValueError(f"row index {index}: column {column!r} must be a non-empty list of strings")
    return parsed


def _row_targets(folder: Path, index: Any, count: int, named: list[str] | None) -> list[Path]:
    if named is not None:
        if len(named) != count:
            raise ValueError(f"row index {index}: {count} image(s) but {len(named)} image_path entries")
        return [_under(folder, path) for path in named]
    if count == 1:
        return [folder / f"{index}.png"]
    return [folder / f"{index}_{k}.png" for k in range(count)]


def _under(folder: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else folder / candidate


def _image_file_bytes(encoded: str, path: Path, index: Any) -> bytes:
    """The bytes to store at `path`: the original bytes when their format matches the suffix, else re-encoded."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"{path}: row index {index}: the image is not valid base64: {err}") from err
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            target_format = Image.registered_extensions().get(path.suffix.lower())
            if target_format is None:
                raise ValueError(f"{path}: row index {index}: unknown image file extension {path.suffix!r}")
            if image.format == target_format:
                return raw
            # Models consume RGB anyway; converting keeps JPEG (no alpha) and PNG (no CMYK) writers happy.
            converted = image if image.mode in ("RGB", "L") else image.convert("RGB")
            buffer = io.BytesIO()
            converted.save(buffer, format=target_format)
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: row index {index}: the decoded bytes are not a readable image: {err}") from err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename.

    Readers see either the old file or the complete new one, never a partial file, even when several processes
    write the same path at once. Parent folders are created. The new file's mode follows the umask, as with
    `open()`. The temporary file is named `.<name>.<host>.<pid>.<random>.tmp`; those of this host whose process is
    gone (killed between writing and renaming) are removed by the next write of the same path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temporaries(target)
    prefix = f".{target.name}.{_HOST}.{os.getpid()}."
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file follows the umask
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _remove_orphaned_temporaries(target: Path) -> None:
    prefix = f".{target.name}.{_HOST}."
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = leftover.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (changing it races other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def encode_bytes_to_base64(data: bytes) -> str:
    """Base64 text of raw image file bytes, as stored in a TSV `image` cell."""
    return base64.b64encode(data).decode("ascii")


def encode_image_to_base64(image: Image.Image, image_format: str = "PNG") -> str:
    """Base64 text of `image` saved in `image_format` ("PNG" or "JPEG"), as stored in a TSV `image` cell."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return encode_bytes_to_base64(buffer.getvalue())


def summarize_values(values: Sequence[Any], limit: int = 10) -> str:
    """`values` as text for an error message, cut to the first `limit` of them."""
    shown = list(values[:limit])
    more = len(values) - len(shown)
    return f"{shown}" + (f" (+{more} more)" if more else "")
