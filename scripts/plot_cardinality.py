#!/usr/bin/env python3
"""Throughput vs distinct keys, from the `cardinality` bench's criterion results.

Reads `$CARGO_TARGET_DIR/criterion/cardinality/*/new/{benchmark,estimates}.json` (the target
directory defaults to `target/` in the workspace), writes the SVG line chart
`docs/img/throughput-vs-keys.svg` (x: distinct keys, log scale; y: events/s; one line per
operator and bounded/unbounded, plus the hand-written loop) and prints a Markdown table of
events/s to stdout, with each line's worst ratio to its 10,000-key rate (the issue's
criterion: within 4x).

Python 3.11 standard library only. Usage:

    cargo bench -p rs2-benches --bench cardinality
    python3 scripts/plot_cardinality.py [--out docs/img/throughput-vs-keys.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
GROUP = "cardinality"
ID = re.compile(r"^(?P<op>[a-z_]+)/keys=(?P<keys>\d+)/(?P<mode>bounded|unbounded)$")

# Operator order, colour and label; bounded lines are dashed.
OPERATORS = {
    "loop": ("#555555", "hand-written HashMap<String, u64> loop"),
    "map": ("#1f77b4", "stateful_map_rs2 (get + set)"),
    "fold": ("#ff7f0e", "stateful_fold_rs2"),
    "dedup": ("#2ca02c", "stateful_deduplicate_rs2"),
}
REFERENCE_KEYS = 10_000


def target_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    if not env:
        return ROOT / "target"
    path = Path(env)
    return path if path.is_absolute() else ROOT / path


def load(criterion: Path) -> dict[tuple[str, str], dict[int, float]]:
    """{(operator, mode): {keys: events per second}}."""
    series: dict[tuple[str, str], dict[int, float]] = {}
    group_dir = criterion / GROUP
    for bench in sorted(group_dir.glob("*/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        m = ID.match(meta.get("function_id") or "")
        if not m:
            continue
        elements = (meta.get("throughput") or {}).get("Elements")
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        # Criterion's typical time per iteration: the slope when it has one (linear
        # sampling), else the mean (flat sampling, which the bench uses).
        est = estimates.get("slope") or estimates["mean"]
        ns = est["point_estimate"]
        if not elements or not ns:
            continue
        rate = elements / (ns * 1e-9)
        series.setdefault((m["op"], m["mode"]), {})[int(m["keys"])] = rate
    return series


def ordered(series):
    def rank(item):
        (op, mode), _ = item
        ops = list(OPERATORS)
        return (ops.index(op) if op in ops else len(ops), op, mode != "unbounded")

    return sorted(series.items(), key=rank)


def label(op: str, mode: str) -> str:
    name = OPERATORS.get(op, ("", op))[1]
    return name if op == "loop" else f"{name}, {mode}"


def fmt_keys(k: int) -> str:
    if k >= 1_000_000 and k % 1_000_000 == 0:
        return f"{k // 1_000_000}M"
    if k >= 1_000 and k % 1_000 == 0:
        return f"{k // 1_000}k"
    return str(k)


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k"


def markdown(series, keys: list[int]) -> str:
    head = ["operator", *[f"{fmt_keys(k)} keys" for k in keys], "worst ÷ 10k-key rate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (op, mode), rates in ordered(series):
        # Code in backticks (and `<...>` kept out of Markdown's HTML).
        cells = [re.sub(r"(stateful_\w+|HashMap<[^>]*>)", r"`\1`", label(op, mode))]
        cells += [fmt_rate(rates[k]) if k in rates else "—" for k in keys]
        ref = rates.get(REFERENCE_KEYS)
        if ref:
            worst = max(max(ref / r, r / ref) for r in rates.values())
            cells.append(f"{worst:.2f}×" + (" ✗" if worst > 4 else ""))
        else:
            cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nice_ceiling(x: float) -> tuple[float, float]:
    """A round axis maximum >= x and its tick step."""
    if x <= 0:
        return 1.0, 0.2
    exp = 10 ** math.floor(math.log10(x))
    for m, step in ((1, 0.2), (1.5, 0.25), (2, 0.25), (2.5, 0.5), (3, 0.5), (4, 0.5), (5, 1),
                    (6, 1), (8, 1), (10, 2)):
        if x <= m * exp:
            return m * exp, step * exp
    return 10 * exp, 2 * exp


def svg(series, keys: list[int]) -> str:
    width, height = 980, 500
    left, right, top, bottom = 80, 350, 50, 60
    pw, ph = width - left - right, height - top - bottom
    lo, hi = math.log10(min(keys)), math.log10(max(keys))
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    ymax, ystep = nice_ceiling(max(r for rates in series.values() for r in rates.values()) * 1.05)

    def x(k: float) -> float:
        return left + (math.log10(k) - lo) / (hi - lo) * pw

    def y(r: float) -> float:
        return top + ph - r / ymax * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="24" text-anchor="middle" font-size="16" '
        'font-weight="bold">Throughput vs distinct keys (1,000,000 events, keys round-robin)</text>',
    ]
    # Horizontal grid and y labels.
    steps = int(round(ymax / ystep))
    for i in range(steps + 1):
        v = i * ystep
        yy = y(v)
        out.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" '
            'stroke="#e0e0e0"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end">{v / 1e6:g} M</text>'
        )
    # Vertical grid at every decade; labels at every decade, bold where measured.
    for d in range(math.floor(lo), math.ceil(hi) + 1):
        k = 10**d
        xx = x(k)
        out.append(
            f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#e0e0e0"/>'
        )
        weight = ' font-weight="bold"' if k in keys else ""
        out.append(
            f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle"{weight}>'
            f"{fmt_keys(k)}</text>"
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>'
    )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">'
        "distinct keys (log scale)</text>"
    )
    out.append(
        f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {top + ph / 2})">events per second</text>'
    )
    # One polyline with markers per series, and its legend entry.
    for i, ((op, mode), rates) in enumerate(ordered(series)):
        colour = OPERATORS.get(op, ("#9467bd", op))[0]
        dash = ' stroke-dasharray="6 4"' if mode == "bounded" else ""
        pts = [(x(k), y(rates[k])) for k in sorted(rates)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for px, py in pts:
            fill = "white" if mode == "bounded" else colour
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{fill}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        ly = top + 10 + i * 22
        lx = left + pw + 20
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 30}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        fill = "white" if mode == "bounded" else colour
        out.append(
            f'<circle cx="{lx + 15}" cy="{ly}" r="4" fill="{fill}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{lx + 38}" y="{ly + 4}">{escape(label(op, mode))}</text>')
    note_y = top + 10 + len(series) * 22 + 12
    for j, line in enumerate(
        [
            "unbounded: max_size = 2 × keys",
            "bounded (dashed): max_size 5 / 5,000 / 10,000",
            "for 10 / 10k / 1M keys",
            "1M keys: every event is a new key",
        ]
    ):
        out.append(
            f'<text x="{left + pw + 20}" y="{note_y + j * 16}" fill="#555" '
            f'font-size="11">{escape(line)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img" / "throughput-vs-keys.svg",
        help="SVG to write (default: docs/img/throughput-vs-keys.svg)",
    )
    args = parser.parse_args()
    criterion = target_dir() / "criterion"
    series = load(criterion)
    if not series:
        print(
            f"no results under {criterion / GROUP}: run "
            "`cargo bench -p rs2-benches --bench cardinality` first",
            file=sys.stderr,
        )
        return 1
    keys = sorted({k for rates in series.values() for k in rates})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg(series, keys))
    print(markdown(series, keys))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
