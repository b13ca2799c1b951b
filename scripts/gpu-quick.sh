#!/usr/bin/env bash
# A bounded GPU check with prebuilt binaries (scripts/gpu-bundle.sh --release, carried as
# gpu-bin/): every CUDA parity test, then our own benchmarks at the precisions given
# (default bf16) for the cases given (default conv,unet_step). No reference run: for the
# side-by-side table use scripts/gpu-session.sh. Results go to $OUT (summary.txt,
# tests.log, ours_<precision>.jsonl, errors.log).
#   scripts/gpu-quick.sh [precisions] [cases]
set -u
out="${OUT:-gpu-quick-out}"
mkdir -p "$out"
precisions="${1:-bf16}"
cases="${2:-conv,unet_step}"
log() { echo "$*" | tee -a "$out/summary.txt"; }
step() {
    local limit="$1" name="$2"
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@"
    log "$name: exit $?, $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/summary.txt"
for bin in gpu-bin/test-cuda_parity* gpu-bin/test-cuda_train; do
    t="$(basename "$bin")"
    step 90 "${t#test-}" "$bin" --include-ignored >>"$out/tests.log" 2>&1
done
for p in ${precisions//,/ }; do
    for c in ${cases//,/ }; do
        step 150 "bench $c $p" gpu-bin/voxseg bench --device cuda --json --precision "$p" \
            --filter "$c" >>"$out/ours_$p.jsonl" 2>>"$out/errors.log"
    done
done
grep -E "test result|FAILED|panicked|^test .* \.\.\. FAILED" "$out/tests.log" | head -60 >>"$out/summary.txt"
cat "$out/summary.txt"
