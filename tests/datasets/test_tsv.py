import base64
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vlmeval_ivcp.datasets.tsv import (
    atomic_write_bytes,
    dump_images,
    encode_bytes_to_base64,
    encode_image_to_base64,
    image_folder,
    lmu_root,
    load_tsv,
    resolve_image_references,
    summarize_values,
    tsv_path,
)


def _picture(color: tuple[int, int, int], size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), color)


RED = encode_image_to_base64(_picture((255, 0, 0)))
BLUE = encode_image_to_base64(_picture((0, 0, 255)))


def _write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pixel(path: str) -> tuple[int, ...]:
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((0, 0))


def test_lmu_root_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMUData", str(tmp_path))
    assert lmu_root() == tmp_path
    assert tsv_path("MME") == tmp_path / "MME.tsv"
    assert image_folder("MME") == tmp_path / "images" / "MME"
    monkeypatch.delenv("LMUData")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lmu_root() == tmp_path / "home" / "LMUData"


def test_load_by_name_and_by_path(tmp_path):
    _write_tsv(tmp_path / "Bench.tsv", ["index", "question", "A"], [[3, "q3", "5"], [1, "q1", ""]])
    by_name = load_tsv("Bench", root=tmp_path)
    by_path = load_tsv(tmp_path / "Bench.tsv")
    pd.testing.assert_frame_equal(by_name, by_path)
    assert by_name["index"].tolist() == [3, 1]
    assert all(type(value) is int for value in by_name["index"])
    assert by_name.loc[0, "A"] == "5"  # text stays text
    assert pd.isna(by_name.loc[1, "A"])  # an empty cell is missing


def test_index_stays_text_unless_every_value_is_an_integer(tmp_path):
    _write_tsv(tmp_path / "a.tsv", ["index", "question"], [["7", "q"], ["x1", "q"]])
    assert load_tsv(tmp_path / "a.tsv")["index"].tolist() == ["7", "x1"]
    _write_tsv(tmp_path / "b.tsv", ["index", "question"], [["007", "q"], ["8", "q"]])
    assert load_tsv(tmp_path / "b.tsv")["index"].tolist() == ["007", "8"]


def test_missing_file_names_the_path_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Nope\.tsv.*LMUData"):
        load_tsv("Nope")


@pytest.mark.parametrize(
    ("header", "rows", "required", "message"),
    [
        (["question"], [["q"]], (), r"missing column\(s\) \['index'\]"),
        (["index", "question"], [[1, "q"]], ("answer", "question"), r"missing column\(s\) \['answer'\]"),
        (["index", "question"], [[1, "q"], [2, "q"], [1, "q"], [2, "q"], [3, "q"]], (), r"duplicated.*\['1', '2'\]"),
        (["index", "question"], [[1, "q"], ["", "q"]], (), r"'index' is empty on line\(s\) \[3\]"),
    ],
)
def test_bad_columns_name_the_file_and_column(tmp_path, header, rows, required, message):
    path = _write_tsv(tmp_path / "bad.tsv", header, rows)
    with pytest.raises(ValueError, match=message) as info:
        load_tsv(path, required_columns=required)
    assert "bad.tsv" in str(info.value)


def test_image_references_reuse_another_rows_image(tmp_path):
    path = _write_tsv(tmp_path / "r.tsv", ["index", "image", "question"], [[10, RED, "a"], [11, "10", "b"]])
    frame = load_tsv(path)
    assert frame["image"].tolist() == [RED, RED]
    paths = dump_images(frame, "R", root=tmp_path)
    assert _pixel(paths[1][0]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1, RED], [2, "99"]], r"row index 2: image '99' is a reference to index '99'"),
        ([[1, RED], [2, "1"], [3, "2"]], r"row index 3: image '2' refers to a row whose image is"),
    ],
)
def test_dangling_or_chained_reference_is_an_error(tmp_path, rows, message):
    path = _write_tsv(tmp_path / "r.tsv", ["index", "image"], rows)
    with pytest.raises(ValueError, match=message):
        load_tsv(path)


def test_resolve_leaves_frames_without_images_alone():
    frame = pd.DataFrame({"index": [1], "question": ["q"]})
    assert resolve_image_references(frame) is frame


def test_dump_writes_each_image_once(tmp_path):
    frame = pd.DataFrame({"index": [1, 2], "image": [RED, BLUE]})
    paths = dump_images(frame, "Bench", root=tmp_path)
    folder = tmp_path / "images" / "Bench"
    assert paths == [[str(folder / "1.png")], [str(folder / "2.png")]]
    assert [_pixel(row[0]) for row in paths] == [(255, 0, 0), (0, 0, 255)]
    Path(paths[0][0]).write_bytes(b"kept")  # an existing non-empty file is trusted, not rewritten
    Path(paths[1][0]).write_bytes(b"")  # an empty one is a failed earlier write, and is redone
    dump_images(frame, "Bench", root=tmp_path)
    assert Path(paths[0][0]).read_bytes() == b"kept"
    assert _pixel(paths[1][0]) == (0, 0, 255)
    assert sorted(path.name for path in folder.iterdir()) == ["1.png", "2.png"]  # no temporary files left


