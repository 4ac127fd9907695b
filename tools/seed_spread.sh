#!/usr/bin/env bash
# How much the default model's figures depend on the seed: trains the model card's exact
# command once per seed (into OUT_DIR/seed-N) and prints, for each, the zero-shot AUC on NIH
# valid (what training watches) and on NIH test (what the card reports): the mean over the
# card's five findings, and No Finding's alone. Seed 0 is the committed model.
#
#   bash tools/seed_spread.sh [SEEDS] [OUT_DIR]      # default: "0 1 2" indexes/seed-spread
#
# About a minute per seed on 2 idle cores (release build). REUSE=1 keeps a seed's folder when
# it holds a trained model, and only scores it (to compare two builds' zero-shot scoring on
# the same weights: training does not depend on it).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0 1 2}
OUT=${2:-indexes/seed-spread}
source tools/eval_env.sh
mkdir -p "$OUT"

printf '%-6s %-14s %-14s %-14s %-14s\n' seed "valid mean" "valid normal" "test mean" "test normal"
auc() {  # MODEL SPLIT FINDING: its AUC as `cxr classify --labels` prints it
  "$cxr" classify "$DATA/nih1000/$2" --labels "$DATA/nih1000/labels.csv" --model "$1" |
    awk -v f="$3" '{ name = $1; for (i = 2; i < NF; i++) name = name " " $i } name == f { print $NF }'
}
for seed in $SEEDS; do
  dir="$OUT/seed-$seed"
  if [ "${REUSE:-0}" != 1 ] || [ ! -f "$dir/model.safetensors" ]; then
    rm -rf "$dir"
    "$cxr" train --data "$DATA" --out "$dir" --preset cnn64 --epochs 10 --batch-size 32 \
      --lr 1e-3 --warmup 0.05 --seed "$seed" --sources nih -q > "$dir.log" 2>&1
  fi
  printf '%-6s %-14s %-14s %-14s %-14s\n' "$seed" "$(auc "$dir" valid mean)" \
    "$(auc "$dir" valid "No Finding")" "$(auc "$dir" test mean)" "$(auc "$dir" test "No Finding")"
done
