// Parameters of the binary cross-entropy kernels (kernels/bce.cu); mirrored by
// src/backend/cuda/params_bce.rs.
#pragma once

// Threads of the loss reduction blocks (block_sum.h; bce.cu and cross_entropy.cu).
constexpr int VX_SUM_THREADS = 256;

struct BceKernelParams {
    unsigned long long n;             // logits (= targets)
    unsigned long long weight_group;  // elements per weight (weight index = i / group)
    double pos_weight;
    double scale;                     // loss = scale * sum_i w_i l_i
    unsigned has_weight;
    unsigned pad_;
};
