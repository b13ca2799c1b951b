"""Reference outputs of nnU-Net v2's training augmentation for voxseg's augment tests.

Writes tests/fixtures/augment_reference.json, read by src/data/augment/nnunet_reference_tests.rs.
Regenerate (nnunetv2 2.8.1, batchgeneratorsv2 0.3.6, torch 2.15, numpy 2.4; CPU):

    /tmp/torchenv/bin/python scripts/augment_reference.py

Every transform is run through batchgeneratorsv2's own code with parameters fixed by hand
(the `_apply_to_image` of each transform is called with the params dict its `get_parameters`
would have drawn; the spatial transform draws its angles and scale from callables returning
fixed values), so the fixture holds what nnU-Net computes, not a re-implementation. The
defaults (probabilities, ranges) are read from the transforms that
`nnUNetTrainer.get_training_transforms` builds, not copied by hand. Noise is random: only its
definition is recorded (the sampled "noise_variance" is used as the standard deviation).

Layout: numpy arrays are (c, x, y, z) with voxseg's x as nnU-Net's spatial axis 0; every array
in the fixture is flattened x fastest (voxseg's layout), one list per channel.

nnU-Net 2.8.1 (get_training_transforms, 3D, not dummy-2D) against voxseg's AugmentSpec::default:

| order | transform        | nnU-Net p | per channel                  | range / parameter                     | voxseg                                  |
|-------|------------------|-----------|------------------------------|---------------------------------------|-----------------------------------------|
| 1     | rotation         | 0.2       | -                            | each of 3 angles U(+-30 deg); dummy 2D: one in-plane angle U(+-180 deg) | same (`rotation`, `in_plane_rotation`) |
| 1     | scaling          | 0.2       | -                            | U(0.7, 1.4), same for all axes; >1 = larger region | same                           |
| 1     | elastic          | 0         | -                            | -                                     | p 0                                     |
| 1     | interpolation    | -         | -                            | image trilinear, zeros outside; seg one-hot linear, -1 (then 0) outside | image trilinear, `background` outside; label the same as nnU-Net's |
| 2     | Gaussian noise   | 0.1       | all channels, same std       | std U(0, 0.1) (named noise_variance)  | same after fix (was std sqrt(U(0, 0.1))) |
| 3     | Gaussian blur    | 0.2       | p 0.5 each, own sigma        | sigma U(0.5, 1) per axis; kernel round_odd(6 sigma + 0.5) taps, reflect borders | same after fix (was ceil(3 sigma) radius, edge-replicating borders) |
| 4     | brightness (x m) | 0.15      | p 1, own factor              | BGContrast(0.75, 1.25): half U(0.75, 1), half U(1, 1.25) | U(0.75, 1.25): same distribution for this symmetric range |
| 5     | contrast         | 0.15      | p 1, own factor              | BGContrast(0.75, 1.25), about the mean, clipped to old min/max | U(0.75, 1.25), same formula   |
| 6     | low resolution   | 0.25      | p 0.5, own zoom              | U(0.5, 1), same on all axes (dummy 2D: axis 0 kept); round-half-even size, nearest-exact down, trilinear up | same after fix (sizes rounded half away from zero before) |
| 7     | gamma, inverted  | 0.1       | p 1, own gamma, keeps stats  | BGContrast(0.7, 1.5)                   | same (power curve tabulated)           |
| 8     | gamma            | 0.3       | p 1, own gamma, keeps stats  | BGContrast(0.7, 1.5)                   | same                                    |
| 9     | mirror           | 0.5/axis  | -                            | axes 0, 1, 2                           | same, folded into the spatial map (first) |
"""

import json
import os
import types
from importlib.metadata import version

import numpy as np
import torch

import batchgeneratorsv2.transforms.spatial.spatial as bg_spatial
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "augment_reference.json")
DIMS = (7, 8, 9)  # x, y, z


def flat(channel: np.ndarray) -> list:
    """One (x, y, z) array as a list, x fastest, 8 significant digits (f32 needs ~7)."""
    return [float(f"{v:.8g}") for v in np.asarray(channel, dtype=np.float64).transpose(2, 1, 0).ravel()]


def channels(img) -> list:
    return [flat(c) for c in np.asarray(img)]


def make_input() -> np.ndarray:
    """Two channels on a 1/1024 grid (exact in f32 and in short decimals), not zero-mean,
    with a few outliers so that contrast clipping and gamma's min/max matter."""
    rng = np.random.default_rng(20240611)
    x = rng.normal(0.3, 1.2, size=(2, *DIMS))
    x[1] = 2.0 * x[1] - 0.5
    x[0, 3, 4, 5] = 5.0
    return (np.round(x * 1024) / 1024).astype(np.float32)


