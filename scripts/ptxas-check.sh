#!/usr/bin/env bash
# Assembles every kernels/*.cu for one architecture (default sm_90, the H100), or for the
# one its first line names (`// voxseg-arch: sm_90a`), with `ptxas -v`, prints registers,
# stack and spills per kernel, and fails if any kernel spills registers to local memory or
# has a stack frame (local arrays, or a helper or lambda that was not inlined) or if
# ptxas serialises wgmma instructions (its "wgmma.mma_async instructions are
# serialized" advice: the tensor cores would then wait for every instruction) or injects
# wgmma waits anywhere but before the mbarrier trap (below), build variants included. Usable in
# CI wherever nvcc is (no GPU needed).
#   scripts/ptxas-check.sh [sm_XX]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arch="${1:-sm_90}"
nvcc="$("$repo/scripts/nvcc-path.sh")"
root="$(dirname "$(dirname "$nvcc")")"
includes=(-I "$repo/kernels")
for inc in "$root/include" "$root/include/cccl"; do
    [[ -d "$inc" ]] && includes+=(-I "$inc")
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Each kernel file, and each build variant its leading comment names
# (`// voxseg-variant: <suffix> <MACRO>`, see build.rs) with -D<MACRO>.
builds=()
for cu in "$repo"/kernels/*.cu; do
    builds+=("$cu:$(basename "$cu" .cu):")
    while read -r suffix macro; do
        builds+=("$cu:$(basename "$cu" .cu)_$suffix:$macro")
    done < <(sed -n '/^\/\//!q; s|^// voxseg-variant: *||p' "$cu")
done

# compile_cubin <cu> <name> [nvcc flags...]: $work/<name>.cubin for the file's architecture,
# nvcc's messages in $work/<name>.log; on failure prints them, marks $work/<name>.failed and
# returns 1.
compile_cubin() {
    local cu="$1" name="$2" file_arch
    shift 2
    file_arch="$(head -n 1 "$cu" | sed -n 's|^// voxseg-arch: *||p')"
    if ! "$nvcc" -cubin -arch="${file_arch:-$arch}" -std=c++17 "${includes[@]}" "$@" \
        -o "$work/$name.cubin" "$cu" 2>"$work/$name.log"; then
        cat "$work/$name.log" >&2
        touch "$work/$name.failed"
        return 1
    fi
}

# One build with `ptxas -v`: its table rows in $work/<name>.rows; $work/<name>.bad when it
# spills, has a stack frame or serialises wgmma; $work/<name>.failed when it does not compile.
check_build() {
    local cu name macro
    IFS=: read -r cu name macro <<<"$1"
    compile_cubin "$cu" "$name" -Xptxas -v ${macro:+-D"$macro"} || return 0
    # ptxas -v: "Compiling entry function 'k' ...", then "N bytes stack frame, S bytes spill
    # stores, L bytes spill loads", then "Used R registers, ...".
    awk -v file="$name" '
        /Compiling entry function/ { match($0, /'\''[^'\'']+'\''/); kernel = substr($0, RSTART + 1, RLENGTH - 2) }
        /bytes stack frame/ { stack = $1; st = $5; ld = $9 }
        /Used [0-9]+ registers/ {
            for (i = 1; i <= NF; i++) if ($i == "Used") regs = $(i + 1)
            printf "%-28s %5s %6s %7s %7s\n", kernel, regs, stack, st, ld
            if (st + 0 > 0 || ld + 0 > 0 || stack + 0 > 0) bad = 1
        }
        END { exit bad }' "$work/$name.log" >"$work/$name.rows" || touch "$work/$name.bad"
    if grep -i "wgmma.*serializ" "$work/$name.log" >&2; then
        echo "$name: ptxas serialises wgmma" >&2
        touch "$work/$name.bad"
    fi
}

# ptxas injects a wgmma wait wherever the accumulators might be used while wgmmas are in
# flight (its C7517 note), which would serialise a main loop as surely as the advice
# above. The only place it is expected is before vx_mbar_wait's trap (kernels/mbarrier.h):
# built without the trap, a kernel file that issues wgmma must draw no such note.
check_no_trap() {
    local cu="$1" name
    name="$(basename "$cu" .cu)-notrap"
    compile_cubin "$cu" "$name" -DVX_MBAR_NO_TRAP || return 0
    if grep "C7517" "$work/$name.log" >&2; then
        echo "$name: ptxas injects wgmma waits outside the mbarrier trap" >&2
        touch "$work/$name.bad"
    fi
}

# As many compilers at once as there are cores: serially this takes minutes.
parallel=$(nproc 2>/dev/null || echo 1)
throttle() {
    while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
}
for build in "${builds[@]}"; do
    throttle
    check_build "$build" &
done
for cu in "$repo"/kernels/*.cu; do
    grep -q "wgmma" "$cu" || continue
    throttle
    check_no_trap "$cu" &
done
wait

if compgen -G "$work/*.failed" >/dev/null; then
    exit 1
fi
printf '%-28s %5s %6s %7s %7s\n' kernel regs stack spill_st spill_ld
for build in "${builds[@]}"; do
    IFS=: read -r _ name _ <<<"$build"
    cat "$work/$name.rows"
done
if compgen -G "$work/*.bad" >/dev/null; then
    echo "register spills, stack frames, serialised wgmma or injected wgmma waits found for $arch" >&2
    exit 1
fi
