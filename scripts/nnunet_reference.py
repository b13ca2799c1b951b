"""nnU-Net v2's own preprocessing and sliding-window functions on small inputs, written to
tests/fixtures/nnunet_reference.json for the Rust tests in src/data/nnunet_reference_tests.rs
and src/infer/nnunet_reference_tests.rs to compare voxseg against.

Regenerate (nnunetv2 2.8.1 with its dependencies, CPU only):

    python scripts/nnunet_reference.py            # writes tests/fixtures/nnunet_reference.json

Axis order: nnU-Net's arrays are (c, z, y, x) (SimpleITK's order); each volume is stored here
flattened in C order, which is voxseg's `Volume` layout (x fastest, then y, then z). Sizes,
boxes and positions are written as nnU-Net orders them, (z, y, x), and the tests map them.
"""
import itertools
import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import (
    compute_gaussian,
    compute_steps_for_sliding_window,
)
from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask, crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    CTNormalization,
    ZScoreNormalization,
)
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nnunet_reference.json"
rng = np.random.default_rng(20240611)


def f32s(a):
    """Float values with 9 significant digits (enough to round-trip a float32)."""
    return [float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float64).ravel()]


def bits(mask):
    return "".join("1" if m else "0" for m in np.asarray(mask).ravel())


def quarters(shape, scale=40.0, offset=0.0):
    """Random values that are multiples of 1/4, exact in float32 and short in JSON."""
    return (np.round((rng.standard_normal(shape) * scale + offset) * 4) / 4).astype(np.float32)


# ---------------------------------------------------------------- crop to non-zero + z-score
def holes_case():
    """Two channels, (z, y, x) = (9, 10, 11): two components, an enclosed cavity (filled), a
    cavity with a 6-connected tunnel to the border (kept), one touching the outside only
    diagonally (filled), zeros inside the object, and voxels non-zero in one channel only."""
    c, shape = 2, (9, 10, 11)
    data = np.zeros((c,) + shape, np.float32)
    obj = np.zeros(shape, bool)
    obj[1:8, 2:9, 1:7] = True  # component A
    obj[3:6, 3:6, 8:10] = True  # component B, apart from A by the x = 7 column
    for ch in range(c):
        data[ch][obj] = quarters(obj.sum(), 30, 100 + 50 * ch)
    data[:, obj & (data == 0).all(0)] = 0.25  # zeros only where placed below
    data[:, 3:6, 4:7, 2:5] = 0  # enclosed 3x3x3 cavity in A: filled
    data[:, 2, 5, 5:7] = 0  # a 1-voxel wide tunnel in A to the gap at x = 7: kept
    data[:, 6, 7, 5] = 0  # a lone zero inside A: filled
    data[:, 7, 8, 1] = 0  # on A's edge: 6-connected to the outside, kept ...
    data[:, 6, 7, 2] = 0  # ... and a zero touching it only at a corner: filled
    data[0, 2, 3, 3] = 0  # zero in channel 0 only: in the mask through channel 1
    data[1, 5, 3, 8] = 0  # the same in component B
    data[1, 1, 2, 1] = -7.5  # a negative value is non-zero
    return data


def single_slice_case():
    """One z slice with an in-plane ring: in a 3D volume of one slice every voxel touches the
    border along z, so the ring's inside is not a hole."""
    shape = (1, 8, 9)
    data = np.zeros((1,) + shape, np.float32)
    data[0, 0, 1:7, 2:8] = quarters((6, 6), 10, 50)
    data[0, 0, 3:5, 4:6] = 0
    return data


def speckle_case():
    """Three channels of speckle: random zeros everywhere, negative values, a border touch."""
    shape = (7, 6, 8)
    data = quarters((3,) + shape, 20, 5)
    data[rng.random((3,) + shape) < 0.55] = 0
    data[:, :, :, 0] = 0
    data[:, 0] = 0
    return data


