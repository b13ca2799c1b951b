#!/usr/bin/env bash
# Prints the nvcc that build.rs would use, in the same order: $NVCC, $CUDA_HOME/bin,
# $CUDA_PATH/bin, PATH, the repository's .cuda/ (scripts/install-cuda-toolchain.sh), then
# /usr/local/cuda/bin.
# Exits 1 when there is none.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for candidate in "${NVCC:-}" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "${CUDA_PATH:+$CUDA_PATH/bin/nvcc}" \
    "$(command -v nvcc || true)" "$repo/.cuda/nvidia/cu13/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    if [[ -n "$candidate" && -f "$candidate" ]]; then
        echo "$candidate"
        exit 0
    fi
done
echo "nvcc not found (set NVCC or CUDA_HOME, or run scripts/install-cuda-toolchain.sh)" >&2
exit 1
