#!/usr/bin/env python3
"""PyTorch reference values for voxseg's optimisers, learning-rate schedules, gradient
clipping and L1/L2 penalties, written to tests/fixtures/optim_reference.json and checked by
src/optim/torch_reference_tests.rs.

Regenerate from the repository root with a Python that has torch and numpy (any CPU build):

    python scripts/optim_reference.py            # writes tests/fixtures/optim_reference.json
    python scripts/optim_reference.py --out F    # elsewhere

Everything runs in float64 with fixed seeds, so the same torch version writes the same file;
the header records the versions used. Floats are written with Python's shortest round-trip
repr. In a validation-loss list, null stands for NaN (JSON has no NaN).

Where voxseg follows the same convention as torch, torch's own classes compute the values.
Where voxseg documents another convention, the script computes that one explicitly and the
fixture's "torch" note for the case says how:
  * Weight decay (SGD, Adam's L2 term, AdamW) applies only to parameters marked `decay`
    (kernels, not biases or norm scales): a param group with weight_decay 0 for the others.
    nnU-Net decays every parameter.
  * One global step count (Keras' `iterations`) drives Adam's bias corrections, also for a
    parameter that had no gradient in some step; torch counts steps per parameter. The
    script sets each torch state's `step` to the global count before every step.
  * lazy_adam skips the entries whose gradient is exactly zero, with PyTorch's eps placement
    `lr * m_hat / (sqrt(v_hat) + eps)`. torch.optim.SparseAdam skips the same entries of a
    sparse gradient but places eps as `lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps)`; running it
    with eps * sqrt(1 - beta2^t) at step t gives voxseg's placement.
  * reduce_on_plateau is Keras' ReduceLROnPlateau with min_delta 0 and no cooldown: a
    reduction after `patience` validations in a row without a strictly lower loss. That is
    torch's ReduceLROnPlateau with patience - 1, threshold 0, cooldown 0 and eps 0 (torch
    skips reductions smaller than its eps, 1e-8 by default).
  * Cosine with a warm-up is torch's SequentialLR of LinearLR(1 / w -> 1 over w - 1 epochs)
    and CosineAnnealingLR(T_max = max_epochs - w).
  * Gradient clipping scales by max_norm / norm when norm > max_norm (TensorFlow's
    clip_by_global_norm); torch's clip_grad_norm_ always scales by
    min(1, max_norm / (norm + 1e-6)). Both are recorded.
  * L1/L2 penalties are Keras' `l1 * sum|w| + l2 * sum w^2` (the L2 gradient is 2 l2 w, as
    torch weight_decay = 2 l2), summed over the `decay` parameters; torch autograd gives
    the penalty's gradient.
"""

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "optim_reference.json"


def floats(t):
    return [float(x) for x in torch.as_tensor(t).reshape(-1).tolist()]


def make_params(rng, sizes):
    """Parameters named w (decays) and b (does not), with values drawn from `rng`."""
    names = [("w", True), ("b", False), ("w2", True)]
    return [
        {"name": n, "decay": d, "init": [float(x) for x in rng.normal(size=k)]}
        for (n, d), k in zip(names, sizes)
    ]


def make_grads(rng, params, steps, zero_frac=0.0, tiny=False, missing=()):
    """One gradient per parameter per step: normal draws, a fraction of exact zeros, the last
    entry of the first parameter scaled to 1e-8 when `tiny` (so Adam's eps placement shows),
    and None for the (step, parameter index) pairs in `missing`."""
    out = []
    for s in range(steps):
        row = []
        for i, p in enumerate(params):
            if (s, i) in missing:
                row.append(None)
                continue
            g = rng.normal(size=len(p["init"]))
            g[rng.random(size=g.shape) < zero_frac] = 0.0
            if tiny and i == 0:
                g[-1] *= 1e-8
            row.append([float(x) for x in g])
        out.append(row)
    return out


def torch_groups(tensors, params, weight_decay):
    """Param groups: weight decay on the `decay` parameters only (voxseg's convention)."""
    decay = [t for t, p in zip(tensors, params) if p["decay"]]
    other = [t for t, p in zip(tensors, params) if not p["decay"]]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]


