from pathlib import Path

from PIL import Image

from vlmeval_ivcp.datasets.demo import COLORS, DEMO_MCQ_NAME, DEMO_MCQ_ROWS, SHAPES, demo_mcq_frame, write_demo_mcq
from vlmeval_ivcp.datasets.tsv import dump_images, encode_image_to_base64, load_tsv

MCQ_COLUMNS = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]


def test_writing_twice_gives_the_same_bytes(tmp_path):
    first = write_demo_mcq(tmp_path / "one")
    second = write_demo_mcq(tmp_path / "two")
    again = write_demo_mcq(tmp_path / "one")
    assert first == again == tmp_path / "one" / "DemoMCQ.tsv"
    assert first.read_bytes() == second.read_bytes() == again.read_bytes()


def test_the_file_is_a_vlmevalkit_mcq_table(tmp_path):
    write_demo_mcq(tmp_path)
    frame = load_tsv(DEMO_MCQ_NAME, root=tmp_path, required_columns=MCQ_COLUMNS)
    assert list(frame.columns) == MCQ_COLUMNS
    assert frame["index"].tolist() == list(range(len(DEMO_MCQ_ROWS)))
    assert 6 <= len(frame) <= 10
    assert set(frame["answer"]) == {"A", "B", "C", "D"}  # the right letter moves around
    raw_images = demo_mcq_frame()["image"]
    assert raw_images.str.len().min() <= 64  # at least one row uses the image-reference rule
    assert frame["image"].str.len().min() > 64  # ... and loading resolves it


def test_answers_match_the_pictures(tmp_path):
    write_demo_mcq(tmp_path)
    frame = load_tsv(DEMO_MCQ_NAME, root=tmp_path)
    paths = dump_images(frame, DEMO_MCQ_NAME, root=tmp_path)
    for (_, line), row, row_paths in zip(frame.iterrows(), DEMO_MCQ_ROWS, paths, strict=True):
        options = [line[letter] for letter in "ABCD"]
        assert sorted(options) == sorted(COLORS if row.asks == "color" else SHAPES)
        assert line[line["answer"]] == row.truth
        assert line["category"] == row.asks
        with Image.open(row_paths[0]) as image:
            assert 560 <= image.width == image.height <= 672 and image.width % 28 == 0
            assert image.width == row.picture.size
            centre = image.getpixel((image.width // 2, image.height // 2))
            assert centre == COLORS[row.picture.color]


def test_images_of_an_older_file_are_not_reused(tmp_path):
    path = write_demo_mcq(tmp_path)
    older = load_tsv(DEMO_MCQ_NAME, root=tmp_path)
    older["image"] = encode_image_to_base64(Image.new("RGB", (8, 8)))
    path.write_text(older.to_csv(sep="\t", index=False), encoding="utf-8")
    stale = dump_images(load_tsv(DEMO_MCQ_NAME, root=tmp_path), DEMO_MCQ_NAME, root=tmp_path)[0][0]
    with Image.open(stale) as image:
        assert image.size == (8, 8)
    write_demo_mcq(tmp_path)  # the current set replaces the older file; its pictures are decoded anew
    fresh = dump_images(load_tsv(DEMO_MCQ_NAME, root=tmp_path), DEMO_MCQ_NAME, root=tmp_path)[0][0]
    with Image.open(fresh) as image:
        assert image.width >= 560
