#!/usr/bin/env bash
# Installs CUDA 13.0's compiler (nvcc, ptxas, cicc, headers) from PyPI into the repository's
# git-ignored .cuda/ folder, so kernels/*.cu can be compiled to PTX on machines without a
# system CUDA. Pinned to 13.0: newer PTX ISA would not load on the lent GPUs' 13.0 driver.
# Idempotent: when the pinned versions are already there it only prints the nvcc path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$repo/.cuda"
stamp="$target/.installed-13.0.88"
root="$target/nvidia/cu13"

if [[ ! -f "$stamp" || ! -x "$root/bin/nvcc" ]]; then
    python="${PYTHON:-python3}"
    rm -rf "$target"
    mkdir -p "$target"
    "$python" -m pip install --quiet --no-deps --target "$target" \
        nvidia-cuda-nvcc==13.0.88 \
        nvidia-cuda-runtime==13.0.96 \
        nvidia-nvvm==13.0.88 \
        nvidia-cuda-crt==13.0.88 \
        "nvidia-cuda-cccl==13.0.*" >&2
    # Wheels may drop the executable bits; nvcc needs them on its helpers and cicc.
    chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
    touch "$stamp"
    # build.rs looks for nvcc only when it reruns; make the next cargo build notice.
    touch "$repo/build.rs"
fi

"$root/bin/nvcc" --version >&2
echo "$root/bin/nvcc"
