#!/usr/bin/env python3
"""PyTorch + cuDNN reference for `voxseg bench --device cuda --json`.

Runs the same cases as voxseg's benchmark through PyTorch (cuDNN on a GPU) and prints
one JSON object per line in the same format, so that `scripts/bench_table.py` can join
the two outputs into the table of BENCHMARKS.md. Both must run on the same card in the
same device call.

Where it runs. The lent GPU machines (nvidia-h100-x1, nvidia-h200) have this in their
image, per /work/.library/device/KINDS.md: `python3` is Python 3.12.3 at
/opt/torch/.venv/bin/python3 with torch 2.11.0+cu130, cuDNN from nvidia-cudnn-cu13,
numpy, triton. The script needs torch alone. It was run end to end here only on a CPU
(`--device cpu --small`), with torch from PyPI; no GPU was lent to the task that wrote it.

    python3 scripts/bench_reference.py --device cuda --json > ref.jsonl
    python3 scripts/bench_reference.py --device cpu --small --json   # does it run?
    python3 scripts/bench_reference.py --device cpu --cpu-suite --precision fp32 --warmup 1 --iters 5 --json
                                     # PyTorch's CPU (oneDNN) on `voxseg bench --device cpu`'s shapes

Output lines (the contract `voxseg bench` follows so that the two can be joined):
  op        conv3d.fwd | conv3d.bwd_data | conv3d.bwd_weight
            conv3d_transpose.fwd | conv3d_transpose.bwd_data | conv3d_transpose.bwd_weight
            instnorm_lrelu.fwd | instnorm_lrelu.bwd
            unet_step (NDHWC = channels_last_3d, the one voxseg is compared with)
            unet_step.ncdhw (PyTorch's default layout, which nnU-Net itself uses; reference only)
  shape     convs: "NxDxHxWxCin->Cout kKsS", the forward direction's input, e.g.
            "2x64x64x64x32->32 k3s1"; a transposed conv names its own input:
            "2x32x32x32x64->32 k2s2". Norms: "NxDxHxWxC". Step: "NxDxHxWxCin 32-64-...".
  precision fp32 (TF32 off) | tf32 (TF32 allowed in cuDNN and cuBLAS) | bf16
  impl      "torch"
  ms        median time of one call (one whole step for unet_step)
  gflops    GFLOP/s (a rate), from `flop`; tflops = gflops / 1000
  flop      convs: 2 * N * V * Cin * Cout * kvol for every direction, V = the voxels of the
            strided/small side (a conv's output, a transposed conv's input).
            unet_step: the sum of that over all its convs, 3 passes each (2 for the first
            conv: its input needs no gradient), 1x1x1 heads included.
  bytes     norms: every activation tensor read or written once, at the precision's
            activation size (4 bytes fp32/tf32, 2 bf16): fwd reads x, writes y (2 tensors);
            bwd reads x and dy, writes dx (3 tensors). gbps = bytes / ms / 1e6.
  also      volumes_per_s and peak_mem_gib (step); ms_eager and graph_reps (op cases timed
            with a CUDA graph: ms_eager is the plain per-call time, launch overhead
            included); timing, iters, suite ("sweep", "brats", "step"), layer (the network
            layers of that shape), device, torch, cudnn. Floats carry 5 significant digits.

Cases (`--cases`): conv = the 3x3x3 sweep, the 2x2x2 transposed conv and every conv and
transposed conv of the nnU-Net BraTS 3d_fullres network (suite "brats"); norm = the norm
sweep and every norm shape of that network; step = one training step of that network:
batch 2, 128^3, 4 channels, stages 32-64-128-256-320-320, two conv(bias)-InstanceNorm-
LeakyReLU per stage, strided-conv down, transposed-conv up, concatenated skips, 1x1x1 heads
on the 4 supervised decoder outputs (weights 1/2^i, the lowest of 5 dropped, normalised),
sigmoid BCE + soft Dice over 3 regions, clip_grad_norm 12, SGD lr 1e-2 Nesterov momentum
0.99 weight decay 3e-5. `--small` shrinks all of it (5 stages of 4..40 channels at 32^3).
Op cases call the aten ops directly: convs have no bias; bwd_data and bwd_weight are
`aten.convolution_backward` with one output each; bf16 op cases take bf16 tensors (what
autocast hands cuDNN), so no casts are timed. The norm case is PyTorch's own
InstanceNorm3d(affine=True) followed by LeakyReLU(0.01), under autocast for bf16. The step
uses torch.autocast(bfloat16) for bf16.

Timing: cudnn.benchmark = True; warm-up calls first (they also run cuDNN's algorithm
search), then `--iters` samples timed with torch.cuda.Event, median reported. On a GPU op
cases are also captured `reps` times into a CUDA graph and the graph replays are timed
(ms = replay / reps): small cases otherwise measure Python's launch overhead, not cuDNN.
`--no-graph` turns that off. Each case reuses its inputs, so small ones run out of L2.
"""

