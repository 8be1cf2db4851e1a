#!/usr/bin/env bash
# Growth: a 4-layer model grown from a 2-layer checkpoint at half the tokens, against the same
# 4-layer model from random init, at equal total tokens (same batches, same LR schedule).
# Usage: npm run build && bash scripts/experiments/scaling/growth.sh   (docs/scaling.md)
# SEED=8 OUT=runs/scaling/growth-seed8 bash ... repeats it with another seed (init and data).
set -euo pipefail
MOECAT="node ${MOECAT_JS:-dist/cli/main.js}"
OUT=${OUT:-runs/scaling/growth}
BACKEND=${BACKEND:-wasm}
G=${GROWTH:-scripts/experiments/scaling/growth.yaml}
GROW_AT=${GROW_AT:-150}
SEED_SET=()
if [ -n "${SEED:-}" ]; then SEED_SET=(--set "seed=$SEED"); fi
rm -rf "$OUT" && mkdir -p "$OUT"
# A. random init at the target depth, all 300 steps.
$MOECAT train --config $G "${SEED_SET[@]}" --out $OUT/random --backend $BACKEND
# B. the half-depth parent on the target's schedule (train.steps 300), stopped at GROW_AT ...
$MOECAT train --config $G "${SEED_SET[@]}" --set model.nLayers=2 --max-steps $GROW_AT --out $OUT/small --backend $BACKEND
# ... grown to 4 layers ([1,2,1,2]) and trained to step 300, Adam moments stacked or reset.
for OPT in stack reset; do
  $MOECAT grow --checkpoint $OUT/small --factor 2 --optimizer $OPT --out $OUT/grown-$OPT
  $MOECAT train --resume $OUT/grown-$OPT --backend $BACKEND
done
node ${PLOT_JS:-dist/scripts/experiments/scaling/plot.js} growth "$OUT" docs/img ${PLOT_NAME:-scaling-growth.svg}
