#!/usr/bin/env bash
# Runs every bench behind docs/performance.md, then each crate's own benches
# (crates/*/benches/*.rs, run with `cargo bench -p <crate> --bench <name>`), saves each one's
# output under bench-results/ (or $1), prints every figure against issue 8's reference loop
# (scripts/ref_ratios.py) and regenerates the throughput-against-key-count chart. Takes ~20
# minutes on the 2-core machine; run it on an otherwise idle machine.
#
#   scripts/bench_all.sh [OUT_DIR]
#
# RS2_BENCH_ORIGINAL=1 also runs benches/orig-rs2 (the original rs2 0.3.3 beside this project
# and the reference loop; a separate package whose first build takes 10+ CPU minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
for bench in keyed_counter operators cardinality keyed_concurrency operator_memory allocations \
    dedup_memory memory_per_entry clock; do
    echo "== $bench" >&2
    cargo bench -p rs2-benches --bench "$bench" 2>&1 | tee "$out/$bench.txt" |
        grep -E '^[a-z_0-9]+/|thrpt:  \[[0-9]|^\||µs|MB|bytes' >&2 || true
done
# Per-crate benches (built with each crate's dev-dependencies: for rs2-operators that includes
# tokio's `test-util`, see docs/decisions/003).
shopt -s nullglob
for file in crates/*/benches/*.rs; do
    crate="$(basename "$(dirname "$(dirname "$file")")")"
    bench="$(basename "$file" .rs)"
    echo "== $crate: $bench" >&2
    cargo bench -p "$crate" --bench "$bench" 2>&1 | tee "$out/$crate-$bench.txt" |
        grep -E '^[a-z_0-9]+/|thrpt:  \[[0-9]|^\||µs|MB|bytes' >&2 || true
done
if [ "${RS2_BENCH_ORIGINAL:-0}" = 1 ]; then
    echo "== original rs2 0.3.3" >&2
    cargo bench --manifest-path benches/orig-rs2/Cargo.toml 2>&1 | tee "$out/orig-rs2.txt" |
        grep -E '^[a-z_0-9]+/|thrpt:  \[[0-9]' >&2 || true
fi
python3 scripts/ref_ratios.py "$out"/*.txt | tee "$out/reference-ratios.md"
python3 scripts/plot_cardinality.py | tee "$out/cardinality-table.md"
