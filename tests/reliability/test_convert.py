"""Issue 16 items 11 and 20: the RefCOCO converter names the file it cannot convert and writes no empty TSV."""

from __future__ import annotations

import json

import pytest
from tools.convert_to_tsv import load_expressions


def test_a_non_utf8_annotation_file_is_named(tmp_path):
    path = tmp_path / "finetune_refcoco_val.json"
    path.write_bytes(json.dumps({"images": [], "annotations": []}).encode().replace(b"[]", b"[\xff]", 1))
    with pytest.raises(ValueError, match=r"finetune_refcoco_val\.json: not UTF-8 text"):
        load_expressions(path)


def test_an_empty_file_is_refused_rather_than_written_as_a_header_only_tsv(tmp_path):
    path = tmp_path / "finetune_refcoco_val.json"
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match=r"finetune_refcoco_val\.json: expected .*a non-empty 'images' list"):
        load_expressions(path)
    # Images without annotations were refused already, naming the entry (tests/tools/test_convert_to_tsv.py).
