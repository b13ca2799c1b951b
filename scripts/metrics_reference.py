#!/usr/bin/env python3
"""Reference scores for voxseg's metrics: writes tests/fixtures/metrics_reference.json.

Builds small 3D binary mask pairs from a fixed seed (blobs, shells, sheets, single voxels,
several components, masks touching the volume's edge, nested and identical masks, noise,
anisotropic voxels) and scores each with medpy.metric.binary, the reference voxseg follows:
`dc`, `hd95` (with voxelspacing), `sensitivity`, `specificity`, and the number of surface
voxels medpy measures from (its own `__surface_distances`). MONAI's `compute_dice` and
`compute_hausdorff_distance(percentile=95)` are recorded for information only: MONAI's HD95
is the larger of the two directed 95th percentiles, not medpy's percentile of both pooled,
and it computes in float32. tests/metrics_log.rs checks voxseg against the medpy values.

Regenerate with the pinned versions (the fixture's header records the ones used):
    python3 -m venv /tmp/metricsenv
    /tmp/metricsenv/bin/pip install torch==2.15.0  # the CPU build is enough
    /tmp/metricsenv/bin/pip install medpy==0.5.2 monai==1.6.1 scipy==1.17.1 numpy==2.4.6
    /tmp/metricsenv/bin/python scripts/metrics_reference.py

Axes: voxseg's volumes are x fastest with dims [x, y, z] and spacing [sx, sy, sz] in mm, as
nibabel loads a NIfTI: a numpy array of shape (x, y, z). Each mask here is such an array,
scored with voxelspacing = spacing, and stored by its flat indices in Fortran order (x
fastest), which are voxseg's indices, as runs [start, length, start, length, ...].
"""
import json
import sys
import warnings
from pathlib import Path

import medpy
import monai
import numpy as np
import scipy
import torch
from medpy.metric import binary
from monai.metrics import compute_dice, compute_hausdorff_distance

SEED = 20240611
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metrics_reference.json"


def grid(shape):
    """Voxel coordinates x, y, z, each of `shape`."""
    return np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")


def ellipsoid(shape, centre, radii):
    """Voxels within an axis-aligned ellipsoid (centre and radii in voxels)."""
    return sum(((c - m) / r) ** 2 for c, m, r in zip(grid(shape), centre, radii)) <= 1.0


def box(shape, lo, hi):
    """Voxels with lo <= coordinate < hi on every axis."""
    return np.all([(c >= l) & (c < h) for c, l, h in zip(grid(shape), lo, hi)], axis=0)


def voxel(shape, at):
    m = np.zeros(shape, bool)
    m[tuple(at)] = True
    return m


def random_blobs(rng, shape, count):
    """A union of `count` random ellipsoids, some cut by the volume's edge."""
    m = np.zeros(shape, bool)
    for _ in range(count):
        centre = rng.uniform(-1, np.array(shape), 3)
        radii = rng.uniform(0.8, np.array(shape) / 3 + 1, 3)
        m |= ellipsoid(shape, centre, radii)
    return m


