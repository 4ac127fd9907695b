#!/usr/bin/env bash
# Builds `cxr` with the `cuda` feature on a machine without a CUDA toolkit or a GPU: the
# binary for a GPU machine that has NVIDIA's driver and CUDA 13.0 libraries but no Rust.
#
#   bash tools/build_cuda.sh          # -> target/cuda/release/cxr, and cxr.xz to carry
#
# With a CUDA toolkit installed (nvcc on PATH, CUDA_ROOT set) plain
# `cargo build --release --features cuda` is all it takes; this script is for when there is
# none. It fetches NVIDIA's CUDA 13.0 wheels from PyPI into target/cuda-toolkit (about 700 MB:
# nvcc and its headers compile candle's kernels to PTX; cuBLAS, cuRAND, NVRTC and the runtime
# are linked against) and writes a link-time stub of the driver library, libcuda.so, as CUDA
# toolkits do in lib64/stubs: cudarc links the driver dynamically, and the driver comes with
# the GPU. The stub exports the driver functions cudarc declares, each failing with
# CUDA_ERROR_STUB_LIBRARY, and is not loaded at run time: the binary asks for libcuda.so.1,
# the driver's own.
#
# At run time the binary needs libcuda.so.1, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10 and libcudart.so.13 on the loader's path (`benches/gpu.sh` finds them).
# CUDA_COMPUTE_CAP (default 90: H100/H200) is the architecture candle's kernels are compiled
# for.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_MINOR=13.0
toolkit="$PWD/target/cuda-toolkit"
cu="$toolkit/nvidia/cu13"
wheels=(
  "nvidia-cuda-nvcc==$CUDA_MINOR.*" "nvidia-nvvm==$CUDA_MINOR.*" "nvidia-cuda-crt==$CUDA_MINOR.*"
  "nvidia-cuda-runtime==$CUDA_MINOR.*" "nvidia-cuda-cccl==$CUDA_MINOR.*"
  "nvidia-cuda-nvrtc==$CUDA_MINOR.*" "nvidia-cublas==$CUDA_MINOR.*" "nvidia-curand==10.4.*"
)

if [ ! -x "$cu/bin/nvcc" ] || [ ! -e "$cu/lib/libcublas.so.13" ]; then
  mkdir -p "$toolkit/wheels"
  python3 -m pip download --quiet --no-deps --dest "$toolkit/wheels" "${wheels[@]}"
  python3 - "$toolkit" <<'EOF'
import pathlib, sys, zipfile
root = pathlib.Path(sys.argv[1])
for wheel in sorted((root / "wheels").glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
# zipfile drops the execute bits.
for tool in (root / "nvidia/cu13/bin").iterdir():
    tool.chmod(0o755)
(root / "nvidia/cu13/nvvm/bin/cicc").chmod(0o755)
EOF
fi

# The linker wants unversioned names; the wheels ship the versioned ones the loader asks for.
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  ln -sf "$lib" "$cu/lib/${lib%%.so.*}.so"
done

# The driver stub, from the function names cudarc's driver bindings declare.
stub="$cu/lib/stubs/libcuda.so"
if [ ! -e "$stub" ]; then
  cudarc_src=$(cargo metadata --format-version 1 --features cuda |
    python3 -c 'import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
  mkdir -p "$cu/lib/stubs"
  python3 - "$cudarc_src/src/driver/sys/mod.rs" "$cu/lib/stubs/cuda_stub.c" <<'EOF'
import re, sys
names = sorted(set(re.findall(r"^\s+fn (cu\w+)\(", open(sys.argv[1]).read(), re.M)))
if len(names) < 100:
    sys.exit(f"found only {len(names)} driver functions in {sys.argv[1]}")
with open(sys.argv[2], "w") as out:
    # Each answers CUDA_ERROR_STUB_LIBRARY (34), as NVIDIA's stub does, should it ever be run.
    out.writelines(f"int {n}(void) {{ return 34; }}\n" for n in names)
EOF
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$cu/lib/stubs/cuda_stub.c"
  rm "$cu/lib/stubs/cuda_stub.c"
fi

export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_HOME="$cu"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
cargo build --release --features cuda --target-dir target/cuda --bin cxr
# Compressed for carrying (the binary holds candle's PTX: about 80 MB, 11 MB compressed).
python3 -c 'import lzma, shutil, sys
with open(sys.argv[1], "rb") as src, lzma.open(sys.argv[2], "wb", preset=6) as dst:
    shutil.copyfileobj(src, dst)' target/cuda/release/cxr target/cuda/release/cxr.xz
echo "built target/cuda/release/cxr and cxr.xz (CUDA $CUDA_MINOR, compute capability $CUDA_COMPUTE_CAP)"
