#!/usr/bin/env python3
"""Join `voxseg bench --json` output with `bench_reference.py --json` output into the
markdown tables of BENCHMARKS.md.

    python3 scripts/bench_table.py --ours ours.jsonl --ref ref.jsonl \\
        --card "NVIDIA H100 80GB HBM3" --date 2026-11-20 --commit abc1234

Both inputs are JSON lines with at least `op`, `shape`, `ms`; rows join on
(op, shape, precision). A line of ours without `precision` takes --ours-precision. Lines
that are not JSON objects (log lines) are skipped with a note on stderr. `--ours` and
`--ref` may be given more than once (e.g. one voxseg run per precision).

One table per family: convolutions (TFLOP/s), instance norm + LeakyReLU (GB/s), the
training step (volumes/s). Per precision: ours ms, ours rate, the reference's ms (cuDNN for
convs, PyTorch's own kernels for norms, PyTorch as a whole for the step), ratio = ours ms /
reference ms (below 1: voxseg is faster). Where ours carries no rate of its own it is derived
from the reference's (the same work in both: rate * ref ms / ours ms). The last row of a
table is the geometric mean of its ratios.

A line with `"timing": "graph"` gives `ms` per call from CUDA graph replays and its eager
time as `ms_eager`; where a side's lines in a table carry `ms_eager`, an "eager ms" column
shows it. A ratio of a graph time to an eager one (older lines, or a case one side could not
capture) is marked with * and explained under the table.
"""

import argparse
import json
import math
import sys

PRECISION_ORDER = ("fp32", "tf32", "bf16")
FAMILIES = (
    # (title, op prefix, rate key, rate unit, what the reference runs)
    ("Convolutions", "conv3d", "tflops", "TFLOP/s", "cuDNN"),
    ("Instance norm + LeakyReLU(0.01)", "instnorm", "gbps", "GB/s", "torch"),
    ("Training step (nnU-Net BraTS network)", "unet_step", "volumes_per_s", "vol/s", "torch"),
)
OTHER_FAMILY = ("Other", "", None, "", "torch")


def read_lines(paths, default_precision, what):
    rows = {}
    order = []
    for path in paths:
        skipped = 0
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    skipped += bool(line)
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SystemExit(f"bench_table: {path}:{number}: not JSON ({err})")
                missing = [k for k in ("op", "shape", "ms") if k not in row]
                if missing:
                    raise SystemExit(f"bench_table: {path}:{number}: missing {', '.join(missing)}")
                precision = row.get("precision", default_precision)
                if precision is None:
                    raise SystemExit(f"bench_table: {path}:{number}: no precision; pass --ours-precision")
                key = (row["op"], row["shape"], precision)
                if key in rows:
                    print(f"bench_table: {what} {key} appears twice; the later line wins", file=sys.stderr)
                else:
                    order.append(key)
                rows[key] = row
        if skipped:
            print(f"bench_table: {path}: skipped {skipped} non-JSON lines", file=sys.stderr)
    return rows, order


def family_of(op):
    for family in FAMILIES:
        if op.startswith(family[1]):
            return family
    return OTHER_FAMILY


def rate_of(row, family):
    key = family[2]
    if key is None:
        return None
    if key in row:
        return float(row[key])
    if key == "tflops" and "gflops" in row:
        return float(row["gflops"]) / 1e3
    return None


def fmt(value, digits=4):
    if value is None:
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{digits - 1}e}"


