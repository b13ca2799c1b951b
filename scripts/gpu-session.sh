#!/usr/bin/env bash
# One short, bounded GPU session with prebuilt binaries (scripts/gpu-bundle.sh --release,
# carried as gpu-bin/): the CUDA parity tests, our benchmarks (fp32 and bf16 convolution),
# the PyTorch/cuDNN reference on the same card, and the quickstart on the GPU. Every step
# has its own time limit so one slow step cannot eat the lease; results go to $OUT
# (at most 8 files: machine.txt, tests.log, ours_fp32.jsonl, ours_bf16.jsonl, ref.jsonl,
# quickstart.log, errors.log, summary.txt).
set -u
out="${OUT:-gpu-session-out}"
mkdir -p "$out"
log() { echo "$*" | tee -a "$out/summary.txt"; }
step() {
    local limit="$1" name="$2"
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@"
    log "$name: exit $?, $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >"$out/machine.txt" 2>&1
for bin in gpu-bin/test-cuda_parity* gpu-bin/test-cuda_train; do
    t="$(basename "$bin")"
    step 60 "${t#test-}" "$bin" --include-ignored >>"$out/tests.log" 2>&1
done
bench() {
    local limit="$1" p="$2" filter="$3"
    step "$limit" "bench $filter $p" gpu-bin/voxseg bench --device cuda --json --precision "$p" \
        --filter "$filter" >>"$out/ours_$p.jsonl" 2>>"$out/errors.log"
}
bench 120 fp32 conv
bench 120 bf16 conv
bench 60 fp32 unet_step
bench 60 bf16 unet_step
bench 30 fp32 instnorm
step 180 "reference" python3 scripts/bench_reference.py --json --precision fp32,bf16 --warmup 3 --iters 10 \
    >"$out/ref.jsonl" 2>>"$out/errors.log"
step 90 "quickstart" gpu-bin/voxseg quickstart --device cuda --out /tmp/qs --force >"$out/quickstart.log" 2>&1
grep -E "test result|FAILED|panicked" "$out/tests.log" | head -40 >>"$out/summary.txt"
cat "$out/summary.txt"
