#!/usr/bin/env bash
# A model that retrieves passkeys, for the A2ATS passkey tables (docs/a2ats-longctx.md, "A model
# that retrieves passkeys"). A four-stage curriculum on the longctx architecture with 16 RoPE
# dimensions (pk-stage0..3.yaml). Run from the repository root after `npm run build` and after
# train.sh (it reuses runs/a2ats-long/corpus and runs/a2ats-long/prepared-calib):
#   bash scripts/experiments/a2ats/train-passkey.sh
# Outputs under runs/a2ats-pk/: corpus/, prepared3..5/ (data of the stages), stage0..3/ (runs),
# passkey-eval-short.jsonl (30 held-out prompts of 96..412 tokens), stage3's last checkpoint with
# a2ats.safetensors. About 45 minutes on 2 CPU cores (STAGE4=1 adds a 4k stage, about 20 minutes).
set -euo pipefail
B=${B:-dist}
OUT=runs/a2ats-pk
LONG=runs/a2ats-long
E=scripts/experiments/a2ats
TOK=data/prepared/demo/tokenizer.json
mc() { echo "+ moecat $*" >&2; node "$B/cli/main.js" "$@"; }
mkdir -p "$OUT/corpus"

# 1. Documents: short passkey documents (filler 40..400 tokens; training seed 2, held-out seed 3
#    from the evaluation chapters), label-copy documents (short and long filler) and pairs.
node "$B/$E/passkey.js" --split train --n 3000 --seed 2 --minFiller 40 --maxFiller 400 --out "$OUT/passkey-short.jsonl" --tokenizer "$TOK"
node "$B/$E/passkey.js" --split eval --n 30 --seed 3 --minFiller 40 --maxFiller 400 --out "$OUT/passkey-eval-short.jsonl" --tokenizer "$TOK"
node "$B/$E/copyDocs.js" --n 30000 --seed 0 --maxChars 600 --out "$OUT/corpus/copy.jsonl"
node "$B/$E/copyDocs.js" --n 8000 --seed 2 --maxChars 4000 --out "$OUT/corpus/copylong.jsonl"
node "$B/$E/copyDocs.js" --kind pairs --n 40000 --seed 0 --out "$OUT/corpus/pairs.jsonl"

# 2. Prepared data per stage (demo tokenizer: the same ids as runs/a2ats-long).
P="--ext .txt .jsonl --tokenizer $TOK --force"
SRC_PROSE="--source prose=$LONG/corpus/prose"
mc prepare $SRC_PROSE --source pkshort="$OUT/passkey-short.jsonl" --source copy="$OUT/corpus/copy.jsonl" --out "$OUT/prepared3" $P
mc prepare $SRC_PROSE --source pkshort="$OUT/passkey-short.jsonl" --source copy="$OUT/corpus/copy.jsonl" \
  --source pairs="$OUT/corpus/pairs.jsonl" --out "$OUT/prepared4" $P
mc prepare $SRC_PROSE --source speeches="$LONG/corpus/speeches.jsonl" --source passkey="$LONG/corpus/passkey.jsonl" \
  --source pkshort="$OUT/passkey-short.jsonl" --source copy="$OUT/corpus/copy.jsonl" \
  --source copylong="$OUT/corpus/copylong.jsonl" --source pairs="$OUT/corpus/pairs.jsonl" --out "$OUT/prepared5" $P

# 3. The four stages (single process, cpu-native); each starts from the previous one's last checkpoint.
train() { # stage [parent-stage parent-step optimizer]
  rm -rf "$OUT/stage$1"
  local init=()
  [ -n "${2:-}" ] && init=(--init-from "$OUT/stage$2/checkpoints/$(printf 'step-%08d' "$3")" --init-optimizer "$4")
  ( time nice -n 5 node "$B/cli/main.js" train --config "$E/pk-stage$1.yaml" --out "$OUT/stage$1" --backend cpu-native "${init[@]}" ) \
    > "$OUT/stage$1.log" 2>&1
  tail -n 2 "$OUT/stage$1.log"
}
train 0
train 1 0 3000 reset
train 2 1 1500 keep
train 3 2 1500 keep

# 4. A2ATS codebooks for the final model (held-out prose, 4096 tokens -> M = 256).
mc calibrate --method a2ats --checkpoint "$OUT/stage3/checkpoints/step-00000900" --data "$LONG/prepared-calib" --tokens 4096 \
  --backend cpu-native 2>&1 | tee "$OUT/calibrate.log"

# 5. Optional (STAGE4=1, about 20 more minutes): 4,096-token windows with 2k-4k passkey documents.
if [ "${STAGE4:-0}" = 1 ]; then
  node "$B/$E/passkey.js" --split train --n 700 --seed 5 --minFiller 1900 --maxFiller 3900 --out "$OUT/corpus/passkey4k.jsonl" --tokenizer "$TOK"
  node "$B/$E/copyDocs.js" --n 3000 --seed 3 --maxChars 8000 --out "$OUT/corpus/copy4k.jsonl"
  mc prepare $SRC_PROSE --source speeches="$LONG/corpus/speeches.jsonl" --source passkey="$LONG/corpus/passkey.jsonl" \
    --source passkey4k="$OUT/corpus/passkey4k.jsonl" --source copylong="$OUT/corpus/copylong.jsonl" \
    --source copy4k="$OUT/corpus/copy4k.jsonl" --out "$OUT/prepared6" $P
  train 4 3 900 keep
fi