def runs(mask):
    """[start, length, ...] of the true voxels' Fortran-order flat indices."""
    flat = np.concatenate([[False], mask.ravel(order="F"), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return np.column_stack([starts, ends - starts]).ravel().tolist()


def finite_or_none(x):
    x = float(x)
    return x if np.isfinite(x) else None


def monai_scores(a, b, spacing):
    """MONAI's Dice and HD95 (prediction a, reference b); None where MONAI gives NaN/inf."""
    pred = torch.from_numpy(a[None, None].astype(np.float32))
    ref = torch.from_numpy(b[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks, which are scored anyway
        dice = compute_dice(pred, ref, include_background=True, ignore_empty=False)
        hd95 = compute_hausdorff_distance(pred, ref, percentile=95, spacing=list(spacing))
    return {"dice": finite_or_none(dice), "hd95": finite_or_none(hd95)}


def case(name, a, b, spacing, note):
    """One fixture entry: prediction `a`, reference `b`, both of one shape, spacing in mm."""
    assert a.shape == b.shape and a.ndim == 3
    entry = {
        "name": name,
        "note": note,
        "dims": list(a.shape),
        "spacing": list(spacing),
        "pred": runs(a),
        "truth": runs(b),
        # medpy's dc is NaN (with a warning) when both masks are empty: None in the JSON.
        "medpy": {"dc": finite_or_none(binary.dc(a, b))},
        "monai": monai_scores(a, b, spacing),
    }
    if a.any() and b.any():
        surface = getattr(binary, "__surface_distances")
        entry["medpy"].update(
            hd95=float(binary.hd95(a, b, voxelspacing=spacing)),
            surface_voxels=[len(surface(a, b, spacing)), len(surface(b, a, spacing))],
        )
        # medpy scores a zero denominator 0 where voxseg's BraTS rule says 1: only compare
        # where both are defined.
        if b.sum() < b.size:
            entry["medpy"]["specificity"] = binary.specificity(a, b)
        entry["medpy"]["sensitivity"] = binary.sensitivity(a, b)
    else:
        try:
            binary.hd95(a, b, voxelspacing=spacing)
            raise AssertionError("medpy scored an empty mask's HD95")
        except RuntimeError as e:
            entry["medpy"]["hd95_error"] = str(e)
    return entry


def build(rng):
    cases = []
    iso, aniso = (1.0, 1.0, 1.0), (0.5, 0.8, 2.5)

    s = (13, 11, 9)
    blob = ellipsoid(s, (6, 5, 4), (4, 3.5, 3))
    cases.append(case("identical_blob", blob, blob.copy(), aniso, "identical masks: HD95 0"))
    grown = blob | np.roll(blob, 1, axis=0) | np.roll(blob, 1, axis=2)
    cases.append(case("blob_grown_x_z", grown, blob, aniso, "one mask inside the other"))
    inner = ellipsoid(s, (6, 5, 4), (2, 1.5, 1.2))
    cases.append(case("nested_ellipsoids", inner, blob, iso, "inner mask inside the outer"))

    s = (9, 14, 7)
    cases.append(case("single_voxels", voxel(s, (1, 2, 1)), voxel(s, (7, 10, 5)),
                      (0.5, 0.8, 2.5), "two single voxels, a distance over all three axes"))
    cases.append(case("single_voxel_same", voxel(s, (4, 0, 6)), voxel(s, (4, 0, 6)), aniso,
                      "one voxel in a corner row, identical"))
    cases.append(case("voxel_in_box", voxel(s, (4, 7, 3)), box(s, (1, 3, 1), (8, 12, 6)),
                      aniso, "a single voxel deep inside a box"))

    # Shifts along one axis of 0.4 / 1.1 / 4.0 mm voxels: with the spacing reversed (x and z
    # swapped) a step is 10 times longer or shorter, so these fail on an axis mix-up.
    s = (18, 10, 8)
    strong = (0.4, 1.1, 4.0)
    a = box(s, (2, 2, 2), (9, 7, 6))
    cases.append(case("box_shift_x_strong_aniso", a, np.roll(a, 4, axis=0), strong,
                      "axis check: shift along x only"))
    cases.append(case("box_shift_z_strong_aniso", a, np.roll(a, 1, axis=2), strong,
                      "axis check: shift along z only"))
    cases.append(case("voxels_xz_strong_aniso", voxel(s, (3, 5, 2)), voxel(s, (15, 5, 3)),
                      strong, "axis check: 12 voxels in x, 1 in z"))

    s = (16, 12, 10)
    cases.append(case("sheets_z", box(s, (0, 0, 3), (16, 12, 4)), box(s, (2, 1, 5), (14, 12, 6)),
                      aniso, "one-voxel-thick sheets across the volume, 2 slices apart"))
    cases.append(case("sheet_x_vs_blob", box(s, (7, 0, 0), (8, 12, 10)),
                      ellipsoid(s, (8, 6, 5), (5, 4, 3)), (1.0, 0.7, 1.8),
                      "a sheet cutting a blob"))
    cases.append(case("border_blobs", ellipsoid(s, (0, 6, 5), (5, 7, 4)),
                      ellipsoid(s, (1, 11, 9), (6, 6, 3)), aniso,
                      "blobs cut by several faces of the volume"))
    full = np.ones(s, bool)
    cases.append(case("full_volume_vs_blob", full, ellipsoid(s, (8, 6, 5), (4, 3, 3)), aniso,
                      "a mask filling the volume: its surface is the volume's shell"))
    cases.append(case("disjoint_far", box(s, (0, 0, 0), (3, 3, 2)),
                      box(s, (12, 9, 7), (16, 12, 10)), (0.9, 1.3, 2.2),
                      "two boxes in opposite corners"))

    # One axis of a single voxel: every voxel is on the edge, so every voxel is surface.
    cases.append(case("one_slice_z", ellipsoid((14, 11, 1), (6, 5, 0), (5, 4, 1)),
                      ellipsoid((14, 11, 1), (8, 4, 0), (4, 5, 1)), (0.7, 0.9, 5.0),
                      "a single slice (nz = 1)"))
    cases.append(case("one_column_x", ellipsoid((1, 12, 9), (0, 5, 4), (1, 4, 3)),
                      ellipsoid((1, 12, 9), (0, 7, 5), (1, 3, 3)), (3.0, 0.6, 1.2),
                      "a single sagittal plane (nx = 1)"))

    shapes = [((15, 12, 10), iso), ((20, 9, 12), aniso), ((11, 17, 8), (1.2, 0.6, 3.0)),
              ((19, 13, 14), (0.8, 0.8, 1.5)), ((12, 12, 7), aniso), ((7, 16, 11), (2.0, 0.5, 1.0))]
    for i, (s, spacing) in enumerate(shapes):
        a, b = random_blobs(rng, s, 3), random_blobs(rng, s, 2)
        if a.any() and b.any():
            cases.append(case(f"random_components_{i}", a, b, spacing,
                              "unions of random ellipsoids, several components"))

    # Predictions near their reference, as a model's are: moved, grown and cut.
    for i in range(8):
        s = tuple(rng.integers(7, 21, 3))
        spacing = tuple(rng.uniform(0.4, 3.0, 3).round(3))
        b = random_blobs(rng, s, 2)
        a = np.roll(b, rng.integers(-1, 2, 3), axis=(0, 1, 2)) | random_blobs(rng, s, 1)
        a &= ~ellipsoid(s, rng.uniform(0, np.array(s), 3), rng.uniform(1, 3, 3))
        if a.any() and b.any():
            cases.append(case(f"near_miss_{i}", a, b, spacing, "a moved, grown and cut copy"))

    # Noise: many isolated voxels, so many equal distances and the interpolation matters.
    for i, (s, p) in enumerate([((8, 7, 6), 0.3), ((10, 6, 7), 0.1), ((7, 9, 8), 0.6)]):
        spacing = tuple(rng.uniform(0.4, 3.0, 3).round(3))
        a, b = rng.random(s) < p, rng.random(s) < p
        cases.append(case(f"noise_{i}", a, b, spacing, f"random voxels, p = {p}"))

    # Empty masks: medpy's hd95 raises; the test checks voxseg's documented rule instead.
    s = (10, 8, 6)
    empty, some = np.zeros(s, bool), box(s, (2, 2, 1), (6, 5, 4))
    cases.append(case("empty_pred", empty, some, aniso, "prediction empty"))
    cases.append(case("empty_truth", some, empty, aniso, "reference empty"))
    cases.append(case("both_empty", empty, empty.copy(), aniso, "both empty"))
    return cases


def main():
    np.seterr(invalid="ignore")  # medpy's dc of two empty masks, recorded as None
    fixture = {
        "generator": "scripts/metrics_reference.py",
        "seed": SEED,
        "versions": {
            "medpy": medpy.__version__,
            "monai": monai.__version__,
            "scipy": scipy.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "layout": "dims [x, y, z], spacing [sx, sy, sz] mm; masks as runs [start, length, ...] "
                  "of flat indices x + nx * (y + ny * z)",
        "cases": build(np.random.default_rng(SEED)),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line keeps diffs of a regenerated fixture readable.
    lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in fixture.pop("cases"))
    head = json.dumps(fixture, indent=1)[:-2]
    OUT.write_text(f'{head},\n "cases": [\n{lines}\n]}}\n')
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
