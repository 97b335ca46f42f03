"""`python run.py --config configs/<name>.yaml`, or VLMEvalKit-style flags for a single run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .batching import with_batch_size
from .config import ConfigError, load_config, parse_config
from ..evaluation.judge import Judge, JudgeUnreachable, judge_settings
from ..locking import RunFolderBusy
from ..models.load_error import ModelLoadError
from . import listing
from .logs import configure_logging
from .plan import format_plan, plan
from .preflight import preflight
from .run import MODES, format_table, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate visual-token pruning methods on VLMEvalKit-style benchmarks."
    )
    parser.add_argument("--config", help="YAML run config (see configs/)")
    parser.add_argument("--model", nargs="+", help="registry model name(s), instead of a config")
    parser.add_argument("--data", nargs="+", help="dataset name(s), instead of a config")
    parser.add_argument("--method", default="none", help="pruning method (with --model/--data)")
    parser.add_argument("--ratio", type=float, help="retention ratio (with --model/--data)")
    parser.add_argument("--layer", type=int, help="selection layer K (with --model/--data)")
    parser.add_argument(
        "--method-args",
        type=method_args,
        default={},
        metavar="KEY=VALUE,...",
        help="any other option of the method (with --model/--data), e.g. cache_policy=after,seed=1; values are read "
        "as YAML scalars; `vlmeval-ivcp list methods` lists every method's options",
    )
    parser.add_argument("--work-dir", help="results folder (overrides the config's work_dir)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="all",
        help="all: infer then score; infer: predictions only; eval: score stored predictions without loading a model",
    )
    parser.add_argument(
        "--judge",
        help="model name of an OpenAI-compatible judge for free-form answers (server and key from OPENAI_API_BASE "
        "and OPENAI_API_KEY); default: exact matching only",
    )
    parser.add_argument(
        "--judge-args",
        metavar="JSON",
        help='judge settings as JSON, e.g. \'{"timeout": 30, "retry": 2}\' (keys: timeout, retry or max_retries, '
        "backoff_base, backoff_max, temperature, max_tokens, max_connection_failures, nproc)",
    )
    parser.add_argument(
        "--api-nproc", type=_positive_int, metavar="N", help="judge questions asked at once (default 4)"
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="answer only N more rows of each dataset in every run (per rank, spread over the dataset), score "
        "nothing, then print the plan: a quick timing of the whole config, which the full run later resumes from",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="answer N rows at a time, grouped by size (overrides every model entry's batch_size; default: theirs, 1)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the rows left per run and dataset and the expected time, from rows already answered; loads no "
        "model",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error instead of a one-line message"
    )
    finished = parser.add_mutually_exclusive_group()
    finished.add_argument(
        "--rerun",
        action="store_true",
        help="when finished rows of a run were made with other settings or TSV rows, move its files aside and start "
        "it again (default: refuse to mix)",
    )
    finished.add_argument(
        "--reuse", action="store_true", help="keep finished rows made with other settings or TSV rows anyway"
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level, transformers' messages included")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


# Failures of the input the user gave (config, data, flags, results files): exit 2. Anything else - the
# environment (permissions, a full disk, a broken checkpoint) or an internal error - exits 1.
USER_ERRORS = (ConfigError, FileNotFoundError, KeyError, ValueError, RunFolderBusy, JudgeUnreachable)


def failure_exit_code(error: BaseException) -> int:
    return 2 if isinstance(error, USER_ERRORS) else 1


def failure_message(error: BaseException) -> str:
    """One line: the error's own text, prefixed by its type where the text alone would not say what failed."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error)
    if not isinstance(error, USER_ERRORS):
        text = f"{type(error).__name__}: {text}"
    return " ".join(text.split()) or type(error).__name__


def method_args(text: str) -> dict[str, Any]:
    """`key=value,key=value` into a dict, each value a YAML scalar (`0.5`, `16`, `true`, `after`)."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r} is not key=value")
        if key in options:
            raise argparse.ArgumentTypeError(f"{key} is given twice")
        try:
            options[key] = yaml.safe_load(value.strip()) if value.strip() else ""
        except yaml.YAMLError:
            options[key] = value.strip()
    return options


def config_from_args(args: argparse.Namespace):
    if args.config:
        if args.model or args.data or args.method_args:
            raise ConfigError("give either --config or --model/--data (and --method-args), not both")
        config = load_config(args.config)
        return config if not args.work_dir else type(config)(**{**config.__dict__, "work_dir": args.work_dir})
    if not (args.model and args.data):
        raise ConfigError("give --config, or both --model and --data")
    method = {"method": args.method}
    method.update({key: value for key, value in (("ratio", args.ratio), ("layer", args.layer)) if value is not None})
    for key, value in args.method_args.items():
        if key in method:
            raise ConfigError(f"--method-args: {key} is also given as --{key} (or is the method itself)")
        method[key] = value
    raw = {"models": [{"name": name} for name in args.model], "datasets": args.data, "methods": [method]}
    if args.work_dir:
        raw["work_dir"] = args.work_dir
    return parse_config(raw, "command line")


def _judge(args: argparse.Namespace, config) -> Judge:
    settings = judge_settings(args.judge_args) if args.judge_args else {}
    if args.api_nproc:
        settings["nproc"] = args.api_nproc
    try:
        # Judge answers are cached beside the results, so a re-scored run asks the server nothing twice.
        return Judge(args.judge, cache_path=Path(config.work_dir) / "judge_cache.jsonl", **settings)
    except TypeError as error:  # a setting of the wrong type, e.g. {"timeout": "30"}
        raise ValueError(f"--judge-args: {error}") from None


def report_problems(problems: list[str]) -> int:
    """Prints what the pre-flight checks found, one line each, and returns the exit status of a refused run."""
    for problem in problems:
        print(f"run.py: error: {problem}", file=sys.stderr)
    print(f"run.py: {len(problems)} problem(s) found before loading any model; nothing was run", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["list"]:  # `vlmeval-ivcp list models|datasets|methods`
        return listing.main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = config_from_args(args)
        if args.batch_size:
            config = with_batch_size(config, args.batch_size)
        if args.plan:
            print(format_plan(plan(config)))
            return 0
        if args.limit and args.mode == "eval":
            raise ConfigError("--limit answers rows: it goes with --mode all or infer, not eval")
        problems = preflight(config, "infer" if args.limit else args.mode, args.judge)
        if problems:
            return report_problems(problems)
        judge = _judge(args, config) if args.judge else None
        # Finished rows are already on disk when an error stops the run: a re-run resumes after them.
        resume = "rerun" if args.rerun else "reuse" if args.reuse else "refuse"
        mode = "infer" if args.limit else args.mode
        summaries = run(config, mode=mode, judge=judge, limit=args.limit, resume=resume)
    except ModelLoadError as error:  # the environment, not the command: exit 1, with its hint and no type name
        if args.traceback:
            raise
        print(f"run.py: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - every failure is one line; --traceback shows the rest
        if args.traceback:
            raise
        code = failure_exit_code(error)
        print(f"run.py: error: {failure_message(error)} (finished rows are kept; --traceback shows where)",
              file=sys.stderr)  # fmt: skip
        return code
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print("run.py: interrupted (finished rows are kept; the same command resumes)", file=sys.stderr)
        return 130
    if summaries:  # only rank 0 of a torchrun launch has them
        print(format_plan(plan(config)) if args.limit else format_table(summaries))
    return 0
