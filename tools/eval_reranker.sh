#!/usr/bin/env bash
# The reranker's figures, from one command: mean NDCG@5 and P@5 of the dev *text* queries on the
# nih and covid corpora, with the vector-only first stage alone and with `--rerank 20` and
# `--rerank 50`, and the second stage's time per query (image decoding + Q-Former), as
# `cxr eval` reports it on stderr. The indexes are built as tools/eval_model.sh builds them
# (vector-only: no report text indexed).
#
#   bash tools/eval_reranker.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR defaults to models/default (its reranker in MODEL_DIR/reranker); RERANKER=DIR names
# another. Writes OUT_DIR/eval-<corpus>-rerank<N>.json (N = 0: first stage alone) and prints a
# table. Needs jq.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-indexes/eval-reranker}
source tools/eval_env.sh
RERANKER=${RERANKER:-$MODEL/reranker}
rm -rf "$OUT" && mkdir -p "$OUT"

"$cxr" index "$DATA/nih1000/valid" "$DATA/nih1000/test" --reports "$DATA/nih1000/labels.csv" \
  --key "Image Index" --text none --out "$OUT/nih" --model "$MODEL" -q > /dev/null
"$cxr" index "$DATA/covid/images" --reports "$DATA/covid/metadata.csv" --key filename \
  --text none --out "$OUT/covid" --model "$MODEL" -q > /dev/null 2>&1

roots() {
  case $1 in
    nih) echo "$DATA/nih1000/valid $DATA/nih1000/test" ;;
    covid) echo "$DATA/covid/images" ;;
  esac
}

printf '%-7s %-12s %8s %8s %8s %14s\n' corpus ranking queries NDCG@5 P@5 "rerank ms/q"
for corpus in nih covid; do
  for depth in 0 20 50; do
    json="$OUT/eval-$corpus-rerank$depth.json"
    args=(eval "$OUT/$corpus" --queries "$BENCH/queries-dev.jsonl" --qrels "$BENCH/qrels-dev.txt"
      --corpus "$corpus" --model "$MODEL" --json)
    label="vector-only"
    if [ "$depth" -gt 0 ]; then
      # shellcheck disable=SC2046
      args+=(--rerank "$depth" --reranker "$RERANKER" --image-root $(roots "$corpus"))
      label="--rerank $depth"
    fi
    "$cxr" "${args[@]}" > "$json" 2> "$OUT/eval-$corpus-rerank$depth.log"
    ms=$(grep -o '[0-9.]* ms per query' "$OUT/eval-$corpus-rerank$depth.log" | cut -d' ' -f1 || true)
    jq -r --arg c "$corpus" --arg l "$label" --arg ms "${ms:--}" '
      [.queries[] | select(.group != "image")] as $t
      | "\($c)\t\($l)\t\($t | length)\t\(([$t[].ndcg] | add / length * 1000 | round / 1000))\t\(([$t[].p] | add / length * 1000 | round / 1000))\t\($ms)"' \
      "$json" | awk -F'\t' '{printf "%-7s %-12s %8s %8s %8s %14s\n", $1, $2, $3, $4, $5, $6}'
  done
done
echo
echo "per query (NDCG@5): vector-only / --rerank 20 / --rerank 50"
for corpus in nih covid; do
  jq -r '.queries[] | select(.group != "image") | "\(.id)\t\(.ndcg * 1000 | round / 1000)"' \
    "$OUT/eval-$corpus-rerank0.json" > "$OUT/q0.tsv"
  for depth in 20 50; do
    jq -r '.queries[] | select(.group != "image") | "\(.ndcg * 1000 | round / 1000)"' \
      "$OUT/eval-$corpus-rerank$depth.json" > "$OUT/q$depth.tsv"
  done
  paste "$OUT/q0.tsv" "$OUT/q20.tsv" "$OUT/q50.tsv" | awk -F'\t' '{printf "  %-10s %6s %6s %6s\n", $1, $2, $3, $4}'
done
rm -f "$OUT"/q*.tsv
