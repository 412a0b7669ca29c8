#!/usr/bin/env python3
"""Each bench's events/s and its ratio to issue 8's reference loop, from criterion's output.

Reads the text criterion prints (a saved `cargo bench ... | tee FILE`, or stdin) and, for every
bench group that has a `reference_loop` bench, prints a Markdown table: each bench's events/s
(criterion's middle throughput estimate), "x reference loop" (its throughput over the
reference loop's in the same group and run) and, where the group also has a
`<workload>/hand_written` bench (or, in `keyed_counter`, `hand_written_hashmap`), "x
hand-written loop".

Python 3 standard library only. Usage:

    cargo bench -p rs2-benches --bench operators | tee operators.txt
    python3 scripts/ref_ratios.py operators.txt [more files ...]
"""

from __future__ import annotations

import re
import sys

NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.=\-]+/\S+)(\s+time:.*)?$")
THRPT = re.compile(r"thrpt:\s+\[\S+ \S+ (?P<value>[0-9.]+) (?P<unit>[KMG]?)elem/s ")
SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


def parse(lines):
    """(group, bench) -> events/s, in the order seen."""
    out: dict[tuple[str, str], float] = {}
    name = None
    for line in lines:
        line = line.rstrip("\n")
        m = NAME.match(line)
        if m:
            name = m.group("name")
        m = THRPT.search(line)
        if m and name:
            group, _, bench = name.partition("/")
            out[(group, bench)] = float(m.group("value")) * SCALE[m.group("unit")]
            name = None
    return out


def table(results: dict[tuple[str, str], float]) -> str:
    rows = []
    groups = dict.fromkeys(g for g, _ in results)
    for group in groups:
        benches = {b: v for (g, b), v in results.items() if g == group}
        ref = benches.get("reference_loop")
        if ref is None:
            continue
        rows.append(f"\n{group}\n")
        rows.append("| bench | events/s | x reference loop | x hand-written loop |")
        rows.append("|---|---|---|---|")
        for bench, value in benches.items():
            workload = bench.rsplit("/", 1)[0] if "/" in bench else None
            loop = benches.get(f"{workload}/hand_written") if workload else None
            loop = loop or benches.get("hand_written_hashmap")
            is_loop = bench.startswith("hand_written") or bench.endswith("/hand_written")
            is_loop = is_loop or bench == "reference_loop"
            vs_loop = f"{value / loop:.2f}" if loop and not is_loop else ""
            rows.append(f"| {bench} | {value / 1e6:.2f} M | {value / ref:.2f} | {vs_loop} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        for path in argv[1:]:
            with open(path, encoding="utf-8") as f:
                print(f"## {path}")
                print(table(parse(f)))
    else:
        print(table(parse(sys.stdin)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
