// Parameters of the normalisation kernels (kernels/norm.cu); mirrored by
// src/backend/cuda/params_norm.rs.
//
// Batch and group norm share one view of the NDHWC input: [outer, mid, c] with
// outer = 1, mid = N * D * H * W for batch norm (statistics over every example) and
// outer = N, mid = D * H * W for group norm. Statistic s = o * (c / cpg) + ch / cpg covers
// the channels ch of one group of `cpg` channels (1 for batch norm) in outer slice o.
#pragma once

struct NormKernelParams {
    unsigned long long outer;
    unsigned long long mid;
    unsigned long long c;
    unsigned long long cpg;  // channels per statistic
    double eps;
    float neg_slope;  // fused activation below zero: 1 none, 0 ReLU, s LeakyReLU(s)
    unsigned has_gamma;
    unsigned has_beta;
    unsigned fixed_stats;  // statistics were given (eval): no gradient through them
};

// What norm_backward_finish writes: bits of its `grads` argument.
#define VX_NORM_GRAD_DX 1u
#define VX_NORM_GRAD_GAMMA 2u
#define VX_NORM_GRAD_BETA 4u

// moving[i] = momentum * moving[i] + (1 - momentum) * correction * batch[i].
struct NormMovingParams {
    unsigned long long n;
    double momentum;
    double correction;
};