def test_png_bytes_are_kept_and_jpeg_is_reencoded_as_png(tmp_path):
    jpeg = io.BytesIO()
    _picture((0, 255, 0)).save(jpeg, format="JPEG")
    frame = pd.DataFrame({"index": [1, 2], "image": [RED, encode_bytes_to_base64(jpeg.getvalue())]})
    paths = dump_images(frame, "Bench", root=tmp_path)
    assert Path(paths[0][0]).read_bytes() == base64.b64decode(RED)
    with Image.open(paths[1][0]) as image:
        assert image.format == "PNG"


def test_image_path_column_names_the_files(tmp_path):
    absolute = tmp_path / "elsewhere" / "pic.jpg"
    frame = pd.DataFrame(
        {
            "index": [1, 2, 3],
            "image": [RED, BLUE, RED],
            "image_path": ["sub/one.png", str(absolute), float("nan")],
        }
    )
    paths = dump_images(frame, "Bench", root=tmp_path)
    folder = tmp_path / "images" / "Bench"
    assert paths == [[str(folder / "sub" / "one.png")], [str(absolute)], [str(folder / "3.png")]]
    with Image.open(absolute) as image:
        assert image.format == "JPEG"  # the suffix decides the stored format


@pytest.mark.parametrize("as_json", [True, False])
def test_a_row_may_hold_several_images(tmp_path, as_json):
    images = json.dumps([RED, BLUE]) if as_json else repr([RED, BLUE])
    frame = pd.DataFrame({"index": [5], "image": [images]})
    paths = dump_images(frame, "Multi", root=tmp_path)
    folder = tmp_path / "images" / "Multi"
    assert paths == [[str(folder / "5_0.png"), str(folder / "5_1.png")]]
    assert [_pixel(path) for path in paths[0]] == [(255, 0, 0), (0, 0, 255)]
    named = frame.assign(image_path=[json.dumps(["x.png", "y.png"])])
    assert dump_images(named, "Multi", root=tmp_path) == [[str(folder / "x.png"), str(folder / "y.png")]]
    as_objects = pd.DataFrame({"index": [5], "image": [[RED, BLUE]]})  # cells already holding Python lists
    assert dump_images(as_objects, "Multi", root=tmp_path) == paths
    with pytest.raises(ValueError, match=r"row index 6: column 'image' must be a non-empty list of strings"):
        dump_images(pd.DataFrame({"index": [6], "image": ["[1, 2]"]}), "Multi", root=tmp_path)
    with pytest.raises(ValueError, match=r"row index 5: 2 image\(s\) but 1 image_path"):
        dump_images(frame.assign(image_path=["only.png"]), "Multi", root=tmp_path)


def test_rows_without_inline_images_use_existing_files(tmp_path):
    folder = tmp_path / "images" / "Meta"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(base64.b64decode(RED))
    frame = pd.DataFrame({"index": [1], "image_path": ["a.png"]})
    assert dump_images(frame, "Meta", root=tmp_path) == [[str(folder / "a.png")]]
    with pytest.raises(FileNotFoundError, match=r"row index 2: image file .*b\.png"):
        dump_images(pd.DataFrame({"index": [2], "image_path": ["b.png"]}), "Meta", root=tmp_path)
    with pytest.raises(ValueError, match=r"row index 3 has neither an image nor an image_path"):
        dump_images(pd.DataFrame({"index": [3], "image": [math.nan]}), "Meta", root=tmp_path)
    with pytest.raises(ValueError, match="neither an 'image' nor an 'image_path' column"):
        dump_images(pd.DataFrame({"index": [4]}), "Meta", root=tmp_path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not*base64!" * 10, "not valid base64"),
        (base64.b64encode(b"definitely not an image" * 5).decode(), "not a readable image"),
    ],
)
def test_bad_images_name_the_file_and_row(tmp_path, payload, message):
    frame = pd.DataFrame({"index": [42], "image": [payload]})
    with pytest.raises(ValueError, match=rf"42\.png: row index 42: .*{message}"):
        dump_images(frame, "Bad", root=tmp_path)
    assert not (tmp_path / "images" / "Bad" / "42.png").exists()


def test_encoders_round_trip():
    picture = _picture((1, 2, 3))
    decoded = Image.open(io.BytesIO(base64.b64decode(encode_image_to_base64(picture))))
    assert decoded.format == "PNG" and decoded.getpixel((0, 0)) == (1, 2, 3)
    assert base64.b64decode(encode_bytes_to_base64(b"\x00\xff")) == b"\x00\xff"


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [path.name for path in target.parent.iterdir()] == ["file.bin"]


def test_summarize_values_cuts_long_lists():
    assert summarize_values([1, 2]) == "[1, 2]"
    assert summarize_values(list(range(15)), limit=3) == "[0, 1, 2] (+12 more)"
