#!/usr/bin/env bash
# One short, bounded GPU session with prebuilt binaries (scripts/gpu-bundle.sh --release,
# carried as gpu-bin.tar.xz or gpu-bin/): every kernel module compiled by the driver once
# (JIT_LIMIT), the CUDA parity tests (TEST_LIMIT; all test binaries at once, each conv
# test in its own process, TEST_RAYON_THREADS CPU threads each, default 1: they check
# values, not time), then, one at a time, our benchmarks, the
# PyTorch/cuDNN reference on the same card, and the quickstart on the GPU. Every step has
# its own time limit, clamped to what is left of DEADLINE seconds (default 540) for the
# whole script, so one slow step cannot eat the lease. Results go to $OUT in at most eight
# files (all the device tool brings back): summary.txt (card, steps, test results), tests.log
# (with the quickstart's output), errors.log, ref.jsonl, ours.tar, which holds one
# ours_<precision>[_<variant>...].jsonl per OURS item name, and the sanitizer's logs.
# REF_CASES=none skips the reference, REF_AFTER=N runs it after the first N items of OURS
# instead of after them all, and QUICKSTART=0 skips the quickstart; REF_STEP=<precisions>
# adds, last, the reference's training step (slow: cuDNN searches per layer) to ref.jsonl;
# SANITIZE=<test filter> reruns those conv parity tests under compute-sanitizer, last
# (below); PROFILE=<bench case> runs Nsight Compute on that case's kernels at
# PROFILE_PRECISION (default bf16) with the plan's defaults, before the sanitizer, into
# $OUT/ncu_<precision>.txt (scripts/gpu-profile.sh's sections plus SourceCounters: the SASS
# lines where the warps stall most). An OURS item "<precision>:<filter>" runs the defaults into
# ours_<precision>.jsonl; variants follow the precision, each also named in the file:
# "+wgmma" forces the Hopper wgmma kernels on (VOXSEG_WGMMA=1), "+mma" off, "+percall"
# packs the tensor-core operands on every call (VOXSEG_PACK_CACHE=off), "+nopairs" keeps
# full grids of 64 columns off the pair of wgmma blocks per SM (VOXSEG_WGMMA_PAIRS=0),
# "+l1" runs every tensor-core pass from the build variant whose activation gathers go
# through L1 (VOXSEG_GATHER_L1=all), "+nol1" none (=off), "+halo" runs every stride-1 pass
# the plan allows on the halo kernels (VOXSEG_CONV_HALO=all), "+nohalo" none (=off),
# "+pairs" the pair where the plan allows (the default), "+m256" runs every 128 x 128
# wgmma tile as 256 x 128 (VOXSEG_WGMMA_M256=all), "+nom256" none (=off), "+ws" runs the
# 128 x 128 tiles that stay so and the 128 x 64 ones (the pair too) warp-specialized
# (VOXSEG_WGMMA_WS=1; off by default, measured slower), "+tma" runs the forward, backward
# data and bf16 backward weights on the tiles the tensor memory accelerator fills wherever
# the plan allows (VOXSEG_WGMMA_TMA=all), "+notma" nowhere (=off, tf32w's too), "+non64w" runs
# 64-column backward weights on mma.sync (VOXSEG_WGMMA_N64_WEIGHTS=off), "+tf32w" runs
# tf32 backward weights on the tensor memory accelerator's tiles over channel-major packs
# wherever the plan allows (VOXSEG_WGMMA_TF32_WEIGHTS=all; by default where measured),
# "+notf32w" nowhere (=off), "+nosavepacked" has the tape keep the
# tensor-core convolutions' f32 inputs instead of only the packs their weight gradients
# read (VOXSEG_SAVE_PACKED_INPUTS=0; "+savepacked", =1, is the default since ada6409),
# "+waves" splits reductions whose tiles fill less than a wave by whole waves
# (VOXSEG_SPLIT_WAVES=1; off by default), "+cols" runs backward weights into 64-column
# blocks on the transposed tile wherever it tiles them (bf16; tf32 with +tf32w;
# VOXSEG_WGMMA_COLS_WEIGHTS=all; by default where measured), "+nocols" nowhere (=off),
# "+colsgather" the forward and backward data into 64 columns likewise
# (VOXSEG_WGMMA_COLS_GATHER=all), "+nocolsgather" (=off), "+phase" runs backward data
# whose taps do not overlap (the 2x2x2 stride-2 transposed forwards) on the phase kernel
# (VOXSEG_CONV_PHASE=1; off by default, not yet timed), "+persist" runs the forward and
# backward data on the transposed tiles persistently, a block per SM looping over the
# tiles (VOXSEG_WGMMA_PERSIST=1; off by default, not yet timed), "+bf16x3" runs tf32
# backward weights as three bf16 products on the bf16 kernels (VOXSEG_CONV_TF32_BF16X3=1;
# off by default, not yet timed), "+jit" loads every module from
# its PTX (the driver's compilation) instead of the machine code the bundle carries for the
# card (VOXSEG_SASS=off); without them each runs where a GPU measured it faster (so "+l1"
# leaves the halo's passes on the halo, which has no L1 build). E.g. "bf16+mma+percall:conv" into
# ours_bf16_mma_percall.jsonl.
#   OURS="bf16:conv bf16+wgmma:conv" REF_PRECISIONS=bf16 REF_CASES=conv scripts/gpu-session.sh
set -u
# The bundle travels packed (scripts/gpu-bundle.sh).
source scripts/gpu-unpack.sh
out="${OUT:-gpu-session-out}"
mkdir -p "$out"
deadline="${DEADLINE:-540}"
ours="${OURS:-fp32:conv tf32:conv bf16:conv fp32:unet_step bf16:unet_step fp32:instnorm}"
ref_precisions="${REF_PRECISIONS:-fp32,tf32,bf16}"
ref_cases="${REF_CASES:-conv,norm}"
# A step's stdout may go to a file (the benchmarks' JSON lines): the log goes to the
# script's own stdout (fd 3).
exec 3>&1
log() { echo "$*" | tee -a "$out/summary.txt" >&3; }
# step LIMIT NAME COMMAND...: runs COMMAND under min(LIMIT, time left), or skips it.
step() {
    local limit="$1" name="$2"
    shift 2
    local left=$((deadline - SECONDS))
    if ((left < 15)); then
        log "$name: skipped, ${left} s left"
        return
    fi
    ((limit > left)) && limit=$left
    local start=$SECONDS
    # 3>&-: a step's processes do not hold the log's descriptor.
    timeout "$limit" "$@" 3>&-
    log "$name: exit $?, $((SECONDS - start)) s (limit $limit)"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 |
    tee "$out/summary.txt"
tests_dir="$(mktemp -d)"
ours_dir="$(mktemp -d)"
# The convolution tests share one lock (each changes the device's settings): each runs in
# its own process, side by side, instead of one after another in one (over 170 s on an
# H100 in 2026-11-26's call 4).
run_tests() {
    local pids=() bin name failed=0
    for bin in gpu-bin/test-cuda_parity* gpu-bin/test-cuda_train; do
        if [[ "$bin" == */test-cuda_parity_conv ]]; then
            local names
            names=$("$bin" --list --format terse --include-ignored | sed -n 's/: test$//p')
            if [[ -z "$names" ]]; then
                echo "$bin listed no tests" >"$tests_dir/$(basename "$bin").log"
                failed=1
            fi
            # --nocapture: a test that outlasts the limit still shows which pass it was in.
            for name in $names; do
                "$bin" --include-ignored --exact --nocapture "$name" \
                    >"$tests_dir/$(basename "$bin")-$name.log" 2>&1 &
                pids+=($!)
            done
            continue
        fi
        "$bin" --include-ignored >"$tests_dir/$(basename "$bin").log" 2>&1 &
        pids+=($!)
    done
    local pid
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    return $failed
}
export -f run_tests
export tests_dir
# The driver compiles each PTX module when a process first loads it (the halo, pipe and
# wgmma modules are 3-7 MB of PTX each) and caches the result on disk: one process loads
# every module first, so that the tests and benchmarks after it start compiled instead of
# each compiling the same modules side by side. The cache must hold them all. Where the
# bundle carries machine code for the card (VOXSEG_CUDA_SASS, sm_90 by default) nothing is
# compiled, and this step checks that every module loads from it.
export CUDA_CACHE_MAXSIZE=4294967296
step "${JIT_LIMIT:-150}" "every module compiles and loads (the driver's cache)" \
    bash -c "gpu-bin/test-cuda_parity --include-ignored --exact every_kernel_module_loads \
        >'$tests_dir/every_kernel_module_loads.log' 2>&1 &&
        grep -q '1 passed' '$tests_dir/every_kernel_module_loads.log'"
# About 34 test processes run side by side on the machine's 16 cores, each checking against
# f64 CPU references that rayon spreads over every core: one thread each instead of 16,
# so that they share the cores rather than spin on them (call 6: a halo pass's two
# references, 0.7 s alone on 2 cores here, took 5-14 s there among the others).
step "${TEST_LIMIT:-180}" "tests (all binaries at once)" \
    env RAYON_NUM_THREADS="${TEST_RAYON_THREADS:-1}" bash -c run_tests
for f in "$tests_dir"/*.log; do
    echo "=== $(basename "$f" .log)" >>"$out/tests.log"
    cat "$f" >>"$out/tests.log"
done
# The PyTorch/cuDNN reference, once: after the first REF_AFTER items of OURS (default: all),
# so that the items that matter most and the reference fit the deadline before the rest.
ref_done=0
reference() {
    ((ref_done)) && return
    ref_done=1
    if [[ "$ref_cases" != none ]]; then
        step 240 "reference $ref_precisions $ref_cases" python3 scripts/bench_reference.py \
            --json --precision "$ref_precisions" --cases "$ref_cases" --warmup 3 --iters 10 \
            >"$out/ref.jsonl" 2>>"$out/errors.log"
    fi
}
items=0
for item in $ours; do
    if ((items++ == ${REF_AFTER:--1})); then
        reference
    fi
    IFS=+ read -r p variants <<<"${item%%:*}"
    filter="${item#*:}" vars=() file="ours_$p"
    for v in ${variants//+/ }; do
        case "$v" in
        wgmma) vars+=(VOXSEG_WGMMA=1) ;;
        mma) vars+=(VOXSEG_WGMMA=0) ;;
        percall) vars+=(VOXSEG_PACK_CACHE=off) ;;
        pairs) vars+=(VOXSEG_WGMMA_PAIRS=1) ;;
        nopairs) vars+=(VOXSEG_WGMMA_PAIRS=0) ;;
        m256) vars+=(VOXSEG_WGMMA_M256=all) ;;
        nom256) vars+=(VOXSEG_WGMMA_M256=off) ;;
        ws) vars+=(VOXSEG_WGMMA_WS=1) ;;
        tma) vars+=(VOXSEG_WGMMA_TMA=all) ;;
        notma) vars+=(VOXSEG_WGMMA_TMA=off) ;;
        jit) vars+=(VOXSEG_SASS=off) ;;
        non64w) vars+=(VOXSEG_WGMMA_N64_WEIGHTS=off) ;;
        tf32w) vars+=(VOXSEG_WGMMA_TF32_WEIGHTS=all) ;;
        notf32w) vars+=(VOXSEG_WGMMA_TF32_WEIGHTS=off) ;;
        savepacked) vars+=(VOXSEG_SAVE_PACKED_INPUTS=1) ;;
        nosavepacked) vars+=(VOXSEG_SAVE_PACKED_INPUTS=0) ;;
        waves) vars+=(VOXSEG_SPLIT_WAVES=1) ;;
        cols) vars+=(VOXSEG_WGMMA_COLS_WEIGHTS=all) ;;
        nocols) vars+=(VOXSEG_WGMMA_COLS_WEIGHTS=off) ;;
        colsgather) vars+=(VOXSEG_WGMMA_COLS_GATHER=all) ;;
        nocolsgather) vars+=(VOXSEG_WGMMA_COLS_GATHER=off) ;;
        l1) vars+=(VOXSEG_GATHER_L1=all) ;;
        nol1) vars+=(VOXSEG_GATHER_L1=off) ;;
        halo) vars+=(VOXSEG_CONV_HALO=all) ;;
        nohalo) vars+=(VOXSEG_CONV_HALO=off) ;;
        phase) vars+=(VOXSEG_CONV_PHASE=1) ;;
        persist) vars+=(VOXSEG_WGMMA_PERSIST=1) ;;
        bf16x3) vars+=(VOXSEG_CONV_TF32_BF16X3=1) ;;
        *) log "unknown variant $v in $item" && continue 2 ;;
        esac
        file+="_$v"
    done
    step 120 "bench $filter $p ${vars[*]}" env "${vars[@]}" gpu-bin/voxseg bench \
        --device cuda --json --precision "$p" --filter "$filter" \
        >>"$ours_dir/$file.jsonl" 2>>"$out/errors.log"
done
tar -cf "$out/ours.tar" -C "$ours_dir" .
reference
if [[ "${QUICKSTART:-1}" != 0 ]]; then
    echo "=== quickstart" >>"$out/tests.log"
    step 90 "quickstart" gpu-bin/voxseg quickstart --device cuda --out /tmp/qs --force \
        >>"$out/tests.log" 2>&1
fi
if [[ -n "${REF_STEP:-}" ]]; then
    step 240 "reference step $REF_STEP" python3 scripts/bench_reference.py --json \
        --precision "$REF_STEP" --cases step --warmup 3 --iters 10 \
        >>"$out/ref.jsonl" 2>>"$out/errors.log"
fi
if [[ -n "${PROFILE:-}" ]]; then
    if ! command -v ncu >/dev/null; then
        log "ncu: not on this machine, PROFILE skipped"
    else
        profile_limit="${PROFILE_LIMIT:-90}"
        step "$profile_limit" "ncu $PROFILE" env OUT="$out" CASES="$PROFILE" \
            PRECISION="${PROFILE_PRECISION:-bf16}" DEADLINE="$profile_limit" \
            SECTIONS="--section SourceCounters" scripts/gpu-profile.sh
    fi
fi
# SANITIZE="<filter>" runs, last (the timings decide more, and it takes what time is left),
# the cuda_parity_conv tests it selects once more under each of compute-sanitizer's memcheck
# and racecheck (out-of-bounds reads that feed only results no test compares, shared-memory
# races), each into $OUT/sanitizer_<tool>.log (its first 4 MB), with the caching pool off
# (VOXSEG_POOL=off): a pool block may be larger than asked for, and a read past the end
# would stay inside its allocation, where memcheck cannot see it.
if [[ -n "${SANITIZE:-}" ]]; then
    if ! command -v compute-sanitizer >/dev/null; then
        log "compute-sanitizer: not on this machine, SANITIZE skipped"
    else
        for tool in memcheck racecheck; do
            step "${SANITIZE_LIMIT:-90}" "compute-sanitizer $tool ($SANITIZE)" \
                bash -c "VOXSEG_POOL=off compute-sanitizer --tool $tool --error-exitcode 1 \
                    gpu-bin/test-cuda_parity_conv --include-ignored --nocapture $SANITIZE \
                    >'$tests_dir/sanitizer_$tool.log' 2>&1"
            tool_log="$tests_dir/sanitizer_$tool.log"
            if [[ -f "$tool_log" ]]; then
                head -c 4000000 "$tool_log" >"$out/sanitizer_$tool.log"
                echo "=== sanitizer_$tool (its last lines)" >>"$out/tests.log"
                tail -5 "$tool_log" >>"$out/tests.log"
            fi
        done
    fi
fi
# Every line of summary.txt has been printed as it was written (log), these last too.
grep -E "^=== |test result|FAILED|panicked|ERROR SUMMARY|listed no tests" "$out/tests.log" |
    head -120 | tee -a "$out/summary.txt"
