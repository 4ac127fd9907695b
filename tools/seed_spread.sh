#!/usr/bin/env bash
# How much the default model's figures depend on the seed: trains the model card's exact
# command once per seed (into OUT_DIR/seed-N) and prints, for each, the mean zero-shot AUC on
# NIH valid after the last epoch (what training watches) and on NIH test (what the card
# reports). Seed 0 is the committed model.
#
#   bash tools/seed_spread.sh [SEEDS] [OUT_DIR]      # default: "0 1 2" indexes/seed-spread
#
# About a minute per seed on 2 idle cores (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0 1 2}
OUT=${2:-indexes/seed-spread}
DATA=${DATA:-../shared/data}
if [ -z "${CXR:-}" ]; then
  cargo build --release --quiet
fi
cxr=${CXR:-target/release/cxr}
mkdir -p "$OUT"

printf '%-6s %-22s %-20s\n' seed "valid AUC (last epoch)" "test AUC (mean of 5)"
for seed in $SEEDS; do
  dir="$OUT/seed-$seed"
  rm -rf "$dir"
  "$cxr" train --data "$DATA" --out "$dir" --preset cnn64 --epochs 10 --batch-size 32 \
    --lr 1e-3 --warmup 0.05 --seed "$seed" --sources nih -q > "$dir.log" 2>&1
  valid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["history"][-1]["valid_mean_auc"])' \
    "$dir/train_state.json")
  test=$("$cxr" classify "$DATA/nih1000/test" --labels "$DATA/nih1000/labels.csv" \
    --model "$dir" | awk '$1 == "mean" { print $2 }')
  printf '%-6s %-22.3f %-20s\n' "$seed" "$valid" "$test"
done
