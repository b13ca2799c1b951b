#!/usr/bin/env python3
"""Writes small NIfTI files with nibabel into tests/fixtures/nifti/ and what nibabel reads from
them into tests/fixtures/nifti_reference.json, for tests/data_io.rs to compare voxseg's reader,
its orientation codes and its reorientation against.

The cases: every datatype voxseg reads (uint8 ... uint64, float32, float64), unscaled and with
scl_slope/scl_inter (slope 0 meaning none, a negative slope, an intercept alone), the sform
alone, the qform alone (qfac 1, -1, 0, -2), both with different matrices and codes, neither,
negative pixdims, axis permutations and flips (LPS, PIR, ...), oblique rotations (one with a
slight shear), anisotropic voxels, 2D and 4D images, a big-endian file, .nii.gz, and NIfTI-2
files (which voxseg refuses). Per file the JSON holds nibabel's `get_fdata()` (float64, its
array [i, j, k(, t)] flattened i fastest, which is voxseg's x-fastest order), `affine`, the
qform and sform matrices where their codes are set, `get_zooms()`, `aff2axcodes`, and for the
orientation cases the data after `as_closest_canonical` (RAS) and `as_reoriented` to LPS and
PIR. Where voxseg deliberately follows the NIfTI-1 reference library (nifti1_io) rather than
nibabel, a case carries a `voxseg` entry with the value voxseg gives and why.

Regenerate (CPU only, about a second; the fixtures are committed, so only when cases change):
  /tmp/torchenv/bin/pip install nibabel==5.4.2 numpy
  /tmp/torchenv/bin/python scripts/nifti_reference.py

Cross-check voxseg's writer with nibabel: let the Rust test keep what it writes, then
  VOXSEG_NIFTI_WRITTEN=/tmp/voxseg-written cargo test --test data_io nibabel
  /tmp/torchenv/bin/python scripts/nifti_reference.py --check /tmp/voxseg-written
prints every difference between what nibabel reads from voxseg's label and probability maps
and the reference header they were written on, and exits 1 if there is any.
"""
import json
import struct
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from nibabel.quaternions import quat2mat

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
DIR = ROOT / "nifti"
OUT = ROOT / "nifti_reference.json"
SHAPE = (3, 4, 5)
# Targets of reorientation besides RAS: voxseg reorients a dataset to any code.
REORIENT = ["LPS", "PIR"]
# Written by the Rust test onto these cases' headers (see --check).
WRITE_ON = ["both_sform_wins", "qform_only_qfac_neg"]

rng = np.random.default_rng(20261128)


def positional(shape):
    """x + 10 y + 100 z (+ 1000 t): a transposed or flipped read cannot pass."""
    idx = np.indices(shape)
    weights = [1, 10, 100, 1000][: len(shape)]
    return sum(w * i for w, i in zip(weights, idx)).astype(np.float32)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    half = np.radians(degrees) / 2
    return quat2mat(np.r_[np.cos(half), np.sin(half) * axis])


def permuted(code, zooms, offset):
    """An affine whose voxel axis a points along world direction code[a]."""
    a = np.eye(4)
    a[:3, :3] = 0
    for axis, letter in enumerate(code):
        world = "RASLPI".index(letter)
        a[world % 3, axis] = (1 if world < 3 else -1) * zooms[axis]
    a[:3, 3] = offset
    return a


def oblique(r, zooms, offset):
    a = np.eye(4)
    a[:3, :3] = r @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def header(dtype, shape, klass=nib.Nifti1Header, endianness=None):
    hdr = klass(endianness=endianness)
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    return hdr


def flat(arr):
    return [float(v) for v in np.asarray(arr, np.float64).ravel(order="F")]


def matrix(a):
    return [[float(v) for v in row] for row in np.asarray(a)]


cases = []