def run_optimizer(case):
    """Runs the torch optimiser of `case` over its gradients; fills in the steps and state."""
    params = case["params"]
    tensors = [torch.tensor(p["init"]) for p in params]
    spec = case["spec"]
    kind = spec["kind"]
    lrs = case.pop("lrs")
    grads = case.pop("grads")
    if kind == "sgd":
        opt = torch.optim.SGD(
            torch_groups(tensors, params, spec["weight_decay"]),
            lr=lrs[0],
            momentum=spec["momentum"],
            nesterov=spec["nesterov"],
            dampening=0.0,
        )
    elif kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls(
            torch_groups(tensors, params, spec["weight_decay"]),
            lr=lrs[0],
            betas=(spec["beta1"], spec["beta2"]),
            eps=spec["eps"],
        )
    elif kind == "lazy_adam":
        opt = torch.optim.SparseAdam(
            tensors, lr=lrs[0], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"]
        )
    else:
        raise ValueError(kind)
    steps = []
    for t, (lr, row) in enumerate(zip(lrs, grads), start=1):
        for group in opt.param_groups:
            group["lr"] = lr
            if kind == "lazy_adam":
                group["eps"] = spec["eps"] * math.sqrt(1.0 - spec["beta2"] ** t)
        for x, g in zip(tensors, row):
            if g is None:
                x.grad = None
            elif kind == "lazy_adam":
                x.grad = torch.tensor(g).to_sparse()
            else:
                x.grad = torch.tensor(g)
        if kind != "sgd":
            # The global step count: torch's per-parameter count skips steps without a gradient.
            for state in opt.state.values():
                if torch.is_tensor(state["step"]):
                    state["step"].fill_(t - 1)
                else:
                    state["step"] = t - 1
        opt.step()
        steps.append({"lr": lr, "grads": row, "params": [floats(x) for x in tensors]})
    state = {"step": float(len(lrs))}
    for x, p in zip(tensors, params):
        for slot, value in opt.state[x].items():
            if slot != "step" and value is not None:
                state[f"{p['name']}.{slot}"] = floats(value)
    case["steps"] = steps
    case["state"] = state
    return case


