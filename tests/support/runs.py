"""Run configs over the bundled DemoMCQ set with the tiny model, for runner tests that start real processes."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_demo_config(tmp_path: Path, name: str, methods: list[dict]) -> Path:
    """`<tmp_path>/<name>.yaml`: results under `<tmp_path>/<name>`, data shared under `<tmp_path>/data`."""
    config = {
        "work_dir": str(tmp_path / name),
        "data_root": str(tmp_path / "data"),
        "models": [{"name": "TinyQwen2.5-VL", "kwargs": {"max_new_tokens": 4}}],
        "datasets": ["DemoMCQ"],
        "methods": methods,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_shipped_demo(tmp_path: Path, methods: list[dict]) -> Path:
    """configs/demo.yaml with only `methods`, results under `<tmp_path>/results` and data under `<tmp_path>/data`."""
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").read_text())
    config.update(work_dir=str(tmp_path / "results"), data_root=str(tmp_path / "data"), methods=methods)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
