// Inverted dropout, as DropoutKernel in src/tensor_ops/dropout: the mask is
// uniform_at(seed, stream, index) >= threshold through the Philox of philox.h, bit for bit
// the CPU's draw, so the same (seed, stream) drops the same elements on either backend.
#include "philox.h"

extern "C" __global__ void __launch_bounds__(256)
    dropout_apply(const DropoutKernelParams p, const float* __restrict__ x, float* __restrict__ y) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride()) {
        const unsigned long long index =
            p.spatial ? (i / p.example_len) * p.channels + i % p.channels : i;
        const bool keep = vx_uniform_at(p.seed, p.stream, index) >= p.threshold;
        // A product, not a select, so a NaN in a dropped element still shows (as on the CPU).
        y[i] = x[i] * (keep ? p.scale : 0.0f);
    }
}
VX_EMU_ENTRY(dropout_apply, (const DropoutKernelParams p, const float* x, float* y), (p, x, y))
