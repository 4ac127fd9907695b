#!/usr/bin/env bash
# The peer comparison harness of cxr-search (issue 5): runs our code and its peers on the same
# inputs in the same run, prints a table of ratios and writes it to benches/results/.
#
#   bash benches/run.sh            # full run (see benches/README.md for how long it takes)
#   bash benches/run.sh --quick    # a few minutes: smaller inputs, shorter measurements
#
# Needs Rust (cargo), Python 3.11 with pip, and ../shared/data beside the checkout (or
# CXR_SHARED=/path/to/shared). Installs dcmtk (apt) and cmake if missing, and the Python peers
# of benches/requirements.txt into target/bench-venv. Generated data goes to target/bench-data.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
for arg in "$@"; do
  case "$arg" in
    --quick) MODE=quick ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (use --quick or nothing)" >&2; exit 2 ;;
  esac
done

SHARED=${CXR_SHARED:-../shared}
DATA=$SHARED/data
WORK=target/bench-data
VENV=target/bench-venv
THREADS=$(nproc)
RESULTS=benches/results
# BENCH_NAME names a run's files (results/<name>.md, .json, growth-<name>.png; the mode by
# default), so a partial run, e.g. BENCH_NAME=scale BENCH_ROWS=vectors,query, sits beside the
# last full run instead of replacing it.
NAME=${BENCH_NAME:-$MODE}
RAW=$WORK/raw-$NAME.jsonl
[ -d "$DATA/dicom" ] || { echo "run.sh: $DATA/dicom not found; set CXR_SHARED" >&2; exit 2; }
mkdir -p "$WORK" "$RESULTS"
# BENCH_APPEND=1 adds to the raw measurements of an earlier run of the same mode.
[ -n "${BENCH_APPEND:-}" ] || : >"$RAW"

if [ "$MODE" = quick ]; then
  DECODE_S=1; EMBED_S=3; VEC_N=10000; VEC_QUERIES=200; GROWTH="2000,10000"
  E2E_N=600; E2E_SMALL=200; QUERY_N=10000; QUERY_ROUNDS=5
else
  DECODE_S=3; EMBED_S=8; VEC_N=100000; VEC_QUERIES=1000; GROWTH="10000,100000,1000000"
  E2E_N=10000; E2E_SMALL=1000; QUERY_N=100000; QUERY_ROUNDS=20
fi
# Any size can be overridden from the environment, e.g. BENCH_GROWTH=10000,100000 to leave out
# the 1M point of the full run, and BENCH_ROWS=decode,embed to run some rows only (rows:
# decode, embed, vectors, e2e = `cxr index` runs, query = open time and query latency).
DECODE_S=${BENCH_DECODE_S:-$DECODE_S}; EMBED_S=${BENCH_EMBED_S:-$EMBED_S}
VEC_N=${BENCH_VEC_N:-$VEC_N}; VEC_QUERIES=${BENCH_VEC_QUERIES:-$VEC_QUERIES}
GROWTH=${BENCH_GROWTH:-$GROWTH}; E2E_N=${BENCH_E2E_N:-$E2E_N}
VEC_ROUNDS=${BENCH_VEC_ROUNDS:-1}
E2E_SMALL=${BENCH_E2E_SMALL:-$E2E_SMALL}; QUERY_N=${BENCH_QUERY_N:-$QUERY_N}
QUERY_ROUNDS=${BENCH_QUERY_ROUNDS:-$QUERY_ROUNDS}
ROWS=${BENCH_ROWS:-decode,embed,vectors,e2e,query}

step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "setup"
if [[ ,$ROWS, == *,decode,* ]] && ! command -v dcm2pnm >/dev/null 2>&1; then
  as_root apt-get update -qq && as_root apt-get install -y -qq dcmtk >/dev/null
fi
bash tools/setup.sh
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
# Only the peers of the chosen rows: PyTorch and transformers are large, and only `embed`
# needs them; pydicom and its codecs are for `decode`.
REQS=$WORK/requirements-$MODE.txt
cp benches/requirements.txt "$REQS"
[[ ,$ROWS, == *,embed,* ]] ||
  sed -i -E '/^(torch|transformers|tokenizers|safetensors|huggingface_hub)==/d' "$REQS"
[[ ,$ROWS, == *,decode,* ]] || sed -i -E '/^(pydicom|pylibjpeg[a-z-]*)==/d' "$REQS"
"$VENV/bin/pip" install -q -r "$REQS"
PY="$VENV/bin/python"
PEERS=benches/peers

step "build (release)"
# The bench programs are built with the release profile (what `cxr` ships with), not through
# `cargo bench`, whose profile would rebuild every dependency a second time.
cargo build --release --bin cxr --benches
bench_bin() {
  cargo build --release --message-format=json --bench "$1" 2>/dev/null |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        print(m["executable"])' | tail -1
}
DECODE=$(bench_bin decode); EMBED=$(bench_bin embed); VECTORS=$(bench_bin vectors)
QUERY=$(bench_bin query)
CXR=target/release/cxr

