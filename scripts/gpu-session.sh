#!/usr/bin/env bash
# One short, bounded GPU session with prebuilt binaries (scripts/gpu-bundle.sh --release,
# carried as gpu-bin.tar.gz or gpu-bin/): the CUDA parity tests, our benchmarks, the PyTorch/cuDNN reference
# on the same card, and the quickstart on the GPU. Every step has its own time limit so one
# slow step cannot eat the lease. Results go to $OUT, at most 8 files: summary.txt (card,
# steps, test results), tests.log, ours_<precision>.jsonl (fp32, tf32, bf16), ref.jsonl,
# quickstart.log, errors.log. REF_CASES=none skips the reference and QUICKSTART=0 the
# quickstart (a quick check: the parity tests and our own benchmarks). An OURS item
# "<precision>+wgmma:<filter>" runs with the Hopper wgmma kernels (VOXSEG_WGMMA=1) into
# ours_<precision>_wgmma.jsonl (mind the 8 files: drop a precision or the quickstart).
#   OURS="bf16:conv bf16+wgmma:conv" REF_PRECISIONS=bf16 REF_CASES=conv scripts/gpu-session.sh
set -u
# The bundle travels packed (scripts/gpu-bundle.sh).
if [[ ! -d gpu-bin && -f gpu-bin.tar.gz ]]; then
    tar -xzf gpu-bin.tar.gz
fi
out="${OUT:-gpu-session-out}"
mkdir -p "$out"
ours="${OURS:-fp32:conv tf32:conv bf16:conv fp32:unet_step bf16:unet_step fp32:instnorm}"
ref_precisions="${REF_PRECISIONS:-fp32,tf32,bf16}"
ref_cases="${REF_CASES:-conv,norm}"
log() { echo "$*" | tee -a "$out/summary.txt"; }
step() {
    local limit="$1" name="$2"
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@"
    log "$name: exit $?, $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/summary.txt" 2>&1
for bin in gpu-bin/test-cuda_parity* gpu-bin/test-cuda_train; do
    t="$(basename "$bin")"
    step 180 "${t#test-}" "$bin" --include-ignored >>"$out/tests.log" 2>&1
done
for item in $ours; do
    p="${item%%:*}" filter="${item#*:}" wgmma=0 file="ours_${item%%:*}"
    if [[ "$p" == *+wgmma ]]; then
        p="${p%+wgmma}" wgmma=1 file="ours_${p}_wgmma"
    fi
    step 120 "bench $filter $p wgmma=$wgmma" env VOXSEG_WGMMA="$wgmma" gpu-bin/voxseg bench \
        --device cuda --json --precision "$p" --filter "$filter" \
        >>"$out/$file.jsonl" 2>>"$out/errors.log"
done
if [[ "$ref_cases" != none ]]; then
    step 240 "reference $ref_precisions $ref_cases" python3 scripts/bench_reference.py --json \
        --precision "$ref_precisions" --cases "$ref_cases" --warmup 3 --iters 10 \
        >"$out/ref.jsonl" 2>>"$out/errors.log"
fi
if [[ "${QUICKSTART:-1}" != 0 ]]; then
    step 90 "quickstart" gpu-bin/voxseg quickstart --device cuda --out /tmp/qs --force \
        >"$out/quickstart.log" 2>&1
fi
grep -E "test result|FAILED|panicked" "$out/tests.log" | head -40 >>"$out/summary.txt"
cat "$out/summary.txt"
