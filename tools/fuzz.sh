#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, one after another, one job each.
#
#   bash tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600 s, all four targets)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds come from
# tools/make_fuzz_seeds.py; the corpora grow in fuzz/corpus/<target>/ (git-ignored) and
# crashes land in fuzz/artifacts/<target>/. Each target's log is fuzz/logs/<target>.log.
# Turn a crash into a regression test by copying it into tests/fixtures/fuzz/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(dicom_ingest raster_ingest report_parse query_parse)
fi

max_len() {
    case "$1" in
        dicom_ingest | raster_ingest) echo 16384 ;;
        report_parse) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

[ -d fuzz/corpus ] || python3 tools/make_fuzz_seeds.py fuzz/corpus
mkdir -p fuzz/logs
# fuzz/Cargo.toml's release profile keeps debug assertions and overflow checks on, as in
# `cargo test` (but not in openjp2: see the root Cargo.toml). `-O` makes cargo-fuzz use that
# profile instead of forcing debug assertions on every crate.
cargo +nightly fuzz build -O
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    status=0
    cargo +nightly fuzz run -O "$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len="$(max_len "$target")" \
        -timeout=10 -print_final_stats=1 >"fuzz/logs/$target.log" 2>&1 || status=$?
    grep -E "^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec)" \
        "fuzz/logs/$target.log" || true
    if [ "$status" -ne 0 ]; then
        echo "$target: FAILED (exit $status); see fuzz/logs/$target.log and fuzz/artifacts/$target/"
        grep -E "^(==[0-9]+== ?ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)" \
            "fuzz/logs/$target.log" | head -5 || true
    fi
done
