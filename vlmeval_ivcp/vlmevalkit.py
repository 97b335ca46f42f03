"""`python -m vlmeval_ivcp.vlmevalkit <path to VLMEvalKit's run.py> [its args]`: register, then run it unchanged."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .integrations.vlmevalkit import register


USAGE = (
    "usage: python -m vlmeval_ivcp.vlmevalkit <path to VLMEvalKit's run.py> [its arguments]\n\n"
    "Registers this toolkit's models and datasets into VLMEvalKit, then runs its run.py unchanged "
    "(`... run.py --help` shows run.py's own flags)."
)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        sys.exit(0)
    if not argv:
        sys.exit(USAGE)
    if not Path(argv[0]).is_file():
        sys.exit(f"vlmeval_ivcp.vlmevalkit: error: VLMEvalKit's run.py not found at {argv[0]} (give the path of the "
                 "run.py of a VLMEvalKit checkout)")
    script = str(Path(argv[0]).resolve())
    # As `python run.py` would: the checkout holding run.py is importable, so a clone need not be pip-installed.
    sys.path.insert(0, str(Path(script).parent))
    register()
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
