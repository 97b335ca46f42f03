"""Issue 16 item 3 and issue 17 §4: each row records what shaped it; a resume never mixes settings silently."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from vlmeval_ivcp import __version__
from vlmeval_ivcp.runner.cli import main
from vlmeval_ivcp.runner.config import ModelSpec, RunPoint
from vlmeval_ivcp.runner.provenance import MixedSettingsError, Provenance


def _config(tmp_path, max_new_tokens):
    config = {
        "work_dir": str(tmp_path / "results"),
        "data_root": str(tmp_path / "data"),
        "models": [{"name": "TinyQwen2.5-VL", "kwargs": {"max_new_tokens": max_new_tokens}}],
        "datasets": ["DemoMCQ"],
        "methods": [{"method": "none"}],
    }
    path = tmp_path / f"tokens{max_new_tokens}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _rows(tmp_path):
    path = tmp_path / "results" / "TinyQwen2.5-VL" / "none" / "TinyQwen2.5-VL_DemoMCQ.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_resume_with_other_model_kwargs_is_refused_then_rerun_or_reused(tmp_path, capsys):
    assert main(["--config", _config(tmp_path, 2), "--limit", "2"]) == 0
    first = _rows(tmp_path)
    assert len(first) == 2
    assert {(row["version"], len(row["settings"]), len(row["data"])) for row in first} == {(__version__, 16, 16)}

    capsys.readouterr()
    assert main(["--config", _config(tmp_path, 3), "--limit", "1"]) == 2
    error = capsys.readouterr().err
    assert "model.kwargs.max_new_tokens: 2 -> 3" in error and "--rerun" in error and "--reuse" in error
    assert error.count("run.py: error") == 1 and "Traceback" not in error
    assert _rows(tmp_path) == first  # nothing was added or lost

    assert main(["--config", _config(tmp_path, 3), "--limit", "1", "--reuse"]) == 0
    assert len({row["settings"] for row in _rows(tmp_path)}) == 2  # kept anyway, as asked

    assert main(["--config", _config(tmp_path, 3), "--limit", "1", "--rerun"]) == 0
    rows = _rows(tmp_path)
    assert len(rows) == 1 and rows[0]["settings"] != first[0]["settings"]
    (aside,) = (tmp_path / "results" / "TinyQwen2.5-VL" / "none").glob("replaced-*")
    assert len((aside / "TinyQwen2.5-VL_DemoMCQ.jsonl").read_text().splitlines()) == 3  # set aside, not deleted


def _provenance(policy="refuse"):
    return Provenance.of(ModelSpec("TinyQwen2.5-VL", {"device_map": "cpu"}), RunPoint("none", {}), "DemoMCQ", policy)


def test_a_changed_tsv_row_is_refused_and_its_index_named(tmp_path):
    provenance = _provenance()
    done = {1: {"index": 1, **provenance.fields("aaaa")}, 2: {"index": 2, **provenance.fields("bbbb")}}
    with pytest.raises(MixedSettingsError, match=r"the TSV rows of 1 indices changed .* e\.g\. \[2\]"):
        provenance.check(done, {1: "aaaa", 2: "cccc"}, tmp_path / "x.jsonl")
    assert _provenance("rerun").check(done, {1: "aaaa", 2: "cccc"}, tmp_path / "x.jsonl") is True
    assert _provenance("reuse").check(done, {1: "aaaa", 2: "cccc"}, tmp_path / "x.jsonl") is False


def test_another_code_version_alone_only_warns(tmp_path, caplog):
    provenance = _provenance()
    done = {1: {"index": 1, **provenance.fields("aaaa"), "version": "0.0.1", "commit": "abc"}}
    with caplog.at_level(logging.WARNING):
        assert provenance.check(done, {1: "aaaa"}, tmp_path / "x.jsonl") is False
    assert "another version of the toolkit" in caplog.text and "0.0.1" in caplog.text


def test_device_placement_is_not_a_setting():
    moved = Provenance.of(ModelSpec("TinyQwen2.5-VL", {"device_map": "auto"}), RunPoint("none", {}), "DemoMCQ")
    assert moved.hash == _provenance().hash
