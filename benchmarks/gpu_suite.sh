#!/usr/bin/env bash
# One command for a GPU machine (at most 8 minutes on one H100/H200-class GPU): the float16 attention backends of
# every family against each other on the GPU (FlashAttention-2 where flash-attn is installed, SDPA, eager; batch 1
# and a ragged batch), prefill_speedup.py at full depth, selection_time.py on the GPU, throughput.py at batch
# 1/8/16 on the GPU and at batch 1/8 on the machine's CPU cores; prints one markdown summary.
#
#   bash benchmarks/gpu_suite.sh [> gpu_summary.md]
#
# A machine that cannot reach PyPI: run benchmarks/gpu_wheels.sh where pip can, bring the .whl folder along, and
# this script installs those wheels first. Without flash-attn (no binary wheels exist) the steps use SDPA and the
# summary says so. Ready and untested: no GPU was lent to the sessions that wrote it. Every step has its own time
# limit, so one slow step cannot take the whole budget; a failed step is reported and the others still run.
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOGS="$(mktemp -d)"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$LOGS/site" .whl/*.whl || exit 1
    export PYTHONPATH="$LOGS/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
"$PYTHON" -c "import vlmeval_ivcp.runner.run" || {
    echo "the project's requirements are missing: pip install -e . (or bring benchmarks/gpu_wheels.sh's .whl)" >&2
    exit 1
}
if "$PYTHON" -c "import flash_attn" 2>/dev/null; then ATTN=flash_attention_2; else ATTN=sdpa; fi
STEPS=()
STATUS=()

step() {  # step NAME SECONDS COMMAND...: run one part with a time limit, keep its output for the summary
    local name="$1" limit="$2"
    shift 2
    echo "running $name (at most ${limit}s)" >&2
    STEPS+=("$name")
    if timeout "$limit" "$@" >"$LOGS/$name.md" 2>"$LOGS/$name.err"; then
        STATUS+=("| $name | passed |")
    else
        STATUS+=("| $name | FAILED (exit $?; last lines below) |")
        tail -n 20 "$LOGS/$name.err" >>"$LOGS/$name.md"
    fi
}

step float16_backends 110 "$PYTHON" -m pytest tests/pruning/test_float16_backends.py -k cuda -q -rs
step prefill_speedup_full_depth 110 "$PYTHON" benchmarks/prefill_speedup.py --layers 28 --device cuda \
    --dtype bfloat16 --attn "$ATTN" --repeats 3 --ratios 1.0 0.5 0.25
step selection_time_gpu 60 "$PYTHON" benchmarks/selection_time.py --device cuda --dtype bfloat16 --repeats 3
step throughput_tiny_gpu 45 "$PYTHON" benchmarks/throughput.py --device cuda --batches 1 8 16 --rows 32
step throughput_tiny_cpu 60 "$PYTHON" benchmarks/throughput.py --batches 1 8 --rows 32 --repeats 3
step throughput_7b_width 75 "$PYTHON" benchmarks/throughput.py --model qwen2.5-vl-7b --device cuda \
    --dtype bfloat16 --attn "$ATTN" --layers 4 --grid 36 --batches 1 8 16 --rows 32

echo "# GPU suite: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1), $(nproc) CPU cores, $(date -u +%F)"
echo
"$PYTHON" -c "import torch, transformers; print(f'torch {torch.__version__}, transformers {transformers.__version__}')"
echo "attention: $ATTN$([[ $ATTN == sdpa ]] && echo ' (flash-attn is not installed: FlashAttention-2 untested)')"
echo
echo "| step | result |"
echo "|---|---|"
printf '%s\n' "${STATUS[@]}"
for name in "${STEPS[@]}"; do
    echo
    echo "## $name"
    echo
    cat "$LOGS/$name.md"
done
