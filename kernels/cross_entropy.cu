// Softmax cross-entropy with class-index labels, and one_hot, as CrossEntropyKernel in
// src/tensor_ops/cross_entropy (f64 log-sum-exp as its cpu.rs). One thread per row. The
// loss is a device-side reduction (f64 partials per block, then one block); a label that
// is not a class index sets bad[0] = 1, which the launcher reads once per call to turn
// into the CPU's error.
#include "block_sum.h"

// The class of a float label, or false when it is not an integer in 0..classes.
__device__ __forceinline__ bool vx_class_of(float label, unsigned long long classes,
                                            unsigned long long& y) {
    const double v = static_cast<double>(label);
    if (v >= 0.0 && v < static_cast<double>(classes) && v == floor(v)) {
        y = static_cast<unsigned long long>(v);
        return true;
    }
    return false;
}

__device__ __forceinline__ double vx_log_sum_exp(const float* row, unsigned long long classes) {
    double max = -INFINITY;
    for (unsigned long long k = 0; k < classes; ++k) max = fmax(max, static_cast<double>(row[k]));
    double sum = 0.0;
    for (unsigned long long k = 0; k < classes; ++k) sum += exp(static_cast<double>(row[k]) - max);
    return max + log(sum);
}

// partial[blockIdx.x] = sum of w[y] nll, partial[gridDim.x + blockIdx.x] = sum of w[y],
// over this block's grid-stride rows.
extern "C" __global__ void __launch_bounds__(VX_SUM_THREADS)
    cross_entropy_forward_partial(const CrossEntropyKernelParams p,
                                  const float* __restrict__ logits, const float* __restrict__ labels,
                                  const float* __restrict__ weights, double* __restrict__ partial,
                                  float* __restrict__ bad) {
    double acc[2] = {0.0, 0.0};
    for (unsigned long long r = vx_thread_index(); r < p.rows; r += vx_thread_stride()) {
        unsigned long long y;
        if (!vx_class_of(labels[r], p.classes, y)) {
            bad[0] = 1.0f;
            continue;
        }
        const float* row = logits + r * p.classes;
        const double w = p.has_weights ? static_cast<double>(weights[y]) : 1.0;
        acc[0] += w * (vx_log_sum_exp(row, p.classes) - static_cast<double>(row[y]));
        acc[1] += w;
    }
    vx_block_sum(acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc[0];
        partial[gridDim.x + blockIdx.x] = acc[1];
    }
}
VX_EMU_ENTRY(cross_entropy_forward_partial,
             (const CrossEntropyKernelParams p, const float* logits, const float* labels,
              const float* weights, double* partial, float* bad),
             (p, logits, labels, weights, partial, bad))

// One block: loss[0] = (sum w nll) / W and total[0] = W from `count` partials per plane.
extern "C" __global__ void __launch_bounds__(VX_SUM_THREADS)
    cross_entropy_forward_finish(unsigned count, const double* __restrict__ partial,
                                 float* __restrict__ loss, float* __restrict__ total) {
    double sums[2];
    vx_sum_partials(partial, count, sums);
    if (threadIdx.x == 0) {
        loss[0] = static_cast<float>(sums[0] / sums[1]);
        total[0] = static_cast<float>(sums[1]);
    }
}
VX_EMU_ENTRY(cross_entropy_forward_finish,
             (unsigned count, const double* partial, float* loss, float* total),
             (count, partial, loss, total))

// d logits = dy / W * w[y] * (softmax(row) - onehot(y)); a bad label's row is NaN.
extern "C" __global__ void __launch_bounds__(256)
    cross_entropy_backward(const CrossEntropyKernelParams p, const float* __restrict__ logits,
                           const float* __restrict__ labels, const float* __restrict__ weights,
                           const float* __restrict__ total, const float* __restrict__ dy,
                           float* __restrict__ dx, float* __restrict__ bad) {
    const double g = static_cast<double>(dy[0]) / static_cast<double>(total[0]);
    for (unsigned long long r = vx_thread_index(); r < p.rows; r += vx_thread_stride()) {
        const float* row = logits + r * p.classes;
        float* drow = dx + r * p.classes;
        unsigned long long y;
        if (!vx_class_of(labels[r], p.classes, y)) {
            bad[0] = 1.0f;
            for (unsigned long long k = 0; k < p.classes; ++k) drow[k] = NAN;
            continue;
        }
        const double scale = g * (p.has_weights ? static_cast<double>(weights[y]) : 1.0);
        const double lse = vx_log_sum_exp(row, p.classes);
        for (unsigned long long k = 0; k < p.classes; ++k) {
            const double prob = exp(static_cast<double>(row[k]) - lse);
            drow[k] = static_cast<float>(scale * (prob - (k == y ? 1.0 : 0.0)));
        }
    }
}
VX_EMU_ENTRY(cross_entropy_backward,
             (const CrossEntropyKernelParams p, const float* logits, const float* labels,
              const float* weights, const float* total, const float* dy, float* dx, float* bad),
             (p, logits, labels, weights, total, dy, dx, bad))

// Row r of `out` is 1 at column labels[r] and 0 elsewhere (all NaN for a bad label).
extern "C" __global__ void __launch_bounds__(256)
    one_hot(const CrossEntropyKernelParams p, const float* __restrict__ labels,
            float* __restrict__ out, float* __restrict__ bad) {
    for (unsigned long long r = vx_thread_index(); r < p.rows; r += vx_thread_stride()) {
        float* orow = out + r * p.classes;
        unsigned long long y;
        const bool ok = vx_class_of(labels[r], p.classes, y);
        if (!ok) bad[0] = 1.0f;
        for (unsigned long long k = 0; k < p.classes; ++k)
            orow[k] = !ok ? NAN : (k == y ? 1.0f : 0.0f);
    }
}
VX_EMU_ENTRY(one_hot, (const CrossEntropyKernelParams p, const float* labels, float* out, float* bad),
             (p, labels, out, bad))
