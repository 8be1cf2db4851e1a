#!/usr/bin/env bash
# Post-training end to end on bundled data (docs/posttrain.md):
#   pre-train tiny -> mid-train (new mixture) -> long-context (64 -> 256, RoPE 1e4 -> 1e5)
#   -> SFT on a generated Moby-Dick instruction set -> serve and ask one chat question.
# Each stage is `moecat train --init-from <previous run>`: step 0, parent weights and biases,
# lineage in state.json. Usage: npm run build && bash scripts/experiments/posttrain/run.sh
# Bounded: 560 s (9.3 min) measured on 2 shared CPU cores (wasm backend); STEPS_SCALE=0.5 roughly
# halves the pre-train, mid-train and SFT steps.
set -euo pipefail
MOECAT="node ${MOECAT_JS:-dist/cli/main.js}"
JS=${JS:-dist/scripts/experiments/posttrain}
OUT=${OUT:-runs/posttrain}
BACKEND=${BACKEND:-wasm}
S=${STEPS_SCALE:-1}
steps() { python3 -c "print(max(2, int($1 * $S)))"; }
t0=$(date +%s)
stamp() { echo "[posttrain +$(( $(date +%s) - t0 ))s] $*" >&2; }

if [ ! -f data/prepared/demo/manifest.json ]; then
  stamp "preparing data/prepared/demo (bundled corpora)"
  node -e "require('./dist/scripts/corpus/bundled').writeBundledCorpora('data/corpus', { maxBytesPerSource: 1500000 })"
  $MOECAT prepare --source prose=data/corpus/prose --source speeches=data/corpus/speeches.jsonl --source code=data/corpus/code \
    --ext .txt .ts .jsonl --vocab-size 512 --sample-mb 2 --out data/prepared/demo --force
fi
rm -rf "$OUT" && mkdir -p "$OUT"

stamp "1/5 pre-train (configs/tiny.yaml, short)"
P=$(steps 80)
$MOECAT train --config configs/tiny.yaml --out $OUT/pretrain --backend $BACKEND \
  --set train.steps=$P --set data.microBatches=1 --set train.checkpointEvery=0 \
  --set optim.schedule.warmupSteps=10 --set optim.schedule.decaySteps=$(( P / 4 ))

stamp "2/5 mid-train (configs/midtrain.yaml: more code and speeches)"
$MOECAT train --config configs/midtrain.yaml --init-from $OUT/pretrain --out $OUT/midtrain --backend $BACKEND --set train.steps=$(steps 30)

stamp "3/5 long-context extension (configs/longctx.yaml: 64 -> 256 tokens, RoPE base 1e4 -> 1e5)"
$MOECAT train --config configs/longctx.yaml --init-from $OUT/midtrain --out $OUT/longctx --backend $BACKEND
BACKEND=$BACKEND node $JS/measure.js $OUT/longctx $OUT ${SVG:-docs/img/posttrain-longctx.svg}

stamp "4/5 SFT (generated Moby-Dick instruction set)"
node $JS/makeSft.js $OUT/sft.jsonl
$MOECAT train --config configs/sft.yaml --init-from $OUT/longctx --out $OUT/sft --backend $BACKEND \
  --set data.sft.file=$OUT/sft.jsonl --set train.steps=$(steps 80)
grep val_loss $OUT/sft/metrics.jsonl | node -e "for (const l of require('fs').readFileSync(0,'utf8').trim().split('\n')) { const m = JSON.parse(l); console.log('sft step', m.step, 'loss', m.lm_loss.toFixed(4), 'val_loss', m.val_loss.toFixed(4)); }"

stamp "5/5 serve and ask (openai-style chat completion)"
node $JS/ask.js $OUT/sft "What is the title of chapter 1?"
stamp "done: $OUT/{pretrain,midtrain,longctx,sft}, $OUT/longctx.json"