import argparse
import datetime
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("fp32", "tf32", "bf16")
CASE_GROUPS = ("conv", "norm", "step")
CL3D = torch.channels_last_3d

# The nnU-Net BraTS 3d_fullres network (shared/REFERENCE.md).
BRATS = {"batch": 2, "patch": 128, "in_channels": 4, "widths": (32, 64, 128, 256, 320, 320), "regions": 3}
BRATS_SMALL = {"batch": 2, "patch": 32, "in_channels": 4, "widths": (4, 8, 16, 32, 40), "regions": 3}
# The training step of `voxseg bench --device cpu` (src/bench/mod.rs `cpu_step`).
CPU_STEP = {"batch": 2, "patch": 64, "in_channels": 4, "widths": (16, 32, 64, 128, 256), "regions": 3}
# (D, H, W, Cin, Cout) of the 3x3x3 'same' conv sweep, batch 2.
CONV_SWEEP = ((64, 64, 64, 32, 32), (32, 32, 32, 64, 64), (16, 16, 16, 128, 128), (8, 8, 8, 256, 256))
CONV_SWEEP_SMALL = ((16, 16, 16, 8, 8), (8, 8, 8, 16, 16), (4, 4, 4, 32, 32), (2, 2, 2, 64, 64))
# (D, H, W, Cin, Cout) of the 2x2x2 stride-2 transposed conv, batch 2.
TRANSPOSED_SWEEP = ((32, 32, 32, 64, 32),)
TRANSPOSED_SWEEP_SMALL = ((8, 8, 8, 16, 8),)
# (D, H, W, C) of the instance norm + LeakyReLU, batch 2.
NORM_SWEEP = ((64, 64, 64, 32),)
NORM_SWEEP_SMALL = ((16, 16, 16, 8),)
SWEEP_BATCH = 2
LEAKY_SLOPE = 0.01
NORM_EPS = 1e-5


# ---------------------------------------------------------------- precision


def set_precision(precision):
    """TF32 on (tf32) or off (fp32; bf16 too, whose fp32 leftovers then stay exact) for
    cuDNN convs and cuBLAS matmuls."""
    allow_tf32 = precision == "tf32"
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        # torch >= 2.9 deprecates the allow_tf32 flags in favour of fp32_precision.
        mode = "tf32" if allow_tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32


def tf32_state():
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        return {
            "matmul": torch.backends.cuda.matmul.fp32_precision,
            "cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
        }
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32}


def autocast(device, dtype):
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def activation_bytes(precision):
    return 2 if precision == "bf16" else 4


# ---------------------------------------------------------------- timing


class Timer:
    def __init__(self, device, warmup, iters, use_graph):
        self.device = device
        self.warmup = warmup
        self.iters = iters
        self.use_graph = use_graph and device.type == "cuda"

    def _samples(self, run, calls_per_sample):
        """Milliseconds per call of `iters` samples, each sample `run()` once."""
        if self.device.type != "cuda":
            out = []
            for _ in range(self.iters):
                t0 = time.perf_counter()
                run()
                out.append((time.perf_counter() - t0) * 1e3 / calls_per_sample)
            return out
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        for start, end in zip(starts, ends):
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / calls_per_sample for s, e in zip(starts, ends)]

    def eager(self, fn):
        for _ in range(self.warmup):
            fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return statistics.median(self._samples(fn, 1))

    def graph(self, fn, eager_ms):
        """Per-call ms of `fn` replayed from a CUDA graph, or None if capture fails."""
        reps = max(1, min(50, math.ceil(2.0 / max(eager_ms, 1e-3))))
        # Warm-up on a side stream before capture, as torch.cuda.graphs asks.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for _ in range(reps):
                    fn()
        except RuntimeError as err:
            torch.cuda.synchronize()
            print(f"  graph capture failed ({err}); eager timing kept", file=sys.stderr)
            return None, reps
        graph.replay()
        torch.cuda.synchronize()
        ms = statistics.median(self._samples(graph.replay, reps))
        del graph
        return ms, reps

    def op(self, fn):
        """(ms, extra keys) for one op case."""
        eager_ms = self.eager(fn)
        if not self.use_graph:
            return eager_ms, {"timing": "events" if self.device.type == "cuda" else "wall"}
        graph_ms, reps = self.graph(fn, eager_ms)
        if graph_ms is None:
            return eager_ms, {"timing": "events"}
        return graph_ms, {"timing": "graph", "graph_reps": reps, "ms_eager": eager_ms}


