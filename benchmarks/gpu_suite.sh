#!/usr/bin/env bash
# One command for a GPU machine (about 8 minutes on one H100/H200-class GPU): FlashAttention-2 exactness on every
# family (FA2 vs SDPA vs eager, batch 1 and a ragged batch), prefill_speedup.py at full depth with FA2,
# selection_time.py on the GPU and throughput.py at batch 1/8/16; prints one markdown summary.
#
#   pip install -e ".[gpu]" && bash benchmarks/gpu_suite.sh [> gpu_summary.md]
#
# Ready and untested: no GPU was lent to the session that wrote it. Every step has its own time limit, so one slow
# step cannot take the whole budget; a failed step is reported in the summary and the others still run.
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
LOGS="$(mktemp -d)"
STATUS=()

step() {  # step NAME SECONDS COMMAND...: run one part with a time limit, keep its output for the summary
    local name="$1" limit="$2"
    shift 2
    echo "running $name (at most ${limit}s)" >&2
    if timeout "$limit" "$@" >"$LOGS/$name.md" 2>"$LOGS/$name.err"; then
        STATUS+=("| $name | passed |")
    else
        STATUS+=("| $name | FAILED (exit $?; last lines below) |")
        tail -n 20 "$LOGS/$name.err" >>"$LOGS/$name.md"
    fi
}

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
step flash_attention_exactness 150 "$PYTHON" -m pytest tests/pruning/test_flash_attention.py -q -rs
step prefill_speedup_fa2 150 "$PYTHON" benchmarks/prefill_speedup.py --layers 28 --device cuda --dtype bfloat16 \
    --attn flash_attention_2 --repeats 3 --ratios 1.0 0.5 0.25
step selection_time_gpu 60 "$PYTHON" benchmarks/selection_time.py --device cuda --dtype bfloat16 --repeats 3
step throughput_tiny 60 "$PYTHON" benchmarks/throughput.py --device cuda --batches 1 8 16 --rows 32
step throughput_7b_width 90 "$PYTHON" benchmarks/throughput.py --model qwen2.5-vl-7b --device cuda \
    --dtype bfloat16 --attn flash_attention_2 --layers 4 --grid 36 --batches 1 8 16 --rows 32

echo "# GPU suite: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1), $(date -u +%F)"
echo
echo "| step | result |"
echo "|---|---|"
printf '%s\n' "${STATUS[@]}"
for name in flash_attention_exactness prefill_speedup_fa2 selection_time_gpu throughput_tiny throughput_7b_width; do
    echo
    echo "## $name"
    echo
    cat "$LOGS/$name.md"
done
