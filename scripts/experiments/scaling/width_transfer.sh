#!/usr/bin/env bash
# Loss against peak LR at widths 32, 64, 128: under the transfer rule (SP + Adam LR full-align,
# from the width-32 proxy) and under plain SP (same base LR/init std at every width).
# Usage: npm run build && bash scripts/experiments/scaling/width_transfer.sh   (docs/scaling.md)
set -euo pipefail
MOECAT="node ${MOECAT_JS:-dist/cli/main.js}"
OUT=${OUT:-runs/scaling}
LRS=${LRS:-1.5e-3,3e-3,6e-3,1.2e-2,2.4e-2,4.8e-2}
STEPS=${STEPS:-100}
BACKEND=${BACKEND:-wasm}
P=${PROXY:-scripts/experiments/scaling/proxy.yaml}
mkdir -p "$OUT"
# 1. The proxy sweep (width 32). Resumable: rerunning skips finished points.
$MOECAT sweep --config $P --lr $LRS ${INIT_STDS:+--init-std $INIT_STDS} --steps $STEPS --out $OUT/w32 --backend $BACKEND
for D in 64 128; do
  # 2. The transfer rule: target config from the proxy's best point, then the same LR grid
  #    (the grid moves the base LR; hidden/router/unembedding LRs follow as lr/s).
  $MOECAT transfer --proxy $P --results $OUT/w32 --target-width $D --out $OUT/transfer-w$D.yaml
  $MOECAT sweep --config $OUT/transfer-w$D.yaml --lr $LRS --steps $STEPS --out $OUT/mu-w$D --backend $BACKEND
  # 3. Plain SP: the same shapes with every per-group multiplier back at 1.
  $MOECAT sweep --config $OUT/transfer-w$D.yaml --lr $LRS --steps $STEPS --out $OUT/sp-w$D --backend $BACKEND \
    --set 'optim.lrScale={}' --set 'optim.initScale={}'
done
node ${PLOT_JS:-dist/scripts/experiments/scaling/plot.js} width "$OUT" docs/img ${PLOT_PREFIX:-scaling-lr}
