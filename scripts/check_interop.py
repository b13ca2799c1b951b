#!/usr/bin/env python3
"""Check that voxseg's output files open in the Python tools people use with them.

  * TensorBoard event files, read with TensorBoard's own EventAccumulator (and their
    TFRecord framing and CRCs checked independently): expected scalar, image and histogram
    tags must be present and well formed.
  * safetensors checkpoints, read with the `safetensors` package: F32 tensors with finite
    values, expected names, shapes and metadata keys.
  * Predicted label maps, read with nibabel: uint8, the reference image's grid and affine,
    and only allowed label values.

Usage:
  check_interop.py RUN_DIR [--scalar TAG]... [--image TAG]... [--histogram TAG]...
                   [--tensor NAME=D0xD1x...]... [--metadata KEY]...
                   [--predictions DIR --reference FILE [--labels 0,1,2,4]]

Any mismatch is printed as a FAIL line and the exit status is 1. When the packages are not
importable, they are installed (pinned) into a virtual environment, by default
~/.cache/voxseg/interop-venv (override with VOXSEG_INTEROP_VENV), and the script re-runs there.
"""
import argparse
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

PINNED = [
    "tensorboard==2.21.0",
    "safetensors==0.8.0",
    "numpy==2.2.6",
    "nibabel==5.4.2",
]
MODULES = ["tensorboard", "safetensors", "numpy", "nibabel"]


def ensure_packages():
    """Re-runs this script in a virtual environment with the pinned packages if needed."""
    try:
        for m in MODULES:
            __import__(m)
        return
    except ImportError:
        pass
    if os.environ.get("VOXSEG_INTEROP_IN_VENV"):
        sys.exit("check_interop: packages still missing inside the virtual environment")
    venv = Path(os.environ.get("VOXSEG_INTEROP_VENV", Path.home() / ".cache/voxseg/interop-venv"))
    python = venv / "bin" / "python"
    probe = "import " + ", ".join(MODULES)
    ready = python.exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    if not ready:
        print(f"check_interop: installing {' '.join(PINNED)} into {venv}", file=sys.stderr)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *PINNED], check=True)
    env = dict(os.environ, VOXSEG_INTEROP_IN_VENV="1")
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


class Checker:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL: {msg}")

    def ok(self, msg):
        print(f"ok:   {msg}")

    def expect(self, cond, ok_msg, fail_msg):
        if cond:
            self.ok(ok_msg)
        else:
            self.fail(fail_msg)
        return cond


# --- TFRecord framing, checked independently of TensorBoard's reader -------------------

def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_framing(chk, path):
    data = path.read_bytes()
    at, count = 0, 0
    while at < len(data):
        if at + 12 > len(data):
            return chk.fail(f"{path}: truncated record header at byte {at}")
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        if header_crc != masked_crc32c(header):
            return chk.fail(f"{path}: record {count} length CRC mismatch")
        end = at + 12 + length
        if end + 4 > len(data):
            return chk.fail(f"{path}: record {count} truncated")
        (body_crc,) = struct.unpack("<I", data[end:end + 4])
        if body_crc != masked_crc32c(data[at + 12:end]):
            return chk.fail(f"{path}: record {count} data CRC mismatch")
        at, count = end + 4, count + 1
    chk.ok(f"{path.name}: {count} records, framing and CRCs valid")


# --- TensorBoard ------------------------------------------------------------------------

