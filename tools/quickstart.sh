#!/usr/bin/env bash
# The main job from a fresh clone: build, create the default model if absent, index the three
# shared corpora and the DICOM test set, search, and score each corpus on the dev queries.
# Indexes go to indexes/ (ignored by git). DATA defaults to ../shared/data beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BENCH=${BENCH:-../shared/bench}
bash tools/setup.sh
cargo build --release --quiet
cxr=target/release/cxr

if [ ! -f models/default/model.safetensors ]; then
  "$cxr" model init models/default --preset small --seed 0 --name cxr-random-small \
    --vocab-from "$DATA/iu-reports.jsonl" --vocab-from "$DATA/covid/metadata.csv"
fi

rm -rf indexes && mkdir -p indexes
"$cxr" index "$DATA/dicom" --out indexes/dicom
"$cxr" index --reports "$DATA/iu-reports.jsonl" --out indexes/iu
"$cxr" index "$DATA/covid/images" --reports "$DATA/covid/metadata.csv" --key filename \
  --text clinical_notes --out indexes/covid
"$cxr" index "$DATA/nih1000/valid" "$DATA/nih1000/test" --reports "$DATA/nih1000/labels.csv" \
  --key "Image Index" --text none --out indexes/nih

echo; echo '$ cxr search indexes/iu --text "small left pleural effusion" -k 5'
"$cxr" search indexes/iu --text "small left pleural effusion" -k 5
echo; echo '$ cxr search indexes/iu --text "no pneumothorax" -k 3'
"$cxr" search indexes/iu --text "no pneumothorax" -k 3
echo; echo '$ cxr search indexes/iu --text "cardiomegaly without pleural effusion" -k 3'
"$cxr" search indexes/iu --text "cardiomegaly without pleural effusion" -k 3
echo; echo '$ cxr search indexes/nih --text "pleural effusion" -k 5 --rerank 20 --image-root ...'
"$cxr" search indexes/nih --text "pleural effusion" -k 5 --rerank 20 \
  --image-root "$DATA/nih1000/valid" "$DATA/nih1000/test"
echo; echo '$ cxr search indexes/dicom --image rg1-j2kr.dcm -k 3'
"$cxr" search indexes/dicom --image "$DATA/dicom/rg1-j2kr.dcm" -k 3
echo; echo '$ cxr search indexes/dicom --image rg1-j2kr.dcm -k 3 --image-match appearance'
"$cxr" search indexes/dicom --image "$DATA/dicom/rg1-j2kr.dcm" -k 3 --image-match appearance
for corpus in iu covid nih; do
  echo; echo "\$ cxr eval indexes/$corpus --corpus $corpus"
  "$cxr" eval "indexes/$corpus" --queries "$BENCH/queries-dev.jsonl" --qrels "$BENCH/qrels-dev.txt" \
    --corpus "$corpus" --run "indexes/$corpus.run"
done
