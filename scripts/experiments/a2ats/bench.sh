#!/usr/bin/env bash
# Benchmarks of the A2ATS long-context experiment (docs/a2ats-longctx.md), after train.sh.
# Raw JSON lines go to runs/a2ats-long/*.jsonl. The passkey and perplexity tables run as two
# processes at once (2 cores); the speed table and the retrieval bench run afterwards.
set -euo pipefail
B=${B:-dist}
OUT=runs/a2ats-long
CK=$OUT/model
N=${N:-30}
WINDOWS=${WINDOWS:-2}
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables passkey --n "$N" --plainRatios 0.03,0.06,0.12 > "$OUT/passkey.jsonl" 2> "$OUT/passkey.log" &
P1=$!
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables ppl --pplWindows "$WINDOWS" --plainRatios 0.06 > "$OUT/ppl.jsonl" 2> "$OUT/ppl.log" &
P2=$!
wait $P1 $P2
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables speed --speedTokens 32 --plainRatios 0.06 > "$OUT/speed.jsonl" 2> "$OUT/speed.log"
# Bounds for the perplexity table: exact top-K (oracle) and no far keys at all (window+sinks).
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables ppl --pplWindows "$WINDOWS" --plainRatios '' --oracleRatios 0.03,0.06,0.12 \
  --windowOnly 1 --methods oracle@0.03,oracle@0.06,oracle@0.12,window+sinks > "$OUT/ppl-oracle.jsonl" 2> "$OUT/ppl-oracle.log"
# Teacher-forced passkey digits (the greedy table is all zeros when the model cannot copy).
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables passkey-tf --n "$N" --plainRatios 0.06 --oracleRatios 0.06 \
  --windowOnly 1 > "$OUT/passkey-tf.jsonl" 2> "$OUT/passkey-tf.log"
# Speed again with more tokens, alone (the first speed run shared the cores with the other benches).
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables speed --speedTokens 48 --plainRatios 0.06 > "$OUT/speed2.jsonl" 2> "$OUT/speed2.log"
# The existing retrieval-quality bench (recall/hit/outErr, plainVQ and post-RoPE ablations) on
# the 2k model: its q/k/v come from 2048-token model-context chunks.
node "$B/scripts/bench/a2ats.js" --checkpoint "$CK" --contexts 2048 --M 256 --calTokens 4096 > "$OUT/retrieval.jsonl" 2> "$OUT/retrieval.log"
# The post-RoPE key mode (calibrate --keys post-rope; codebooks trained in-process on the same
# calibration tokens, M and seed): perplexity at the three ratios.
node "$B/scripts/bench/a2atsLong.js" --checkpoint "$CK" --tables ppl --pplWindows "$WINDOWS" --plainRatios '' --postRopeRatios 0.03,0.06,0.12 \
  --methods postRope@0.03,postRope@0.06,postRope@0.12 > "$OUT/ppl-postrope.jsonl" 2> "$OUT/ppl-postrope.log"