def save(name, raw, hdr, what, ext=".nii", image=nib.Nifti1Image, reorient=False, voxseg=None,
         refused=None, scaling=None, pixdim=None):
    """Writes `raw` (stored values) under `hdr`, reads it back with nibabel and records that.
    `scaling` (slope, intercept) and `pixdim` ({index: value}) are written into the finished
    file as they are: nibabel itself writes slope 1 for no scaling and fixes a pixdim[0] other
    than -1 or 1 and negative voxel sizes before writing."""
    path = DIR / (name + ext)
    out = image(raw, None, header=hdr)
    out.header["scl_slope"], out.header["scl_inter"] = 1.0, 0.0
    out.to_filename(path)
    patches = [(76 + 4 * at, [v]) for at, v in (pixdim or {}).items()]
    if scaling is not None:
        patches.append((112, scaling))
    if patches:
        assert ext == ".nii" and image is nib.Nifti1Image, name
        with open(path, "r+b") as f:
            for at, values in patches:
                f.seek(at)
                f.write(struct.pack(f"{hdr.endianness}{len(values)}f", *values))
        with open(path, "rb") as f:
            on_disk = nib.Nifti1Header.from_fileobj(f, check=False)
        # The header's floats from byte 76 on, in order.
        floats = np.r_[on_disk["pixdim"], on_disk["vox_offset"], on_disk["scl_slope"],
                       on_disk["scl_inter"]]
        for at, values in patches:
            found = floats[(at - 76) // 4:][:len(values)]
            assert np.array_equal(found, np.float32(values), equal_nan=True), name
    img = nib.load(path)
    h = img.header
    # The file holds exactly what was asked: raw values and the header's own fields.
    assert np.array_equal(np.asanyarray(img.dataobj.get_unscaled()), raw), name
    assert h["sform_code"] == hdr["sform_code"] and h["qform_code"] == hdr["qform_code"], name
    # nibabel moves the scaling from the header it loads into the data proxy.
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    case = {
        "name": name,
        "file": path.name,
        "what": what,
        "shape": list(img.shape),
        "datatype": str(h.get_data_dtype().newbyteorder("=")),
        "slope_inter": [slope, inter],
        "values": flat(img.get_fdata()),
        "affine": matrix(img.affine),
        "sform_code": int(h["sform_code"]),
        "qform_code": int(h["qform_code"]),
        "sform": matrix(h.get_sform()) if h["sform_code"] > 0 else None,
        "qform": matrix(h.get_qform()) if h["qform_code"] > 0 else None,
        "zooms": [float(z) for z in h.get_zooms()],
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
    }
    if reorient:
        outs = [("RAS", nib.as_closest_canonical(img))]
        start = io_orientation(img.affine)
        for code in REORIENT:
            outs.append((code, img.as_reoriented(ornt_transform(start, axcodes2ornt(code)))))
        case["reoriented"] = [
            {
                "code": code,
                "shape": list(out.shape),
                "zooms": [float(z) for z in out.header.get_zooms()],
                "values": flat(out.get_fdata()),
                "axcodes": "".join(nib.aff2axcodes(out.affine)),
            }
            for code, out in outs
        ]
    if voxseg is not None:
        case["voxseg"] = voxseg
    if refused is not None:
        case["refused"] = refused
    cases.append(case)


def geometry(name, what, affine=None, qform=None, sform=None, qcode=1, scode=1, zooms=None,
             shape=SHAPE, **kw):
    """Float32 positional data under the given transforms; `affine` sets both."""
    hdr = header(np.float32, shape)
    if affine is not None:
        qform = sform = affine
    if qform is not None:
        hdr.set_qform(qform, code=qcode)  # also sets pixdim[0..3] from it
    if sform is not None:
        hdr.set_sform(sform, code=scode)
    else:
        hdr["sform_code"] = 0
    if qform is None:
        hdr["qform_code"] = 0
    if zooms is not None:
        hdr.set_zooms(zooms)
    save(name, positional(shape), hdr, what, **kw)
    return hdr


def datatypes():
    base = permuted("RAS", (1.0, 1.0, 1.0), (-1.0, -2.0, -3.0))
    for dt in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
               "float32", "float64"]:
        t = np.dtype(dt)
        if t.kind == "f":
            # Within float32's range even once scaled, tiny and huge magnitudes included.
            raw = rng.normal(0, 100, SHAPE).astype(t)
            raw.flat[:4] = [1e37, -3.5e-30, 0.0, -1e37]
            scalings = [(2.5, 1.0)]
        else:
            info = np.iinfo(t)
            raw = rng.integers(info.min, info.max, SHAPE, dtype=t, endpoint=True)
            raw.flat[:3] = [info.min, info.max, 0]
            scalings = [(0.25, -7.5)]
        for scaling in [None, *scalings]:
            hdr = header(t, SHAPE)
            hdr.set_qform(base, code=1)
            hdr.set_sform(base, code=1)
            if scaling is None:
                save(f"{dt}_raw", raw, hdr, f"{dt}, unscaled (nibabel writes slope 1)")
            else:
                save(f"{dt}_scaled", raw, hdr, f"{dt}, x {scaling[0]} + {scaling[1]}",
                     scaling=scaling)
    small = rng.integers(-300, 300, SHAPE, dtype=np.int16)
    for name, scaling, what in [
        ("int16_slope0", (0.0, 5.0), "slope 0 means no scaling; the intercept is ignored"),
        ("int16_slope_nan", (np.nan, 7.0), "slope NaN means no scaling"),
        ("int16_inter_only", (1.0, -1024.0), "an intercept alone (CT-like)"),
        ("int16_negative_slope", (-0.5, 100.0), "a negative slope"),
    ]:
        hdr = header(np.int16, SHAPE)
        hdr.set_sform(base, code=1)
        save(name, small, hdr, what, scaling=scaling)