def check_events(chk, run_dir, args):
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader

    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and "tfevents" in p.name)
    if not chk.expect(files, f"{len(files)} event file(s)", f"no event file (*tfevents*) under {run_dir}"):
        return
    for f in files:
        check_framing(chk, f)
        events = list(event_file_loader.EventFileLoader(str(f)).Load())
        first = events[0].file_version if events else ""
        chk.expect(first == "brain.Event:2", f"{f.name}: file_version {first}",
                   f"{f}: first event file_version is {first!r}, expected 'brain.Event:2'")

    scalars, images, histograms = {}, {}, {}
    for d in sorted({f.parent for f in files}):
        acc = event_accumulator.EventAccumulator(
            str(d),
            size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                           event_accumulator.HISTOGRAMS: 0},
        )
        acc.Reload()
        tags = acc.Tags()
        for t in tags.get(event_accumulator.SCALARS, []):
            scalars.setdefault(t, []).extend(acc.Scalars(t))
        for t in tags.get(event_accumulator.IMAGES, []):
            images.setdefault(t, []).extend(acc.Images(t))
        for t in tags.get(event_accumulator.HISTOGRAMS, []):
            histograms.setdefault(t, []).extend(acc.Histograms(t))
    print(f"      EventAccumulator: {len(scalars)} scalar, {len(images)} image, "
          f"{len(histograms)} histogram tags")

    for tag in args.scalar:
        evs = scalars.get(tag)
        if not chk.expect(evs, f"scalar {tag}: {len(evs or [])} events",
                          f"scalar tag {tag!r} missing (have {sorted(scalars)})"):
            continue
        bad = [e.step for e in evs if not math.isfinite(e.value)]
        chk.expect(not bad, f"scalar {tag}: values finite",
                   f"scalar {tag}: non-finite values at steps {bad[:10]}")

    for tag in args.image:
        evs = images.get(tag)
        if not chk.expect(evs, f"image {tag}: {len(evs or [])} events",
                          f"image tag {tag!r} missing (have {sorted(images)})"):
            continue
        for e in evs:
            png = e.encoded_image_string
            if png[:8] != b"\x89PNG\r\n\x1a\n":
                chk.fail(f"image {tag} step {e.step}: not PNG data")
                continue
            w, h = struct.unpack(">II", png[16:24])
            chk.expect((w, h) == (e.width, e.height) and w > 0 and h > 0,
                       f"image {tag} step {e.step}: PNG {w}x{h}",
                       f"image {tag} step {e.step}: PNG is {w}x{h}, event says {e.width}x{e.height}")

    for tag in args.histogram:
        evs = histograms.get(tag)
        if not chk.expect(evs, f"histogram {tag}: {len(evs or [])} events",
                          f"histogram tag {tag!r} missing (have {sorted(histograms)})"):
            continue
        for e in evs:
            h = e.histogram_value
            good = (len(h.bucket_limit) == len(h.bucket) > 0 and sum(h.bucket) == h.num
                    and h.min <= h.max and list(h.bucket_limit) == sorted(h.bucket_limit))
            chk.expect(good, f"histogram {tag} step {e.step}: {int(h.num)} values in "
                             f"{len(h.bucket)} buckets [{h.min:.4g}, {h.max:.4g}]",
                       f"histogram {tag} step {e.step}: inconsistent (num {h.num}, "
                       f"bucket sum {sum(h.bucket)}, {len(h.bucket_limit)} limits, {len(h.bucket)} buckets)")


# --- safetensors ------------------------------------------------------------------------

def parse_shape(text):
    return tuple(int(d) for d in text.split("x")) if text else ()


def check_checkpoints(chk, run_dir, args):
    import numpy as np
    from safetensors import safe_open

    files = sorted(run_dir.rglob("*.safetensors"))
    if not chk.expect(files, f"{len(files)} checkpoint(s)", f"no *.safetensors under {run_dir}"):
        return
    expected = {}
    for spec in args.tensor:
        name, _, shape = spec.partition("=")
        expected[name] = parse_shape(shape)
    for f in files:
        try:
            with safe_open(str(f), framework="numpy") as st:
                names = list(st.keys())
                meta = st.metadata() or {}
                tensors = {n: st.get_tensor(n) for n in names}
        except Exception as e:  # the package raises its own error types
            chk.fail(f"{f}: safetensors cannot read it: {e}")
            continue
        bad = [n for n, t in tensors.items() if t.dtype != np.float32]
        chk.expect(not bad, f"{f.name}: {len(names)} tensors, all float32",
                   f"{f}: tensors not float32: {[(n, str(tensors[n].dtype)) for n in bad]}")
        bad = [n for n, t in tensors.items() if not np.isfinite(t).all()]
        chk.expect(not bad, f"{f.name}: all values finite", f"{f}: non-finite values in {bad}")
        for name, shape in expected.items():
            if name not in tensors:
                chk.fail(f"{f}: tensor {name!r} missing (have {sorted(names)})")
            else:
                got = tuple(tensors[name].shape)
                chk.expect(got == shape, f"{f.name}: {name} {got}",
                           f"{f}: tensor {name} has shape {got}, expected {shape}")
        for key in args.metadata:
            chk.expect(key in meta, f"{f.name}: metadata {key}={meta.get(key)!r}",
                       f"{f}: metadata key {key!r} missing (have {sorted(meta)})")


