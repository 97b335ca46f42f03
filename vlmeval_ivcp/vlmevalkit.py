"""`python -m vlmeval_ivcp.vlmevalkit <path to VLMEvalKit's run.py> [its args]`: register, then run it unchanged."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .integrations.vlmevalkit import register


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not Path(argv[0]).is_file():
        sys.exit("usage: python -m vlmeval_ivcp.vlmevalkit <path to VLMEvalKit's run.py> [its arguments]")
    script = str(Path(argv[0]).resolve())
    # As `python run.py` would: the checkout holding run.py is importable, so a clone need not be pip-installed.
    sys.path.insert(0, str(Path(script).parent))
    register()
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
