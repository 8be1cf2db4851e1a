#!/usr/bin/env bash
# A2ATS tables on the model that retrieves passkeys (train-passkey.sh; docs/a2ats-longctx.md).
# Raw JSON lines go to runs/a2ats-pk/bench/*.jsonl; two processes at a time (2 cores).
set -euo pipefail
B=${B:-dist}
OUT=runs/a2ats-pk/bench
CK=${CK:-runs/a2ats-pk/stage3/checkpoints/step-00000900}
N=${N:-30}
WINDOWS=${WINDOWS:-2}
ALL="--plainRatios 0.03,0.06,0.12 --postRopeRatios 0.03,0.06,0.12 --oracleRatios 0.03,0.06,0.12 --windowOnly 1"
L="node $B/scripts/bench/a2atsLong.js --checkpoint $CK"
mkdir -p "$OUT"
# Greedy passkey retrieval (30 held-out prompts of 322..1886 tokens) and teacher-forced digits,
# every method; perplexity on two held-out 2048-token windows alongside.
( $L --tables passkey --n "$N" $ALL > "$OUT/passkey.jsonl" 2> "$OUT/passkey.log"
  $L --tables passkey-tf --n "$N" $ALL > "$OUT/passkey-tf.jsonl" 2> "$OUT/passkey-tf.log" ) &
P1=$!
$L --tables ppl --pplWindows "$WINDOWS" $ALL > "$OUT/ppl.jsonl" 2> "$OUT/ppl.log" &
P2=$!
wait $P1 $P2
# Retrieval quality (attention-mass recall, top-K hit) on 2048-token contexts, and decode speed.
node "$B/scripts/bench/a2ats.js" --checkpoint "$CK" --contexts 2048 --M 256 --calTokens 4096 > "$OUT/retrieval.jsonl" 2> "$OUT/retrieval.log"
$L --tables speed --speedTokens 32 --plainRatios 0.06 > "$OUT/speed.jsonl" 2> "$OUT/speed.log"
# The same retrieval with codebooks calibrated on passkey documents instead of prose: the first 40
# training passkey documents (training filler and keys; the prompts above use held-out filler and
# new keys). A copy of the checkpoint holds these codebooks; plainVQ and post-RoPE use --calib.
head -40 runs/a2ats-long/corpus/passkey.jsonl > "$OUT/passkey-calib.jsonl"
node "$B/cli/main.js" prepare --source calib="$OUT/passkey-calib.jsonl" --tokenizer data/prepared/demo/tokenizer.json \
  --out runs/a2ats-pk/prepared-calib-pk --force
rm -rf runs/a2ats-pk/ck-calpk && cp -r "$CK" runs/a2ats-pk/ck-calpk
node "$B/cli/main.js" calibrate --method a2ats --checkpoint runs/a2ats-pk/ck-calpk --data runs/a2ats-pk/prepared-calib-pk \
  --tokens 4096 --backend cpu-native > "$OUT/calibrate-calpk.log" 2>&1
M="a2ats@0.03,a2ats@0.06,a2ats@0.12,plainVQ@0.03,plainVQ@0.06,plainVQ@0.12,postRope@0.03,postRope@0.06,postRope@0.12"
C="--checkpoint runs/a2ats-pk/ck-calpk --calib runs/a2ats-pk/prepared-calib-pk --n $N --plainRatios 0.03,0.06,0.12 --postRopeRatios 0.03,0.06,0.12 --methods $M"
node "$B/scripts/bench/a2atsLong.js" --tables passkey $C > "$OUT/passkey-calpk.jsonl" 2> "$OUT/passkey-calpk.log" &
P3=$!
node "$B/scripts/bench/a2atsLong.js" --tables passkey-tf $C > "$OUT/passkey-tf-calpk.jsonl" 2> "$OUT/passkey-tf-calpk.log"
wait $P3
# Held-out prompts of 2,067..3,753 tokens (seed 4, evaluation chapters). Beyond the trained
# context: the first 12 with full attention.
node "$B/scripts/experiments/a2ats/passkey.js" --split eval --n 30 --seed 4 --minFiller 2100 --maxFiller 3800 --out runs/a2ats-pk/passkey-eval-4k30.jsonl
node "$B/scripts/experiments/a2ats/lengthProbe.js" --checkpoint "$CK" --passkey runs/a2ats-pk/passkey-eval-4k30.jsonl --n 12 > "$OUT/beyond.jsonl" 2> "$OUT/beyond.log"
# The 4k stage (train-passkey.sh with STAGE4=1) on all 30, with codebooks from the same 40
# passkey documents (8,192 tokens, M = 256), fewer methods (each decode step reads a 3k-token
# cache on the host).
CK4=runs/a2ats-pk/stage4/checkpoints/step-00000300
if [ -d "$CK4" ]; then
  rm -rf runs/a2ats-pk/ck4-calpk && cp -r "$CK4" runs/a2ats-pk/ck4-calpk
  node "$B/cli/main.js" calibrate --method a2ats --checkpoint runs/a2ats-pk/ck4-calpk --data runs/a2ats-pk/prepared-calib-pk \
    --tokens 8192 --codebook-size 256 --backend cpu-native > "$OUT/calibrate-4k.log" 2>&1
  M4="full-engine,window+sinks,oracle@0.03,a2ats@0.03,a2ats@0.06,a2ats@0.12,postRope@0.03,postRope@0.06,postRope@0.12"
  C4=(--checkpoint runs/a2ats-pk/ck4-calpk --calib runs/a2ats-pk/prepared-calib-pk --passkey runs/a2ats-pk/passkey-eval-4k30.jsonl
    --n "$N" --plainRatios '' --postRopeRatios 0.03,0.06,0.12 --oracleRatios 0.03 --windowOnly 1 --methods "$M4")
  node "$B/scripts/bench/a2atsLong.js" --tables passkey "${C4[@]}" > "$OUT/passkey-4k.jsonl" 2> "$OUT/passkey-4k.log" &
  P4=$!
  node "$B/scripts/bench/a2atsLong.js" --tables passkey-tf "${C4[@]}" > "$OUT/passkey-tf-4k.jsonl" 2> "$OUT/passkey-tf-4k.log"
  wait $P4
fi
