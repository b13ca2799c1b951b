#!/usr/bin/env bash
# Trains a tiny model with the voxseg binary, predicts one case, then checks with the
# Python tools people use (TensorBoard's EventAccumulator, safetensors, nibabel) that the
# run's files and the prediction read back as expected. Used by .ci/run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${VOXSEG_BIN:-$repo/target/debug/voxseg}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" synth --out "$work/data" --cases 6 --size 24 --seed 5 >/dev/null
"$bin" train --data "$work/data" --out "$work/run" --device cpu --features 4 --max-features 8 \
    --depth 2 --patch 16 --batch 2 --epochs 2 --iters-per-epoch 3 --workers 1 --optimizer adam >/dev/null 2>&1
case_dir="$(find "$work/data" -mindepth 1 -maxdepth 1 -type d | sort | head -n 1)"
case="$(basename "$case_dir")"
inputs=()
for m in t1 t1ce t2 flair; do inputs+=("$case_dir/${case}_$m.nii.gz"); done
"$bin" predict --model "$work/run" --input "${inputs[@]}" --out "$work/pred" --checkpoint last --device cpu >/dev/null

python3 "$repo/scripts/check_interop.py" "$work/run" \
    --scalar train/loss --scalar val/loss --scalar val/dice_WT --scalar val/dice_TC --scalar val/dice_ET --scalar lr \
    --image val/segmentation \
    --histogram weights/encoder.0.block0.conv.weight --histogram grads/encoder.0.block0.conv.weight \
    --tensor model/encoder.0.block0.conv.weight=3x3x3x4x4 --tensor model/head.0.bias=3 \
    --metadata state --metadata model \
    --predictions "$work/pred" --reference "${inputs[0]}" --labels 0,1,2,4
