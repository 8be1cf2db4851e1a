#!/usr/bin/env bash
# Ablations for docs/experiments.md (issue 15): zero experts, ScMoE vs sequential, hidden z-loss.
# Every arm: configs/tiny.yaml, same prepared data (data/prepared/demo), same token budget
# (STEPS x 1024 tokens), same seeds; arms run one after another (2-core machine).
#   bash scripts/experiments/ablations/run.sh [out dir] [steps] [seeds...]
# then: node dist/scripts/experiments/ablations/analyze.js <out dir> docs/img
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${1:-runs/ablations}
STEPS=${2:-150}
shift $(( $# < 2 ? $# : 2 ))
SEEDS=("$@"); [ ${#SEEDS[@]} -eq 0 ] && SEEDS=(1234 1235)
CLI="node ${MOECAT_CLI_DIR:-dist}/cli/main.js"
[ -f data/prepared/demo/manifest.json ] || { echo "data/prepared/demo is missing: run npm run demo first (it prepares the bundled corpus)" >&2; exit 2; }
ARMS=${ARMS:-"zero fixed seq zloss zloss3"}

arm_sets() {
  case "$1" in
    zero)  echo "" ;;  # tiny.yaml as is: ScMoE, N=8 FFN + Z=4 zero experts, top-3, controller target K_e=2
    fixed) echo "--set model.moe.nZeroExperts=0 --set model.moe.topK=2" ;;  # N=8, no zero experts, fixed top-2
    seq)   echo "--set model.layerType=sequential" ;;  # no FFN0 / shortcut branch, same MoE as 'zero'
    zloss) echo "--set train.zLossCoef=${ZLOSS:-1e-4}" ;;  # 'zero' + hidden z-loss
    zloss3) echo "--set train.zLossCoef=1e-3" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT"
for seed in "${SEEDS[@]}"; do
  for arm in $ARMS; do
    dir="$OUT/$arm-s$seed"
    if [ -f "$dir/done" ]; then echo "skip $dir"; continue; fi
    rm -rf "$dir"
    cmd="$CLI train --config configs/tiny.yaml --out $dir --set seed=$seed --set train.steps=$STEPS --set train.checkpointEvery=$STEPS $(arm_sets "$arm")"
    echo "\$ $cmd" | tee -a "$OUT/commands.log"
    start=$(date +%s)
    $cmd > "$dir.log" 2>&1
    echo "$(( $(date +%s) - start ))" > "$dir/done"
    echo "  $arm seed $seed: $(cat "$dir/done") s, last: $(tail -n 1 "$dir/metrics.jsonl" | cut -c1-80)"
  done
done
