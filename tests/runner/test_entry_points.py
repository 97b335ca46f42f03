"""Every entry point answers --help with exit 0; `vlmeval-ivcp list` and `--method-args` work as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_ivcp.pruning.registry import METHODS
from vlmeval_ivcp.runner.cli import build_parser, config_from_args, main
from vlmeval_ivcp.runner.config import ConfigError
from vlmeval_ivcp.runner.listing import SUMMARIES

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
ENTRY_POINTS = [
    [PY, "run.py"],
    [PY, "-m", "vlmeval_ivcp.vlmevalkit"],
    [PY, "-c", "import sys; from vlmeval_ivcp.runner.cli import main; sys.exit(main())"],  # the console script
    [PY, "-c", "import sys; from vlmeval_ivcp.runner.cli import main; sys.exit(main())", "list"],
    *[[PY, str(path.relative_to(REPO))] for path in sorted((REPO / "tools").glob("*.py"))],
    *[[PY, str(path.relative_to(REPO))] for path in sorted((REPO / "benchmarks").glob("*.py"))],
    *[["bash", str(path.relative_to(REPO))] for path in sorted((REPO / "scripts").glob("*.sh"))],
]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=lambda command: " ".join(command[1:]))
def test_help_exits_zero(command):
    done = run([*command, "--help"])
    assert done.returncode == 0 and done.stdout.strip(), done.stderr


def test_a_missing_vlmevalkit_run_py_is_named():
    done = run([PY, "-m", "vlmeval_ivcp.vlmevalkit", "/no/such/VLMEvalKit/run.py", "--data", "MMStar"])
    assert done.returncode == 1 and "run.py not found at /no/such/VLMEvalKit/run.py" in done.stderr


def test_the_lists_name_every_model_dataset_and_method(capsys):
    assert main(["list", "methods"]) == 0
    methods = capsys.readouterr().out
    assert set(SUMMARIES) == set(METHODS)  # every registered method has its one-line description
    assert "ivc_prune: IVC-Prune:" in methods and "    n_ivc=None: IVC tokens per ranking" in methods
    assert main(["list", "models"]) == 0
    models = capsys.readouterr().out
    assert "Qwen2.5-VL-7B-Instruct: Qwen2_5_VL, Qwen/Qwen2.5-VL-7B-Instruct, 28 decoder layers" in models
    assert main(["list", "datasets"]) == 0
    datasets = capsys.readouterr().out
    assert "MMVet: JudgedDataset, judge required, fetch: python tools/fetch_data.py MMVet" in datasets
    assert "RefCOCO_val: GroundingDataset, convert: tools/convert_to_tsv.py" in datasets


def test_method_args_reach_the_method_config():
    args = build_parser().parse_args(["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--method", "ivc_prune",
                                      "--ratio", "0.5", "--method-args", "cache_policy=after, n_ivc=3,fill=false,n_foreground=4"])
    [point] = config_from_args(args).points
    assert point.options == dict(ratio=0.5, cache_policy="after", n_ivc=3, fill=False, n_foreground=4)


@pytest.mark.parametrize(
    "method_args,message",
    [("depth=3", "unknown option of method 'ivc_prune'"), ("ratio=0.25", "ratio is also given as --ratio")],
)
def test_bad_method_args_are_refused_by_name(method_args, message):
    args = build_parser().parse_args(["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--method", "ivc_prune",
                                      "--ratio", "0.5", "--method-args", method_args])
    with pytest.raises(ConfigError, match=message):
        config_from_args(args)


def test_a_malformed_method_args_item_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--method-args", "fill"])
    assert exit_info.value.code == 2 and "'fill' is not key=value" in capsys.readouterr().err
