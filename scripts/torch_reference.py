#!/usr/bin/env python3
"""Writes tests/fixtures/torch_reference.json: layers, activations, norms and losses computed
by PyTorch (and MONAI for Dice and SSIM) on small random inputs, forward and backward, for
tests/torch_reference.rs to compare voxseg's CPU backend against; and
tests/fixtures/unet_reference.json: nnU-Net's own U-Net (PlainConvUNet of
dynamic_network_architectures) with random weights, its outputs and gradients.

Our gradient checks show that each backward matches its own forward; these cases show that
the forward is the operation people mean by its name: Keras 'same' padding, transposed
convolution cropping, pooling that ignores padded cells, half-pixel trilinear resampling,
batch-norm moving statistics, MONAI's soft Dice and SSIM, PyTorch's weighted losses.

Everything is stored in voxseg's layouts (NDHWC tensors, convolution kernels
[kd, kh, kw, cin, cout], transposed kernels [kd, kh, kw, cout, cin], dense [in, out]); the
conversion to PyTorch's layouts is part of what is checked. Each case holds its inputs, the
upstream gradient `dy` of its output (the loss of a case is sum(y * dy)), the outputs and
the gradients of every input, the tolerance the reference's own precision allows, and for
losses the target (region channels, or class indices stored as floats).

Regenerate (CPU only, a few seconds):
  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch==2.15.0 monai==1.6.1 dynamic-network-architectures==0.4.4 numpy
  /tmp/torchenv/bin/python scripts/torch_reference.py
"""
import json
import math
from pathlib import Path

import dynamic_network_architectures
import monai
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from monai.losses import DiceLoss
from monai.metrics.regression import compute_ssim_and_cs

torch.manual_seed(20261128)
DT = torch.float64
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OUT = FIXTURES / "torch_reference.json"
UNET_OUT = FIXTURES / "unet_reference.json"
# f64 all the way: what is left is rounding.
TIGHT = 1e-10
cases = []


def dyadic(t):
    """Multiples of 1/64: exact in binary and short in the fixture."""
    return torch.round(t * 64.0) / 64.0


def rand(*shape, lo=-1.0, hi=1.0):
    return dyadic(torch.rand(*shape, dtype=DT) * (hi - lo) + lo).requires_grad_(True)


def to_ncdhw(x):
    return x.permute(0, 4, 1, 2, 3)


def to_ndhwc(x):
    return x.permute(0, 2, 3, 4, 1)


def flat(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().reshape(-1).tolist()]}


def record(name, op, params, inputs, outputs, tolerance=TIGHT):
    """Backpropagates sum(output * dy) (dy random per output) and stores the case."""
    dys = {k: dyadic(torch.randn(v.shape, dtype=DT)) for k, v in outputs.items() if v.requires_grad}
    loss = sum((v * dys[k]).sum() for k, v in outputs.items() if k in dys)
    grads = torch.autograd.grad(loss, [v for v in inputs.values()], allow_unused=True)
    cases.append(
        {
            "name": name,
            "op": op,
            "params": params,
            "tolerance": tolerance,
            "inputs": {k: flat(v) for k, v in inputs.items()},
            "dy": {k: flat(v) for k, v in dys.items()},
            "outputs": {k: flat(v) for k, v in outputs.items()},
            "grads": {k: flat(g) for k, g in zip(inputs, grads) if g is not None},
        }
    )


