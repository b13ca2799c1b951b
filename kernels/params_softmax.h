// Parameters of the softmax kernels (kernels/softmax.cu); mirrored by
// src/backend/cuda/params_softmax.rs.
#pragma once

struct SoftmaxKernelParams {
    unsigned long long rows;
    unsigned long long channels;  // contiguous values per row
    unsigned log;                 // 1 for log-softmax, 0 for softmax
    unsigned pad_;
};
