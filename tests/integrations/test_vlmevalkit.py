"""register() against a stand-in package with VLMEvalKit's registry shape (the real one is not on the registry)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest

from vlmeval_ivcp.datasets.demo import write_demo_mcq
from vlmeval_ivcp.datasets.registry import DATASET_CLASSES
from vlmeval_ivcp.integrations.vlmevalkit import register
from vlmeval_ivcp.models.registry import MODEL_CLASSES, supported_models

STAND_IN = {
    "vlmeval/__init__.py": "",
    "vlmeval/config.py": "supported_VLM = {'SomeOtherModel': object}\n",
    "vlmeval/vlm/__init__.py": "",
    "vlmeval/dataset/__init__.py": "class TheirDataset:\n    pass\n\nDATASET_CLASSES = [TheirDataset]\n",
}


@pytest.fixture
def vlmeval_checkout(tmp_path, monkeypatch):
    for relative, text in STAND_IN.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n == "vlmeval" or n.startswith("vlmeval.")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path
    for name in [n for n in sys.modules if n == "vlmeval" or n.startswith("vlmeval.")]:
        del sys.modules[name]


def test_register_puts_every_model_and_dataset_where_vlmevalkit_looks(vlmeval_checkout, tmp_path):
    added = register()
    import vlmeval.config
    import vlmeval.dataset
    import vlmeval.vlm

    assert "SomeOtherModel" in vlmeval.config.supported_VLM
    for name in supported_models:
        assert isinstance(vlmeval.config.supported_VLM[name], partial)
    for cls in MODEL_CLASSES.values():
        assert getattr(vlmeval.vlm, cls.__name__) is cls
    ours = vlmeval.dataset.DATASET_CLASSES[: len(DATASET_CLASSES)]
    assert [cls.__name__ for cls in ours] == [cls.__name__ for cls in DATASET_CLASSES] == added["datasets"]
    assert vlmeval.dataset.DATASET_CLASSES[-1].__name__ == "TheirDataset"
    for cls in ours:
        assert getattr(vlmeval.dataset, cls.__name__) is cls

    # VLMEvalKit's build_dataset: the first class whose supported_datasets() has the name, built as cls(dataset=name).
    data_root = tmp_path / "data"
    write_demo_mcq(data_root)
    found = next(cls for cls in vlmeval.dataset.DATASET_CLASSES[:-1] if "DemoMCQ" in cls.supported_datasets())
    dataset = found(dataset="DemoMCQ", root=data_root)
    message = dataset.build_prompt(dataset.data.iloc[0])
    assert message[0]["type"] == "image" and message[-1]["type"] == "text"
    assert "Options:" in message[-1]["value"]

    # A registered model answers a VLMEvalKit-format message.
    model = vlmeval.config.supported_VLM["TinyQwen2.5-VL"](max_new_tokens=2)
    answer = model.generate(message=message, dataset="DemoMCQ")
    assert isinstance(answer, str)


def test_register_without_vlmevalkit_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vlmeval", None)  # makes `import vlmeval` fail
    with pytest.raises(ImportError, match="pip install -e VLMEvalKit"):
        register()


def test_the_module_entry_point_runs_vlmevalkits_run_py_after_registering(vlmeval_checkout, tmp_path):
    run_py = tmp_path / "run.py"
    run_py.write_text(
        "import sys\nfrom vlmeval.config import supported_VLM\n"
        "print('args', sys.argv[1:], 'TinyQwen2.5-VL' in supported_VLM)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "vlmeval_ivcp.vlmevalkit", str(run_py), "--data", "MMStar"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(vlmeval_checkout)},
    )
    assert result.returncode == 0, result.stderr
    assert "args ['--data', 'MMStar'] True" in result.stdout