# ---------------------------------------------------------------- op cases


def conv_shape_key(n, dhw, cin, cout, k, s):
    d, h, w = dhw
    return f"{n}x{d}x{h}x{w}x{cin}->{cout} k{k}s{s}"


class ConvCase:
    """One conv (or transposed conv) geometry; NDHWC tensors as channels_last_3d."""

    def __init__(self, n, dhw, cin, cout, k, s, transposed, suite, layer=None):
        self.n, self.dhw, self.cin, self.cout = n, tuple(dhw), cin, cout
        self.k, self.s, self.transposed = k, s, transposed
        self.suite = suite
        self.layers = [layer] if layer else []
        self.pad = 0 if transposed else k // 2

    @property
    def family(self):
        return "conv3d_transpose" if self.transposed else "conv3d"

    @property
    def shape(self):
        return conv_shape_key(self.n, self.dhw, self.cin, self.cout, self.k, self.s)

    def small_side_voxels(self):
        if self.transposed:
            return math.prod(self.dhw)
        return math.prod((x + 2 * self.pad - self.k) // self.s + 1 for x in self.dhw)

    def flop(self):
        return 2 * self.n * self.small_side_voxels() * self.cin * self.cout * self.k**3

    def tensors(self, device, dtype):
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn((self.n, self.cin) + self.dhw, generator=gen)
        if self.transposed:
            w = torch.randn((self.cin, self.cout) + (self.k,) * 3, generator=gen)
        else:
            w = torch.randn((self.cout, self.cin) + (self.k,) * 3, generator=gen)
        w = w / math.sqrt(self.cin * self.k**3)
        x = x.to(device=device, dtype=dtype).contiguous(memory_format=CL3D)
        w = w.to(device=device, dtype=dtype).contiguous(memory_format=CL3D)
        y = self.forward(x, w)
        dy = torch.randn(y.shape, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=CL3D)
        return x, w, dy

    def forward(self, x, w):
        return torch.ops.aten.convolution(
            x, w, None, [self.s] * 3, [self.pad] * 3, [1] * 3, self.transposed, [0] * 3, 1
        )

    def backward(self, dy, x, w, mask):
        return torch.ops.aten.convolution_backward(
            dy, x, w, None, [self.s] * 3, [self.pad] * 3, [1] * 3, self.transposed, [0] * 3, 1, mask
        )

    def run(self, timer, device, precision):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        x, w, dy = self.tensors(device, dtype)
        directions = (
            ("fwd", lambda: self.forward(x, w)),
            ("bwd_data", lambda: self.backward(dy, x, w, [True, False, False])),
            ("bwd_weight", lambda: self.backward(dy, x, w, [False, True, False])),
        )
        flop = self.flop()
        for direction, fn in directions:
            ms, extra = timer.op(fn)
            gflops = flop / ms / 1e6
            yield {
                "op": f"{self.family}.{direction}",
                "shape": self.shape,
                "ms": ms,
                "flop": flop,
                "gflops": gflops,
                "tflops": gflops / 1e3,
                **extra,
            }


class NormCase:
    """InstanceNorm3d(affine=True) then LeakyReLU(0.01), PyTorch's separate ops."""

    def __init__(self, n, dhw, c, suite, layer=None):
        self.n, self.dhw, self.c = n, tuple(dhw), c
        self.suite = suite
        self.layers = [layer] if layer else []

    @property
    def shape(self):
        d, h, w = self.dhw
        return f"{self.n}x{d}x{h}x{w}x{self.c}"

    def run(self, timer, device, precision):
        amp = torch.bfloat16 if precision == "bf16" else None
        dtype = amp or torch.float32
        gen = torch.Generator(device="cpu").manual_seed(0)
        norm = nn.InstanceNorm3d(self.c, eps=NORM_EPS, affine=True).to(device)
        act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        x = torch.randn((self.n, self.c) + self.dhw, generator=gen)
        x = x.to(device=device, dtype=dtype).contiguous(memory_format=CL3D).requires_grad_(True)

        def forward():
            with autocast(device, amp):
                return act(norm(x))

        y = forward()
        # empty_like keeps y's memory format, whichever PyTorch chose.
        dy = torch.empty_like(y).copy_(torch.randn(y.shape, generator=gen))
        inputs = (x, norm.weight, norm.bias)

        def backward():
            return torch.autograd.grad(y, inputs, dy, retain_graph=True)

        tensor_bytes = self.n * math.prod(self.dhw) * self.c * activation_bytes(precision)
        # Forward runs with grad enabled, as in training: it records the backward graph too.
        for direction, fn, tensors in (("fwd", forward, 2), ("bwd", backward, 3)):
            ms, extra = timer.op(fn)
            nbytes = tensors * tensor_bytes
            yield {
                "op": f"instnorm_lrelu.{direction}",
                "shape": self.shape,
                "ms": ms,
                "bytes": nbytes,
                "gbps": nbytes / ms / 1e6,
                **extra,
            }


# ---------------------------------------------------------------- the network


def stage_sizes(cfg):
    return [cfg["patch"] // 2**i for i in range(len(cfg["widths"]))]


def brats_layer_cases(cfg):
    """Every conv, transposed conv and norm of the network, in order, repeated shapes merged."""
    n, widths, sizes = cfg["batch"], cfg["widths"], stage_sizes(cfg)
    convs, norms = {}, {}

    def add_conv(layer, size, cin, cout, k, s, transposed):
        case = ConvCase(n, (size,) * 3, cin, cout, k, s, transposed, "brats", layer)
        key = (case.family, case.shape)
        if key in convs:
            convs[key].layers.append(layer)
        else:
            convs[key] = case

    def add_norm(layer, size, c):
        case = NormCase(n, (size,) * 3, c, "brats", layer)
        if case.shape in norms:
            norms[case.shape].layers.append(layer)
        else:
            norms[case.shape] = case

    cin = cfg["in_channels"]
    for i, (w, size) in enumerate(zip(widths, sizes)):
        in_size = size if i == 0 else sizes[i - 1]
        add_conv(f"enc{i}.conv0", in_size, cin, w, 3, 1 if i == 0 else 2, False)
        add_conv(f"enc{i}.conv1", size, w, w, 3, 1, False)
        add_norm(f"enc{i}", size, w)
        cin = w
    for i in reversed(range(len(widths) - 1)):
        add_conv(f"dec{i}.up", sizes[i + 1], widths[i + 1], widths[i], 2, 2, True)
        add_conv(f"dec{i}.conv0", sizes[i], 2 * widths[i], widths[i], 3, 1, False)
        add_conv(f"dec{i}.conv1", sizes[i], widths[i], widths[i], 3, 1, False)
        add_norm(f"dec{i}", sizes[i], widths[i])
    return list(convs.values()), list(norms.values())


class ConvNormAct(nn.Sequential):
    def __init__(self, cin, cout, stride):
        super().__init__(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True),
            nn.InstanceNorm3d(cout, eps=NORM_EPS, affine=True),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class UNet(nn.Module):
    """nnU-Net's PlainConvUNet for BraTS: two conv-norm-act per stage, strided-conv down,
    transposed-conv up, concatenated skips, a 1x1x1 head per supervised decoder stage."""

    def __init__(self, cfg, supervised):
        super().__init__()
        widths = cfg["widths"]
        self.encoder = nn.ModuleList()
        cin = cfg["in_channels"]
        for i, w in enumerate(widths):
            self.encoder.append(nn.Sequential(ConvNormAct(cin, w, 1 if i == 0 else 2), ConvNormAct(w, w, 1)))
            cin = w
        # Decoder modules ordered from the deepest stage up to full resolution.
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleDict()
        levels = list(reversed(range(len(widths) - 1)))
        for level in levels:
            w = widths[level]
            self.up.append(nn.ConvTranspose3d(widths[level + 1], w, 2, stride=2, bias=True))
            self.decoder.append(nn.Sequential(ConvNormAct(2 * w, w, 1), ConvNormAct(w, w, 1)))
            if level < supervised:
                self.heads[str(level)] = nn.Conv3d(w, cfg["regions"], 1, bias=True)
        self.levels = levels
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=1e-2)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = {}
        for level, up, block in zip(self.levels, self.up, self.decoder):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
            if str(level) in self.heads:
                outputs[level] = self.heads[str(level)](x)
        return [outputs[level] for level in sorted(outputs)]


def step_flop(cfg, supervised):
    """Conv FLOP of one training step: 3 passes per conv, 2 for the first (no input grad)."""
    n, widths, sizes = cfg["batch"], cfg["widths"], stage_sizes(cfg)
    convs, _ = brats_layer_cases(cfg)
    total = 0
    for case in convs:
        passes = sum(2 if layer == "enc0.conv0" else 3 for layer in case.layers)
        total += passes * case.flop()
    for level in range(supervised):
        total += 3 * 2 * n * sizes[level] ** 3 * widths[level] * cfg["regions"]
    return total


def deep_supervision_weights(n_outputs):
    """nnU-Net: 1/2^i per output, the lowest resolution weighted 0 (dropped), normalised."""
    raw = [1 / 2**i for i in range(n_outputs)]
    raw[-1] = 0.0
    total = sum(raw)
    return [r / total for r in raw]


def region_loss(logits, target, smooth=1e-5):
    """nnU-Net's region loss: BCE with logits plus negative soft Dice of the sigmoids
    (per sample and region, background included)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    axes = (2, 3, 4)
    intersect = (prob * target).sum(axes)
    denom = prob.sum(axes) + target.sum(axes)
    dice = (2 * intersect + smooth) / (denom + smooth).clamp_min(1e-8)
    return bce - dice.mean()


def brats_targets(cfg, n_levels, device, layout):
    """Three region masks (WT, TC, ET) of random BraTS-2021 labels {0,1,2,4}, nearest-
    downsampled per supervised level (nnU-Net does this in its data loader)."""
    gen = torch.Generator(device="cpu").manual_seed(1)
    size = cfg["patch"]
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (cfg["batch"], 1, size, size, size), generator=gen)]
    regions = torch.cat((labels > 0, (labels == 1) | (labels == 4), labels == 4), dim=1).float()
    return [
        regions[:, :, :: 2**i, :: 2**i, :: 2**i].to(device).contiguous(memory_format=layout) for i in range(n_levels)
    ]


def run_step(cfg, timer, device, precision, layout, op):
    amp = torch.bfloat16 if precision == "bf16" else None
    n_outputs = len(cfg["widths"]) - 1
    weights = deep_supervision_weights(n_outputs)
    supervised = sum(1 for w in weights if w > 0)
    torch.manual_seed(0)
    model = UNet(cfg, supervised).to(device).to(memory_format=layout)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    gen = torch.Generator(device="cpu").manual_seed(2)
    size = cfg["patch"]
    x = torch.randn((cfg["batch"], cfg["in_channels"], size, size, size), generator=gen)
    x = x.to(device).contiguous(memory_format=layout)
    targets = brats_targets(cfg, supervised, device, layout)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            outputs = model(x)
            loss = sum(w * region_loss(o, t) for w, o, t in zip(weights, outputs, targets))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()

    ms = timer.eager(step)
    flop = step_flop(cfg, supervised)
    gflops = flop / ms / 1e6
    widths = "-".join(str(w) for w in cfg["widths"])
    result = {
        "op": op,
        "shape": f"{cfg['batch']}x{size}x{size}x{size}x{cfg['in_channels']} {widths}",
        "ms": ms,
        "volumes_per_s": cfg["batch"] / (ms / 1e3),
        "flop": flop,
        "gflops": gflops,
        "tflops": gflops / 1e3,
        "timing": "events" if device.type == "cuda" else "wall",
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


# ---------------------------------------------------------------- driver


def build_cases(groups, small, cpu_suite=False):
    """The cases and the step's network. `cpu_suite`: the shapes of `voxseg bench --device
    cpu` (the sweeps and its smaller step; none of the BraTS layers)."""
    cfg = CPU_STEP if cpu_suite else BRATS_SMALL if small else BRATS
    cases = []
    if "conv" in groups:
        for d, h, w, cin, cout in CONV_SWEEP_SMALL if small else CONV_SWEEP:
            cases.append(ConvCase(SWEEP_BATCH, (d, h, w), cin, cout, 3, 1, False, "sweep"))
        for d, h, w, cin, cout in TRANSPOSED_SWEEP_SMALL if small else TRANSPOSED_SWEEP:
            cases.append(ConvCase(SWEEP_BATCH, (d, h, w), cin, cout, 2, 2, True, "sweep"))
    if "norm" in groups:
        for d, h, w, c in NORM_SWEEP_SMALL if small else NORM_SWEEP:
            cases.append(NormCase(SWEEP_BATCH, (d, h, w), c, "sweep"))
    if cpu_suite:
        return cfg, cases
    brats_convs, brats_norms = brats_layer_cases(cfg)
    seen = {(getattr(c, "family", "norm"), c.shape) for c in cases}
    if "conv" in groups:
        cases += [c for c in brats_convs if (c.family, c.shape) not in seen]
    if "norm" in groups:
        cases += [c for c in brats_norms if ("norm", c.shape) not in seen]
    return cfg, cases


def parse_list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(f"bench_reference: unknown {what} {bad or text!r}; choose from {', '.join(allowed)}")
    return items


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--precision", default="fp32,tf32,bf16", help="comma list of fp32, tf32, bf16")
    ap.add_argument("--cases", default="all", help="all, or a comma list of conv, norm, step")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls first (cuDNN's search runs here)")
    ap.add_argument("--iters", type=int, default=30, help="timed samples; the median is reported")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (else a text table)")
    ap.add_argument("--small", action="store_true", help="tiny shapes, to check the script on a CPU")
    ap.add_argument("--no-graph", action="store_true", help="time op cases eagerly, no CUDA graph")
    ap.add_argument(
        "--cpu-suite",
        action="store_true",
        help="the shapes of `voxseg bench --device cpu`: the sweeps and a 2x64^3, 16-256 step",
    )
    args = ap.parse_args(argv)

    precisions = parse_list(args.precision, PRECISIONS, "precision")
    groups = parse_list(args.cases, CASE_GROUPS, "case group")
    if args.warmup < 1 or args.iters < 1:
        raise SystemExit("bench_reference: --warmup and --iters must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_reference: --device cuda, but torch sees no CUDA device")
    device = torch.device(args.device)
    if device.type == "cpu" and "tf32" in precisions:
        print("bench_reference: tf32 does not apply on a CPU; skipped", file=sys.stderr)
        precisions = [p for p in precisions if p != "tf32"]

    torch.backends.cudnn.benchmark = True
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(f"bench_reference: {json.dumps(meta)}", file=sys.stderr)

    if args.cpu_suite and args.small:
        raise SystemExit("bench_reference: --cpu-suite and --small are different shape sets; pick one")
    cfg, cases = build_cases(groups, args.small, args.cpu_suite)
    timer = Timer(device, args.warmup, args.iters, use_graph=not args.no_graph)
    rows = []

    def emit(row, precision, suite, layers=()):
        row = {"precision": precision, "impl": "torch", **row, "iters": args.iters, "suite": suite}
        if layers:
            row["layer"] = ",".join(layers)
        row["device"] = device_name
        row["torch"] = meta["torch"]
        row["cudnn"] = meta["cudnn"]
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = float(f"{value:.5g}")
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)

    for precision in precisions:
        set_precision(precision)
        print(f"bench_reference: {precision}: tf32 {tf32_state()}", file=sys.stderr)
        for case in cases:
            print(f"  {precision} {case.suite} {case.shape}", file=sys.stderr, flush=True)
            for row in case.run(timer, device, precision):
                emit(row, precision, case.suite, case.layers)
        if "step" in groups:
            for layout, op in ((CL3D, "unet_step"), (torch.contiguous_format, "unet_step.ncdhw")):
                print(f"  {precision} step {op}", file=sys.stderr, flush=True)
                emit(run_step(cfg, timer, device, precision, layout, op), precision, "step")
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if not args.json:
        print(f"{'precision':9} {'op':28} {'shape':30} {'ms':>10} {'rate':>14}")
        for r in rows:
            if "volumes_per_s" in r:
                rate = f"{r['volumes_per_s']:.3g} vol/s"
            elif "tflops" in r:
                rate = f"{r['tflops']:.3g} TFLOP/s"
            else:
                rate = f"{r['gbps']:.4g} GB/s"
            print(f"{r['precision']:9} {r['op']:28} {r['shape']:30} {r['ms']:10.4g} {rate:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
