#!/usr/bin/env bash
# Counts the SASS instructions of each kernel's main loop (the shortest backward branch
# around its tensor-core instructions: HGMMA, HMMA), per thread and iteration, for the
# kernels of one kernels/*.cu file: a static measure of what a step issues, for changes
# that cannot be timed without a GPU. Where the copies (LDGSTS) run in a loop of their own
# (the warp-specialized tiles: one warpgroup copies, two multiply), a second line gives
# that loop. Assembles with the pinned ptxas (for the file's
# `voxseg-arch`, else sm_90), disassembles with cuobjdump and nvdisasm from PyPI (13.2: no
# 13.0 wheels exist; they read 13.0 cubins), installed once into .cuda/disasm.
#   scripts/sass-loops.sh kernels/conv3d_wgmma.cu [kernel-name-regex]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cu="$1"
filter="${2:-.}"
nvcc="$("$repo/scripts/nvcc-path.sh")"
root="$(dirname "$(dirname "$nvcc")")"
tools="$repo/.cuda/disasm"
bin="$tools/nvidia/cu13/bin"
if [[ ! -x "$bin/cuobjdump" || ! -x "$bin/nvdisasm" ]]; then
    "${PYTHON:-python3}" -m pip install --quiet --no-deps --target "$tools" \
        nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86 >&2
    chmod +x "$bin"/*
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
arch="$(head -n 1 "$cu" | sed -n 's|^// voxseg-arch: *||p')"
arch="${arch:-sm_90}"
includes=(-I "$repo/kernels")
for inc in "$root/include" "$root/include/cccl"; do
    [[ -d "$inc" ]] && includes+=(-I "$inc")
done
"$nvcc" -cubin -gencode="arch=compute_${arch#sm_},code=$arch" -std=c++17 "${includes[@]}" \
    -o "$work/k.cubin" "$cu"
PATH="$bin:$PATH" "$bin/cuobjdump" -sass "$work/k.cubin" >"$work/k.sass"
python3 - "$work/k.sass" "$filter" <<'PY'
import collections, re, sys
text, pattern = open(sys.argv[1]).read(), re.compile(sys.argv[2])
parts = re.split(r"\n\s*Function : (\w+)\n", text)
print(f"{'kernel':36s} {'loop':>5s} {'mma':>4s} {'cp.async':>8s} {'bar':>4s}  most frequent")
op = lambda t: (t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0]


def shortest_loop(code, wanted):
    """The shortest span of a backward branch that holds an instruction matching wanted."""
    marks = [a for a, t in code if re.search(wanted, t)]
    best = []
    for a, t in code:
        m = re.search(r"BRA\s+(?:\S+\s+)?0x([0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a and any(int(m.group(1), 16) <= x <= a for x in marks):
            span = [c for c in code if int(m.group(1), 16) <= c[0] <= a]
            if not best or len(span) < len(best):
                best = span
    return best


def show(name, loop):
    ops = collections.Counter(op(t) for _, t in loop)
    top = ", ".join(f"{k} {v}" for k, v in ops.most_common(6))
    print(f"{name:36s} {len(loop):5d} {ops['HGMMA'] + ops['HMMA']:4d} {ops['LDGSTS']:8d} "
          f"{ops['BAR']:4d}  {top}")


for name, body in sorted(zip(parts[1::2], parts[2::2])):
    if not pattern.search(name):
        continue
    code = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
    mma = shortest_loop(code, r"\b[HQ]GMMA|\bHMMA")
    show(name, mma)
    copies = shortest_loop(code, r"\bLDGSTS")
    if copies and not any(t.startswith("LDGSTS") or " LDGSTS" in t for _, t in mma):
        show(f"  {name} copies", copies)
PY