def optimizer_cases():
    poly = [0.01 * (1 - e / 8) ** 0.9 for e in range(8)]
    cases = []

    def add(name, spec, torch_note, sizes, lrs, seed, **grad_kw):
        rng = np.random.default_rng(seed)
        params = make_params(rng, sizes)
        cases.append(
            {
                "name": name,
                "spec": spec,
                "torch": torch_note,
                "params": params,
                "lrs": lrs,
                "grads": make_grads(rng, params, len(lrs), **grad_kw),
            }
        )

    sgd_note = "torch.optim.SGD, dampening 0, weight_decay on the decay params only"
    add(
        "sgd_nnunet_poly_lr",
        {"kind": "sgd", "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
        sgd_note,
        [5, 3],
        poly,
        1,
    )
    add(
        "sgd_nesterov_strong_decay_missing_grad",
        {"kind": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        sgd_note,
        [4, 2, 3],
        [0.1] * 3 + [0.05] * 4,
        2,
        zero_frac=0.2,
        missing={(2, 1), (4, 2)},
    )
    add(
        "sgd_classical_momentum",
        {"kind": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.05},
        sgd_note,
        [4, 2],
        [0.1] * 4 + [0.02] * 3,
        3,
    )
    add(
        "sgd_plain",
        {"kind": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.01},
        sgd_note,
        [3, 2],
        [0.5, 0.5, 0.25, 0.25, 0.1],
        4,
    )
    adam_note = (
        "torch.optim.{}, weight_decay on the decay params only, state step set to the global "
        "step count before each step"
    )
    add(
        "adam_keras_defaults_tiny_grad",
        {"kind": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
        adam_note.format("Adam"),
        [5, 3],
        [1e-3] * 4 + [5e-4] * 4,
        5,
        zero_frac=0.15,
        tiny=True,
    )
    add(
        "adam_l2_missing_grad",
        {"kind": "adam", "beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1},
        adam_note.format("Adam"),
        [4, 3, 2],
        [0.05] * 3 + [0.01] * 4,
        6,
        zero_frac=0.2,
        missing={(1, 0), (3, 1), (4, 1)},
    )
    add(
        "adamw_keras_defaults",
        {"kind": "adamw", "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.004},
        adam_note.format("AdamW"),
        [5, 3],
        [1e-3] * 3 + [1e-4] * 3,
        7,
        tiny=True,
    )
    add(
        "adamw_strong_decay_missing_grad",
        {"kind": "adamw", "beta1": 0.85, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.3},
        adam_note.format("AdamW"),
        [4, 2, 3],
        [0.1] * 3 + [0.03] * 4,
        8,
        zero_frac=0.2,
        missing={(2, 2), (3, 0)},
    )
    add(
        "lazy_adam_sparse_grads",
        {"kind": "lazy_adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
        "torch.optim.SparseAdam on the gradients' non-zero entries (dense.to_sparse()), eps "
        "* sqrt(1 - beta2^t) at step t for voxseg's eps placement, state step set to the "
        "global step count before each step",
        [6, 3],
        [0.01] * 4 + [0.002] * 4,
        9,
        zero_frac=0.4,
        tiny=True,
        missing={(5, 1)},
    )
    return [run_optimizer(c) for c in cases]


def scheduler_lrs(make, base_lr, epochs):
    """The lr of epochs 0..=epochs under a torch scheduler stepped once per epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = make(opt)
    lrs = []
    for _ in range(epochs + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def schedule_cases():
    lr_sched = torch.optim.lr_scheduler
    cases = []
    for base, epochs, exponent in [(0.01, 50, 0.9), (0.3, 12, 2.0)]:
        cases.append(
            {
                "name": f"poly_{exponent}",
                "spec": {"kind": "poly", "exponent": exponent},
                "torch": "PolynomialLR(total_iters=max_epochs, power=exponent); nnunet_lr is "
                "nnU-Net's PolyLRScheduler: lr0 * (1 - epoch / max_epochs) ** exponent",
                "base_lr": base,
                "max_epochs": epochs,
                "lr": scheduler_lrs(
                    lambda o: lr_sched.PolynomialLR(o, total_iters=epochs, power=exponent),
                    base,
                    epochs,
                ),
                "nnunet_lr": [base * (1 - e / epochs) ** exponent for e in range(epochs + 1)],
            }
        )
    cases.append(
        {
            "name": "constant",
            "spec": {"kind": "constant"},
            "torch": "LambdaLR(lambda e: 1.0)",
            "base_lr": 0.02,
            "max_epochs": 5,
            "lr": scheduler_lrs(lambda o: lr_sched.LambdaLR(o, lambda e: 1.0), 0.02, 5),
        }
    )
    for base, epochs, every, gamma in [(0.01, 100, 30, 0.1), (0.4, 20, 3, 0.5)]:
        cases.append(
            {
                "name": f"step_{every}_{gamma}",
                "spec": {"kind": "step", "every": every, "gamma": gamma},
                "torch": "StepLR(step_size=every, gamma=gamma)",
                "base_lr": base,
                "max_epochs": epochs,
                "lr": scheduler_lrs(
                    lambda o: lr_sched.StepLR(o, step_size=every, gamma=gamma), base, epochs
                ),
            }
        )
    cases.append(
        {
            "name": "cosine",
            "spec": {"kind": "cosine", "warmup_epochs": 0},
            "torch": "CosineAnnealingLR(T_max=max_epochs, eta_min=0)",
            "base_lr": 0.1,
            "max_epochs": 40,
            "lr": scheduler_lrs(lambda o: lr_sched.CosineAnnealingLR(o, T_max=40), 0.1, 40),
        }
    )
    w, epochs = 5, 40

    def warm_cosine(o):
        warm = lr_sched.LinearLR(o, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)
        cos = lr_sched.CosineAnnealingLR(o, T_max=epochs - w)
        return lr_sched.SequentialLR(o, [warm, cos], milestones=[w])

    cases.append(
        {
            "name": "cosine_warmup",
            "spec": {"kind": "cosine", "warmup_epochs": w},
            "torch": "SequentialLR([LinearLR(start_factor=1/w, end_factor=1, total_iters=w-1), "
            "CosineAnnealingLR(T_max=max_epochs-w)], milestones=[w])",
            "base_lr": 0.1,
            "max_epochs": epochs,
            "lr": scheduler_lrs(warm_cosine, 0.1, epochs),
        }
    )
    plateaus = [
        ("plateau_small", 1.0, 0.5, 2, 0.2,
         [1.0, 0.9, 0.95, 0.9, 0.8, 0.85, 0.81, 0.9, 0.9, 0.9, 0.9]),
        ("plateau_keras_defaults", 1e-3, 0.1, 10, 0.0,
         [1.0 - 0.01 * e for e in range(6)] + [0.96] * 12 + [0.9] + [0.95] * 25),
        ("plateau_nan_first", 0.1, 0.5, 3, 1e-4,
         [math.nan, 0.8, 0.7, math.nan, 0.7, 0.75, 0.6, math.nan, math.nan, math.nan, 0.6,
          0.61, 0.62, 1e30, 0.5]),
        ("plateau_patience_one_to_floor", 0.01, 0.3, 1, 1e-4,
         [0.5, 0.4, 0.4, 0.41, 0.39, 0.39, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
    ]
    for name, base, factor, patience, min_lr, losses in plateaus:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
        sched = lr_sched.ReduceLROnPlateau(
            opt,
            mode="min",
            factor=factor,
            patience=patience - 1,
            threshold=0.0,
            threshold_mode="rel",
            cooldown=0,
            min_lr=min_lr,
            eps=0.0,
        )
        lrs = [opt.param_groups[0]["lr"]]
        for loss in losses:
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
        cases.append(
            {
                "name": name,
                "spec": {"kind": "reduce_on_plateau", "factor": factor, "patience": patience,
                         "min_lr": min_lr},
                "torch": "ReduceLROnPlateau(mode='min', factor, patience=patience-1, "
                "threshold=0, cooldown=0, min_lr, eps=0), stepped with each loss; lr[e] is "
                "the rate before observing losses[e]",
                "base_lr": base,
                "max_epochs": len(losses),
                "val_losses": [None if math.isnan(x) else x for x in losses],
                "lr": lrs,
            }
        )
    return cases


def clip_case(name, max_norm, grads):
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    norm = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    scale = max_norm / norm if norm > max_norm else 1.0
    return {
        "name": name,
        "max_norm": max_norm,
        "grads": grads,
        "norm": norm,
        "torch_clipped": [floats(t.grad) for t in tensors],
        "clipped": [[g * scale for g in row] for row in grads],
    }


def clip_cases():
    rng = np.random.default_rng(10)
    big = [[float(x) for x in rng.normal(scale=6.0, size=k)] for k in (7, 1, 4, 9)]
    small = [[float(x) for x in rng.normal(scale=0.1, size=k)] for k in (5, 3)]
    return [
        clip_case("three_four_twelve", 6.5, [[3.0, 4.0], [12.0]]),
        clip_case("nnunet_12_clipped", 12.0, big),
        clip_case("under_the_max", 12.0, small),
        clip_case("empty_tensor_among_others", 0.5, [[], [0.3, -0.4, 1.2], [0.0]]),
    ]


def penalty_case(l1, l2, params):
    tensors = [torch.tensor(p["value"], requires_grad=True) for p in params]
    total = torch.zeros(())
    for t, p in zip(tensors, params):
        if p["decay"]:
            total = total + l1 * t.abs().sum() + l2 * t.square().sum()
    total.backward()
    return {
        "l1": l1,
        "l2": l2,
        "params": params,
        "penalty": float(total.detach()),
        "grads": [floats(t.grad) if t.grad is not None else None for t in tensors],
    }


def penalty_cases():
    rng = np.random.default_rng(11)
    params = [
        {"name": "conv.weight", "decay": True,
         "value": [0.0] + [float(x) for x in rng.normal(size=6)]},
        {"name": "conv.bias", "decay": False, "value": [float(x) for x in rng.normal(size=3)]},
        {"name": "dense.weight", "decay": True, "value": [float(x) for x in rng.normal(size=4)]},
    ]
    return [penalty_case(l1, l2, params) for l1, l2 in [(0.3, 0.07), (0.0, 0.01), (1e-4, 0.0)]]


def train_steps_case():
    """train::run's order on a linear loss: loss + penalty, backward, clip, SGD step, with
    the lr from nnU-Net's poly schedule per step (one step an epoch)."""
    rng = np.random.default_rng(12)
    spec = {"kind": "sgd", "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5}
    params = make_params(rng, [5, 3])
    l1, l2, max_norm, epochs, base = 1e-3, 1e-2, 1.5, 6, 0.01
    tensors = [torch.tensor(p["init"], requires_grad=True) for p in params]
    opt = torch.optim.SGD(
        torch_groups(tensors, params, spec["weight_decay"]), lr=base, momentum=0.99, nesterov=True
    )
    steps = []
    for epoch in range(epochs):
        lr = base * (1 - epoch / epochs) ** 0.9
        coefs = [[float(x) for x in rng.normal(size=len(p["init"]))] for p in params]
        opt.zero_grad()
        loss = sum((t * torch.tensor(c)).sum() for t, c in zip(tensors, coefs))
        for t, p in zip(tensors, params):
            if p["decay"]:
                loss = loss + l1 * t.abs().sum() + l2 * t.square().sum()
        loss.backward()
        norm = float(torch.linalg.vector_norm(torch.cat([t.grad for t in tensors])))
        if norm > max_norm:
            with torch.no_grad():
                for t in tensors:
                    t.grad.mul_(max_norm / norm)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        steps.append(
            {"lr": lr, "loss_coefficients": coefs, "norm": norm,
             "params": [floats(t.detach()) for t in tensors]}
        )
    return {
        "spec": spec,
        "schedule": {"kind": "poly", "exponent": 0.9},
        "base_lr": base,
        "max_epochs": epochs,
        "l1": l1,
        "l2": l2,
        "max_norm": max_norm,
        "torch": "loss = sum(c * p) + l1 sum|w| + l2 sum w^2 (decay params), autograd, clip by "
        "max_norm / norm when norm > max_norm (computed explicitly), torch.optim.SGD",
        "params": params,
        "steps": steps,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    fixture = {
        "generated_by": "scripts/optim_reference.py",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "dtype": "float64",
        "optimizers": optimizer_cases(),
        "schedules": schedule_cases(),
        "clip": clip_cases(),
        "penalties": penalty_cases(),
        "train_steps": train_steps_case(),
    }
    text = json.dumps(fixture, indent=1, allow_nan=False) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