def same_padding(size, kernel, stride):
    """Keras/TensorFlow 'same': out = ceil(in / stride), the smaller half of the padding before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_ncdhw(x, pads, value=0.0):
    """pads: [(before, after)] for D, H, W; F.pad lists the last axis first."""
    (d0, d1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, d0, d1), value=value)


def conv_cases():
    specs = [
        ("conv_k3_same", 1, [4, 5, 6], 3, 4, [3, 3, 3], [1, 1, 1], "same"),
        ("conv_k133_same_stride122", 1, [4, 7, 8], 2, 3, [1, 3, 3], [1, 2, 2], "same"),
        ("conv_k3_valid_stride2", 1, [7, 6, 5], 2, 2, [3, 3, 3], [2, 2, 2], "valid"),
        ("conv_k311_same", 1, [6, 4, 5], 3, 2, [3, 1, 1], [1, 1, 1], "same"),
        ("conv_k2_same_even_kernel", 1, [4, 5, 3], 2, 2, [2, 2, 2], [1, 1, 1], "same"),
        ("conv_k3_same_stride2_odd", 1, [5, 7, 6], 2, 3, [3, 3, 3], [2, 2, 2], "same"),
    ]
    for name, n, dhw, cin, cout, k, s, padding in specs:
        x = rand(n, *dhw, cin)
        w = rand(*k, cin, cout)
        b = rand(cout)
        pads = [same_padding(dhw[a], k[a], s[a]) if padding == "same" else (0, 0) for a in range(3)]
        y = F.conv3d(pad_ncdhw(to_ncdhw(x), pads), w.permute(4, 3, 0, 1, 2), b, stride=s)
        params = {"stride": s, "padding": padding}
        record(name, "conv3d", params, {"x": x, "w": w, "b": b}, {"y": to_ndhwc(y)})


def conv_transpose_cases():
    """Cropping follows the convolution it reverses: the smaller half of the crop before; a
    target one past the full output gets an extra (bias-only) row at the end."""
    specs = [
        ("tconv_k2_s2", 1, [3, 4, 2], 4, 3, [2, 2, 2], [2, 2, 2], [6, 8, 4]),
        ("tconv_k3_s2_cropped", 1, [3, 3, 4], 2, 2, [3, 3, 3], [2, 2, 2], [6, 6, 8]),
        ("tconv_k122_s122", 1, [3, 2, 3], 3, 2, [1, 2, 2], [1, 2, 2], [3, 4, 6]),
        ("tconv_k2_s2_output_padding", 1, [2, 3, 2], 2, 2, [2, 2, 2], [2, 2, 2], [5, 6, 5]),
    ]
    for name, n, dhw, cin, cout, k, s, target in specs:
        x = rand(n, *dhw, cin)
        w = rand(*k, cout, cin)
        b = rand(cout)
        full = F.conv_transpose3d(to_ncdhw(x), w.permute(4, 3, 0, 1, 2), None, stride=s)
        for a in range(3):
            size = full.shape[2 + a]
            if target[a] >= size:
                pads = [(0, 0)] * 3
                pads[a] = (0, target[a] - size)
                full = pad_ncdhw(full, pads)
            else:
                crop = size - target[a]
                before = crop // 2
                full = full.narrow(2 + a, before, target[a])
        y = full + b.view(1, -1, 1, 1, 1)
        record(name, "conv_transpose3d", {"kernel": k, "stride": s, "target": target},
               {"x": x, "w": w, "b": b}, {"y": to_ndhwc(y)})


def dense_cases():
    x, w, b = rand(3, 5), rand(5, 4), rand(4)
    record("dense", "dense", {}, {"x": x, "w": w, "b": b}, {"y": F.linear(x, w.t(), b)})


def pool_cases():
    for kind in ["max", "avg"]:
        for name, dhw, k, s, padding in [
            ("k2_s2_valid", [5, 6, 7], [2, 2, 2], [2, 2, 2], "valid"),
            ("k3_s2_same", [5, 6, 7], [3, 3, 3], [2, 2, 2], "same"),
            ("k122_s122_valid", [3, 5, 4], [1, 2, 2], [1, 2, 2], "valid"),
        ]:
            x = rand(1, *dhw, 3)
            pads = [same_padding(dhw[a], k[a], s[a]) if padding == "same" else (0, 0) for a in range(3)]
            xt = to_ncdhw(x)
            if kind == "max":
                y = F.max_pool3d(pad_ncdhw(xt, pads, -math.inf), k, s)
            else:
                # Padded cells do not count: the window sum over the number of real cells.
                sums = F.avg_pool3d(pad_ncdhw(xt, pads), k, s, divisor_override=1)
                ones = pad_ncdhw(torch.ones_like(xt[:, :1]), pads)
                y = sums / F.avg_pool3d(ones, k, s, divisor_override=1)
            record(f"{kind}_pool_{name}", f"{kind}_pool3d", {"kernel": k, "stride": s, "padding": padding},
                   {"x": x}, {"y": to_ndhwc(y)})


def upsample_cases():
    for name, dhw, factor in [("nearest_x2", [2, 3, 4], [2, 2, 2]), ("nearest_x122", [3, 2, 3], [1, 2, 2])]:
        x = rand(1, *dhw, 3)
        size = [d * f for d, f in zip(dhw, factor)]
        y = F.interpolate(to_ncdhw(x), size=size, mode="nearest")
        record(f"upsample_{name}", "upsample_nearest3d", {"factor": factor}, {"x": x}, {"y": to_ndhwc(y)})
    for name, dhw, size in [("trilinear_x2", [2, 3, 4], [4, 6, 8]), ("trilinear_uneven", [3, 4, 5], [5, 8, 7])]:
        x = rand(1, *dhw, 2)
        y = F.interpolate(to_ncdhw(x), size=size, mode="trilinear", align_corners=False)
        record(f"upsample_{name}", "upsample_trilinear3d", {"size": size}, {"x": x}, {"y": to_ndhwc(y)})


def activation(y, act):
    if act == "relu":
        return F.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, 0.01)
    return y


def norm_cases():
    for act in ["none", "relu", "leaky_relu"]:
        x = rand(2, 2, 3, 4, 3, lo=-2.0, hi=3.0)
        g, b = rand(3, lo=0.5, hi=1.5), rand(3)
        y = F.instance_norm(to_ncdhw(x), weight=g, bias=b, eps=1e-5)
        record(f"instance_norm_{act}", "instance_norm", {"eps": 1e-5, "act": act},
               {"x": x, "gamma": g, "beta": b}, {"y": to_ndhwc(activation(y, act))})
    x = rand(2, 3, 2, 4, 4, lo=-1.0, hi=2.0)
    g, b = rand(4, lo=0.5, hi=1.5), rand(4)
    y = F.group_norm(to_ncdhw(x), 2, weight=g, bias=b, eps=1e-5)
    record("group_norm_2_groups", "group_norm", {"eps": 1e-5, "act": "none", "groups": 2},
           {"x": x, "gamma": g, "beta": b}, {"y": to_ndhwc(y)})
    # Batch norm as voxseg's layer uses it: Keras eps 1e-3 and momentum 0.99, i.e. PyTorch
    # momentum 0.01; the moving variance takes the unbiased batch variance, as in both.
    for act in ["none", "leaky_relu"]:
        x = rand(3, 2, 3, 4, 2, lo=-1.0, hi=3.0)
        g, b = rand(2, lo=0.5, hi=1.5), rand(2)
        moving_mean = dyadic(torch.rand(2, dtype=DT))
        moving_var = dyadic(torch.rand(2, dtype=DT)) + 0.5
        before_mean, before_var = moving_mean.clone(), moving_var.clone()
        y = F.batch_norm(to_ncdhw(x), moving_mean, moving_var, g, b, training=True, momentum=0.01, eps=1e-3)
        params = {"eps": 1e-3, "act": act, "momentum": 0.99,
                  "moving_mean_before": before_mean.tolist(), "moving_var_before": before_var.tolist(),
                  "moving_mean_after": moving_mean.tolist(), "moving_var_after": moving_var.tolist()}
        record(f"batch_norm_train_{act}", "batch_norm_train", params,
               {"x": x, "gamma": g, "beta": b}, {"y": to_ndhwc(activation(y, act))})
    x = rand(2, 2, 3, 3, 2)
    g, b = rand(2, lo=0.5, hi=1.5), rand(2)
    mean, var = dyadic(torch.rand(2, dtype=DT)), dyadic(torch.rand(2, dtype=DT)) + 0.5
    y = F.batch_norm(to_ncdhw(x), mean, var, g, b, training=False, eps=1e-3)
    record("batch_norm_eval", "batch_norm_eval",
           {"eps": 1e-3, "act": "none", "mean": mean.tolist(), "var": var.tolist()},
           {"x": x, "gamma": g, "beta": b}, {"y": to_ndhwc(y)})


def activation_cases():
    fns = {
        "relu": F.relu,
        "leaky_relu_0.2": lambda x: F.leaky_relu(x, 0.2),
        "elu_1": lambda x: F.elu(x, 1.0),
        "elu_0.5": lambda x: F.elu(x, 0.5),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
    }
    for name, fn in fns.items():
        x = rand(2, 2, 3, 2, 4, lo=-3.0, hi=3.0)
        record(f"act_{name}", name, {}, {"x": x}, {"y": fn(x)})


def loss_inputs(channels, classes):
    logits = rand(2, 2, 3, 4, channels, lo=-3.0, hi=3.0)
    if classes:
        labels = torch.randint(0, channels, (2, 2, 3, 4), dtype=torch.int64)
        # One sample without class 3: Dice of an absent class must be handled as MONAI does.
        labels[1][labels[1] == channels - 1] = 0
        return logits, labels
    return logits, (torch.rand(2, 2, 3, 4, channels, dtype=DT) < 0.4).to(DT)


def monai_dice(logits, target, classes):
    """MONAI's soft Dice with nnU-Net's smoothing 1e-5 in numerator and denominator; the
    background left out for softmax classes, every channel scored for sigmoid regions."""
    if classes:
        loss = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)
        return loss(to_ncdhw(logits), target.unsqueeze(1))
    loss = DiceLoss(sigmoid=True, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)
    return loss(to_ncdhw(logits), to_ncdhw(target))


def label_input(labels):
    return flat(labels.to(DT))


def loss_cases():
    def add(name, spec, logits, target, value, classes, extra=None, tolerance=TIGHT):
        record(name, "loss", {"spec": spec, "target_kind": "classes" if classes else "regions", **(extra or {})},
               {"logits": logits}, {"loss": value.reshape([])}, tolerance)
        cases[-1]["target"] = label_input(target) if classes else flat(target)

    for classes in [False, True]:
        kind = "classes" if classes else "regions"
        logits, target = loss_inputs(4 if classes else 3, classes)
        ce = F.cross_entropy(to_ncdhw(logits), target) if classes else F.binary_cross_entropy_with_logits(logits, target)
        add(f"loss_dice_ce_{kind}", {"kind": "dice_ce"}, logits, target, monai_dice(logits, target, classes) + ce, classes)
        logits, target = loss_inputs(4 if classes else 3, classes)
        add(f"loss_dice_{kind}", {"kind": "dice"}, logits, target, monai_dice(logits, target, classes), classes)

    logits, target = loss_inputs(3, False)
    add("loss_bce", {"kind": "bce"}, logits, target, F.binary_cross_entropy_with_logits(logits, target), False)
    logits, target = loss_inputs(3, False)
    pos = torch.tensor(5.0, dtype=DT)
    add("loss_wbce_5", {"kind": "wbce", "pos_weight": 5.0}, logits, target,
        F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos), False)
    logits, target = loss_inputs(3, False)
    weight_map = dyadic(torch.rand(2, 2, 3, 4, 1, dtype=DT) * 3.0)
    add("loss_bce_weight_map_pos_weight_2", {"kind": "bce_weight_map", "pos_weight": 2.0}, logits, target,
        F.binary_cross_entropy_with_logits(logits, target, weight=weight_map, pos_weight=torch.tensor(2.0, dtype=DT)),
        False, {"weight_map": flat(weight_map)})
    logits, labels = loss_inputs(4, True)
    add("loss_ce", {"kind": "ce"}, logits, labels, F.cross_entropy(to_ncdhw(logits), labels), True)
    logits, labels = loss_inputs(4, True)
    w = [0.2, 1.0, 2.5, 4.0]
    add("loss_ce_class_weights", {"kind": "ce_class_weights", "class_weights": w}, logits, labels,
        F.cross_entropy(to_ncdhw(logits), labels, weight=torch.tensor(w, dtype=DT)), True)
    for kind, fn in [("mse", F.mse_loss), ("mae", F.l1_loss)]:
        logits = rand(2, 2, 3, 4, 2, lo=-3.0, hi=3.0)
        target = dyadic(torch.rand(2, 2, 3, 4, 2, dtype=DT))
        add(f"loss_{kind}", {"kind": kind}, logits, target, fn(torch.sigmoid(logits), target), False)
    # MONAI computes SSIM in float32 whatever it is given: its precision sets the tolerance.
    logits = rand(1, 8, 9, 9, 2, lo=-3.0, hi=3.0)
    target = dyadic(torch.rand(1, 8, 9, 9, 2, dtype=DT))
    ssim, _ = compute_ssim_and_cs(to_ncdhw(torch.sigmoid(logits)), to_ncdhw(target), 3, [7, 7, 7], [1.5, 1.5, 1.5],
                                  data_range=1.0, k1=0.01, k2=0.03)
    add("loss_ssim_gaussian7", {"kind": "ssim"}, logits, target, 1.0 - ssim.to(DT).mean(), False, tolerance=2e-5)


def unet_case():
    """nnU-Net's PlainConvUNet with anisotropic first stages, weights in voxseg's names and
    layouts. Two conventions differ and are bridged here, not hidden: voxseg pads strided
    convolutions as Keras 'same' (nnU-Net pads (k - 1) / 2 on both sides), so a hook pads
    those inputs Keras' way; voxseg concatenates (skip, upsampled) where nnU-Net
    concatenates (upsampled, skip), so the decoder's first kernels swap their input
    halves. Biases of convolutions followed by instance norm are random: the norm cancels
    them, and voxseg has none. voxseg's transposed convolutions have no bias: zero here."""
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    kernels = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    features = [2, 4, 4, 4]
    net = PlainConvUNet(2, 4, features, torch.nn.Conv3d, kernels, strides, 2, 3, 2, conv_bias=True,
                        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"negative_slope": 0.01},
                        deep_supervision=True).to(DT)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(dyadic(torch.rand(p.shape, dtype=DT) + 0.5))
            elif name.startswith("decoder.transpconvs") and name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(dyadic(torch.rand(p.shape, dtype=DT) - 0.5))
    for s, stride in enumerate(strides):
        conv = net.encoder.stages[s][0].convs[0].conv
        if stride != [1, 1, 1]:
            conv.padding = (0, 0, 0)
            conv.register_forward_pre_hook(
                lambda m, args: (pad_ncdhw(args[0], [same_padding(args[0].shape[2 + a], m.kernel_size[a], m.stride[a])
                                                     for a in range(3)]),))

    # voxseg's name -> (PyTorch parameter, its layout as a function of voxseg's tensor)
    mapping = {}
    def conv(ours, theirs, swap_halves=False):
        weight = dict(net.named_parameters())[theirs]
        def to_ours(w):
            w = w.permute(2, 3, 4, 1, 0)  # [cout, cin, kd, kh, kw] -> [kd, kh, kw, cin, cout]
            if swap_halves:
                half = w.shape[3] // 2
                w = torch.cat([w[:, :, :, half:], w[:, :, :, :half]], dim=3)
            return w
        mapping[ours] = (weight, to_ours)
    def plain(ours, theirs):
        mapping[ours] = (dict(net.named_parameters())[theirs], lambda t: t)
    for s in range(4):
        for i in range(2):
            conv(f"encoder.{s}.block{i}.conv.weight", f"encoder.stages.{s}.0.convs.{i}.conv.weight")
            plain(f"encoder.{s}.block{i}.norm.gamma", f"encoder.stages.{s}.0.convs.{i}.norm.weight")
            plain(f"encoder.{s}.block{i}.norm.beta", f"encoder.stages.{s}.0.convs.{i}.norm.bias")
    for j in range(3):
        s = 2 - j  # nnU-Net counts decoder stages from the bottom
        up = dict(net.named_parameters())[f"decoder.transpconvs.{j}.weight"]
        mapping[f"up.{s}.weight"] = (up, lambda w: w.permute(2, 3, 4, 1, 0))  # [cin, cout, k] -> [k, cout, cin]
        for i in range(2):
            conv(f"decoder.{s}.block{i}.conv.weight", f"decoder.stages.{j}.convs.{i}.conv.weight", swap_halves=i == 0)
            plain(f"decoder.{s}.block{i}.norm.gamma", f"decoder.stages.{j}.convs.{i}.norm.weight")
            plain(f"decoder.{s}.block{i}.norm.beta", f"decoder.stages.{j}.convs.{i}.norm.bias")
    # voxseg's heads: full resolution and the auxiliary ones above the lowest decoder stage.
    for s in range(2):
        conv(f"head.{s}.weight", f"decoder.seg_layers.{2 - s}.weight")
        plain(f"head.{s}.bias", f"decoder.seg_layers.{2 - s}.bias")

    x = rand(1, 8, 8, 8, 2, lo=-2.0, hi=2.0)
    outputs = net(to_ncdhw(x))
    dys = [dyadic(torch.randn(o.shape, dtype=DT)) for o in outputs[:2]]
    loss = sum((o * dy).sum() for o, dy in zip(outputs, dys))
    # Gradients of the input and of one parameter of each kind and place (all of them
    # would double the fixture).
    checked = ["encoder.0.block0.conv.weight", "encoder.1.block0.conv.weight", "encoder.3.block1.norm.gamma",
               "up.2.weight", "decoder.0.block0.conv.weight", "decoder.1.block0.norm.beta", "head.0.weight",
               "head.1.bias"]
    grads = torch.autograd.grad(loss, [x] + [mapping[k][0] for k in checked])
    data = {
        "header": header(),
        "config": {"in_channels": 2, "out_channels": 3, "features": features, "strides": strides,
                   "kernels": kernels, "eps": 1e-5, "slope": 0.01},
        "x": flat(x),
        "params": {k: flat(f(p)) for k, (p, f) in mapping.items()},
        "dy": [flat(to_ndhwc(dy)) for dy in dys],
        "outputs": [flat(to_ndhwc(o)) for o in outputs[:2]],
        "grad_x": flat(grads[0]),
        "grads": {k: flat(mapping[k][1](g)) for k, g in zip(checked, grads[1:])},
    }
    write(UNET_OUT, data)


def header():
    return {
        "generator": "scripts/torch_reference.py",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "dynamic_network_architectures": "0.4.4",
        "layouts": "NDHWC tensors; conv kernels [kd,kh,kw,cin,cout]; transposed [kd,kh,kw,cout,cin]; dense [in,out]",
    }


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    tmp.replace(path)
    print(f"{path}: {path.stat().st_size} bytes")


conv_cases()
conv_transpose_cases()
dense_cases()
pool_cases()
upsample_cases()
norm_cases()
activation_cases()
loss_cases()

write(OUT, {"header": header(), "cases": cases})
unet_case()
