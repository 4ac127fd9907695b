# Sourced by the evaluation scripts of tools/ from the repository root: the shared data and
# benchmark folders (DATA, BENCH; ../shared beside the checkout unless set) and `cxr`, the
# binary they run: $CXR when set (e.g. a dev build, whose dependencies are optimised), else
# the release build, made here.
DATA=${DATA:-../shared/data}
BENCH=${BENCH:-../shared/bench}
if [ -z "${CXR:-}" ]; then
  cargo build --release --quiet
fi
cxr=${CXR:-target/release/cxr}