def tiny_std_case():
    """One channel whose std (~3e-10) is below nnU-Net's epsilon 1e-8, and one that is
    constant: both divide by 1e-8."""
    shape = (3, 4, 5)
    data = np.zeros((2,) + shape, np.float32)
    data[0, 1:3, 1:3, 1:4] = (rng.integers(1, 4, (2, 2, 3)) * 2.0**-31).astype(np.float32)
    data[1, 1:3, 1:3, 1:4] = 3.0
    return data


def zeros_case():
    return np.zeros((1, 3, 4, 5), np.float32)


def crop_entry(name, data):
    mask = create_nonzero_mask(data)
    cropped, seg, bbox = crop_to_nonzero(data.copy())
    # float64 so the reference carries no float32 rounding of its own; voxseg keeps its
    # statistics in f64 and rounds the output to f32.
    norm = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={},
                               target_dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-zero case's empty mask
        zscore = [norm.run(cropped[ch].copy(), seg[0]) for ch in range(len(data))]
    return {
        "name": name,
        "shape_zyx": [int(v) for v in data.shape[1:]],
        "channels": [f32s(ch) for ch in data],
        "mask": bits(mask),
        "bbox_zyx": [[int(a), int(b)] for a, b in bbox],
        "cropped_shape_zyx": [int(v) for v in cropped.shape[1:]],
        "crop_mask": bits(seg[0] >= 0),
        "zscore": [f32s(z) for z in zscore],
    }


HOLES = holes_case()
crop_cases = [
    crop_entry("holes", HOLES),
    crop_entry("single_slice", single_slice_case()),
    crop_entry("speckle", speckle_case()),
    crop_entry("tiny_std", tiny_std_case()),
    crop_entry("all_zero", zeros_case()),
]


# ------------------------------------------------- CT normalisation (percentile clip + z-score)
def ct_entry():
    """nnU-Net's CTNormalization with intensity properties taken over the brain mask of one
    case (as its fingerprint takes them over the foreground): mean and std of the unclipped
    values, the 0.5th and 99.5th percentiles (numpy's linear rule)."""
    data = HOLES
    cropped, seg, _ = crop_to_nonzero(data.copy())
    mask = seg[0] >= 0
    out = []
    props_all = []
    for ch in range(len(data)):
        values = cropped[ch][mask].astype(np.float64)
        lo, hi = np.percentile(values, (0.5, 99.5))
        props = {"mean": float(values.mean()), "std": float(values.std()),
                 "percentile_00_5": float(lo), "percentile_99_5": float(hi)}
        norm = CTNormalization(use_mask_for_norm=False, intensityproperties=props,
                               target_dtype=np.float64)
        out.append(f32s(norm.run(cropped[ch].copy(), seg[0])))
        props_all.append(props)
    return {"case": "holes", "intensity_properties": props_all, "normalised": out}


