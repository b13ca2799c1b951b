#!/usr/bin/env bash
# Builds, here, what scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain:
# the CUDA test binaries and the voxseg binary, with the kernels required, stripped into
# the git-ignored gpu-bin/, and gpu-bin.tar.xz, the same compressed, which is what to carry
# to the GPU machine (the device tool carries 64 MiB at most, the working tree included);
# gpu-check.sh, gpu-session.sh and gpu-profile.sh unpack it there (scripts/gpu-unpack.sh).
# Each binary embeds the same PTX text, so xz's dictionary spans the whole tar to find it
# again: at 5aa0462 (release), 332 MB unpacked, 6.4 MB packed, against 52 MB with gzip,
# whose 32 KiB window sees each copy anew; it takes about 2 minutes on 2 cores. Dev profile
# unless --release. The modules also travel as machine code for VOXSEG_CUDA_SASS (default
# sm_90, the H100 and H200: see build.rs), so that the GPU machine's driver compiles no PTX.
#   scripts/gpu-bundle.sh [--release]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile=()
if [[ "${1:-}" == "--release" ]]; then
    profile=(--release)
fi
NVCC="${NVCC:-$(scripts/nvcc-path.sh)}"
VOXSEG_CUDA_SASS="${VOXSEG_CUDA_SASS:-sm_90}"
export NVCC VOXSEG_REQUIRE_CUDA=1 VOXSEG_CUDA_SASS

rm -rf gpu-bin
mkdir gpu-bin
# The library's tests and every CUDA test target (tests/cuda_*.rs); each artifact with an
# executable: test binaries become gpu-bin/test-<target>, the binary gpu-bin/voxseg.
tests=()
for f in tests/cuda_*.rs; do
    tests+=(--test "$(basename "$f" .rs)")
done
cargo test "${profile[@]}" --no-run --lib "${tests[@]}" \
    --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        name = m["target"]["name"]
        print(("test-" + name if m["profile"]["test"] else name) + " " + m["executable"])
' | while read -r name exe; do
    strip -o "gpu-bin/$name" "$exe"
done
rm -f gpu-bin.tar.xz
tar -cf - gpu-bin | xz --lzma2=preset=6,dict=384MiB > gpu-bin.tar.xz
ls -la gpu-bin
du -sh gpu-bin gpu-bin.tar.xz
