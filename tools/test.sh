#!/usr/bin/env bash
# Set-up and the whole test suite, from a fresh clone. Tests that need ../shared/data skip with a
# printed reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cargo fmt --all -- --check
cargo test --workspace