# --- NIfTI predictions ------------------------------------------------------------------

def check_predictions(chk, args):
    import nibabel as nib
    import numpy as np

    ref = nib.load(str(args.reference))
    allowed = {int(v) for v in args.labels.split(",")}
    files = sorted(p for p in args.predictions.iterdir()
                   if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("."))
    if not chk.expect(files, f"{len(files)} prediction(s)", f"no NIfTI file in {args.predictions}"):
        return
    for f in files:
        img = nib.load(str(f))
        dtype = img.get_data_dtype()
        chk.expect(dtype == np.uint8, f"{f.name}: uint8", f"{f}: stored as {dtype}, expected uint8")
        chk.expect(img.shape == ref.shape[:3], f"{f.name}: shape {img.shape}",
                   f"{f}: shape {img.shape}, reference grid {ref.shape[:3]}")
        same = img.affine.shape == ref.affine.shape and np.allclose(img.affine, ref.affine, rtol=0, atol=1e-5)
        chk.expect(same, f"{f.name}: affine equals the reference's",
                   f"{f}: affine\n{img.affine}\ndiffers from the reference's\n{ref.affine}")
        values, counts = np.unique(np.asanyarray(img.dataobj), return_counts=True)
        found = {int(v): int(c) for v, c in zip(values, counts)}
        extra = sorted(set(found) - allowed)
        chk.expect(not extra, f"{f.name}: labels {found}",
                   f"{f}: labels {extra} outside the allowed {sorted(allowed)}")


def main():
    ensure_packages()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="run directory with event files and checkpoints")
    p.add_argument("--scalar", action="append", default=[], help="scalar tag that must exist")
    p.add_argument("--image", action="append", default=[], help="image tag that must exist")
    p.add_argument("--histogram", action="append", default=[], help="histogram tag that must exist")
    p.add_argument("--tensor", action="append", default=[],
                   help="checkpoint tensor NAME=SHAPE (e.g. enc.0.weight=3x3x3x4x32) that must exist")
    p.add_argument("--metadata", action="append", default=[], help="checkpoint metadata key that must exist")
    p.add_argument("--predictions", type=Path, help="directory of predicted label maps (NIfTI)")
    p.add_argument("--reference", type=Path, help="an input image of the predicted case(s)")
    p.add_argument("--labels", default="0,1,2,4", help="allowed label values (default 0,1,2,4)")
    args = p.parse_args()
    if (args.predictions is None) != (args.reference is None):
        p.error("--predictions and --reference go together")
    if not args.run_dir.is_dir():
        p.error(f"{args.run_dir} is not a directory")

    import nibabel
    import numpy
    import safetensors
    import tensorboard
    print(f"      tensorboard {tensorboard.__version__}, safetensors {safetensors.__version__}, "
          f"numpy {numpy.__version__}, nibabel {nibabel.__version__}")
    chk = Checker()
    check_events(chk, args.run_dir, args)
    check_checkpoints(chk, args.run_dir, args)
    if args.predictions is not None:
        check_predictions(chk, args)
    if chk.failures:
        print(f"check_interop: {len(chk.failures)} check(s) failed")
        sys.exit(1)
    print("check_interop: all checks passed")


if __name__ == "__main__":
    main()
