// One axis of the separable 'valid' window filter behind SSIM (src/tensor_ops/ssim), over a
// tensor viewed as [outer, len, inner], and its adjoint. The launcher runs three passes
// (W, H, D forward; D, H, W backward) through f32 intermediates, as the CPU backend does,
// with the taps in the same order.
#include "spatial.h"

// y[o, i, j] = sum_t taps[t] x[o, i + t, j] for i < len - k + 1.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    window_filter_axis(const __grid_constant__ WindowAxisParams p, const float* __restrict__ x,
                       float* __restrict__ y) {
    const unsigned out_len = p.len + 1 - p.k;
    const unsigned long long total =
        static_cast<unsigned long long>(p.outer) * out_len * p.inner;
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const unsigned j = e % p.inner;
        const unsigned row = e / p.inner;
        const unsigned o = row / out_len;
        const unsigned at = row - o * out_len;
        const float* src = x + (o * p.len + at) * p.inner + j;
        float acc = 0.0f;
        for (unsigned t = 0; t < p.k; ++t) acc += p.taps[t] * src[t * p.inner];
        y[e] = acc;
    }
}
VX_EMU_ENTRY(window_filter_axis, (const WindowAxisParams p, const float* x, float* y),
             (p, x, y))

// The adjoint for an input of view p: dx[o, i, j] = sum_t taps[t] dy[o, i - t, j] over the
// i - t that are output positions.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    window_filter_axis_adjoint(const __grid_constant__ WindowAxisParams p, const float* __restrict__ dy,
                               float* __restrict__ dx) {
    const unsigned out_len = p.len + 1 - p.k;
    const unsigned long long total =
        static_cast<unsigned long long>(p.outer) * p.len * p.inner;
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const unsigned j = e % p.inner;
        const unsigned row = e / p.inner;
        const unsigned o = row / p.len;
        const unsigned at = row - o * p.len;
        const float* src = dy + o * out_len * p.inner + j;
        float acc = 0.0f;
        for (unsigned t = 0; t < p.k; ++t)
            if (t <= at && at - t < out_len) acc += p.taps[t] * src[(at - t) * p.inner];
        dx[e] = acc;
    }
}
VX_EMU_ENTRY(window_filter_axis_adjoint, (const WindowAxisParams p, const float* dy, float* dx),
             (p, dy, dx))
