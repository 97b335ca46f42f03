"""`python run.py --config configs/<name>.yaml`, or VLMEvalKit-style flags for a single run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, load_config, parse_config
from ..evaluation.judge import Judge
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
        "--limit",
        type=_positive_int,
        metavar="N",
        help="answer only N more rows of each dataset in every run (per rank, spread over the dataset), score "
        "nothing, then print the plan: a quick timing of the whole config, which the full run later resumes from",
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
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level, transformers' messages included")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


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
        if args.plan:
            print(format_plan(plan(config)))
            return 0
        if args.limit and args.mode == "eval":
            raise ConfigError("--limit answers rows: it goes with --mode all or infer, not eval")
        problems = preflight(config, "infer" if args.limit else args.mode, args.judge)
        if problems:
            return report_problems(problems)
        # Judge answers are cached beside the results, so a re-scored run asks the server nothing twice.
        judge = Judge(args.judge, cache_path=Path(config.work_dir) / "judge_cache.jsonl") if args.judge else None
        # Finished rows are already on disk when an error stops the run: a re-run resumes after them.
        summaries = run(config, mode="infer" if args.limit else args.mode, judge=judge, limit=args.limit)
    except ModelLoadError as error:  # the environment, not the command: exit 1
        if args.traceback:
            raise
        print(f"run.py: error: {error}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as error:
        if args.traceback:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"run.py: error: {message} (finished rows are kept; --traceback shows where)", file=sys.stderr)
        return 2
    if summaries:  # only rank 0 of a torchrun launch has them
        print(format_plan(plan(config)) if args.limit else format_table(summaries))
    return 0
