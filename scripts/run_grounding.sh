#!/usr/bin/env bash
# Run one model and pruning method over the RefCOCO / RefCOCO+ / RefCOCOg grounding splits.
#
#   MODEL=Qwen2.5-VL-7B-Instruct METHOD=ivc_prune RATIO=0.5 LAYER=16 bash scripts/run_grounding.sh
#   bash scripts/run_grounding.sh --model Qwen2.5-VL-7B-Instruct --method ivc_prune --ratio 0.5 --layer 16
#
# Settings (a flag wins over its environment variable):
#   MODEL     --model      registry model name                     (default Qwen2.5-VL-7B-Instruct)
#   METHOD    --method     pruning method                          (default none)
#   RATIO     --ratio      retention ratio; empty: method default  (default empty)
#   LAYER     --layer      selection layer K; empty: method default (default empty)
#   LMUData   --data-root  folder of the split TSVs                (default ~/LMUData)
#   WORK_DIR  --work-dir   results folder                          (default ./results)
#   SUFFIX    --suffix     appended to each split name             (default _for_qwen25vl for Qwen2.5-VL models,
#                                                                   else empty)
#   SPLITS    --splits     space-separated split names without the suffix (default: all 8 splits)
#   PYTHON    --python     interpreter                             (default python)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALL_SPLITS="RefCOCO_val RefCOCO_testA RefCOCO_testB RefCOCO+_val RefCOCO+_testA RefCOCO+_testB"
ALL_SPLITS+=" RefCOCOg_val RefCOCOg_test"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
    if [[ "$1" == "-h" || "$1" == "--help" ]]; then
        usage
        exit 0
    fi
    case "$1" in
        --model | --method | --ratio | --layer | --data-root | --work-dir | --suffix | --splits | --python) ;;
        *)
            echo "run_grounding.sh: error: unknown option $1 (see --help)" >&2
            exit 2
            ;;
    esac
    if [[ $# -lt 2 ]]; then
        echo "run_grounding.sh: error: $1 needs a value (see --help)" >&2
        exit 2
    fi
    case "$1" in
        --model) MODEL="$2" ;;
        --method) METHOD="$2" ;;
        --ratio) RATIO="$2" ;;
        --layer) LAYER="$2" ;;
        --data-root) LMUData="$2" ;;
        --work-dir) WORK_DIR="$2" ;;
        --suffix) SUFFIX="$2" ;;
        --splits) SPLITS="$2" ;;
        --python) PYTHON="$2" ;;
        *)
            echo "run_grounding.sh: error: unknown option $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift 2
done

MODEL="${MODEL:-Qwen2.5-VL-7B-Instruct}"
METHOD="${METHOD:-none}"
RATIO="${RATIO:-}"
LAYER="${LAYER:-}"
LMUData="${LMUData:-$HOME/LMUData}"
WORK_DIR="${WORK_DIR:-./results}"
SPLITS="${SPLITS:-$ALL_SPLITS}"
PYTHON="${PYTHON:-python}"
# Qwen2.5-VL answers in pixels of its resized input: its splits carry the ground truth in that frame.
# `${SUFFIX-...}` keeps an explicitly empty SUFFIX (plain splits for a Qwen model).
if [[ "$MODEL" == *Qwen2.5-VL* ]]; then
    SUFFIX="${SUFFIX-_for_qwen25vl}"
else
    SUFFIX="${SUFFIX-}"
fi
export LMUData

# run.py checks every split's TSV (a missing one names the tools/convert_to_tsv.py command that makes it), the
# layer against the model's depth and the checkpoint, all before loading the model: one line per problem.
DATA=()
for split in $SPLITS; do
    DATA+=("${split}${SUFFIX}")
done
if [[ ${#DATA[@]} -eq 0 ]]; then
    echo "run_grounding.sh: error: SPLITS is empty" >&2
    exit 2
fi

COMMAND=("$PYTHON" "$REPO/run.py" --model "$MODEL" --data "${DATA[@]}" --method "$METHOD")
[[ -n "$RATIO" ]] && COMMAND+=(--ratio "$RATIO")
[[ -n "$LAYER" ]] && COMMAND+=(--layer "$LAYER")
COMMAND+=(--work-dir "$WORK_DIR")

echo "LMUData=$LMUData ${COMMAND[*]}"
"${COMMAND[@]}"
