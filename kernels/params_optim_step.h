// Parameters of the multi-tensor optimiser kernels (kernels/optim_step.cu); mirrored by
// src/backend/cuda/params_optim_step.rs. The update semantics are SgdHyper and AdamHyper's
// in src/tensor_ops/optim_step.
#pragma once

// Threads of every optim_step block; the sum-of-squares kernels use vx_block_sum, which
// needs VX_SUM_THREADS (static_assert in optim_step.cu).
constexpr int VX_OPTIM_THREADS = 256;

// One tensor of a multi-tensor launch, in a table uploaded per launch: device addresses
// (0 where unused) and where its chunks start in the grid.
struct OptimTensor {
    unsigned long long param;   // the tensor updated, scaled or summed
    unsigned long long grad;
    unsigned long long state0;  // momentum buffer, or Adam's first moment
    unsigned long long state1;  // Adam's second moment
    unsigned long long n;       // elements (never 0: empty tensors are left out)
    unsigned long long first_chunk;  // chunks of the tensors before this one
    unsigned decay;             // 1 when weight decay applies to this tensor
    unsigned pad_;
};

// The table's shape: `tensors` entries, each cut into chunks of `chunk` elements, one block
// per chunk (`chunks` in all, the grid).
struct OptimTableParams {
    unsigned long long chunk;
    unsigned tensors;
    unsigned chunks;
};

// Weight decay applies to the tensors whose entry has `decay` set, 0 to the others.
struct SgdKernelParams {
    OptimTableParams table;
    double lr;
    double momentum;
    double weight_decay;
    unsigned nesterov;
    unsigned pad_;
};

// `l2` and `decoupled_decay` apply to the tensors whose entry has `decay` set.
struct AdamKernelParams {
    OptimTableParams table;
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

struct ScaleKernelParams {
    OptimTableParams table;
    float factor;
    unsigned pad_;
};
