#!/usr/bin/env bash
# The figures of a model card, from one command: zero-shot AUC on NIH test (200 images, never
# used in training or model selection), and NDCG@5 / P@5 of the dev queries on the nih and covid
# corpora with vector-only search (no report text indexed).
#
#   bash tools/eval_model.sh MODEL_DIR [OUT_DIR]
#
# Writes OUT_DIR/{classify-nih-test.json,eval-nih.json,eval-covid.json} (default
# indexes/eval-<model name>) and prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: tools/eval_model.sh MODEL_DIR [OUT_DIR]}
OUT=${2:-indexes/eval-$(basename "$MODEL")}
source tools/eval_env.sh
rm -rf "$OUT" && mkdir -p "$OUT"

echo "\$ cxr classify $DATA/nih1000/test --labels $DATA/nih1000/labels.csv --model $MODEL"
"$cxr" classify "$DATA/nih1000/test" --labels "$DATA/nih1000/labels.csv" --model "$MODEL" \
  --json > "$OUT/classify-nih-test.json"
"$cxr" classify "$DATA/nih1000/test" --labels "$DATA/nih1000/labels.csv" --model "$MODEL" \
  | tail -n 7

"$cxr" index "$DATA/nih1000/valid" "$DATA/nih1000/test" --reports "$DATA/nih1000/labels.csv" \
  --key "Image Index" --text none --out "$OUT/nih" --model "$MODEL" -q > /dev/null
"$cxr" index "$DATA/covid/images" --reports "$DATA/covid/metadata.csv" --key filename \
  --text none --out "$OUT/covid" --model "$MODEL" -q > /dev/null 2>&1
for corpus in nih covid; do
  echo; echo "\$ cxr eval $OUT/$corpus --corpus $corpus (vector-only)"
  "$cxr" eval "$OUT/$corpus" --queries "$BENCH/queries-dev.jsonl" --qrels "$BENCH/qrels-dev.txt" \
    --corpus "$corpus" --model "$MODEL" --json > "$OUT/eval-$corpus.json"
  "$cxr" eval "$OUT/$corpus" --queries "$BENCH/queries-dev.jsonl" --qrels "$BENCH/qrels-dev.txt" \
    --corpus "$corpus" --model "$MODEL"
done
