#!/usr/bin/env bash
# How the text-query signals combine, measured on the one dev corpus that has both image vectors
# and report text: covid (images + clinical notes). One index, every setting in the same run:
# report BM25 alone, image vectors alone, reciprocal rank fusion, and convex fusion with image
# weights 0.1 ... 0.9 (0.5 is the default; it was chosen before this sweep, not by it).
#
#   bash tools/eval_fusion.sh [MODEL_DIR] [OUT_DIR]
#
# Writes tools/results/fusion-covid.tsv (or $RESULTS/) (setting, mean NDCG@5, mean P@5, then NDCG@5 per query) and
# prints it. Four queries: differences of a few hundredths are within noise.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-indexes/fusion}
source tools/eval_env.sh
rm -rf "$OUT" && mkdir -p "$OUT"
"$cxr" index "$DATA/covid/images" --reports "$DATA/covid/metadata.csv" --key filename \
  --text clinical_notes --out "$OUT/covid" --model "$MODEL" -q > /dev/null 2>&1

settings=("--signals text" "--signals vector" "--fusion rrf")
for w in 0.1 0.3 0.5 0.7 0.9; do settings+=("--fusion convex --vector-weight $w"); done
{
  for s in "${settings[@]}"; do
    # shellcheck disable=SC2086
    "$cxr" eval "$OUT/covid" --queries "$BENCH/queries-dev.jsonl" --qrels "$BENCH/qrels-dev.txt" \
      --corpus covid --model "$MODEL" $s --json |
      python3 -c '
import json, sys
r = json.load(sys.stdin)
per = " ".join("%s=%.3f" % (q["id"], q["ndcg"]) for q in r["queries"])
print("%s\t%.3f\t%.3f\t%s" % (sys.argv[1], r["mean"]["ndcg"], r["mean"]["p"], per))' "$s"
  done
} | tee "${RESULTS:-tools/results}/fusion-covid.tsv"