def geometries():
    z = (0.9, 1.25, 3.0)
    r30 = rotation((1, 2, 3), 30)
    r20 = rotation((-2, 1, 0.5), 20)
    ras = permuted("RAS", z, (10, -20, 30))
    geometry("sform_only", "sform code 2 alone, anisotropic", sform=ras, scode=2, zooms=z,
             reorient=True)
    geometry("qform_only", "qform code 1 alone, oblique, qfac 1",
             qform=oblique(r30, z, (5, 6, 7)), reorient=True)
    geometry("qform_only_qfac_neg", "qform alone, oblique, qfac -1",
             qform=oblique(r30, z, (5, 6, 7)) @ np.diag([1, 1, -1, 1]), reorient=True)
    hdr = geometry("qform_wins_sform_code0", "sform code 0 but srow filled: the qform places",
                   qform=oblique(r20, z, (1, 2, 3)), sform=permuted("LPS", z, (0, 0, 0)),
                   scode=0)
    assert hdr["sform_code"] == 0
    geometry("both_sform_wins", "sform (code 4, LPS) and qform (code 1, oblique) differ",
             qform=oblique(r20, z, (1, 2, 3)), sform=permuted("LPS", z, (90, 120, -70)),
             qcode=1, scode=4, reorient=True)
    geometry("both_sform_code1_qform_code2", "the sform wins by its presence, not its code",
             qform=permuted("RAS", z, (0, 0, 0)), sform=permuted("LAS", z, (9, 8, 7)),
             qcode=2, scode=1)
    # With both codes 0 nibabel centres the grid and flips x, as for Analyze files.
    method1 = np.diag([*np.float32(z), 1.0])
    geometry("no_transform", "qform and sform codes 0", zooms=z, voxseg={
        "affine": matrix(method1),
        "axcodes": "".join(nib.aff2axcodes(method1)),
        "why": "both codes 0: the standard's method 1, pixdim on the diagonal and the origin "
        "at voxel 0",
    })
    geometry("negative_pixdim", "pixdim[1] -2 is read as 2",
             qform=permuted("RAS", (2.0, 1.0, 1.5), (3, 2, 1)), pixdim={1: -2.0})
    right = oblique(r30, z, (5, 6, 7))
    geometry("qfac_zero", "pixdim[0] 0 counts as qfac 1", qform=right, pixdim={0: 0.0})
    # nibabel resets any pixdim[0] other than -1 or 1 to 1; nifti1_io (and voxseg) take every
    # negative pixdim[0] as qfac -1, which mirrors z.
    hdr = header(np.float32, SHAPE)
    hdr.set_qform(right, code=1)
    left = hdr.get_qform() @ np.diag([1, 1, -1, 1])
    geometry("qfac_minus2", "pixdim[0] -2", qform=right, pixdim={0: -2.0}, voxseg={
        "affine": matrix(left),
        "qform": matrix(left),
        "axcodes": "".join(nib.aff2axcodes(left)),
        "why": "a negative pixdim[0] is qfac -1 as in nifti1_io; nibabel makes it 1",
    })
    for code, zz in [("LPS", z), ("PIR", (1.0, 2.0, 0.5)), ("ASL", z), ("ILP", (2.0, 1.0, 1.0))]:
        geometry(f"sform_{code}", f"sform {code}", sform=permuted(code, zz, (4, -5, 6)),
                 zooms=zz, reorient=True)
    for code, hand in [("PIR", "right-handed, qfac 1"), ("LAS", "left-handed, qfac -1")]:
        geometry(f"qform_{code}", f"qform alone, {code}, {hand}",
                 qform=permuted(code, z, (1, 1, 1)), reorient=True)
    # Random oblique rotations (fixed seed), stored as qform and sform.
    for i in range(3):
        q = rng.normal(size=4)
        r = quat2mat(q / np.linalg.norm(q))
        geometry(f"oblique_{i}", "random oblique rotation", affine=oblique(r, z, (i, 2 * i, 0)),
                 reorient=True, ext=".nii.gz" if i == 1 else ".nii")
    # A strongly oblique sform with a slight shear, as registration tools leave them: nibabel
    # orthogonalises the axes before naming them.
    sheared = np.eye(4)
    # As stored (float32), so that pixdim is what nibabel computes for a reoriented copy.
    sheared[:3, :3] = np.float32([[0.592, 0.6152, -0.7102], [-0.5587, 1.4575, -0.1807],
                                  [0.4401, 0.9655, 0.7035]])
    geometry("oblique_sheared", "oblique sform with shear", sform=sheared,
             zooms=np.sqrt((sheared[:3, :3] ** 2).sum(0)), reorient=True)


