// Parameters of the fused optimiser updates (kernels/optim_step.cu); mirrored by
// src/backend/cuda/params_optim_step.rs. The semantics are SgdHyper and AdamHyper's in
// src/tensor_ops/optim_step.
#pragma once

struct SgdKernelParams {
    unsigned long long n;
    double lr;
    double momentum;
    double weight_decay;
    unsigned nesterov;
    unsigned pad_;
};

struct AdamKernelParams {
    unsigned long long n;
    double lr;
    double beta1;
    double beta2;
    double eps;
    double l2;
    double decoupled_decay;
    double bias_correction1;
    double bias_correction2;
    unsigned lazy;
    unsigned pad_;
};
