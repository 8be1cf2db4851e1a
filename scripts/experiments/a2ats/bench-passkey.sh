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
