#!/usr/bin/env python3
"""Reference connected components and largest-component filtering for voxseg's
postprocessing: writes tests/fixtures/postprocess_reference.json.

Builds small 3D label maps (classes 0..3) from a fixed seed: random blobs, lone voxels
and thin diagonal lines, so that components touch by faces, edges and corners only. For
each map it records
- `skimage.measure.label` of the foreground at connectivity 1, 2 and 3 (6, 18 and 26
  neighbours), which voxseg's labelling must match up to the numbering;
- nnU-Net v2's `remove_all_but_largest_component_from_segmentation` over the whole
  foreground (labels 1, 2, 3 together) and over each label alone, the filters voxseg's
  `largest` and `largest:NAME` (of a class) follow.

src/infer/postprocess.rs checks voxseg against these values.

Regenerate with the pinned versions (the fixture's header records the ones used):
    python3 -m venv /tmp/ppenv
    /tmp/ppenv/bin/pip install torch==2.15.0  # the CPU build is enough
    /tmp/ppenv/bin/pip install nnunetv2==2.8.1 scikit-image==0.26.0 numpy==2.4.6
    /tmp/ppenv/bin/python scripts/postprocess_reference.py

Axes: voxseg's volumes are x fastest with dims [x, y, z]; each map here is a numpy array of
shape (x, y, z), stored flat in Fortran order (x fastest), which is voxseg's order.
"""
import json
from pathlib import Path

import nnunetv2
import numpy as np
import skimage
from importlib.metadata import version
from nnunetv2.postprocessing.remove_connected_components import (
    remove_all_but_largest_component_from_segmentation,
)
from skimage.measure import label

SEED = 20261128
SHAPE = (9, 8, 7)
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "postprocess_reference.json"


def label_map(rng):
    """Classes 1..3 in blobs, lone voxels and diagonal lines on a background of 0."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    seg = np.zeros(SHAPE, np.uint8)
    for _ in range(rng.integers(2, 5)):
        centre = rng.uniform(0, np.array(SHAPE), 3)
        radii = rng.uniform(0.7, 2.5, 3)
        inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
            (z - centre[2]) / radii[2]
        ) ** 2 <= 1.0
        seg[inside] = rng.integers(1, 4)
    for _ in range(rng.integers(3, 9)):
        seg[tuple(rng.integers(0, SHAPE))] = rng.integers(1, 4)
    # A line stepping along an edge or a corner diagonal: connected only beyond faces.
    start = rng.integers(0, SHAPE)
    step = rng.choice([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]])
    for i in range(rng.integers(2, 5)):
        at = start + i * step
        if np.all(at < SHAPE):
            seg[tuple(at)] = rng.integers(1, 4)
    return seg


def flat(a):
    return [int(v) for v in a.ravel(order="F")]


def main():
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(8):
        seg = label_map(rng)
        fg = seg > 0
        cases.append(
            {
                "name": f"case_{i}",
                "labels": flat(seg),
                "components": {
                    str(c): flat(label(fg, connectivity=c)) for c in (1, 2, 3)
                },
                "largest_foreground": flat(
                    remove_all_but_largest_component_from_segmentation(seg, [1, 2, 3])
                ),
                "largest_per_label": {
                    str(l): flat(remove_all_but_largest_component_from_segmentation(seg, l))
                    for l in (1, 2, 3)
                },
            }
        )
    fixture = {
        "about": "written by scripts/postprocess_reference.py; maps flat, x fastest",
        "versions": {
            "nnunetv2": version("nnunetv2"),
            "scikit-image": skimage.__version__,
            "numpy": np.__version__,
        },
        "dims": list(SHAPE),
        "cases": cases,
    }
    text = json.dumps(fixture, separators=(",", ":"))
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({len(text)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
