#!/usr/bin/env bash
# Set-up and the whole test suite, from a fresh clone. Tests that need ../shared/data skip with a
# printed reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cargo fmt --all -- --check
# The fuzz targets build the library without the `engine` feature: keep that slice compiling.
cargo check --quiet --lib --no-default-features
cargo test --workspace
