#!/bin/bash
# Behaviour fingerprint of the working tree (for refactors that must not change behaviour):
# param_hash of configs/tiny.yaml after 20 steps and configs/small.yaml after 3 steps on
# cpu-native, and the text that `moecat generate` writes from the tiny checkpoint (greedy,
# sampled, CHESS-sparse, A2ATS). Run from the repository root after `npm run build` and
# `npm run build:native`; prepares data/prepared/demo if absent. Usage:
#   scripts/dev/behaviour-check.sh LABEL      -> out/behaviour/LABEL/{hashes.txt,gen*.txt}
# Compare two labels with `diff -r out/behaviour/A out/behaviour/B -x '*.log' -x tiny -x small`
# (checkpoint.txt: sha256 of the tiny checkpoint's files, calibration outputs included).
set -euo pipefail
L=${1:?usage: behaviour-check.sh LABEL}
O=out/behaviour/$L
rm -rf "$O"; mkdir -p "$O"
M="node dist/cli/main.js"
if [ ! -d data/prepared/demo ]; then
  node -e "require('./dist/scripts/corpus/bundled').writeBundledCorpora('data/corpus',{maxBytesPerSource:1500000})"
  $M prepare --source prose=data/corpus/prose --source speeches=data/corpus/speeches.jsonl --source code=data/corpus/code \
    --ext .txt .ts .jsonl --vocab-size 512 --sample-mb 2 --out data/prepared/demo --force > "$O/prepare.log" 2>&1
fi
$M train --config configs/tiny.yaml --out "$O/tiny" --backend cpu-native --set train.steps=20 --set train.checkpointEvery=20 \
  --set optim.schedule.warmupSteps=5 --set optim.schedule.decaySteps=10 > "$O/tiny.log" 2>&1
$M train --config configs/small.yaml --out "$O/small" --backend cpu-native --set train.steps=3 --set train.checkpointEvery=3 \
  --set optim.schedule.warmupSteps=1 --set optim.schedule.decaySteps=1 > "$O/small.log" 2>&1
for r in tiny small; do grep param_hash "$O/$r/metrics.jsonl" | tail -1 | grep -o '"step":[0-9]*\|"param_hash":"[0-9a-f]*"'; done > "$O/hashes.txt"
C=$O/tiny
P="Call me Ishmael. Some years ago"
$M generate --checkpoint "$C" --prompt "$P" --max-tokens 40 --temperature 0 --seed 7 > "$O/gen.txt" 2> "$O/gen.log"
$M generate --checkpoint "$C" --prompt "$P" --max-tokens 40 --temperature 0.8 --seed 7 > "$O/gen_sampled.txt" 2>> "$O/gen.log"
$M calibrate --method chess --checkpoint "$C" --data data/prepared/demo --tokens 1024 > "$O/cal_chess.log" 2>&1
$M generate --checkpoint "$C" --prompt "$P" --max-tokens 40 --temperature 0.8 --seed 7 --sparsity chess > "$O/gen_chess.txt" 2>> "$O/gen.log"
$M calibrate --method a2ats --checkpoint "$C" --data data/prepared/demo --tokens 1024 > "$O/cal_a2ats.log" 2>&1
$M generate --checkpoint "$C" --prompt "$P" --max-tokens 40 --temperature 0.8 --seed 7 --kv a2ats --kv-ratio 0.3 > "$O/gen_a2ats.txt" 2>> "$O/gen.log"
cat "$O/hashes.txt"; for f in gen gen_sampled gen_chess gen_a2ats; do echo "== $f: $(cat "$O/$f.txt")"; done
# Checkpoint files (weights, optimizer, state.json, calibration outputs) byte for byte.
(cd "$O/tiny/checkpoints" && sha256sum */*.safetensors */*.json) > "$O/checkpoint.txt"
