#!/usr/bin/env bash
# Runs every bench behind docs/performance.md, saves each one's output under bench-results/
# (or $1) and regenerates the throughput-against-key-count chart. Takes ~15 minutes on the
# 2-core machine; run it on an otherwise idle machine.
#
#   scripts/bench_all.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
for bench in keyed_counter operators cardinality keyed_concurrency operator_memory allocations \
    dedup_memory memory_per_entry; do
    echo "== $bench" >&2
    cargo bench -p rs2-benches --bench "$bench" 2>&1 | tee "$out/$bench.txt" |
        grep -E '^[a-z_0-9]+/|thrpt:  \[[0-9]|^\||µs|MB|bytes' >&2 || true
done
python3 scripts/plot_cardinality.py | tee "$out/cardinality-table.md"