def defaults() -> dict:
    """p, ranges and per-channel settings read from nnU-Net's own training transforms."""
    fake = types.SimpleNamespace(
        configuration_manager=types.SimpleNamespace(patch_size=(128, 128, 128)),
        print_to_log_file=lambda *a, **k: None,
    )
    rot, dummy_2d, _, mirror_axes = nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(fake)
    fake.configuration_manager.patch_size = (20, 160, 160)
    rot_2d, dummy_2d_slab, _, _ = nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(fake)
    assert not dummy_2d and dummy_2d_slab
    pipeline = nnUNetTrainer.get_training_transforms((128, 128, 128), rot, None, mirror_axes, False)
    found = {}
    for t in pipeline.transforms:
        p = 1.0
        if isinstance(t, RandomTransform):
            p, t = t.apply_probability, t.transform
        found.setdefault(type(t).__name__, []).append((p, t))
    (_, sp), = found["SpatialTransform"]
    (p_noise, noise), = found["GaussianNoiseTransform"]
    (p_blur, blur), = found["GaussianBlurTransform"]
    (p_bright, bright), = found["MultiplicativeBrightnessTransform"]
    (p_con, con), = found["ContrastTransform"]
    (p_low, low), = found["SimulateLowResolutionTransform"]
    gammas = {bool(t.p_invert_image): (p, t) for p, t in found["GammaTransform"]}
    (_, mirror), = found["MirrorTransform"]
    assert sp.p_synchronize_scaling_across_axes == 1 and sp.p_rot_per_axis == 1
    assert noise.synchronize_channels and not blur.synchronize_channels and not blur.synchronize_axes
    assert low.synchronize_axes and not low.synchronize_channels
    assert all(t.p_retain_stats == 1 and t.p_per_channel == 1 for _, t in gammas.values())
    order = [type(t.transform if isinstance(t, RandomTransform) else t).__name__ for t in pipeline.transforms]
    return {
        "order": order,
        "aniso_threshold": float(ANISO_THRESHOLD),
        "mirror_axes": list(mirror_axes),
        "mirror_p_per_axis": 0.5,  # hard-coded in MirrorTransform.get_parameters
        "rotation": {"p": sp.p_rotation, "max_degrees": float(np.degrees(rot[1]))},
        "in_plane_rotation": {"p": sp.p_rotation, "max_degrees": float(np.degrees(rot_2d[1]))},
        "scaling": {"p": sp.p_scaling, "range": list(sp.scaling)},
        "elastic_p": sp.p_elastic_deform,
        "noise": {"p": p_noise, "noise_variance": list(noise.noise_variance)},
        "blur": {"p": p_blur, "p_per_channel": blur.p_per_channel, "range": list(blur.blur_sigma)},
        "brightness": {"p": p_bright, "p_per_channel": bright.p_per_channel,
                       "range": list(bright.multiplier_range.contrast_range)},
        "contrast": {"p": p_con, "p_per_channel": con.p_per_channel,
                     "range": list(con.contrast_range.contrast_range), "preserve_range": con.preserve_range},
        "low_res": {"p": p_low, "p_per_channel": low.p_per_channel, "range": list(low.scale)},
        "gamma": {"p": gammas[False][0], "p_inverted": gammas[True][0],
                  "range": list(gammas[False][1].gamma.contrast_range)},
    }


def noise_std_of(variance: float) -> float:
    """The standard deviation GaussianNoiseTransform adds when it draws `variance`."""
    torch.manual_seed(0)
    t = GaussianNoiseTransform(noise_variance=(variance, variance), p_per_channel=1, synchronize_channels=True)
    img = torch.zeros((1, 64, 64, 64))
    return float(t(image=img)["image"].std())


