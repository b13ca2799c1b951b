#!/usr/bin/env bash
# Unpacks gpu-bin.tar.xz (scripts/gpu-bundle.sh) into gpu-bin/ where gpu-bin/ is not there
# yet; sourced by the scripts that run the bundle on a GPU machine. Uses tar with xz, or
# Python's tarfile where the machine has no xz.
if [[ ! -d gpu-bin && -f gpu-bin.tar.xz ]]; then
    if command -v xz > /dev/null; then
        tar -xJf gpu-bin.tar.xz
    else
        python3 -c 'import tarfile; tarfile.open("gpu-bin.tar.xz").extractall(filter="data")'
    fi
fi
