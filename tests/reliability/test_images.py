"""Issue 16 item 4: decoded images follow the TSV's content, not just its indices."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from vlmeval_ivcp.datasets.tsv import dump_images, encode_image_to_base64


def _frame(colour):
    return pd.DataFrame({"index": [1], "image": [encode_image_to_base64(Image.new("RGB", (8, 8), colour))]})


def test_a_replaced_tsv_with_the_same_indices_gets_its_own_pictures(tmp_path):
    (path,), = dump_images(_frame("red"), "Set", tmp_path)
    assert Image.open(path).getpixel((0, 0)) == (255, 0, 0)
    (path,), = dump_images(_frame("blue"), "Set", tmp_path)
    assert Image.open(path).getpixel((0, 0)) == (0, 0, 255)


def test_an_unchanged_cell_reuses_its_file(tmp_path):
    (path,), = dump_images(_frame("red"), "Set", tmp_path)
    before = (tmp_path / "images" / "Set" / "1.png").stat().st_mtime_ns
    dump_images(_frame("red"), "Set", tmp_path)
    assert (tmp_path / "images" / "Set" / "1.png").stat().st_mtime_ns == before


def test_images_can_go_to_a_separate_cache_and_the_demo_set_is_not_rewritten(tmp_path, monkeypatch):
    from vlmeval_ivcp.datasets.demo import write_demo_mcq

    monkeypatch.setenv("VLMEVAL_IVCP_IMAGES", str(tmp_path / "cache"))
    (path,), = dump_images(_frame("red"), "Set", tmp_path / "data")
    assert path == str(tmp_path / "cache" / "Set" / "1.png") and not (tmp_path / "data").exists()
    demo = write_demo_mcq(tmp_path / "data")
    before = demo.stat().st_mtime_ns
    assert write_demo_mcq(tmp_path / "data") == demo and demo.stat().st_mtime_ns == before