def main():
    torch.set_num_threads(1)
    x = make_input()
    img = lambda: torch.from_numpy(x.copy())
    fixture = {
        "_about": "nnU-Net v2 augmentation reference for voxseg; regenerate with "
                  "scripts/augment_reference.py (see its docstring for layout and the comparison table)",
        "versions": {p: version(p) for p in ("nnunetv2", "batchgeneratorsv2", "torch", "numpy")},
        "dims": list(DIMS),
        "input": channels(x),
        "defaults": defaults(),
        "noise_std_for_variance_0.09": noise_std_of(0.09),
    }

    factors = [1.3, 0.8]
    t = ContrastTransform(contrast_range=(0.75, 1.25), preserve_range=True, synchronize_channels=False)
    out = t._apply_to_image(img(), apply_to_channel=torch.tensor([0, 1]), multipliers=torch.tensor(factors))
    fixture["contrast"] = {"factors": factors, "output": channels(out)}

    factors = [0.8, 1.2]
    t = MultiplicativeBrightnessTransform(multiplier_range=(0.75, 1.25), synchronize_channels=False)
    out = t._apply_to_image(img(), apply_to_channel=torch.tensor([0, 1]), multipliers=torch.tensor(factors))
    fixture["brightness"] = {"factors": factors, "output": channels(out)}

    gammas, inverted = [1.4, 0.8], [True, False]
    t = GammaTransform(gamma=(0.7, 1.5), p_invert_image=0, synchronize_channels=False, p_per_channel=1,
                       p_retain_stats=1)
    out = t._apply_to_image(img(), apply_to_channel=torch.tensor([0, 1]), retain_stats=torch.tensor([True, True]),
                            invert_image=torch.tensor(inverted), gamma=torch.tensor(gammas))
    fixture["gamma"] = {"gammas": gammas, "inverted": inverted, "output": channels(out)}

    # Per channel, per axis (x, y, z); sigma 0.5, 0.7 and 1.0 give kernels of 3, 5 and 7 taps.
    sigmas = [[0.7, 0.5, 1.0], [0.9, 0.6, 0.55]]
    t = GaussianBlurTransform(blur_sigma=(0.5, 1.0), synchronize_channels=False, synchronize_axes=False,
                              p_per_channel=1, benchmark=False)
    out = t._apply_to_image(img(), apply_to_channel=torch.tensor([True, True]), sigmas=sigmas)
    fixture["blur"] = {"sigmas": sigmas, "output": channels(out)}

    # Channel 0: zoom 0.6 on every axis. Channel 1: zoom 0.5 with x kept (a dummy-2D patch's
    # slice axis, ignore_axes); z's 9 * 0.5 = 4.5 rounds half to even, to 4.
    zooms, keep = [0.6, 0.5], [None, 0]
    t = SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False, synchronize_axes=True,
                                       ignore_axes=None)
    scales = torch.tensor([[z if a != k else 1.0 for a in range(3)] for z, k in zip(zooms, keep)])
    out = t._apply_to_image(img(), apply_to_channel=torch.tensor([0, 1]), scales=scales)
    fixture["low_res"] = {"zooms": zooms, "keep": keep, "output": channels(out)}

    # Mirroring alone: the patch is the whole input, flipped along x and z.
    out = MirrorTransform(allowed_axes=(0, 1, 2))._apply_to_image(img(), axes=[0, 2])
    fixture["mirror"] = {"axes": [True, False, True], "output": channels(out)}

    # Rotation and scaling about the input's centre into a smaller patch, then mirroring of y
    # (nnU-Net mirrors last; voxseg folds it into the same map). Angles about axes 0, 1, 2.
    angles, scale, patch = [0.35, -0.2, 0.5], 1.15, (6, 7, 8)
    sp = bg_spatial.SpatialTransform(
        patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
        p_rotation=1, rotation=lambda image, dim: angles[dim], p_scaling=1, scaling=lambda image, dim: scale,
        p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False, border_mode_seg="constant",
        padding_value_seg=-1)
    params = sp.get_parameters(image=img())
    assert np.allclose(params["affine"], bg_spatial.create_affine_matrix_3d(angles, [scale] * 3))
    out = sp._apply_to_image(img(), **params)
    out = MirrorTransform(allowed_axes=(0, 1, 2))._apply_to_image(out, axes=[1])
    # Where each patch voxel samples the input (voxel units, x, y, z), from nnU-Net's grid:
    # grid_sample with align_corners=False reads normalised g at pixel ((g + 1) * n - 1) / 2.
    g = params["grid"].numpy().astype(np.float64)[..., ::-1]  # back to axis order 0, 1, 2
    pos = (g + 1) * np.array(DIMS) / 2 - 0.5
    pos = pos[:, ::-1]  # then the y mirror
    label = (np.arange(np.prod(DIMS)) % 4).reshape(DIMS)
    # nnU-Net's label path: one-hot linear, -1 outside (then -1 -> 0, as nnU-Net's later
    # RemoveLabelTransform does). For the report: where the nearest voxel (rounded half up,
    # 0 outside) would differ.
    seg = sp._apply_to_segmentation(torch.from_numpy(label[None]).short(), **params)
    seg = MirrorTransform(allowed_axes=(0, 1, 2))._apply_to_segmentation(seg, axes=[1])[0].numpy()
    seg = np.where(seg < 0, 0, seg)
    near = np.floor(pos + 0.5).astype(int)
    inside = np.all((near >= 0) & (near < np.array(DIMS)), axis=-1)
    nearest = np.where(inside, label[tuple(np.clip(near, 0, np.array(DIMS) - 1).transpose(3, 0, 1, 2))], 0)
    fixture["spatial"] = {
        "angles": angles, "scale": scale, "patch": list(patch), "mirror": [False, True, False],
        "centre": [(d - 1) / 2 for d in DIMS],
        "positions": [flat(pos[..., a]) for a in range(3)],
        "output": channels(out),
        "label_input": [int(v) for v in label.transpose(2, 1, 0).ravel()],
        "label_nnunet": [int(v) for v in seg.transpose(2, 1, 0).ravel()],
        "label_nnunet_differs_from_nearest": int((seg != nearest).sum()),
    }
    print("spatial: nnU-Net's one-hot linear label differs from nearest at",
          fixture["spatial"]["label_nnunet_differs_from_nearest"], "of", nearest.size, "voxels")

    text = json.dumps(fixture, separators=(",", ":"))
    with open(OUT, "w") as f:
        f.write(text + "\n")
    print(f"wrote {OUT}: {len(text) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
