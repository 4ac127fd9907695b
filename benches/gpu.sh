#!/usr/bin/env bash
# The indexer on a GPU: images/s of `cxr index --device cuda` with a ViT-B/16 image tower at
# 224 px (`cxr model init --preset vit-b16`), at several batch sizes, set against the card's
# arithmetic limit for that model. The whole pipeline is measured, as users run it: PNG decode
# and preprocessing on the CPU cores, the image tower on the GPU, HNSW insertion and commits.
#
#   bash tools/build_cuda.sh     # on a machine with Rust: target/cuda/release/cxr
#   bash benches/gpu.sh          # on the GPU machine (no Rust needed there)
#
#   # the same steps on the CPU, as a check of the script itself:
#   DEVICE=cpu N=300 BATCHES=32 CXR=target/release/cxr bash benches/gpu.sh
#
# Settings (environment): CXR (the binary; a CXR.xz beside a missing CXR is unpacked first),
# DEVICE (cuda), N (images, default 20000), BATCHES ("64 128 256"), SIDE (the PNGs' side in
# pixels, 256), PEAK_TFLOPS (the card's dense FP32 peak; 67 is NVIDIA's figure for the H200 and
# the H100 SXM, the default when the GPU's name says H200 or H100), OUT (where results go,
# default target/gpu-bench), PY (a Python 3 with numpy, python3). Writes OUT/gpu.md and
# OUT/gpu.jsonl.
#
# The arithmetic limit: a ViT-B/16 forward pass at 224 px over one grey channel is 17.5 GMACs
# (12 layers of 12*T*d^2 + 2*T^2*d multiply-adds, T = 197 tokens, d = 768, plus the patch
# embedding), 35.0 GFLOP per image. candle runs f32 matrix products through cuBLAS in full FP32
# (its reduced-precision TF32 switch is off by default), so FP32 peak / 35.0 GFLOP is the most
# images/s the card could give this model.
set -euo pipefail
cd "$(dirname "$0")/.."

CXR=${CXR:-target/cuda/release/cxr}
DEVICE=${DEVICE:-cuda}
N=${N:-20000}
BATCHES=${BATCHES:-64 128 256}
SIDE=${SIDE:-256}
OUT=${OUT:-target/gpu-bench}
PY=${PY:-python3}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"

say() { echo "gpu.sh: $*" >&2; }

if [ ! -x "$CXR" ] && [ -f "$CXR.xz" ]; then
  "$PY" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$CXR.xz" "$CXR"
  chmod +x "$CXR"
fi
[ -x "$CXR" ] || { say "no binary at $CXR (bash tools/build_cuda.sh makes it)"; exit 2; }

# The CUDA libraries the binary links: the driver's, and cuBLAS, cuRAND and the runtime from
# wherever this machine keeps them (a CUDA toolkit, or the nvidia wheels beside PyTorch).
if ldd "$CXR" | grep -q "not found"; then
  for lib in $(ldd "$CXR" | awk '/not found/ {print $1}'); do
    found=$(find /usr/local/nvidia /usr/local/cuda* /usr/lib /opt /usr/local/lib -name "$lib" \
      2>/dev/null | head -n 1 || true)
    if [ -n "$found" ]; then
      LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
  done
  export LD_LIBRARY_PATH
  if ldd "$CXR" | grep "not found"; then
    say "the libraries above are missing"
    exit 2
  fi
fi

gpu_name=""
if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
  case "$gpu_name" in *H200* | *H100*) PEAK_TFLOPS=${PEAK_TFLOPS:-67} ;; esac
fi
PEAK_TFLOPS=${PEAK_TFLOPS:-}
say "device $DEVICE ${gpu_name:+($gpu_name)}, $N images of ${SIDE}x$SIDE, batches $BATCHES"

# A model: ViT-B/16 with random weights (throughput does not depend on them).
printf '{"id": "v%d", "findings": "%s"}\n' \
  1 "Small left pleural effusion. Heart size is normal." \
  2 "Cardiomegaly with pulmonary edema. No pneumothorax." \
  3 "The lungs are clear. No acute cardiopulmonary abnormality." >"$WORK/vocab.jsonl"
