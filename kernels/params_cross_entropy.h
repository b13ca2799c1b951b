// Parameters of the softmax cross-entropy and one-hot kernels (kernels/cross_entropy.cu);
// mirrored by src/backend/cuda/params_cross_entropy.rs.
#pragma once

struct CrossEntropyKernelParams {
    unsigned long long rows;     // labels (one per row of logits)
    unsigned long long classes;  // logits per row
    unsigned has_weights;        // class weights given
    unsigned pad_;
};
