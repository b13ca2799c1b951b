// Parameters of the dropout kernel (kernels/dropout.cu); mirrored by
// src/backend/cuda/params_dropout.rs.
#pragma once

// Element i is kept when uniform_at(seed, stream, index(i)) >= threshold, where index(i)
// is i, or (i / example_len) * channels + i % channels for spatial dropout.
struct DropoutKernelParams {
    unsigned long long seed;
    unsigned long long n;
    unsigned long long channels;
    unsigned long long example_len;
    float threshold;
    float scale;  // 1 / (1 - p), applied to kept elements
    unsigned stream;
    unsigned spatial;
};
