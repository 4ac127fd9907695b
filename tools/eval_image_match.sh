#!/usr/bin/env bash
# Example-image search by findings against by appearance (`--image-match`), from one command:
# mean NDCG@5 / P@5 of the dev set's 3 nih image queries, and of the 592 label-judged image
# queries of tools/make_image_queries.py (every NIH train/ image) over valid/ alone (where the
# matching rule was chosen) and over valid/ + test/ (the nih corpus).
#
#   bash tools/eval_image_match.sh [MODEL_DIR] [OUT_DIR]      # default: models/default
#
# Writes OUT_DIR/{dev,train-valid,train-nih}-<mode>.{json,run} (default indexes/eval-image-match) and prints a
# table; `top-5 docs` counts the distinct documents that reach some query's top 5 (a handful
# means the same few images answer every query alike).
# Needs jq.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-indexes/eval-image-match}
source tools/eval_env.sh
rm -rf "$OUT" && mkdir -p "$OUT"

python3 tools/make_image_queries.py --data "$DATA" --out "$OUT/queries-valid" --splits valid
python3 tools/make_image_queries.py --data "$DATA" --out "$OUT/queries-nih" --splits valid,test
"$cxr" index "$DATA/nih1000/valid" --text none --out "$OUT/valid" --model "$MODEL" -q > /dev/null
"$cxr" index "$DATA/nih1000/valid" "$DATA/nih1000/test" --text none --out "$OUT/nih" \
  --model "$MODEL" -q > /dev/null

echo
printf '%-34s %-11s %8s %8s %8s %11s\n' "query set" "match" queries NDCG@5 P@5 "top-5 docs"
run() {  # NAME SLUG INDEX QUERIES QRELS
  for mode in appearance findings; do
    local base="$OUT/$2-$mode"
    "$cxr" eval "$3" --queries "$4" --qrels "$5" --corpus nih --model "$MODEL" \
      --image-match "$mode" --json --run "$base.run" > "$base.json"
    # Image queries only (the dev set's text queries are in the run too).
    top=$(jq -r '.queries[] | select(.group == "image") | .id' "$base.json" |
      awk 'NR == FNR { image[$1] = 1; next } ($1 in image) && $4 <= 5 { print $3 }' - \
        "$base.run" | sort -u | wc -l)
    jq -r --arg set "$1" --arg mode "$mode" --arg top "$top" \
      '.groups.image | [$set, $mode, .n, .ndcg, .p, $top] | @tsv' "$base.json" |
      awk -F'\t' '{ printf "%-34s %-11s %8d %8.3f %8.3f %11d\n", $1, $2, $3, $4, $5, $6 }'
  done
}
run "dev (nih image queries)" dev "$OUT/nih" "$BENCH/queries-dev.jsonl" "$BENCH/qrels-dev.txt"
run "train images -> valid" train-valid "$OUT/valid" "$OUT/queries-valid/queries.jsonl" \
  "$OUT/queries-valid/qrels.txt"
run "train images -> valid+test" train-nih "$OUT/nih" "$OUT/queries-nih/queries.jsonl" \
  "$OUT/queries-nih/qrels.txt"
