#!/usr/bin/env python3
"""Writes tests/fixtures/plan_reference.json: the U-Net topology nnU-Net v2 plans
(`get_pool_and_conv_props`, with its 3D planner's minimum edge of 4 and no pooling limit) for
a grid of voxel spacings and patch sizes, for src/train/plan.rs to compare `stages_for`
against: the strides of each downsampling and each stage's kernel, axes in (z, y, x) order,
as both use them.

Regenerate:
  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install nnunetv2==2.8.1
  /tmp/torchenv/bin/python scripts/plan_reference.py
"""
import itertools
import json
from pathlib import Path

from importlib.metadata import version

from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "plan_reference.json"

# Isotropic, coarse z (MRI and CT slices), coarse x, three different spacings.
SPACINGS = [[1, 1, 1], [5, 1, 1], [3, 0.8, 0.8], [2.5, 1, 1], [1.5, 1, 1], [4, 0.5, 0.5], [1, 1, 3],
            [0.7, 0.7, 2.0], [1, 2, 4], [2, 1, 1], [6, 0.9, 0.9]]
# Cubes, slabs, odd sizes (halving rounds up), sizes too small to pool, a single slice.
PATCHES = [[128, 128, 128], [20, 160, 160], [10, 32, 32], [60, 60, 60], [15, 64, 64], [31, 96, 80],
           [48, 192, 160], [24, 24, 24], [12, 40, 40], [16, 16, 16], [40, 112, 96], [7, 200, 200],
           [1, 64, 48], [9, 9, 9], [128, 256, 256]]


def ints(rows):
    return [[int(v) for v in row] for row in rows]


cases = []
for spacing, patch in itertools.product(SPACINGS, PATCHES):
    _, pools, kernels, _, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    cases.append({"spacing": spacing, "patch": patch, "strides": ints(pools), "kernels": ints(kernels)})

OUT.parent.mkdir(parents=True, exist_ok=True)
tmp = OUT.with_suffix(".json.tmp")
header = {"generator": "scripts/plan_reference.py", "nnunetv2": version("nnunetv2")}
tmp.write_text(json.dumps({"header": header, "cases": cases}, separators=(",", ":")) + "\n")
tmp.replace(OUT)
print(f"{OUT}: {len(cases)} cases, {OUT.stat().st_size} bytes")
