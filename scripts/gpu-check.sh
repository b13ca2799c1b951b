#!/usr/bin/env bash
# One run on a machine with an NVIDIA GPU: checks registers/spills with ptxas, runs the
# tests including the CUDA parity tests, then the benchmarks at fp32, tf32 and bf16 (on a
# compute capability 9.0 device with the Hopper wgmma kernels, the default there), and there
# tf32 and bf16 again on the mma.sync kernels (VOXSEG_WGMMA=0). Logs go to $OUT (or
# ./gpu-check-out), seven files at most: summary.txt, machine.txt, ptxas.log, test.log,
# bench.log (stderr of the benchmarks), bench.jsonl and bench_mma.jsonl (one JSON line per
# case; scripts/bench_table.py reads
# the precision from each); the exit status is non-zero if any step failed. Uses the
# machine's nvcc, or the repository's .cuda/ if it was carried along.
# - With gpu-bin/ or gpu-bin.tar.xz present (scripts/gpu-bundle.sh, for machines without
#   Rust): runs the prebuilt binaries from it: the test binaries and `voxseg bench`.
# - Otherwise builds with cargo (VOXSEG_REQUIRE_CUDA=1, release) and runs every test.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$repo/gpu-check-out}"
mkdir -p "$out"
cd "$repo"
# The bundle travels packed (scripts/gpu-bundle.sh).
source scripts/gpu-unpack.sh

if ! nvcc="$(scripts/nvcc-path.sh)"; then
    echo "gpu-check: no nvcc" | tee "$out/summary.txt"
    exit 1
fi
export NVCC="$nvcc" VOXSEG_REQUIRE_CUDA=1
export VOXSEG_CUDA_ARCH="${VOXSEG_CUDA_ARCH:-sm_80}"

{ nvidia-smi || echo "nvidia-smi failed"; "$nvcc" --version; cargo --version || true; } >"$out/machine.txt" 2>&1

# run NAME LOG COMMAND...: appends the command's output to LOG and a line to the summary.
run() {
    local name="$1" log="$2"
    shift 2
    local start=$SECONDS
    "$@" >>"$out/$log" 2>&1
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    return $rc
}

: >"$out/summary.txt"
failed=0
run ptxas ptxas.log scripts/ptxas-check.sh sm_90 || failed=1
if [[ -d gpu-bin ]]; then
    for t in gpu-bin/test-*; do
        # Each convolution test in a process of its own: a kernel that hangs traps after
        # 4 s (kernels/mbarrier.h), and every later CUDA call of that process would fail.
        if [[ "$t" == gpu-bin/test-cuda_parity_conv ]]; then
            for name in $("$t" --list --format terse --include-ignored | sed -n 's/: test$//p'); do
                run "$(basename "$t") $name" test.log "$t" --include-ignored --exact "$name" ||
                    failed=1
            done
            continue
        fi
        filter=()
        # The library's own tests: only the CUDA backend's (others may need source files).
        [[ "$t" == gpu-bin/test-voxseg ]] && filter=(backend::cuda)
        run "$(basename "$t")" test.log "$t" "${filter[@]}" --include-ignored || failed=1
    done
    bench=(gpu-bin/voxseg bench)
else
    run test test.log cargo test --release -- --include-ignored || failed=1
    bench=(cargo run --release -q -- bench)
fi
hopper=0
[[ "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1)" == 9.0 ]] &&
    hopper=1
for p in fp32 tf32 bf16 tf32+mma bf16+mma; do
    wgmma=() file=bench.jsonl
    if [[ "$p" == *+mma ]]; then
        [[ $hopper == 1 ]] || continue
        p="${p%+mma}" wgmma=(VOXSEG_WGMMA=0) file=bench_mma.jsonl
    fi
    start=$SECONDS
    env "${wgmma[@]}" "${bench[@]}" --device cuda --json --precision "$p" \
        >>"$out/$file" 2>>"$out/bench.log"
    rc=$?
    echo "bench $p ${wgmma[*]}: exit $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    [[ $rc == 0 ]] || failed=1
done
grep -E "^test result|FAILED|panicked" "$out/test.log" >>"$out/summary.txt"
exit $failed