def section(family, cases, ours, ref, precisions):
    title, _, _, unit, theirs = family
    has_layer = any(ref.get(c + (p,), {}).get("layer") for c in cases for p in precisions)
    head = ["case"] + (["layers"] if has_layer else [])
    align = ["---"] + (["---"] if has_layer else [])
    # Per precision: whether ours / the reference carry eager times beside graph times.
    eager_cols = {
        p: tuple(any("ms_eager" in side.get(c + (p,), {}) for c in cases) for side in (ours, ref))
        for p in precisions
    }
    for p in precisions:
        ours_eager, ref_eager = eager_cols[p]
        head += [f"{p} ours ms"] + ([f"{p} ours eager ms"] if ours_eager else [])
        head += [f"{p} ours {unit}" if unit else f"{p} ours rate", f"{p} {theirs} ms"]
        head += ([f"{p} {theirs} eager ms"] if ref_eager else []) + [f"{p} ratio"]
        align += ["---:"] * (4 + ours_eager + ref_eager)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    ratios = {p: [] for p in precisions}
    mixed = False
    for op, shape in cases:
        layer = next((ref[(op, shape, p)].get("layer") for p in precisions if (op, shape, p) in ref), None)
        cells = [f"`{op}` {shape}"] + ([layer or ""] if has_layer else [])
        for p in precisions:
            o, r = ours.get((op, shape, p)), ref.get((op, shape, p))
            o_ms = float(o["ms"]) if o else None
            r_ms = float(r["ms"]) if r else None
            o_rate = rate_of(o, family) if o else None
            if o_rate is None and o_ms and r and rate_of(r, family) is not None:
                o_rate = rate_of(r, family) * r_ms / o_ms
            ratio = o_ms / r_ms if o_ms and r_ms else None
            ratio_cell = fmt(ratio, 3)
            if ratio is not None:
                ratios[p].append(ratio)
                if is_graph(o) != is_graph(r):
                    ratio_cell += "*"
                    mixed = True
            ours_eager, ref_eager = eager_cols[p]
            cells += [fmt(o_ms)] + ([fmt(eager_ms(o))] if ours_eager else [])
            cells += [fmt(o_rate, 3), fmt(r_ms)] + ([fmt(eager_ms(r))] if ref_eager else [])
            cells.append(ratio_cell)
        lines.append("| " + " | ".join(cells) + " |")
    if any(len(v) > 1 for v in ratios.values()):
        cells = ["geometric mean"] + ([""] if has_layer else [])
        for p in precisions:
            gm = math.exp(sum(map(math.log, ratios[p])) / len(ratios[p])) if ratios[p] else None
            cells += [""] * (3 + sum(eager_cols[p])) + [f"**{fmt(gm, 3)}**" if gm is not None else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    if mixed:
        lines += [
            "",
            "\\* one side timed from CUDA graph replays (no launch overhead), the other eagerly "
            "(launch overhead included): not like with like.",
        ]
    return lines


def is_graph(row):
    return bool(row) and row.get("timing") == "graph"


def eager_ms(row):
    return float(row["ms_eager"]) if row and "ms_eager" in row else None


def devices(rows):
    return sorted({str(r["device"]) for r in rows.values() if "device" in r})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", action="append", required=True, help="voxseg bench --json output")
    ap.add_argument("--ref", action="append", required=True, help="bench_reference.py --json output")
    ap.add_argument("--card", required=True, help="the GPU both ran on, e.g. 'NVIDIA H100 80GB HBM3'")
    ap.add_argument("--date", required=True)
    ap.add_argument("--commit", required=True, help="voxseg commit that was measured")
    ap.add_argument("--ours-precision", default=None, help="precision of our lines that name none")
    args = ap.parse_args(argv)

    ours, ours_order = read_lines(args.ours, args.ours_precision, "ours")
    ref, ref_order = read_lines(args.ref, None, "reference")
    for what, rows in (("ours", ours), ("reference", ref)):
        names = devices(rows)
        if names and names != [args.card]:
            print(f"bench_table: {what} ran on {', '.join(names)}, not --card {args.card!r}", file=sys.stderr)
    only_ours = sorted({k[:2] for k in ours} - {k[:2] for k in ref})
    if only_ours:
        print(f"bench_table: {len(only_ours)} cases of ours have no reference, e.g. {only_ours[0]}", file=sys.stderr)

    cases_by_family = {}
    for op, shape, _ in ref_order + ours_order:
        cases = cases_by_family.setdefault(family_of(op), [])
        if (op, shape) not in cases:
            cases.append((op, shape))

    versions = sorted({f"torch {r['torch']}, cuDNN {r.get('cudnn')}" for r in ref.values() if "torch" in r})
    out = [
        f"## voxseg vs PyTorch + cuDNN: {args.card}",
        "",
        f"Measured {args.date}, voxseg commit `{args.commit}`"
        + (f", {'; '.join(versions)}" if versions else "")
        + ". Both on this card in one device call; median per case; ms per call from CUDA "
        "graph replays where a line's timing is graph (eager ms: launch overhead included); "
        "ratio = ours ms / reference ms (cuDNN for convs, PyTorch for the rest; below 1: "
        "voxseg is faster). "
        "Conv FLOP = 2·N·V·Cin·Cout·k³ for every direction "
        "(V = voxels of the strided side); norm bytes = each activation tensor read or "
        "written once.",
    ]
    for family in FAMILIES + (OTHER_FAMILY,):
        cases = cases_by_family.get(family)
        if not cases:
            continue
        present = {k[2] for k in list(ours) + list(ref) if (k[0], k[1]) in cases}
        precisions = [p for p in PRECISION_ORDER if p in present] + sorted(present - set(PRECISION_ORDER))
        out += [""] + section(family, cases, ours, ref, precisions)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
