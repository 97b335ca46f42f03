"""Entry point: `python run.py --config configs/demo.yaml` (see `python run.py --help`)."""

import sys

from vlmeval_ivcp.runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
