"""register() against a stand-in VLMEvalKit checkout (the real one is not on the package registry).

The stand-in has the pieces our integration meets, in the shape VLMEvalKit's own have: the registries,
`build_dataset` (first class whose `supported_datasets()` has the name), an inference loop that calls the model and
the dataset the way `vlmeval/inference.py` does and writes its prediction file, and a `run.py` that reads
`MODALITY`/`TYPE` and scores with `dataset.evaluate(prediction_file, **judge_kwargs)`. Unlike VLMEvalKit's run.py,
which logs a failed model x dataset combination and goes on, the stand-in lets the error through, so a test sees it.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vlmeval_ivcp.datasets.demo import DEMO_MCQ_ROWS
from vlmeval_ivcp.datasets.registry import DATASET_CLASSES
from vlmeval_ivcp.evaluation.judge import Judge
from vlmeval_ivcp.integrations.vlmevalkit import (
    judge_from_kwargs,
    on_this_process_gpu,
    register,
    save_scores,
)
from vlmeval_ivcp.models.registry import MODEL_CLASSES, supported_models
from vlmeval_ivcp.vlmevalkit import main

DATASET_INIT = '''
class TheirDataset:
    MODALITY = "IMAGE"
    TYPE = "MCQ"

    def __init__(self, dataset="TheirBench"):
        self.dataset_name = dataset

    @classmethod
    def supported_datasets(cls):
        return ["TheirBench", "MMStar"]  # MMStar is one of ours too: VLMEvalKit's stays


DATASET_CLASSES = [TheirDataset]
SUPPORTED_DATASETS = [name for cls in DATASET_CLASSES for name in cls.supported_datasets()]


def build_dataset(dataset_name, **kwargs):
    for cls in DATASET_CLASSES:
        if dataset_name in cls.supported_datasets():
            return cls(dataset=dataset_name, **kwargs)
    return None
'''

INFERENCE = '''
import csv
import json
import os

from vlmeval.config import supported_VLM

USE_VLLM_NAMES = ("Llama-4", "Qwen2-VL", "Qwen2.5-VL")


def prediction_file(work_dir, model_name, dataset_name):
    suffix = os.environ.get("PRED_FORMAT", "").lower() or "xlsx"
    return os.path.join(work_dir, f"{model_name}_{dataset_name}.{suffix}")


def dump(table, path):
    if path.endswith(".xlsx"):
        table.to_excel(path, index=False, engine="xlsxwriter")
    elif path.endswith(".tsv"):
        table.to_csv(path, sep="\\t", index=False, encoding="utf-8", quoting=csv.QUOTE_ALL)
    else:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(table.to_dict("records"), out, indent=4, ensure_ascii=False)


def infer_data_job(model, work_dir, model_name, dataset, verbose=False, api_nproc=4, ignore_failed=False,
                   use_vllm=False):
    dataset_name = dataset.dataset_name
    if isinstance(model, str):
        kwargs = {"use_vllm": use_vllm} if any(n in model_name for n in USE_VLLM_NAMES) else {}
        model = supported_VLM[model_name](**kwargs)
    assert not getattr(model, "is_api", False), "the stand-in runs local models only"
    model.set_dump_image(dataset.dump_image)
    rows = dataset.data.iloc[list(range(len(dataset)))]
    answers = {}
    for i in range(len(rows)):
        if hasattr(model, "use_custom_prompt") and model.use_custom_prompt(dataset_name):
            message = model.build_prompt(rows.iloc[i], dataset=dataset_name)
        else:
            message = dataset.build_prompt(rows.iloc[i])
        answers[rows.iloc[i]["index"]] = model.generate(message=message, dataset=dataset_name)
    table = dataset.data  # not a copy: the predictions land in the dataset's own table
    table["prediction"] = [str(answers[index]) for index in table["index"]]
    if "image" in table:
        table.pop("image")
    dump(table, prediction_file(work_dir, model_name, dataset_name))
    return model
'''

RUN_PY = '''
import argparse
import json
import os

import pandas as pd

from vlmeval.config import supported_VLM
from vlmeval.dataset import build_dataset
from vlmeval.inference import infer_data_job, prediction_file

parser = argparse.ArgumentParser()
parser.add_argument("--data", nargs="+")
parser.add_argument("--model", nargs="+")
parser.add_argument("--work-dir", default="./outputs")
parser.add_argument("--judge")
args = parser.parse_args()
for model_name in args.model:
    model = model_name
    pred_root = os.path.join(args.work_dir, model_name, "T20250101_G0")
    os.makedirs(pred_root, exist_ok=True)
    for dataset_name in args.data:
        dataset = build_dataset(dataset_name)
        assert dataset.MODALITY == "IMAGE" and dataset.TYPE != "MT", "the stand-in runs image benchmarks only"
        model = infer_data_job(model, work_dir=pred_root, model_name=model_name, dataset=dataset)
        judge_kwargs = {"nproc": 4, "verbose": False, "retry": 3, "work_dir": args.work_dir,
                        "eval_model_name": model_name}
        if args.judge is not None:
            judge_kwargs["model"] = args.judge
        elif dataset.TYPE in ("MCQ", "Y/N"):
            judge_kwargs["model"] = "chatgpt-0125"
        results = dataset.evaluate(prediction_file(pred_root, model_name, dataset_name), **judge_kwargs)
        assert isinstance(results, (dict, pd.DataFrame))
        print("RESULTS", json.dumps(results, indent=4))
'''

STAND_IN = {
    "vlmeval/__init__.py": "",
    "vlmeval/config.py": "supported_VLM = {'SomeOtherModel': object}\n",
    "vlmeval/vlm/__init__.py": "",
    "vlmeval/dataset/__init__.py": DATASET_INIT,
    "vlmeval/inference.py": INFERENCE,
    "run.py": RUN_PY,
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


def test_register_puts_every_model_and_dataset_where_vlmevalkit_looks(vlmeval_checkout):
    added = register()
    import vlmeval.config
    import vlmeval.dataset
    import vlmeval.vlm

    assert "SomeOtherModel" in vlmeval.config.supported_VLM
    for name in supported_models:
        assert isinstance(vlmeval.config.supported_VLM[name], partial)
    for adapter in MODEL_CLASSES.values():
        registered = getattr(vlmeval.vlm, adapter.__name__)
        assert issubclass(registered, adapter.load()) and callable(registered.set_dump_image)
    ours = vlmeval.dataset.DATASET_CLASSES[: len(DATASET_CLASSES)]
    assert [cls.__name__ for cls in ours] == [cls.__name__ for cls in DATASET_CLASSES]
    assert vlmeval.dataset.DATASET_CLASSES[-1].__name__ == "TheirDataset"
    for cls in ours:
        assert getattr(vlmeval.dataset, cls.__name__) is cls
        assert cls.MODALITY == "IMAGE"
        # run.py --config passes only the keys the constructor names.
        assert {"dataset", "root"} <= set(inspect.signature(cls.__init__).parameters)
    # Every name of ours that VLMEvalKit lacks is built by our class; MMStar stays VLMEvalKit's.
    ours_by_name = {name: cls for cls in reversed(ours) for name in cls.supported_datasets()}
    every = {name for family in DATASET_CLASSES for name in family.SUPPORTED}
    assert set(ours_by_name) == every - {"MMStar"} == set(added["datasets"])
    assert {"DemoMCQ", "RefCOCO_val", "RefCOCOg_test_for_qwen25vl"} <= set(added["datasets"])
    assert type(vlmeval.dataset.build_dataset("MMStar")).__name__ == "TheirDataset"
    assert sorted(vlmeval.dataset.SUPPORTED_DATASETS) == sorted(every | {"TheirBench"})


def test_vlmevalkit_runs_a_registered_model_on_a_registered_dataset_end_to_end(
    vlmeval_checkout, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))  # empty: building DemoMCQ writes it
    monkeypatch.setenv("PRED_FORMAT", "tsv")  # VLMEvalKit's default, xlsx, needs xlsxwriter, not installed here
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    tiny = supported_models["TinyQwen2.5-VL"]  # the registry entry, answering in 2 tokens to keep the test short
    monkeypatch.setitem(supported_models, "TinyQwen2.5-VL", partial(tiny, max_new_tokens=2))
    work_dir = tmp_path / "outputs"
    run = [str(vlmeval_checkout / "run.py"), "--data", "DemoMCQ", "--model", "TinyQwen2.5-VL", "--work-dir"]

    with pytest.warns(UserWarning, match="OPENAI_API_KEY is not set"):  # run.py asks for a judge for MCQ
        main([*run, str(work_dir)])

    results = json.loads(capsys.readouterr().out.split("RESULTS", 1)[1])
    assert results["count"] == len(DEMO_MCQ_ROWS) and 0.0 <= results["overall"] <= 1.0
    assert set(results["category"]) == {"color", "shape"}
    run_dir = work_dir / "TinyQwen2.5-VL" / "T20250101_G0"
    predictions = pd.read_csv(run_dir / "TinyQwen2.5-VL_DemoMCQ.tsv", sep="\t")
    assert len(predictions) == len(DEMO_MCQ_ROWS) and "image" not in predictions and "prediction" in predictions
    assert json.loads((run_dir / "TinyQwen2.5-VL_DemoMCQ_score.json").read_text()) == results


@pytest.fixture
def demo(vlmeval_checkout, tmp_path):
    register()
    import vlmeval.dataset

    return vlmeval.dataset.build_dataset("DemoMCQ", root=tmp_path / "data")


def test_evaluate_reads_each_prediction_format_vlmevalkit_writes(demo, tmp_path):
    import vlmeval.inference

    table = demo.data.drop(columns=["image"]).assign(prediction=demo.data["answer"])  # every answer right
    for suffix in ["tsv", "json"] + (["xlsx"] if _installed("xlsxwriter", "openpyxl") else []):
        path = str(tmp_path / f"M_DemoMCQ.{suffix}")
        vlmeval.inference.dump(table, path)
        assert demo.evaluate(path, model="exact_matching", nproc=4)["overall"] == 1.0, suffix

    vlmeval.inference.dump(table.iloc[1:], str(tmp_path / "M_DemoMCQ.tsv"))
    with pytest.raises(ValueError, match="no prediction for 1 row"):
        demo.evaluate(str(tmp_path / "M_DemoMCQ.tsv"), model="exact_matching")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def test_scores_come_back_as_plain_json_values_and_beside_the_predictions(tmp_path):
    eval_file = str(tmp_path / "M_DemoMCQ.tsv")
    report = {"overall": np.float32(0.5), "count": np.int64(8), "category": {"color": np.float64(0.25)}}
    plain = save_scores(report, eval_file)
    assert json.dumps(plain) and plain == {"overall": 0.5, "count": 8, "category": {"color": 0.25}}
    assert json.loads((tmp_path / "M_DemoMCQ_score.json").read_text()) == plain


def test_the_judge_is_the_one_vlmevalkit_names(monkeypatch, tmp_path):
    eval_file = str(tmp_path / "M_MMStar.xlsx")
    monkeypatch.delenv("LOCAL_LLM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    assert judge_from_kwargs({"model": "exact_matching"}, eval_file) is None
    assert judge_from_kwargs({"nproc": 4}, eval_file) is None
    judge = judge_from_kwargs({"model": "chatgpt-0125", "retry": 5, "nproc": 6, "verbose": False}, eval_file)
    assert isinstance(judge, Judge) and judge.model == "gpt-3.5-turbo-0125" and judge.max_retries == 5
    assert judge.nproc == 6  # VLMEvalKit's --api-nproc
    monkeypatch.setenv("LOCAL_LLM", "Qwen2.5-7B-Instruct")  # VLMEvalKit's way to name a locally served judge
    assert judge_from_kwargs({"model": "chatgpt-0125"}, eval_file).model == "Qwen2.5-7B-Instruct"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.warns(UserWarning, match="OPENAI_API_KEY"):
        assert judge_from_kwargs({"model": "chatgpt-0125"}, eval_file) is None


def test_models_built_by_vlmevalkit_go_on_the_process_gpu_and_refuse_vllm(vlmeval_checkout, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert on_this_process_gpu({"dtype": "bfloat16"}) == {"dtype": "bfloat16", "device_map": {"": 3}}
    assert on_this_process_gpu({"device_map": "auto"}) == {"device_map": "auto"}
    register()
    import vlmeval.vlm

    with pytest.raises(ValueError, match="use_vllm"):
        vlmeval.vlm.Qwen2_5_VL("unused/path", use_vllm=True)


def test_the_readme_config_json_builds_a_pruned_model_and_names_a_registered_dataset(vlmeval_checkout):
    from support.tiny import tiny_path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    config = json.loads(re.search(r"```json\n(.*?)```", readme, flags=re.S).group(1))
    register()
    import vlmeval.dataset
    import vlmeval.vlm

    for entry in config["model"].values():
        options = dict(entry)
        cls = getattr(vlmeval.vlm, options.pop("class"))
        # VLMEvalKit passes the entry's keys as they are. The tiny checkpoint has 4 layers, so the cut moves from 16
        # to 2; everything else is the entry's.
        model = cls(**dict(options, model_path=str(tiny_path()), dtype="float32", layer=2))
        assert model.method == options["method"] and model.pruner.config.ratio == options["ratio"]
    for name, entry in config["data"].items():
        assert name in getattr(vlmeval.dataset, entry["class"]).supported_datasets()


def test_register_without_vlmevalkit_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vlmeval", None)  # makes `import vlmeval` fail
    with pytest.raises(ImportError, match="pip install -e VLMEvalKit"):
        register()


def test_the_module_entry_point_runs_vlmevalkits_run_py_after_registering(vlmeval_checkout, tmp_path):
    run_py = tmp_path / "print_args.py"
    run_py.write_text(
        "import sys\nfrom vlmeval.config import supported_VLM\n"
        "print('args', sys.argv[1:], 'TinyQwen2.5-VL' in supported_VLM)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "vlmeval_ivcp.vlmevalkit", str(run_py), "--data", "MMStar"],
        capture_output=True, text=True,  # vlmeval is importable only from the folder holding the script
    )
    assert result.returncode == 0, result.stderr
    assert "args ['--data', 'MMStar'] True" in result.stdout
