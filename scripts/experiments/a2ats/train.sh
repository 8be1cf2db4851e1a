#!/usr/bin/env bash
# A2ATS long-context experiment (docs/a2ats-longctx.md): data, a 2k-context MLA MoE model trained
# here, and its A2ATS codebooks. Run from the repository root after `npm run build`
#   (B=<dir> points at another compiled tree).
#   bash scripts/experiments/a2ats/train.sh            # STEPS=650 by default (SKIP_STEPTIME=1 skips step 3)
# Needs data/prepared/demo/tokenizer.json (npm run demo) so token ids match the demo tokenizer.
# Outputs under runs/a2ats-long/: corpus/, prepared/, prepared-calib/, steptime/ (10-step timing
# run), model/ (the run; its latest checkpoint gets a2ats.safetensors), *.log.
set -euo pipefail
B=${B:-dist}
OUT=runs/a2ats-long
STEPS=${STEPS:-650}
# The CLI picks the codebook size from the token count (~16 keys per centroid, a power of two):
# 4096 calibration tokens (two 2048-token windows) -> M = 256 per layer/block/head.
CAL_TOKENS=${CAL_TOKENS:-4096}
CFG=scripts/experiments/a2ats/longctx-2k.yaml
TOK=data/prepared/demo/tokenizer.json
mc() { echo "+ moecat $*" >&2; node "$B/cli/main.js" "$@"; }
mkdir -p "$OUT"

# 1. Text: training prose/speeches, held-out calibration/perplexity text, passkey documents.
node "$B/scripts/experiments/a2ats/corpus.js" --out "$OUT/corpus"
node "$B/scripts/experiments/a2ats/passkey.js" --split train --n 1500 --seed 0 --out "$OUT/corpus/passkey.jsonl" --tokenizer "$TOK"
node "$B/scripts/experiments/a2ats/passkey.js" --split eval --n 60 --seed 1 --out "$OUT/passkey-eval.jsonl" --tokenizer "$TOK"

# 2. Prepared corpora with the demo tokenizer (same ids as data/prepared/demo).
mc prepare --source prose="$OUT/corpus/prose" --source speeches="$OUT/corpus/speeches.jsonl" \
  --source passkey="$OUT/corpus/passkey.jsonl" --ext .txt .jsonl --tokenizer "$TOK" --out "$OUT/prepared" --force
mc prepare --source calib="$OUT/corpus/calib" --ext .txt --tokenizer "$TOK" --out "$OUT/prepared-calib" --force

# 3. Step time over 10 steps (pick STEPS so training fits the wall-time budget).
if [ "${SKIP_STEPTIME:-0}" != 1 ]; then
  rm -rf "$OUT/steptime"
  nice -n 10 node "$B/cli/main.js" train --config "$CFG" --out "$OUT/steptime" --backend cpu-native \
    --set train.steps=10 --set train.checkpointEvery=1000 --set optim.schedule.warmupSteps=2 --set optim.schedule.decaySteps=2 \
    > "$OUT/steptime.log" 2>&1
  tail -n 3 "$OUT/steptime.log"
fi

# 4. Training (single process, cpu-native).
rm -rf "$OUT/model"
echo "+ moecat train --config $CFG --out $OUT/model --backend cpu-native --set train.steps=$STEPS" >&2
( time nice -n 10 node "$B/cli/main.js" train --config "$CFG" --out "$OUT/model" --backend cpu-native \
    --set train.steps="$STEPS" --set optim.schedule.decaySteps=$(( STEPS / 5 )) ) > "$OUT/train.log" 2>&1
tail -n 5 "$OUT/train.log"

# 5. A2ATS codebooks on held-out prose (chapters 120..127), 2048-token windows.
mc calibrate --method a2ats --checkpoint "$OUT/model" --data "$OUT/prepared-calib" --tokens "$CAL_TOKENS" \
  --backend cpu-native 2>&1 | tee "$OUT/calibrate.log"
