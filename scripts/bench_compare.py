#!/usr/bin/env python3
"""Compare kernel variants of `voxseg bench --json` runs against each other and against the
cuDNN reference (`bench_reference.py --json`), to choose plan defaults from a GPU session.

    python3 scripts/bench_compare.py --ref ref.jsonl \\
        defaults=ours_bf16.jsonl m256=ours_bf16_m256.jsonl

The first variant is the baseline. Rows join on (op, shape, precision); lines that are not
JSON objects are skipped. Printed:
- per (precision, suite, op) of the convolutions: for each variant, the geometric mean of
  ours / reference and how many cases are within 1.5x of the reference;
- per case where any variant differs from the baseline by more than --threshold (default
  3%): each variant's time over the baseline's, and the kernel each ran.
"""

import argparse
import json
import math
import sys
from collections import defaultdict


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "op" in r and "ms" in r:
                rows[(r["op"], r["shape"], r.get("precision"))] = r
    return rows


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="bench_reference.py --json output")
    ap.add_argument("--threshold", type=float, default=0.03)
    ap.add_argument("variants", nargs="+", help="label=ours.jsonl, the baseline first")
    args = ap.parse_args()
    ref = load(args.ref)
    variants = []
    for v in args.variants:
        label, sep, path = v.partition("=")
        if not sep:
            sys.exit(f"{v!r}: expected label=path")
        variants.append((label, load(path)))
    base_label, base = variants[0]

    groups = defaultdict(list)
    for key, r in base.items():
        if key[0].startswith("conv3d") and key in ref:
            groups[(key[2], r.get("suite"), key[0])].append(key)
    print("precision suite op: variant geomean(ours/cuDNN) within-1.5 of n")
    for (precision, suite, op), keys in sorted(groups.items(), key=lambda g: str(g[0])):
        cells = []
        for label, rows in variants:
            ratios = [rows[k]["ms"] / ref[k]["ms"] for k in keys if k in rows]
            within = sum(x <= 1.5 for x in ratios)
            cells.append(f"{label} {geomean(ratios):.2f} {within}/{len(ratios)}")
        print(f"{precision} {suite} {op}: " + ", ".join(cells))

    print(f"\ncases where a variant moves by more than {args.threshold:.0%} ({base_label} = 1):")
    for key in sorted(base, key=str):
        b = base[key]
        moved = [
            (label, rows[key]["ms"] / b["ms"], rows[key].get("kernel", "?"))
            for label, rows in variants[1:]
            if key in rows
        ]
        if not any(abs(x - 1) > args.threshold for _, x, _ in moved):
            continue
        vs_ref = f" cuDNN {b['ms'] / ref[key]['ms']:.2f}x" if key in ref else ""
        cells = ", ".join(f"{label} {x:.2f} {kernel}" for label, x, kernel in moved)
        print(f"{key[2]} {key[0]} {key[1]}: {b.get('kernel', '?')}{vs_ref}; {cells}")


if __name__ == "__main__":
    main()
