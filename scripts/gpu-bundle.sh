#!/usr/bin/env bash
# Builds, here, what scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain:
# the CUDA test binaries and the voxseg binary, with the kernels required, stripped into
# the git-ignored gpu-bin/, and gpu-bin.tar.gz, the same compressed (each binary embeds
# the PTX text: at d48e67e, 332 MB unpacked, 52 MB packed in release), which is what to
# carry to the GPU machine (the device tool carries 64 MiB at most, the working tree
# included); gpu-check.sh and gpu-session.sh unpack it there. Dev profile unless --release.
#   scripts/gpu-bundle.sh [--release]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile=()
if [[ "${1:-}" == "--release" ]]; then
    profile=(--release)
fi
NVCC="${NVCC:-$(scripts/nvcc-path.sh)}"
export NVCC VOXSEG_REQUIRE_CUDA=1

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
tar -czf gpu-bin.tar.gz gpu-bin
ls -la gpu-bin
du -sh gpu-bin gpu-bin.tar.gz
