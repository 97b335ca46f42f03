#!/usr/bin/env bash
# Wheels of what the project needs and a lent GPU machine lacks, for benchmarks/gpu_suite.sh on a machine that
# cannot reach PyPI: run here (where pip can), then bring the .whl folder along (the device tool's `carry`).
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]    (default 3.12: the GPU machine's python3)
#
# What the lent H200 image lacks, as the device tool's package list shows: this project's transformers (it has
# 5.17) and rapidfuzz. Its torch, numpy, pandas, pillow, yaml, tokenizers, safetensors and
# huggingface_hub serve. flash-attn is not fetched: it publishes no binary wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION="${1:-3.12}"
TRANSFORMERS="$(python -c 'import transformers; print(transformers.__version__)')"
rm -rf .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "transformers==$TRANSFORMERS" "rapidfuzz>=3"
ls -l .whl
