#!/usr/bin/env bash
# One run on a machine with an NVIDIA GPU: checks registers/spills with ptxas, runs the
# tests including the CUDA parity tests, then the benchmark. Logs go to $OUT (or
# ./gpu-check-out); the exit status is non-zero if any step failed. Uses the machine's
# nvcc, or the repository's .cuda/ if it was carried along.
# - With gpu-bin/ present (scripts/gpu-bundle.sh, for machines without Rust): runs the
#   prebuilt binaries from it: the CUDA test binaries and `voxseg bench`.
# - Otherwise builds with cargo (VOXSEG_REQUIRE_CUDA=1, release) and runs every test.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$repo/gpu-check-out}"
mkdir -p "$out"
cd "$repo"

if ! nvcc="$(scripts/nvcc-path.sh)"; then
    echo "gpu-check: no nvcc" | tee "$out/summary.txt"
    exit 1
fi
export NVCC="$nvcc" VOXSEG_REQUIRE_CUDA=1
export VOXSEG_CUDA_ARCH="${VOXSEG_CUDA_ARCH:-sm_80}"

{ nvidia-smi || echo "nvidia-smi failed"; "$nvcc" --version; cargo --version || true; } >"$out/machine.txt" 2>&1

run() {
    local name="$1"
    shift
    local start=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    return $rc
}

: >"$out/summary.txt"
failed=0
run ptxas scripts/ptxas-check.sh sm_90 || failed=1
if [[ -d gpu-bin ]]; then
    : >"$out/test.log"
    for t in gpu-bin/test-*; do
        filter=()
        # The library's own tests: only the CUDA backend's (others may need source files).
        [[ "$t" == gpu-bin/test-voxseg ]] && filter=(backend::cuda)
        run "$(basename "$t")" "$t" "${filter[@]}" --include-ignored || failed=1
        cat "$out/$(basename "$t").log" >>"$out/test.log"
    done
    run bench gpu-bin/voxseg bench --device cuda --json || failed=1
else
    run test cargo test --release -- --include-ignored || failed=1
    run bench cargo run --release -- bench --device cuda --json || failed=1
fi
# The benchmark's JSON is the last line of its log.
tail -n 1 "$out/bench.log" >"$out/bench.json"
grep -E "^test result|FAILED|panicked" "$out/test.log" >>"$out/summary.txt"
exit $failed
