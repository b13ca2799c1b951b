#!/usr/bin/env bash
# Nsight Compute reports of the kernels behind `voxseg bench` cases, with the prebuilt
# binaries of scripts/gpu-bundle.sh (gpu-bin.tar.xz or gpu-bin/): for each case of CASES
# (";"-separated `--filter` texts, each naming one case), KERNELS consecutive kernel
# launches after the first SKIP (past the input fills and warm-up calls, so whole calls:
# packs, convolution, partial sum), with the sections that say where time goes (speed of
# light, occupancy, launch, warp stalls; SECTIONS adds more, e.g. "--section
# ComputeWorkloadAnalysis"). Clocks are left as they
# are (--clock-control none). WGMMA=1 or 0 forces the Hopper wgmma kernels on or off;
# unset, the plan picks as it does by default. Reports go to
# $OUT/ncu_<precision>[_wgmma|_mma].txt.
#   PRECISION=bf16 WGMMA=1 CASES="conv3d.fwd 2x16x16x16x256->256 k3s1" scripts/gpu-profile.sh
set -u
source scripts/gpu-unpack.sh
out="${OUT:-gpu-profile-out}"
mkdir -p "$out"
precision="${PRECISION:-bf16}" wgmma="${WGMMA:-}"
case "$wgmma" in
1) file="$out/ncu_${precision}_wgmma.txt" ;;
0) file="$out/ncu_${precision}_mma.txt" ;;
*) file="$out/ncu_${precision}.txt" ;;
esac
deadline="${DEADLINE:-300}"
IFS=';' read -r -a cases <<<"${CASES:?CASES names the bench cases}"
for case in "${cases[@]}"; do
    left=$((deadline - SECONDS))
    if ((left < 20)); then
        echo "skipped (${left} s left): $case" | tee -a "$file"
        continue
    fi
    echo "===== $case (precision $precision, wgmma ${wgmma:-as planned})" >>"$file"
    start=$SECONDS
    env ${wgmma:+VOXSEG_WGMMA="$wgmma"} timeout "$((left < 90 ? left : 90))" ncu --clock-control none \
        --launch-skip "${SKIP:-16}" --launch-count "${KERNELS:-8}" \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats ${SECTIONS:-} \
        gpu-bin/voxseg bench --device cuda --precision "$precision" --filter "$case" \
        >>"$file" 2>&1
    echo "profile $case: exit $?, $((SECONDS - start)) s" | tee -a "$file"
done