MODEL=$WORK/model
if [ ! -f "$MODEL/model.safetensors" ]; then
  step "model: cxr model init --preset small"
  rm -rf "$MODEL"
  "$CXR" model init "$MODEL" --preset small --vocab-from "$DATA/iu-reports.jsonl" \
    --vocab-from "$DATA/covid/metadata.csv"
fi

"$PY" - "$WORK/machine-$NAME.json" "$MODE" "$THREADS" <<'EOF'
import json, os, platform, subprocess, sys
from importlib.metadata import PackageNotFoundError, version
def installed(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return "not installed"
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
facts = dict(mode=sys.argv[2], threads=int(sys.argv[3]), cores=os.cpu_count(), cpu=cpu,
             memory_gib=round(int(mem) / 2**20, 1), os=platform.platform(),
             load_average_at_start=os.getloadavg()[0],
             date=sh("date -u +%Y-%m-%dT%H:%M:%SZ"), commit=sh("git rev-parse --short HEAD"),
             rustc=sh("rustc --version"), python=platform.python_version(),
             dcmtk=sh("dcm2pnm --version | head -1").strip("$ "),
             packages={p: installed(p) for p in ["torch", "transformers", "tokenizers", "numpy",
                       "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                       "pillow", "faiss-cpu", "hnswlib"]})
json.dump(facts, open(sys.argv[1], "w"), indent=1)
EOF

# ---------------------------------------------------------------- row 1: decode + preprocess
if [[ ,$ROWS, == *,decode,* ]]; then
step "row 1: DICOM decode + preprocess ($DECODE_S s per file and thread count)"
for t in 1 "$THREADS"; do
  RAYON_NUM_THREADS=$t "$DECODE" --dicom-dir "$DATA/dicom" --model "$MODEL" \
    --seconds "$DECODE_S" --dump-dir "$WORK/decode-ours" | tee -a "$RAW"
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$PY" $PEERS/decode.py --impl pydicom \
    --dicom-dir "$DATA/dicom" --threads "$t" --seconds "$DECODE_S" \
    --ours-dump "$WORK/decode-ours" | tee -a "$RAW"
  "$PY" $PEERS/decode.py --impl dcmtk --dicom-dir "$DATA/dicom" --threads "$t" \
    --seconds "$DECODE_S" --ours-dump "$WORK/decode-ours" | tee -a "$RAW"
  if [ "$THREADS" = 1 ]; then break; fi
done
fi

# ---------------------------------------------------------------- row 2: embedding
if [[ ,$ROWS, == *,embed,* ]]; then
step "row 2: embedding throughput, batch 32 ($EMBED_S s per measurement)"
for t in 1 "$THREADS"; do
  RAYON_NUM_THREADS=$t "$EMBED" --model "$MODEL" --images "$DATA/nih1000" \
    --reports "$DATA/iu-reports.jsonl" --dump-dir "$WORK/embed" --batch 32 \
    --seconds "$EMBED_S" | tee -a "$RAW"
  OMP_NUM_THREADS=$t "$PY" $PEERS/embed.py --model "$MODEL" --dump-dir "$WORK/embed" \
    --threads "$t" --seconds "$EMBED_S" | tee -a "$RAW"
  if [ "$THREADS" = 1 ]; then break; fi
done
fi

# ---------------------------------------------------------------- rows 3 and 5: vectors
VDATA=$WORK/vectors
# Only the sizes the chosen rows read: vecdata.py draws every point at once, so the largest
# size decides the data (and 1M points take a gigabyte).
SIZES=""
[[ ,$ROWS, == *,vectors,* ]] && SIZES="$GROWTH,$VEC_N"
[[ ,$ROWS, == *,query,* ]] && SIZES="$SIZES,$QUERY_N"
SIZES=$(echo "$SIZES" | tr ',' '\n' | grep -v '^$' | sort -nu | paste -sd, || true)
if [ -n "$SIZES" ]; then
  step "rows 3, 4 and 5: vector data (sizes $SIZES, $VEC_QUERIES queries)"
  "$PY" $PEERS/vecdata.py --out-dir "$VDATA" --sizes "$SIZES" --queries "$VEC_QUERIES"
fi
if [[ ,$ROWS, == *,vectors,* ]]; then
for n in $(echo "$GROWTH,$VEC_N" | tr ',' '\n' | sort -nu); do
  step "rows 3/5: HNSW on $n vectors (build with $THREADS threads, $VEC_ROUNDS search rounds)"
  # Ours is built in one process and searched in fresh ones, as readers open an index: mapped
  # rows (the default), then the same index with its rows read onto huge pages. The peers
  # build, sweep and save their index; later rounds reload it. Each round runs all four
  # sweeps one after another, and collect.py takes each point's median over the rounds.
  RAYON_NUM_THREADS=$THREADS "$VECTORS" --data-dir "$VDATA" --n "$n" \
    --index-dir "$WORK/vec-index" --build-only --keep | tee -a "$RAW"
  for round in $(seq 1 "$VEC_ROUNDS"); do
    for placement in mapped huge-pages; do
      RAYON_NUM_THREADS=$THREADS "$VECTORS" --data-dir "$VDATA" --n "$n" \
        --index-dir "$WORK/vec-index" --reuse --keep --placement $placement | tee -a "$RAW"
    done
    for impl in faiss hnswlib; do
      if [ "$round" = 1 ]; then how=(--save "$WORK/vec-$impl.idx"); else how=(--load "$WORK/vec-$impl.idx"); fi
      "$PY" $PEERS/vectors.py --impl $impl --data-dir "$VDATA" --n "$n" --threads "$THREADS" \
        "${how[@]}" | tee -a "$RAW"
    done
  done
  rm -rf "$WORK/vec-index" "$WORK"/vec-*.idx
done
step "row 3: the same index with f16 vector storage ($VEC_N vectors)"
RAYON_NUM_THREADS=$THREADS "$VECTORS" --data-dir "$VDATA" --n "$VEC_N" --storage f16 \
  --index-dir "$WORK/vec-index" --build-only --keep | tee -a "$RAW"
RAYON_NUM_THREADS=$THREADS "$VECTORS" --data-dir "$VDATA" --n "$VEC_N" --storage f16 \
  --index-dir "$WORK/vec-index" --reuse | tee -a "$RAW"
fi

# ---------------------------------------------------------------- row 4: end to end
if [[ ,$ROWS, == *,e2e,* ]]; then
step "row 4: cxr index over $E2E_N generated images"
"$PY" $PEERS/make_images.py --src "$DATA/nih1000" --out "$WORK/images-$E2E_N" --n "$E2E_N"
"$PY" $PEERS/make_images.py --src "$DATA/nih1000" --out "$WORK/images-$E2E_SMALL" \
  --n "$E2E_SMALL"
index_run() { # images-folder batch-size label [cxr index options...]
  local idx=$WORK/e2e-index
  rm -rf "$idx"
  /usr/bin/time -v -o "$WORK/time.txt" "$CXR" index "$1" --out "$idx" --model "$MODEL" \
    --batch-size "$2" --json -q "${@:4}" >"$WORK/index-summary.json"
  "$PY" - "$WORK/time.txt" "$WORK/index-summary.json" "$2" "$3" "$THREADS" <<'EOF' | tee -a "$RAW"
import json, re, sys
t = open(sys.argv[1]).read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
summary = json.load(open(sys.argv[2]))
n = summary.get("indexed", 0)
print(json.dumps(dict(row="e2e", impl="ours", what=sys.argv[4], batch=int(sys.argv[3]),
                      images=n, failed=summary.get("failed"), seconds=secs,
                      images_per_s=n / secs, peak_rss_mib=rss_kb / 1024,
                      threads=int(sys.argv[5]))))
EOF
}
index_run "$WORK/images-$E2E_N" 32 "archive-large"
index_run "$WORK/images-$E2E_SMALL" 32 "archive-small"
# The same two archives with segments of a tenth of the small one: the writer then holds one
# segment's graph, whatever the archive.
SEG_ROWS=$((E2E_SMALL / 10))
index_run "$WORK/images-$E2E_N" 32 "archive-large-segmented" --segment-rows "$SEG_ROWS"
index_run "$WORK/images-$E2E_SMALL" 32 "archive-small-segmented" --segment-rows "$SEG_ROWS"
index_run "$WORK/images-$E2E_SMALL" 8 "batch-8"
index_run "$WORK/images-$E2E_SMALL" 128 "batch-128"
fi

if [[ ,$ROWS, == *,query,* ]]; then
step "row 4: open time and text-query latency on $QUERY_N documents"
"$QUERY" --data-dir "$VDATA" --n "$QUERY_N" --model "$MODEL" \
  --reports "$DATA/iu-reports.jsonl" --queries "$SHARED/bench/queries-dev.jsonl" \
  --index-dir "$WORK/query-index-$QUERY_N" --reuse --rounds "$QUERY_ROUNDS" \
  --images "$DATA/nih1000" --rerank-depth 20 | tee -a "$RAW"
# What a user waits for: one `cxr search` process (model load + index open + query).
# The same with `--rerank 20` (the reranker the query bench wrote next to the index).
"$PY" - "$CXR" "$WORK/query-index-$QUERY_N" "$MODEL" "$QUERY_N" "$DATA/nih1000" <<'EOF' | tee -a "$RAW"
import json, statistics, subprocess, sys, time
cxr, idx, model, n, images = sys.argv[1:6]
rerank = ["--rerank", "20", "--reranker", idx + ".reranker", "--image-root", images]
for what, extra in [("cli_search", []), ("cli_search_rerank20", rerank)]:
    times = []
    for q in ["small left pleural effusion", "cardiomegaly", "pneumothorax", "no acute findings",
              "right lower lobe consolidation"]:
        t = time.perf_counter()
        subprocess.run([cxr, "search", idx, "--text", q, "--model", model, "-k", "10"] + extra,
                       check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(dict(row="query", impl="ours", what=what, n=int(n),
                          median_ms=statistics.median(times), max_ms=max(times))))
EOF
fi

step "results"
"$PY" benches/collect.py --raw "$RAW" --machine "$WORK/machine-$NAME.json" --out "$RESULTS" \
  --mode "$NAME"
