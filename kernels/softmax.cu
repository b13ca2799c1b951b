// Softmax and log-softmax over rows of contiguous channels, as SoftmaxKernel in
// src/tensor_ops/softmax: one thread per row, in f32 with the CPU's order of operations
// (the maximum, then exp(x - max) summed left to right, then the division or the log).
#include "common.h"

extern "C" __global__ void __launch_bounds__(256)
    softmax_forward(const SoftmaxKernelParams p, const float* __restrict__ x,
                    float* __restrict__ y) {
    const unsigned long long cn = p.channels;
    for (unsigned long long r = vx_thread_index(); r < p.rows; r += vx_thread_stride()) {
        const float* xr = x + r * cn;
        float* yr = y + r * cn;
        float max = -INFINITY;
        for (unsigned long long k = 0; k < cn; ++k) max = fmaxf(max, xr[k]);
        float total = 0.0f;
        for (unsigned long long k = 0; k < cn; ++k) {
            const float e = expf(xr[k] - max);
            yr[k] = e;
            total += e;
        }
        if (p.log) {
            const float log_total = logf(total);
            for (unsigned long long k = 0; k < cn; ++k) yr[k] = xr[k] - max - log_total;
        } else {
            for (unsigned long long k = 0; k < cn; ++k) yr[k] = yr[k] / total;
        }
    }
}
VX_EMU_ENTRY(softmax_forward, (const SoftmaxKernelParams p, const float* x, float* y), (p, x, y))

// dx = y (dy - sum(dy y)) for softmax, dy - exp(y) sum(dy) for log-softmax.
extern "C" __global__ void __launch_bounds__(256)
    softmax_backward(const SoftmaxKernelParams p, const float* __restrict__ y,
                     const float* __restrict__ dy, float* __restrict__ dx) {
    const unsigned long long cn = p.channels;
    for (unsigned long long r = vx_thread_index(); r < p.rows; r += vx_thread_stride()) {
        const float* yr = y + r * cn;
        const float* gr = dy + r * cn;
        float* dr = dx + r * cn;
        float total = 0.0f;
        if (p.log) {
            for (unsigned long long k = 0; k < cn; ++k) total += gr[k];
            for (unsigned long long k = 0; k < cn; ++k) dr[k] = gr[k] - expf(yr[k]) * total;
        } else {
            for (unsigned long long k = 0; k < cn; ++k) total += yr[k] * gr[k];
            for (unsigned long long k = 0; k < cn; ++k) dr[k] = yr[k] * (gr[k] - total);
        }
    }
}
VX_EMU_ENTRY(softmax_backward,
             (const SoftmaxKernelParams p, const float* y, const float* dy, float* dx),
             (p, y, dy, dx))