# -------------------------------------------------------------------------- resampled shapes
def shape_entries():
    out = []
    cases = [
        ((5, 7, 9), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        ((5, 7, 9), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),  # 2.5, 3.5, 4.5: ties
        ((12, 13, 11), (3.0, 0.7, 0.7), (1.0, 1.0, 1.0)),  # 9.1, 7.7: no tie
        ((3, 33, 31), (5.0, 0.5, 0.5), (2.5, 1.0, 1.0)),  # 16.5, 15.5: ties
        ((10, 10, 10), (1.0, 1.0, 1.0), (0.8, 1.25, 1.5)),  # 12.5, 8, 6.67
        ((20, 6, 7), (1.2, 0.9, 1.1), (1.3, 0.6, 0.7)),
        ((40, 50, 60), (1.0, 1.0, 1.0), (1.6, 1.6, 1.6)),  # 25, 31.25, 37.5: tie
    ]
    for shape, spacing, target in cases:
        new = compute_new_shape(shape, spacing, target)
        out.append({"shape_zyx": list(shape), "spacing_zyx": list(spacing),
                    "target_zyx": list(target), "new_shape_zyx": [int(v) for v in new]})
    return out


# ------------------------------------------------------------------------- sliding window
def step_entries():
    """Window starts along one axis in the image's own coordinates: nnU-Net pads an image
    smaller than the patch to the patch (pad_nd_image, centred, the odd voxel after) and
    slides over the padded image, so its start is minus the padding before."""
    out = []
    pairs = [(s, p) for p in (1, 2, 3, 4, 5, 7, 8, 16, 20, 32, 64, 96, 128, 160)
             for s in sorted({1, 2, 3, p - 1, p, p + 1, p + 2, p + 3, 2 * p - 1, 2 * p + 1,
                              3 * p, 3 * p + 5, 5 * p // 2, 7 * p // 3, 240, 155})
             if s >= 1]
    pairs += [(13, 8), (23, 8), (110, 64), (150, 128), (187, 128), (17, 6), (29, 6)]
    for step in (0.5, 0.25, 0.75, 1.0):
        for size, patch in pairs:
            img = torch.zeros((1, size))
            padded, revert = pad_nd_image(img, (patch,), "constant", {"value": 0}, True, None)
            before = int(revert[1].start)
            starts = compute_steps_for_sliding_window(padded.shape[1:], (patch,), step)[0]
            out.append([size, patch, step, [int(s) - before for s in starts]])
    return out


def gaussian_entries():
    out = []
    for patch in ((5, 7, 9), (3, 1, 5), (4, 6, 8), (2, 3, 10), (16, 12, 9)):
        # float64 and peak 1: the map itself, without float16 rounding (see below).
        g = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=1,
                             dtype=torch.float64, device=torch.device("cpu"))
        out.append({"patch_zyx": list(patch), "values": f32s(g.numpy())})
    # What the predictor itself uses: peak 10 in float16. Its far corners underflow to 0 and
    # are clipped to the smallest non-zero value; record how many.
    g16 = compute_gaussian((128, 128, 128), 1.0 / 8, 10, torch.float16, torch.device("cpu"))
    smallest = float(g16.min())
    half = {"patch_zyx": [128, 128, 128], "peak": float(g16.max()),
            "smallest": smallest, "at_smallest": int((g16 == smallest).sum())}
    return out, half


def mirror_entries():
    """The mirrorings nnU-Net's test-time augmentation averages, read off a network that
    records which axes of its input are flipped (the input is a ramp along every axis)."""
    seen = []

    def network(x):
        a = x[0, 0]
        # The input ramps up along every axis; flipped along d, it ramps down along d.
        flipped = [bool(a.narrow(d, 0, 1).sum() > a.narrow(d, a.shape[d] - 1, 1).sum())
                   for d in range(3)]
        seen.append(flipped)
        return torch.ones_like(x)

    p = nnUNetPredictor.__new__(nnUNetPredictor)
    p.network, p.allowed_mirroring_axes, p.use_mirroring = network, (0, 1, 2), True
    z, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), torch.arange(5.0),
                             indexing="ij")
    ramp = (z * 100 + y * 10 + x)[None, None]
    out = p._internal_maybe_mirror_and_predict(ramp)
    # Ones from every pass, divided by the number of passes: 1 if each has weight 1/n.
    return {"flips_zyx": seen, "mean_of_ones": float(out.mean())}


gaussians, gaussian_half = gaussian_entries()
fixture = {
    "generator": "scripts/nnunet_reference.py",
    "versions": {
        "nnunetv2": version("nnunetv2"),
        "acvl_utils": version("acvl_utils"),
        "numpy": np.__version__,
        "scipy": version("scipy"),
        "torch": torch.__version__.split("+")[0],
    },
    "layout": "volumes flattened in C order of (z, y, x): x fastest; sizes and boxes (z, y, x)",
    "crop": crop_cases,
    "ct_normalisation": ct_entry(),
    "resampled_shapes": shape_entries(),
    "window_starts": {"columns": ["size", "patch", "tile_step_size", "starts"],
                      "rows": step_entries()},
    "gaussian": gaussians,
    "gaussian_predictor_float16": gaussian_half,
    "mirroring": mirror_entries(),
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
