"""Tests of tools/convert_to_tsv.py on MDETR-format files and pictures made in tmp_path."""

import base64
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

# tools/ is not a package: load the script by its path, as `python tools/convert_to_tsv.py` would run it.
_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "convert_to_tsv.py"
_spec = importlib.util.spec_from_file_location("convert_to_tsv", _SCRIPT)
convert = importlib.util.module_from_spec(_spec)
sys.modules["convert_to_tsv"] = convert  # dataclasses look their module up here
_spec.loader.exec_module(convert)


def make_picture(folder: Path, name: str, width: int, height: int) -> bytes:
    """Write a small picture whose format follows its suffix; return the file's bytes."""
    image = Image.new("RGB", (width, height), color=(width % 256, height % 256, 90))
    image.putpixel((0, 0), (255, 0, 0))
    image.save(folder / name)
    return (folder / name).read_bytes()


def image_entry(entry_id: int, file_name: str, width: int, height: int, caption: str = "the red thing") -> dict:
    return {"id": entry_id, "file_name": file_name, "height": height, "width": width, "caption": caption}


def write_annotations(path: Path, images: list, annotations: list) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return path


def read_tsv(path: Path) -> pd.DataFrame:
    """Read a TSV the way the harness does (pandas), keeping every cell as its exact text."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture
def pictures(tmp_path: Path) -> tuple[Path, dict]:
    """A PNG of 98x70 and a JPEG of 14x42 (sizes chosen for the half-to-even cases of --qwen25)."""
    folder = tmp_path / "train2014"
    folder.mkdir()
    return folder, {
        "a.png": make_picture(folder, "a.png", 98, 70),
        "b.jpg": make_picture(folder, "b.jpg", 14, 42),
    }


@pytest.fixture
def annotation_file(tmp_path: Path) -> Path:
    """Three expressions; id 12 has two boxes; id 13 reuses picture a.png with another caption."""
    images = [
        image_entry(11, "a.png", 98, 70, caption="man on the left"),
        image_entry(12, "b.jpg", 14, 42, caption='the "tall" one\twith a tab'),
        image_entry(13, "a.png", 98, 70, caption="dog"),
    ]
    annotations = [
        {"image_id": 11, "bbox": [10.25, 20.5, 30.5, 40]},
        {"image_id": 12, "bbox": [1.25, 3, 2.5, 30]},
        {"image_id": 12, "bbox": [0, 0, 14, 42]},
        {"image_id": 13, "bbox": [103.93 - 100, 9.99, 20.5, 10.01]},
    ]
    return write_annotations(tmp_path / "finetune_refcoco+_testA.json", images, annotations)


@pytest.mark.parametrize(
    ("stem", "qwen25", "expected"),
    [
        ("finetune_refcoco_val", False, "RefCOCO_val"),
        ("finetune_refcoco+_testA", False, "RefCOCO+_testA"),
        ("finetune_refcocog_test", False, "RefCOCOg_test"),
        ("finetune_refcoco_testB", True, "RefCOCO_testB_for_qwen25vl"),
        ("finetune_refcocog_val", True, "RefCOCOg_val_for_qwen25vl"),
        ("finetune_flickr_val", False, "finetune_flickr_val"),
        ("my_split", True, "my_split_for_qwen25vl"),
    ],
)
def test_dataset_name(stem, qwen25, expected):
    assert convert.dataset_name(f"/data/{stem}.json", qwen25) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((98, 70), (112, 56)),  # 3.5 -> 4 patches, 2.5 -> 2 patches (half to even)
        ((42, 42), (56, 56)),  # 1.5 -> 2
        ((640, 480), (644, 476)),  # 22.86 -> 23, 17.14 -> 17
        ((7, 14), (28, 28)),  # 0.25 and 0.5 round to 0 patches: one patch at least
    ],
)
def test_snapped_size(size, expected):
    assert convert.snapped_size(*size, patch_size=28) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(10.0, "10"), (7, "7"), (103.93 + 200.5, "304.43"), (-0.00001, "0"), (1.23456, "1.2346"), (-2.5, "-2.5")],
)
def test_format_number(value, expected):
    assert convert.format_number(value) == expected


def test_default_mode_writes_every_column(tmp_path, pictures, annotation_file):
    folder, picture_bytes = pictures
    path = convert.convert_file(annotation_file, folder, tmp_path / "out")

    assert path == tmp_path / "out" / "RefCOCO+_testA.tsv"
    reference = tmp_path / "out" / "plain.txt"
    reference.write_text("")
    assert path.stat().st_mode == reference.stat().st_mode  # the permissions of any file this process writes
    assert path.read_text(encoding="utf-8").splitlines()[0] == "index\timage\tquestion\theight\twidth\tanswer"
    table = read_tsv(path)
    assert list(table.columns) == list(convert.COLUMNS)
    assert table["index"].tolist() == ["11", "12", "13"]
    assert table["question"].tolist() == ["man on the left", 'the "tall" one\twith a tab', "dog"]
    assert table["height"].tolist() == ["70", "42", "70"]
    assert table["width"].tolist() == ["98", "14", "98"]
    assert table["answer"].tolist() == [
        "10.25 20.5 40.75 60.5",
        "1.25 3 3.75 33 0 0 14 42",  # two boxes: two groups of four numbers
        "3.93 9.99 24.43 20",
    ]
    # The picture's bytes, byte for byte: PNG and JPEG alike, never re-encoded.
    for cell, name in zip(table["image"], ["a.png", "b.jpg", "a.png"], strict=True):
        assert base64.b64decode(cell) == picture_bytes[name]


def test_qwen25_mode_scales_to_the_snapped_input(tmp_path, pictures, annotation_file):
    folder, picture_bytes = pictures
    path = convert.convert_file(annotation_file, folder, tmp_path, qwen25=True)

    assert path.name == "RefCOCO+_testA_for_qwen25vl.tsv"
    table = read_tsv(path)
    # a.png 98x70 -> 112x56: x * 8/7, y * 4/5. b.jpg 14x42 -> 28x56: x * 2, y * 4/3.
    assert table["answer"].tolist() == [
        # 11.71 16.4 46.57 48.4
        "12 16 47 48",
        # 2.5 -> 2 and 7.5 -> 8 (half to even); 4, 44; second box spans the whole 28x56 input
        "2 4 8 44 0 0 28 56",
        # 4.49 7.99 27.92 16.0
        "4 8 28 16",
    ]
    assert table["height"].tolist() == ["70", "42", "70"]  # the original size stays
    assert table["width"].tolist() == ["98", "14", "98"]
    assert base64.b64decode(table["image"][1]) == picture_bytes["b.jpg"]


def test_patch_size_changes_the_grid(tmp_path, pictures, annotation_file):
    folder, _ = pictures
    path = convert.convert_file(annotation_file, folder, tmp_path, qwen25=True, patch_size=14)
    # a.png 98x70 is already a multiple of 14: scale 1, rounded corners.
    assert read_tsv(path)["answer"][0] == "10 20 41 60"


def test_box_within_tolerance_is_accepted(tmp_path, pictures):
    folder, _ = pictures
    annotations = write_annotations(
        tmp_path / "edge.json", [image_entry(1, "a.png", 98, 70)], [{"image_id": 1, "bbox": [-0.5, 0, 99, 70.9]}]
    )
    assert read_tsv(convert.convert_file(annotations, folder, tmp_path))["answer"][0] == "-0.5 0 98.5 70.9"


def _error_cases():
    ok_image = image_entry(5, "a.png", 98, 70)
    ok_box = {"image_id": 5, "bbox": [1, 2, 3, 4]}
    no_caption = {key: value for key, value in ok_image.items() if key != "caption"}
    return [
        ("missing picture", [image_entry(5, "missing.jpg", 98, 70)], [ok_box], FileNotFoundError, "missing.jpg"),
        ("missing caption", [no_caption], [ok_box], ValueError, "caption"),
        ("bbox of 3 numbers", [ok_image], [{"image_id": 5, "bbox": [1, 2, 3]}], ValueError, "4 finite numbers"),
        ("bbox with text", [ok_image], [{"image_id": 5, "bbox": [1, 2, "3", 4]}], ValueError, "4 finite numbers"),
        ("bbox without area", [ok_image], [{"image_id": 5, "bbox": [1, 2, 0, 4]}], ValueError, "positive width"),
        ("annotation without bbox", [ok_image], [{"image_id": 5}], ValueError, "bbox"),
        ("entry without annotation", [ok_image, image_entry(6, "a.png", 98, 70)], [ok_box], ValueError, "id=6"),
        ("annotation of no entry", [ok_image], [ok_box, {"image_id": 9, "bbox": [1, 2, 3, 4]}], ValueError, "id=9"),
        ("box past the right edge", [ok_image], [{"image_id": 5, "bbox": [90, 2, 9.5, 4]}], ValueError, "outside"),
        ("box above the top", [ok_image], [{"image_id": 5, "bbox": [1, -1.5, 3, 4]}], ValueError, "outside"),
        ("duplicate id", [ok_image, ok_image], [ok_box], ValueError, "twice"),
        ("non-integer size", [image_entry(5, "a.png", 98.5, 70)], [ok_box], ValueError, "positive integers"),
    ]


@pytest.mark.parametrize(
    ("images", "annotations", "error", "detail"),
    [case[1:] for case in _error_cases()],
    ids=[case[0] for case in _error_cases()],
)
def test_errors_name_the_file_and_the_entry(tmp_path, pictures, images, annotations, error, detail):
    folder, _ = pictures
    annotation_path = write_annotations(tmp_path / "finetune_refcoco_val.json", images, annotations)
    with pytest.raises(error) as caught:
        convert.convert_file(annotation_path, folder, tmp_path / "out")
    message = str(caught.value)
    assert str(annotation_path) in message
    assert "id=" in message
    assert detail in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_failed_conversion_leaves_no_tsv(tmp_path, pictures, annotation_file):
    folder, _ = pictures
    out = tmp_path / "out"
    out.mkdir()
    (out / "RefCOCO+_testA.tsv").write_text("earlier complete file\n")
    calls = []

    def read_then_fail(path: str) -> str:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(f"disk error reading {path}")
        return convert.read_image_base64(path)

    with pytest.raises(OSError, match="disk error"):
        convert.convert_file(annotation_file, folder, out, read_image=read_then_fail)
    # No partial file is left, and the earlier TSV is untouched.
    assert [path.name for path in out.iterdir()] == ["RefCOCO+_testA.tsv"]
    assert (out / "RefCOCO+_testA.tsv").read_text() == "earlier complete file\n"


def test_large_split_reads_each_picture_when_its_row_is_made(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for number in range(5):  # as in RefCOCO, many expressions share a picture
        make_picture(folder, f"p{number}.jpg", 40 + number, 30)
    images = [image_entry(1000 + row, f"p{row % 5}.jpg", 40 + row % 5, 30, f"thing {row}") for row in range(200)]
    annotations = [{"image_id": 1000 + row, "bbox": [1, 1, 10, 10]} for row in range(200)]
    annotation_path = write_annotations(tmp_path / "big.json", images, annotations)
    reads = []

    def counting_reader(path: str) -> str:
        reads.append(path)
        return convert.read_image_base64(path)

    # The row generator reads picture k exactly when it hands out row k, never ahead.
    rows = convert.iter_rows(convert.load_expressions(annotation_path), folder, read_image=counting_reader)
    assert reads == []
    for produced, row in enumerate(rows, start=1):
        assert len(reads) == produced
        assert reads[-1].endswith(f"p{(produced - 1) % 5}.jpg") and row[0] == str(999 + produced)

    reads.clear()
    path = convert.convert_file(annotation_path, folder, tmp_path / "out", read_image=counting_reader)
    assert len(reads) == 200
    table = read_tsv(path)
    assert len(table) == 200
    assert base64.b64decode(table["image"][7]) == (folder / "p2.jpg").read_bytes()


def test_main_converts_every_file(tmp_path, pictures, annotation_file, capsys):
    folder, _ = pictures
    other = write_annotations(
        tmp_path / "finetune_refcocog_test.json",
        [image_entry(1, "a.png", 98, 70)],
        [{"image_id": 1, "bbox": [0, 0, 28, 28]}],
    )
    argv = ["--images_folder", str(folder), "--annotations_files", str(annotation_file), str(other)]
    assert convert.main([*argv, "--output_dir", str(tmp_path / "out"), "--qwen25"]) == 0
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["RefCOCO+_testA_for_qwen25vl.tsv", "RefCOCOg_test_for_qwen25vl.tsv"]
    assert "RefCOCOg_test_for_qwen25vl.tsv" in capsys.readouterr().out


def test_main_reports_errors_without_a_traceback(tmp_path, pictures):
    folder, _ = pictures
    broken = write_annotations(tmp_path / "broken.json", [image_entry(3, "a.png", 98, 70)], [])
    with pytest.raises(SystemExit) as caught:
        convert.main(
            ["--images_folder", str(folder), "--annotations_files", str(broken), "--output_dir", str(tmp_path)]
        )
    assert "broken.json" in str(caught.value.code) and "id=3" in str(caught.value.code)


def test_files_writing_the_same_tsv_are_refused(tmp_path, pictures, annotation_file):
    folder, _ = pictures
    twin = tmp_path / "twin"
    twin.mkdir()
    copy = twin / annotation_file.name
    copy.write_text(annotation_file.read_text())
    with pytest.raises(ValueError, match=r"RefCOCO\+_testA\.tsv"):
        convert.convert_files([annotation_file, copy], folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
