// Binary cross-entropy with logits, as BceKernel in src/tensor_ops/bce (the formulas and
// their f64 evaluation follow its cpu.rs). The loss is a device-side reduction: f64 partial
// sums per block, then one block adds them and scales; the upstream gradient is read from
// device memory, so nothing goes through the host.
#include "block_sum.h"

// log(1 + exp(-x)) without overflow.
__device__ __forceinline__ double vx_softplus_neg(double x) {
    return log1p(exp(-fabs(x))) + fmax(-x, 0.0);
}

__device__ __forceinline__ double vx_sigmoid_f64(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    const double e = exp(x);
    return e / (1.0 + e);
}

__device__ __forceinline__ double vx_bce_loss(double x, double t, double p) {
    return (1.0 - t) * x + (1.0 + (p - 1.0) * t) * vx_softplus_neg(x);
}

__device__ __forceinline__ double vx_bce_weight(const BceKernelParams& p, const float* w,
                                                unsigned long long i) {
    return p.has_weight ? static_cast<double>(w[i / p.weight_group]) : 1.0;
}

// partial[blockIdx.x] = sum over this block's grid-stride elements of w_i l_i.
extern "C" __global__ void __launch_bounds__(VX_SUM_THREADS)
    bce_forward_partial(const BceKernelParams p, const float* __restrict__ x,
                        const float* __restrict__ t, const float* __restrict__ w,
                        double* __restrict__ partial) {
    double acc[1] = {0.0};
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        acc[0] += vx_bce_weight(p, w, i) *
                  vx_bce_loss(static_cast<double>(x[i]), static_cast<double>(t[i]), p.pos_weight);
    vx_block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}
VX_EMU_ENTRY(bce_forward_partial,
             (const BceKernelParams p, const float* x, const float* t, const float* w,
              double* partial),
             (p, x, t, w, partial))

// One block: loss[0] = scale * the sum of `count` partials.
extern "C" __global__ void __launch_bounds__(VX_SUM_THREADS)
    bce_forward_finish(const BceKernelParams p, unsigned count, const double* __restrict__ partial,
                       float* __restrict__ loss) {
    double total[1];
    vx_sum_partials(partial, count, total);
    if (threadIdx.x == 0) loss[0] = static_cast<float>(total[0] * p.scale);
}
VX_EMU_ENTRY(bce_forward_finish,
             (const BceKernelParams p, unsigned count, const double* partial, float* loss),
             (p, count, partial, loss))

// out = dx, or with `targets` set, out = dt: dy * scale * w_i * dl/d(x or t).
extern "C" __global__ void __launch_bounds__(256)
    bce_backward(const BceKernelParams p, const float* __restrict__ x, const float* __restrict__ t,
                 const float* __restrict__ w, const float* __restrict__ dy, unsigned targets,
                 float* __restrict__ out) {
    const double g = static_cast<double>(dy[0]) * p.scale;
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride()) {
        const double xv = static_cast<double>(x[i]), tv = static_cast<double>(t[i]);
        const double partial =
            targets ? -xv + (p.pos_weight - 1.0) * vx_softplus_neg(xv)
                    : (1.0 - tv) - (1.0 + (p.pos_weight - 1.0) * tv) * vx_sigmoid_f64(-xv);
        out[i] = static_cast<float>(g * vx_bce_weight(p, w, i) * partial);
    }
}
VX_EMU_ENTRY(bce_backward,
             (const BceKernelParams p, const float* x, const float* t, const float* w,
              const float* dy, unsigned targets, float* out),
             (p, x, t, w, dy, targets, out))

// dw[j] = dy * scale * the sum of l_i over weight j's group.
extern "C" __global__ void __launch_bounds__(256)
    bce_backward_weight(const BceKernelParams p, const float* __restrict__ x,
                        const float* __restrict__ t, const float* __restrict__ dy,
                        float* __restrict__ dw) {
    const double g = static_cast<double>(dy[0]) * p.scale;
    const unsigned long long weights = p.n / p.weight_group;
    for (unsigned long long j = vx_thread_index(); j < weights; j += vx_thread_stride()) {
        double sum = 0.0;
        for (unsigned long long i = j * p.weight_group; i < (j + 1) * p.weight_group; ++i)
            sum += vx_bce_loss(static_cast<double>(x[i]), static_cast<double>(t[i]), p.pos_weight);
        dw[j] = static_cast<float>(g * sum);
    }
}
VX_EMU_ENTRY(bce_backward_weight,
             (const BceKernelParams p, const float* x, const float* t, const float* dy, float* dw),
             (p, x, t, dy, dw))