"$CXR" model init "$WORK/model" --preset vit-b16 --vocab-from "$WORK/vocab.jsonl" >/dev/null

# The archive: smooth random grey fields with noise, PNG, in folders of 1,000, made on every
# core (each image seeded by its number: the same archive on every run).
"$PY" - "$WORK/images" "$N" "$SIDE" <<'EOF'
import multiprocessing, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "benches/peers")
from grey_png import grey_png
out, n, side = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
y, x = np.mgrid[0:side, 0:side] / side
def make(i):
    rng = np.random.default_rng(i)
    a, b, c = rng.uniform(1, 6, 3)
    img = 128 + 60 * np.sin(a * x * 3 + b * y * 2) * np.cos(c * y * 3) + rng.normal(0, 4, x.shape)
    folder = out / f"{i // 1000:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(img, 0, 255).astype(np.uint8).tobytes()
    (folder / f"{i:07d}.png").write_bytes(grey_png(pixels, side, side))
with multiprocessing.Pool() as pool:
    pool.map(make, range(n), chunksize=64)
EOF

# Warm-up: the driver compiles candle's PTX kernels for the card on first use.
"$CXR" index "$WORK/images/0000" --out "$WORK/warm" --model "$WORK/model" --device "$DEVICE" \
  --batch-size 32 -q --json >/dev/null

: >"$OUT/gpu.jsonl"
for batch in $BATCHES; do
  util_log="$WORK/util-$batch.csv"
  if [ -n "$gpu_name" ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
      -lms 200 >"$util_log" &
    smi=$!
  fi
  summary=$("$CXR" index "$WORK/images" --out "$WORK/idx-$batch" --model "$WORK/model" \
    --device "$DEVICE" --batch-size "$batch" -q --json)
  if [ -n "$gpu_name" ]; then kill "$smi"; wait "$smi" 2>/dev/null || true; fi
  "$PY" - "$summary" "$batch" "$util_log" "$DEVICE" "$gpu_name" "${PEAK_TFLOPS:-0}" \
    >>"$OUT/gpu.jsonl" <<'EOF'
import json, sys
from pathlib import Path
s, batch, util_log, device, gpu, peak = sys.argv[1:7]
s = json.loads(s)
rate = s["indexed"] / s["seconds"]
row = dict(device=device, gpu=gpu, batch=int(batch), images=s["indexed"],
           failed=s["failed"], seconds=round(s["seconds"], 2), images_per_s=round(rate, 1))
samples = [line.split(",") for line in Path(util_log).read_text().splitlines()] \
    if Path(util_log).exists() else []
samples = [(float(u), float(m)) for u, m in samples if u.strip() and m.strip()]
if samples:
    row["gpu_util_mean"] = round(sum(u for u, _ in samples) / len(samples), 1)
    row["gpu_mem_mib_max"] = max(m for _, m in samples)
flops = 2 * (12 * (12 * 197 * 768**2 + 2 * 197**2 * 768) + 196 * 256 * 768)
if float(peak) > 0:
    limit = float(peak) * 1e12 / flops
    row["limit_images_per_s"] = round(limit, 1)
    row["of_limit"] = round(rate / limit, 3)
print(json.dumps(row))
EOF
  tail -n 1 "$OUT/gpu.jsonl" >&2
done

"$PY" - "$OUT/gpu.jsonl" "$(nproc)" >"$OUT/gpu.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"`bash benches/gpu.sh`: `cxr index` with a ViT-B/16 image tower at 224 px "
      f"(random weights), {rows[0]['images']} PNGs, device {rows[0]['device']} "
      f"{rows[0]['gpu']}, {sys.argv[2]} CPU cores\n")
print("| batch | images/s | seconds | GPU busy (mean %) | GPU memory (max MiB) | FP32 limit, images/s | of the limit |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['batch']} | {r['images_per_s']} | {r['seconds']} | {r.get('gpu_util_mean', '-')} "
          f"| {r.get('gpu_mem_mib_max', '-')} | {r.get('limit_images_per_s', '-')} "
          f"| {r.get('of_limit', '-')} |")
EOF
cat "$OUT/gpu.md"