def layouts():
    z = (0.9, 1.25, 3.0)
    aff = permuted("LPS", z, (5, 5, 5))
    four = rng.integers(-2000, 2000, (*SHAPE, 2), dtype=np.int16)
    hdr = header(np.int16, four.shape)
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    save("four_d", four, hdr, "4D int16, 2 channels (the 4th dimension), scaled",
         scaling=(0.5, 3.0))
    geometry("four_d_one", "4D with dim[4] = 1: one channel", affine=aff, shape=(*SHAPE, 1))
    geometry("two_d", "2D (dim[0] = 2)", affine=permuted("RAS", (0.5, 0.75, 1.0), (0, 0, 0)),
             shape=SHAPE[:2])
    big = rng.integers(-30000, 30000, SHAPE, dtype=np.int16).astype(">i2")
    hdr = header(">i2", SHAPE, endianness=">")
    hdr.set_qform(oblique(rotation((0, 0, 1), 10), z, (1, 2, 3)), code=1)
    hdr["sform_code"] = 0
    save("big_endian", big, hdr, "big-endian int16, scaled, qform", scaling=(0.1, -2.0))
    for ext, dt in [(".nii", np.int16), (".nii.gz", np.float32)]:
        hdr = header(dt, SHAPE, klass=nib.Nifti2Header)
        hdr.set_qform(aff, code=1)
        hdr.set_sform(aff, code=1)
        save(f"nifti2_{np.dtype(dt)}", positional(SHAPE).astype(dt), hdr, "NIfTI-2",
             ext=ext, image=nib.Nifti2Image, refused="NIfTI-2")


def written_values(shape):
    """What the Rust test writes: labels (i + 2j + 3k) % 5 and two probability channels."""
    i, j, k = np.indices(shape)
    label = ((i + 2 * j + 3 * k) % 5).astype(np.uint8)
    prob = np.stack([((i + 3 * j + 5 * k + c) % 8) / 8 for c in range(2)], -1)
    return label, prob.astype(np.float32)


def check(folder):
    """Compares nibabel's reading of the maps voxseg wrote with the reference headers."""
    reference = {c["name"]: c for c in json.loads(OUT.read_text())["cases"]}
    problems = []
    for name in json.loads(OUT.read_text())["written_on"]:
        ref = reference[name]
        label, prob = written_values(tuple(ref["shape"]))
        for kind, want, dtype in [("label", label, "uint8"), ("prob", prob, "float32")]:
            path = Path(folder) / f"{name}_{kind}.nii.gz"
            img = nib.load(path)
            h = img.header
            found = {
                "affine": np.asarray(img.affine),
                "sform_code": int(h["sform_code"]),
                "qform_code": int(h["qform_code"]),
                "sform": h.get_sform() if h["sform_code"] > 0 else None,
                "qform": h.get_qform() if h["qform_code"] > 0 else None,
                "zooms": h.get_zooms()[:3],
            }
            for key, value in found.items():
                expected = ref[key] if key != "zooms" else ref["zooms"][:3]
                same = (value is None and expected is None) or (
                    value is not None and expected is not None
                    and np.allclose(value, expected, rtol=0, atol=1e-6))
                if not same:
                    problems.append(f"{path.name}: {key} {value} != reference {expected}")
            if str(h.get_data_dtype()) != dtype:
                problems.append(f"{path.name}: dtype {h.get_data_dtype()} != {dtype}")
            scaling = (float(img.dataobj.slope), float(img.dataobj.inter))
            if scaling != (1.0, 0.0):
                problems.append(f"{path.name}: scaling {scaling}")
            if not np.array_equal(img.get_fdata(), want):
                problems.append(f"{path.name}: voxel values differ")
    for p in problems:
        print(p)
    print(f"{len(problems)} difference(s)")
    return 1 if problems else 0


def main():
    if sys.argv[1:2] == ["--check"]:
        sys.exit(check(sys.argv[2]))
    DIR.mkdir(parents=True, exist_ok=True)
    for old in DIR.glob("*.nii*"):
        old.unlink()
    datatypes()
    geometries()
    layouts()
    doc = {
        "generator": "scripts/nifti_reference.py",
        "nibabel": nib.__version__,
        "numpy": np.__version__,
        "written_on": WRITE_ON,
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    size = sum(p.stat().st_size for p in DIR.iterdir()) + OUT.stat().st_size
    print(f"{len(cases)} cases, {size} bytes in all")


if __name__ == "__main__":
    main()
