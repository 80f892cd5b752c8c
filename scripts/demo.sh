#!/usr/bin/env bash
# `make demo`: pack the default model, inspect and verify it, unpack it, and
# generate text from it. Uses ../shared/models/stories260K when present,
# otherwise a generated random model (the text is then gibberish, by design).
set -euo pipefail
BUILD=${1:-build}
BIN="$BUILD/bin"
OUT=${TQM_DEMO_DIR:-$BUILD/demo}
mkdir -p "$OUT"
SHARED="$(cd "$(dirname "$0")/.." && pwd)/../shared/models/stories260K"
if [ -f "$SHARED/stories260K.bin" ] && [ -f "$SHARED/tok512.bin" ]; then
  MODEL="$SHARED/stories260K.bin"
  TOK="$SHARED/tok512.bin"
  echo "== model: stories260K (../shared/models/stories260K)"
else
  echo "== ../shared/models/stories260K not found: generating a random model instead"
  MODEL="$OUT/generated.bin"
  TOK="$OUT/generated-tok.bin"
  "$BIN/tqm-genmodel" -o "$MODEL" --tokenizer-out "$TOK" --vocab 512 --seed 7
fi
echo
echo "== tqm-pack"
"$BIN/tqm-pack" "$MODEL" -o "$OUT/model.tqm" --tokenizer "$TOK"
echo
echo "== tqm-inspect --verify"
"$BIN/tqm-inspect" --verify "$OUT/model.tqm" | sed -n '1,12p;/^table:/,/^size:/p;/^verify:/p'
echo
echo "== tqm-unpack (float32 safetensors)"
"$BIN/tqm-unpack" "$OUT/model.tqm" -o "$OUT/model.safetensors"
ls -l "$OUT/model.safetensors" | awk '{print $5 " bytes: " $9}'
if [ -x "$BIN/tqm-run" ]; then
  echo
  echo "== tqm-run --temperature 0 --steps 64"
  "$BIN/tqm-run" "$OUT/model.tqm" --tokenizer "$TOK" --prompt "Once upon a time" \
    --steps 64 --temperature 0
else
  echo
  echo "== tqm-run is not built in this tree; skipping generation"
fi
